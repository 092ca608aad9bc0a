-- moonbox.box: `moonbox box`, one container from the command line, like `docker run --rm`.
--
-- The exit status is the command's, or 128 + the signal that ended it; 125 when the runtime
-- itself failed, 126 or 127 when the command could not be run.
local container = require "moonbox.container"
local json = require "moonbox.json"
local cli = require "moonbox.cli"

local box = {}

box.spec = {
  usage = "moonbox box (--rootfs DIR | --image NAME[:TAG]) [options] -- CMD [ARG...]",
  about = "Runs one container and removes it afterwards. Without a command, an image's own runs.",
  status = 125,
  command = true,
  options = {
    { "--rootfs", kind = "string", metavar = "DIR", help = "the container's root folder" },
    { "--image", kind = "string", metavar = "NAME[:TAG]", help = "an image from the store (moonbox images)" },
    { "--name", kind = "string", help = "the container's name (unique among running ones)" },
    { "--memory", "-m", kind = "size", allow_max = true, help = "memory limit, e.g. 512M" },
    { "--swap", kind = "size", allow_max = true, help = "swap allowed on top of memory (default none)" },
    { "--pids", kind = "integer", min = 1, max = 4194304, help = "process limit" },
    { "--cpus", kind = "number", min = 0.001, max = 4096, help = "CPU limit, e.g. 0.5" },
    { "--disk", kind = "size", help = "cap on what the container writes to its rootfs, e.g. 1G" },
    { "--hostname", kind = "string", help = "hostname inside" },
    { "--network", kind = "list", aliases = { "--net" }, metavar = "none|host|NAME",
      help = "only lo (default), the host's, or a network (moonbox network create); repeatable" },
    { "--ip", kind = "string", metavar = "ADDR", help = "the IPv4 address on the (first) network" },
    { "--ip6", kind = "string", metavar = "ADDR", help = "the IPv6 address on the (first) network" },
    { "--network-alias", kind = "list", key = "alias", metavar = "NAME", help = "another name on the (first) network" },
    { "--publish", "-p", kind = "list", metavar = "[IP:][HOST:]PORT[/udp]", help = "publish a container port on the host" },
    { "--volume", "-v", kind = "list", key = "volume", metavar = "SRC:DST[:ro]", help = "bind mount" },
    { "--tmpfs", kind = "list", metavar = "DST[:SIZE]", help = "a tmpfs mount" },
    { "--env", "-e", kind = "pairs", key = "env", help = "environment variable" },
    { "--workdir", "-w", kind = "string", metavar = "DIR", help = "working folder inside" },
    { "--user", "-u", kind = "string", metavar = "USER[:GROUP]", help = "run as this user (uid or name)" },
    { "--read-only", kind = "flag", help = "read-only rootfs" },
    { "--init", kind = "flag", help = "a minimal init as PID 1 that reaps zombies and forwards signals" },
    { "--timeout", kind = "seconds", help = "kill the container after this wall time" },
    { "-it", kind = "flag", key = "tty", aliases = { "-ti", "-t", "--tty" }, help = "interactive, with a terminal" },
    { "--interactive", "-i", kind = "flag", help = "keep stdin attached" },
    { "--json", kind = "flag", help = "print the result as JSON on stderr at the end" },
    { "--dry-run", kind = "flag", help = "print the mount plan and exit" },
  },
}

--- Parses box arguments into a container spec and options.
function box.parse(args)
  local o = cli.parse("box", args, box.spec)
  if not o.rootfs and not o.image then cli.fail("box", "--rootfs DIR or --image NAME is required\nusage: " .. box.spec.usage, 125) end
  if not o.image and (not o.command or #o.command == 0) then
    cli.fail("box", "give the command after --, e.g. -- /bin/sh\nusage: " .. box.spec.usage, 125)
  end
  local network, networks
  for _, n in ipairs(o.network or {}) do
    if n == "none" or n == "host" then
      network = n
    else
      networks = networks or {}
      networks[#networks + 1] = n
    end
  end
  if networks then
    -- the first network takes --ip, --ip6 and the aliases
    local first = networks[1]
    if o.ip or o.ip6 or o.alias then
      networks = { [first] = { ip = o.ip, ip6 = o.ip6, aliases = o.alias } }
      for k = 2, #(o.network or {}) do
        local n = o.network[k]
        if n ~= "none" and n ~= "host" and n ~= first then networks[n] = {} end
      end
    end
  elseif o.ip or o.ip6 or o.alias then
    cli.fail("box", "--ip, --ip6 and --network-alias need --network NAME", 125)
  end
  local spec = {
    rootfs = o.rootfs, image = o.image, name = o.name, hostname = o.hostname, network = network, env = o.env,
    networks = networks, ports = o.publish,
    cwd = o.workdir, user = o.user, readonly_rootfs = o["read-only"] or nil, init = o.init or nil,
    timeout = o.timeout, tty = o.tty or nil, mounts = {},
    limits = { memory = o.memory, swap = o.swap, pids = o.pids, cpus = o.cpus, disk = o.disk },
  }
  if o.command and #o.command > 0 then spec.command = o.command end
  for _, v in ipairs(o.volume or {}) do spec.mounts[#spec.mounts + 1] = v end
  for _, t in ipairs(o.tmpfs or {}) do
    local dst, size = t:match("^([^:]+):?(.*)$")
    spec.mounts[#spec.mounts + 1] = { type = "tmpfs", target = dst, size = size ~= "" and size or nil }
  end
  if o.interactive and not spec.tty then spec.stdin = "inherit" end
  return spec, o
end

function box.main(args)
  local spec, o = box.parse(args)
  cli.main("box", function()
    if o["dry-run"] then
      print(container.dry_run(spec))
      os.exit(0)
    end
    local result = container.run(spec)
    if o.json then io.stderr:write(json.encode(result), "\n") end
    io.stdout:flush()
    if result.status == "exited" then os.exit(result.code) end
    if result.status == "timeout" then io.stderr:write("moonbox box: timed out after ", spec.timeout, "s\n") end
    if result.status == "oom" then io.stderr:write("moonbox box: killed: out of memory\n") end
    os.exit(128 + (result.signal or 9))
  end, 125)
end

return box
