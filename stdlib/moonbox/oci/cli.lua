-- moonbox.oci.cli: `moonbox oci [GLOBAL] COMMAND ...`, the runc command line that podman
-- (conmon), containerd (containerd-shim-runc-v2) and CRI-O call. The same when the binary is
-- run as `runc` or `moonbox-runc`. Errors are one line on stderr and, with --log, a log line
-- ("level":"error" in --log-format json, which containerd reads back); the exit status is 1.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local errors = require "moonbox.errors"
local oci = require "moonbox.oci"

local ocicli = {}

local USAGE = [==[usage: moonbox oci [--root DIR] [--log FILE] [--log-format text|json] [--systemd-cgroup] [--debug] COMMAND ...
commands:
  create --bundle DIR [--pid-file F] [--console-socket S] [--preserve-fds N] ID
  run [--bundle DIR] [--detach] [--pid-file F] [--console-socket S] ID
  start ID | state ID | pause ID | resume ID
  kill [--all] ID [SIGNAL]
  delete [--force] ID
  exec [--process FILE] [--detach] [--pid-file F] [--console-socket S] [--tty] [--cwd DIR] [--env K=V]... [--user UID[:GID]] ID [COMMAND [ARG...]]
  ps [--format table|json] ID
  update [--resources FILE|-] [--memory BYTES] [--pids-limit N] [--cpu-quota N] [--cpu-period N] [--cpu-shares N] ID
  list [--format table|json] [--quiet]
  features | spec [--bundle DIR] | --version]==]

-- Options by command: name -> {takes_value, key}. Unknown options are refused.
local OPTIONS = {
  global = { root = true, log = true, ["log-format"] = true, ["systemd-cgroup"] = false, debug = false, rootless = true, criu = true,
    version = false },
  create = { bundle = true, b = "bundle", ["pid-file"] = true, ["console-socket"] = true, ["no-pivot"] = false, ["no-new-keyring"] = false,
    ["preserve-fds"] = true },
  run = { bundle = true, b = "bundle", ["pid-file"] = true, ["console-socket"] = true, ["no-pivot"] = false, ["no-new-keyring"] = false,
    ["preserve-fds"] = true, detach = false, d = "detach", ["keep"] = false },
  start = {}, state = {}, pause = {}, resume = {}, features = {},
  kill = { all = false, a = "all" },
  delete = { force = false, f = "force" },
  exec = { process = true, p = "process", detach = false, d = "detach", ["pid-file"] = true, ["console-socket"] = true, tty = false, t = "tty",
    cwd = true, env = "list", e = "env", user = true, u = "user", cap = "list", c = "cap", ["no-new-privs"] = false, ["process-label"] = true,
    apparmor = true, ["preserve-fds"] = true, cgroup = "list", ["additional-gids"] = "list", g = "additional-gids", ["ignore-paused"] = false },
  ps = { format = true, f = "format" },
  update = { resources = true, r = "resources", memory = true, ["memory-swap"] = true, ["pids-limit"] = true, ["cpu-quota"] = true,
    ["cpu-period"] = true, ["cpu-shares"] = true, ["blkio-weight"] = true, ["cpuset-cpus"] = true, ["cpuset-mems"] = true,
    ["memory-reservation"] = true, ["kernel-memory"] = true, ["kernel-memory-tcp"] = true, ["l3-cache-schema"] = true, ["mem-bw-schema"] = true },
  list = { format = true, f = "format", quiet = false, q = "quiet" },
  spec = { bundle = true, b = "bundle", rootless = false },
}

local function usage_error(message)
  errors.raise(message, { op = "usage", code = 1 }, 0)
end

-- Parses "--name value", "--name=value", "-n value" and flags. Stops at the first positional
-- when `stop_at_positional` (exec's command follows its id).
local function parse(args, i, table_of, stop_at_positional)
  local opts, positional = {}, {}
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do positional[#positional + 1] = args[j] end
      return opts, positional, #args + 1
    end
    local name, value = a:match("^%-%-?([%w][%w-]*)=(.*)$")
    if not name then name = a:match("^%-%-?([%w][%w-]*)$") end
    if name and a:sub(1, 1) == "-" and not (stop_at_positional and #positional > 0) then
      local spec = table_of[name]
      if spec == nil then usage_error("unknown option " .. a) end
      local key = name
      if type(spec) == "string" and spec ~= "list" then key = spec spec = table_of[spec] end
      if spec == false then
        if value and value ~= "true" and value ~= "false" then usage_error("option --" .. key .. " takes no value") end
        opts[key] = value ~= "false"
      else
        if not value then
          i = i + 1
          value = args[i]
          if value == nil then usage_error("option --" .. key .. " needs a value") end
        end
        if spec == "list" then
          opts[key] = opts[key] or {}
          table.insert(opts[key], value)
        else
          opts[key] = value
        end
      end
    else
      positional[#positional + 1] = a
      if stop_at_positional and #positional == 1 then
        for j = i + 1, #args do positional[#positional + 1] = args[j] end
        return opts, positional, #args + 1
      end
    end
    i = i + 1
  end
  return opts, positional, i
end

local function make_logger(global)
  local format = global["log-format"] or "text"
  if format ~= "text" and format ~= "json" then usage_error("--log-format must be text or json") end
  local path = global.log
  return function(level, msg)
    if not path then
      if level ~= "error" and global.debug then io.stderr:write("moonbox-runc: ", level, ": ", msg, "\n") end
      return
    end
    local t = os.date("!%Y-%m-%dT%H:%M:%SZ")
    local line
    if format == "json" then
      line = json.encode({ level = level, msg = msg, time = t })
    else
      line = string.format('time="%s" level=%s msg=%q', t, level, msg)
    end
    local f = io.open(path, "a")
    if f then f:write(line, "\n") f:close() end
  end
end

local function need_id(pos, command)
  if not pos[1] then usage_error(command .. ": a container id is required") end
  return pos[1]
end

local function print_json(v) io.stdout:write(json.encode(v, { indent = "  " }), "\n") end

-- A default bundle config (runc spec).
local function default_spec()
  return {
    ociVersion = oci.VERSION,
    process = { terminal = true, user = { uid = 0, gid = 0 }, args = { "sh" },
      env = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm" }, cwd = "/",
      capabilities = { bounding = { "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" }, effective = { "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" },
        permitted = { "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" } },
      rlimits = { { type = "RLIMIT_NOFILE", hard = 1024, soft = 1024 } }, noNewPrivileges = true },
    root = { path = "rootfs", readonly = true },
    hostname = "moonbox",
    mounts = {
      { destination = "/proc", type = "proc", source = "proc" },
      { destination = "/dev", type = "tmpfs", source = "tmpfs", options = { "nosuid", "strictatime", "mode=755", "size=65536k" } },
      { destination = "/dev/pts", type = "devpts", source = "devpts", options = { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5" } },
      { destination = "/dev/shm", type = "tmpfs", source = "shm", options = { "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" } },
      { destination = "/dev/mqueue", type = "mqueue", source = "mqueue", options = { "nosuid", "noexec", "nodev" } },
      { destination = "/sys", type = "sysfs", source = "sysfs", options = { "nosuid", "noexec", "nodev", "ro" } },
      { destination = "/sys/fs/cgroup", type = "cgroup", source = "cgroup", options = { "nosuid", "noexec", "nodev", "relatime", "ro" } },
    },
    linux = {
      resources = { devices = { { allow = false, access = "rwm" } } },
      namespaces = { { type = "pid" }, { type = "network" }, { type = "ipc" }, { type = "uts" }, { type = "mount" }, { type = "cgroup" } },
      maskedPaths = { "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi" },
      readonlyPaths = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger" },
    },
  }
end

local function exec_process(o, pos)
  if o.process then
    local text = o.process == "-" and io.stdin:read("a") or fs.read_if_exists(o.process)
    if not text then usage_error("exec: cannot read --process " .. o.process) end
    local ok, p = pcall(json.decode, text)
    if not ok or type(p) ~= "table" then usage_error("exec: --process " .. o.process .. " is not valid JSON") end
    return require("moonbox.oci.config").strip_nulls(p)
  end
  if #pos < 2 then usage_error("exec: a command (or --process FILE) is required") end
  local args = {}
  for i = 2, #pos do args[#args + 1] = pos[i] end
  local uid, gid = 0, 0
  if o.user then
    uid, gid = o.user:match("^(%d+):?(%d*)$")
    if not uid then usage_error("exec: --user must be UID[:GID]") end
    uid, gid = tonumber(uid), tonumber(gid ~= "" and gid or "0")
  end
  local env = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }
  for _, e in ipairs(o.env or {}) do env[#env + 1] = e end
  local caps
  if o.cap then
    caps = {}
    for _, c in ipairs(o.cap) do caps[#caps + 1] = c end
  end
  local additional = {}
  for _, g in ipairs(o["additional-gids"] or {}) do additional[#additional + 1] = math.tointeger(tonumber(g)) end
  return { args = args, env = env, cwd = o.cwd or "/", terminal = o.tty or false, user = { uid = uid, gid = gid, additionalGids = additional },
    noNewPrivileges = o["no-new-privs"] or nil,
    capabilities = caps and { bounding = caps, effective = caps, permitted = caps } or nil }
end

local function update_resources(o)
  local r = {}
  if o.resources then
    local text = o.resources == "-" and io.stdin:read("a") or fs.read_if_exists(o.resources)
    if not text then usage_error("update: cannot read --resources " .. o.resources) end
    local ok, doc = pcall(json.decode, text)
    if not ok or type(doc) ~= "table" then usage_error("update: --resources is not valid JSON") end
    r = require("moonbox.oci.config").strip_nulls(doc)
  end
  local function num(k)
    if o[k] == nil then return nil end
    local v = tonumber(o[k])
    if not v then usage_error("update: --" .. k .. " must be a number") end
    return v
  end
  if o.memory or o["memory-swap"] then r.memory = r.memory or {} r.memory.limit = num("memory") or r.memory.limit r.memory.swap = num("memory-swap") or r.memory.swap end
  if o["pids-limit"] then r.pids = { limit = num("pids-limit") } end
  if o["cpu-quota"] or o["cpu-period"] or o["cpu-shares"] then
    r.cpu = r.cpu or {}
    r.cpu.quota, r.cpu.period, r.cpu.shares = num("cpu-quota") or r.cpu.quota, num("cpu-period") or r.cpu.period, num("cpu-shares") or r.cpu.shares
  end
  for _, k in ipairs({ "blkio-weight", "cpuset-cpus", "cpuset-mems", "memory-reservation", "kernel-memory", "kernel-memory-tcp", "l3-cache-schema", "mem-bw-schema" }) do
    if o[k] then usage_error("update: --" .. k .. " is not supported by moonbox") end
  end
  return r
end

local function run_command(command, o, pos, global, log)
  local root = global.root or oci.default_root()
  if command == "create" or command == "run" then
    local id = need_id(pos, command)
    local opts = { bundle = o.bundle, pid_file = o["pid-file"], console_socket = o["console-socket"], preserve_fds = tonumber(o["preserve-fds"] or "0"), log = log }
    local pid = oci.create(root, id, opts)
    if command == "create" then return 0 end
    oci.start(root, id, { log = log })
    if o.detach then return 0 end
    -- run without --detach: the init is this process's child; its status is ours
    local status = sys.wait(pid)
    oci.delete(root, id, true, { log = log })
    if not status then return 0 end
    return status.status == "exited" and status.code or 128 + (status.signal or 0)
  elseif command == "start" then
    oci.start(root, need_id(pos, command), { log = log })
  elseif command == "state" then
    print_json(oci.state(root, need_id(pos, command)))
  elseif command == "kill" then
    oci.kill(root, need_id(pos, command), pos[2] or "TERM", o.all)
  elseif command == "delete" then
    oci.delete(root, need_id(pos, command), o.force, { log = log })
  elseif command == "exec" then
    local id = need_id(pos, command)
    return oci.exec(root, id, exec_process(o, pos), { detach = o.detach, pid_file = o["pid-file"], console_socket = o["console-socket"], log = log })
  elseif command == "pause" then
    oci.pause(root, need_id(pos, command))
  elseif command == "resume" then
    oci.resume(root, need_id(pos, command))
  elseif command == "ps" then
    local pids = oci.ps(root, need_id(pos, command))
    if (o.format or "table") == "json" then
      io.stdout:write(json.encode(pids), "\n")
    else
      io.stdout:write("PID CMD\n")
      for _, pid in ipairs(pids) do
        local cmd = (fs.read_if_exists("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " "):gsub(" $", "")
        io.stdout:write(pid, " ", cmd, "\n")
      end
    end
  elseif command == "update" then
    oci.update(root, need_id(pos, command), update_resources(o))
  elseif command == "list" then
    local list = oci.list(root)
    if o.quiet then
      for _, s in ipairs(list) do io.stdout:write(s.id, "\n") end
    elseif (o.format or "table") == "json" then
      io.stdout:write(json.encode(list), "\n")
    else
      io.stdout:write(string.format("%-24s %-8s %-10s %-40s %-30s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"))
      for _, s in ipairs(list) do
        io.stdout:write(string.format("%-24s %-8d %-10s %-40s %-30s %s\n", s.id, s.pid, s.status, s.bundle or "", s.created or "", s.owner))
      end
    end
  elseif command == "features" then
    print_json(oci.features())
  elseif command == "spec" then
    local path = (o.bundle or ".") .. "/config.json"
    if sys.lstat(path) then usage_error("spec: " .. path .. " exists") end
    fs.write(path, json.encode(default_spec(), { indent = "  " }) .. "\n")
  else
    usage_error("unknown command " .. tostring(command) .. "\n" .. USAGE)
  end
  return 0
end

function ocicli.main(args)
  local global, pos, i = parse(args, 1, OPTIONS.global, true)
  local command = pos[1]
  if command == "--version" or command == "-v" or command == "version" or global.version then
    io.stdout:write("moonbox-runc version ", sys._VERSION or _VERSION, "\nspec: ", oci.VERSION, "\n")
    os.exit(0)
  end
  if command == nil or command == "help" or command == "--help" or command == "-h" then
    io.stdout:write(USAGE, "\n")
    os.exit(command == nil and 1 or 0)
  end
  local log
  local ok, err = pcall(function() log = make_logger(global) end)
  if not ok then
    io.stderr:write("moonbox-runc: ", tostring(errors.is(err) and err.message or err), "\n")
    os.exit(1)
  end
  local rest = {}
  for j = 2, #pos do rest[#rest + 1] = pos[j] end
  local status = 1
  ok, err = xpcall(function()
    local table_of = OPTIONS[command]
    if not table_of then usage_error("unknown command " .. tostring(command) .. "\n" .. USAGE) end
    local o, p = parse(rest, 1, table_of, command == "exec")
    status = run_command(command, o, p, global, log)
  end, function(e)
    if os.getenv("MOONBOX_DEBUG") == "1" or global.debug then io.stderr:write(debug.traceback(tostring(e), 2), "\n") end
    return e
  end)
  if not ok then
    local message = require("moonbox.cli").without_stdlib_position(tostring(errors.is(err) and err.message or err))
    log("error", message)
    io.stderr:write(message, "\n")
    io.stdout:flush()
    os.exit(1)
  end
  io.stdout:flush()
  os.exit(status)
end

return ocicli
