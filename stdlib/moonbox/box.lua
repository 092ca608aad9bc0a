-- moonbox.box: `moonbox box`, one container from the command line, like `docker run` on a folder.
--
--   moonbox box --rootfs DIR [--memory 512M] [--pids N] [--cpus X] [--hostname H]
--               [--net none|host] [-v SRC:DST[:ro]] [--timeout S] [-it] -- CMD...
--
-- The exit status is the command's, or 128 + the signal that ended it; 125 when the runtime
-- itself failed, 126 or 127 when the command could not be run.
local container = require "moonbox.container"
local json = require "moonbox.json"

local box = {}

box.usage = [[
usage: moonbox box --rootfs DIR [options] -- CMD [ARG...]

options:
  --rootfs DIR          the container's root folder (required)
  --memory SIZE         memory limit, e.g. 512M
  --swap SIZE           swap allowed on top of memory (default none)
  --pids N              process limit
  --cpus X              CPU limit, e.g. 0.5
  --hostname NAME       hostname inside
  --net none|host       network: only lo (default), or the host's
  -v, --volume SRC:DST[:ro]   bind mount
  --tmpfs DST[:SIZE]    a tmpfs mount
  -e, --env NAME=VALUE  environment variable
  -w, --workdir DIR     working folder inside
  -u, --user UID[:GID]  run as this user
  --read-only           read-only rootfs
  --init                a minimal init as PID 1 that reaps zombies and forwards signals
  --timeout SECONDS     kill the container after this wall time
  -i, -t, -it           interactive, with a terminal
  --json                print the result as JSON on stderr at the end
]]

local function fail(msg)
  io.stderr:write("moonbox box: ", msg, "\n")
  os.exit(125)
end

--- Parses box arguments into a container spec and options.
function box.parse(args)
  local spec = { mounts = {}, env = {}, limits = {} }
  local opts = {}
  local i = 1
  local function value(name)
    i = i + 1
    local v = args[i]
    if v == nil then fail(name .. " needs a value") end
    return v
  end
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if name then
      a = name
      table.insert(args, i + 1, inline)
    end
    if a == "--" then
      spec.command = table.move(args, i + 1, #args, 1, {})
      break
    elseif a == "--rootfs" then spec.rootfs = value(a)
    elseif a == "--memory" or a == "-m" then spec.limits.memory = value(a)
    elseif a == "--swap" then spec.limits.swap = value(a)
    elseif a == "--pids" then spec.limits.pids = math.tointeger(tonumber(value(a))) or fail("--pids needs a whole number")
    elseif a == "--cpus" then spec.limits.cpus = tonumber(value(a)) or fail("--cpus needs a number")
    elseif a == "--hostname" then spec.hostname = value(a)
    elseif a == "--net" or a == "--network" then spec.network = value(a)
    elseif a == "-v" or a == "--volume" then table.insert(spec.mounts, value(a))
    elseif a == "--tmpfs" then
      local dst, size = value(a):match("^([^:]+):?(.*)$")
      table.insert(spec.mounts, { type = "tmpfs", target = dst, size = size ~= "" and size or nil })
    elseif a == "-e" or a == "--env" then
      local k, v = value(a):match("^([^=]+)=(.*)$")
      if not k then fail("--env needs NAME=VALUE") end
      spec.env[k] = v
    elseif a == "-w" or a == "--workdir" then spec.cwd = value(a)
    elseif a == "-u" or a == "--user" then spec.user = value(a)
    elseif a == "--read-only" then spec.readonly_rootfs = true
    elseif a == "--init" then spec.init = true
    elseif a == "--timeout" then spec.timeout = tonumber(value(a)) or fail("--timeout needs seconds")
    elseif a == "-it" or a == "-ti" or a == "-t" or a == "--tty" then spec.tty = true
    elseif a == "-i" or a == "--interactive" then spec.stdin = "inherit"
    elseif a == "--json" then opts.json = true
    elseif a == "-h" or a == "--help" then io.stdout:write(box.usage) os.exit(0)
    else
      fail("unknown option " .. a .. "\n" .. box.usage)
    end
    i = i + 1
  end
  if not spec.rootfs then fail("--rootfs DIR is required\n" .. box.usage) end
  if not spec.command or #spec.command == 0 then fail("give the command after --, e.g. -- /bin/sh\n" .. box.usage) end
  if spec.tty and spec.stdin == "inherit" then spec.stdin = nil end
  return spec, opts
end

function box.main(args)
  local spec, opts = box.parse(args)
  local ok, result = pcall(container.run, spec)
  if not ok then
    local err = result
    io.stderr:write("moonbox box: ", tostring(err), "\n")
    os.exit(container.is_error(err) and err.code or 125)
  end
  if opts.json then io.stderr:write(json.encode(result), "\n") end
  io.stdout:flush()
  if result.status == "exited" then os.exit(result.code) end
  if result.status == "timeout" then io.stderr:write("moonbox box: timed out after ", spec.timeout, "s\n") end
  if result.status == "oom" then io.stderr:write("moonbox box: killed: out of memory\n") end
  os.exit(128 + (result.signal or 9))
end

return box
