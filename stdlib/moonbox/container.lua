-- moonbox.container: containers as a Lua library, built only on moonbox.sys.
--
--   local result = container.run{ rootfs = dir, command = {"/bin/sh", "-c", "echo hi"} }
--   local c <close> = container.new{ rootfs = dir, command = {"sleep", "60"} }
--   c:start(); c:exec{"ps"}; c:pause(); c:resume(); c:stats(); c:kill(); c:wait(); c:remove()
--
-- The environment follows runc's defaults: pivot_root into the rootfs, /proc, a tmpfs /dev
-- with the standard devices, /dev/pts, /dev/shm, /dev/mqueue, a read-only /sys, runc's masked
-- and read-only paths, fds above 2 closed, and limits in place before the command runs.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local process = require "moonbox.process"
local state = require "moonbox.state"
local security = require "moonbox.security"

local container = {}

-- Running as a plain user: a user namespace maps the user to root inside.
local rootless = sys.geteuid() ~= 0
container.rootless = rootless

-- The container's cgroup calls. Without a cgroup (rootless, with nothing delegated) they
-- do nothing, and the caller was warned that limits are off.
local function cg(group, fn, ...)
  if not group then return nil, "no cgroup", "ENOENT" end
  return fn(group, ...)
end

local DEFAULT_NAMESPACES = { "mount", "uts", "ipc", "pid", "net", "cgroup" }
local DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
local DEFAULT_CAPTURE_LIMIT = 16 << 20

-- runc's defaults (libcontainer/specconv).
container.masked_paths = {
  "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
  "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi", "/sys/devices/virtual/powercap",
}
container.readonly_paths = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger" }
container.devices = {
  { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
}

-- MARK: errors

local ContainerError = { __name = "moonbox.container.error" }
ContainerError.__index = ContainerError
ContainerError.__tostring = function(e) return e.message end

--- Raised for setup failures. tostring(err) is the message; err.step names the step;
-- err.code is 126 or 127 when the command could not be executed, as a shell gives.
local function raise(message, fields, level)
  local e = setmetatable(fields or {}, ContainerError)
  e.message = message
  error(e, level or 2)
end
container.Error = ContainerError

local function is_error(e) return getmetatable(e) == ContainerError end
container.is_error = is_error

-- MARK: spec checking

local SPEC_KEYS = {
  rootfs = true, command = true, hostname = true, env = true, cwd = true, user = true, namespaces = true,
  network = true, limits = true, mounts = true, readonly_rootfs = true, stdin = true, stdout = true,
  stderr = true, tty = true, timeout = true, init = true, setup = true, capture_limit = true, chroot = true,
  name = true, masked_paths = true, readonly_paths = true, cap_add = true, cap_drop = true, seccomp = true,
  no_new_privileges = true, rlimits = true, cpu_time = true, kill_on_output_limit = true, id_map = true,
  mount_namespace = true, image = true,
}
container.spec_keys = SPEC_KEYS
local LIMIT_KEYS = { memory = true, pids = true, cpus = true, swap = true, cpu_weight = true }

-- The level of the first caller outside this file, so errors point at the user's line.
local function user_level()
  local level = 3
  while true do
    local info = debug.getinfo(level, "S")
    if not info then return 0 end
    if not info.source:find("moonbox/container.lua", 1, true) then return level - 1 end
    level = level + 1
  end
end

local function spec_error(msg) error("container spec: " .. msg, user_level()) end

local function check_list(name, v)
  if type(v) ~= "table" or #v == 0 then spec_error(name .. " must be a non-empty list of strings") end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then spec_error(string.format("%s[%d] must be a string, got %s", name, i, type(s))) end
  end
end

local function parse_user(user)
  if user == nil then return nil end
  if math.type(user) == "integer" then return { uid = user, gid = user } end
  if type(user) == "string" then
    local u, g = user:match("^(%d+):(%d+)$")
    if u then return { uid = tonumber(u), gid = tonumber(g) } end
    u = user:match("^(%d+)$")
    if u then return { uid = tonumber(u), gid = tonumber(u) } end
  end
  spec_error("user must be a uid or \"uid:gid\", got " .. tostring(user))
end

--- "SRC:DST[:ro]" or {type=, source=, target=, readonly=, size=, mode=, options=}.
local function normalize_mount(m, i)
  if type(m) == "string" then
    local src, dst, opt = m:match("^([^:]+):([^:]+):?(.*)$")
    if not src or (opt ~= "" and opt ~= "ro" and opt ~= "rw") then
      spec_error(string.format("mounts[%d] %q: use SRC:DST or SRC:DST:ro", i, m))
    end
    m = { type = "bind", source = src, target = dst, readonly = opt == "ro" }
  end
  if type(m) ~= "table" then spec_error(string.format("mounts[%d] must be a table or \"SRC:DST[:ro]\"", i)) end
  if m.type == nil and m.source == nil and m.target == nil then spec_error(string.format("mounts[%d] is empty", i)) end
  for k in pairs(m) do
    if not ({ type = true, source = true, target = true, readonly = true, size = true, mode = true, options = true })[k] then
      spec_error(string.format("mounts[%d]: unknown key '%s'", i, tostring(k)))
    end
  end
  local kind = m.type or (m.source and "bind") or nil
  if kind ~= "bind" and kind ~= "tmpfs" and kind ~= "proc" then
    spec_error(string.format("mounts[%d]: type must be bind, tmpfs or proc", i))
  end
  if type(m.target) ~= "string" or m.target:sub(1, 1) ~= "/" then
    spec_error(string.format("mounts[%d]: target must be an absolute path inside the container", i))
  end
  if kind == "bind" then
    if type(m.source) ~= "string" then spec_error(string.format("mounts[%d]: a bind mount needs a source", i)) end
    if not sys.stat(m.source) then spec_error(string.format("mounts[%d]: source %s does not exist", i, m.source)) end
  end
  return { type = kind, source = m.source, target = m.target, readonly = m.readonly and true or false,
    size = m.size, mode = m.mode, options = m.options }
end

local function check_spec(spec)
  if type(spec) ~= "table" then error("container spec must be a table", 3) end
  for k in pairs(spec) do
    if not SPEC_KEYS[k] then
      local known = {}
      for n in pairs(SPEC_KEYS) do known[#known + 1] = n end
      table.sort(known)
      spec_error("unknown field '" .. tostring(k) .. "' (known: " .. table.concat(known, ", ") .. ")")
    end
  end
  -- An image fills what the spec leaves out, as docker does: command, env, cwd, user.
  local img, image_config
  if spec.image ~= nil then
    if spec.rootfs ~= nil then spec_error("give rootfs or image, not both") end
    local image = require "moonbox.image"
    local err
    img, err = image.resolve(spec.image)
    if not img then spec_error(err) end
    image_config = img.config.config or {}
  else
    if spec.rootfs == nil then spec_error("rootfs is required (a folder holding the container's files), or an image") end
    if type(spec.rootfs) ~= "string" then spec_error("rootfs must be a path") end
    local st = sys.stat(spec.rootfs)
    if not st or st.type ~= "dir" then spec_error("rootfs " .. spec.rootfs .. " is not a folder") end
  end
  local command = spec.command
  if command == nil and image_config then
    command = {}
    for _, a in ipairs(image_config.Entrypoint or {}) do command[#command + 1] = a end
    for _, a in ipairs(image_config.Cmd or {}) do command[#command + 1] = a end
    if #command == 0 then command = nil end
  end
  if command == nil then spec_error("command is required (a list like {\"/bin/sh\", \"-c\", \"...\"})") end
  check_list("command", command)
  spec = setmetatable({ command = command, cwd = spec.cwd or (image_config and image_config.WorkingDir ~= "" and image_config.WorkingDir) or nil,
    user = spec.user or (image_config and image_config.User and image_config.User:match("^%d+:?%d*$") and image_config.User) or nil },
    { __index = spec })
  local c = {
    rootfs = spec.rootfs, command = spec.command, image = img, hostname = spec.hostname, cwd = spec.cwd or "/",
    user = parse_user(spec.user), readonly_rootfs = spec.readonly_rootfs and true or false,
    tty = spec.tty and true or false, timeout = spec.timeout, init = spec.init and true or false,
    setup = spec.setup, chroot = spec.chroot and true or false, name = spec.name,
    capture_limit = spec.capture_limit or DEFAULT_CAPTURE_LIMIT,
    masked_paths = spec.masked_paths or container.masked_paths,
    readonly_paths = spec.readonly_paths or container.readonly_paths,
  }
  if c.hostname ~= nil and type(c.hostname) ~= "string" then spec_error("hostname must be a string") end
  if type(c.cwd) ~= "string" or c.cwd:sub(1, 1) ~= "/" then spec_error("cwd must be an absolute path") end
  if c.timeout ~= nil and (type(c.timeout) ~= "number" or c.timeout <= 0) then spec_error("timeout must be seconds > 0") end
  c.cpu_time = spec.cpu_time
  if c.cpu_time ~= nil and (type(c.cpu_time) ~= "number" or c.cpu_time <= 0) then spec_error("cpu_time must be seconds > 0") end
  c.kill_on_output_limit = spec.kill_on_output_limit and true or false
  c.id_map = spec.id_map
  if c.id_map ~= nil and (type(c.id_map) ~= "table" or type(c.id_map[1]) ~= "table") then
    spec_error("id_map must be a list of {inside, outside, count}")
  end
  c.mount_namespace = spec.mount_namespace
  if c.mount_namespace ~= nil and type(c.mount_namespace) ~= "string" then spec_error("mount_namespace must be a path") end
  if c.setup ~= nil and type(c.setup) ~= "function" then spec_error("setup must be a function(sys)") end
  if math.type(c.capture_limit) ~= "integer" or c.capture_limit < 0 then spec_error("capture_limit must be bytes >= 0") end
  -- network and namespaces
  c.network = spec.network or "none"
  if c.network ~= "none" and c.network ~= "host" then spec_error("network must be \"none\" or \"host\"") end
  local ns = spec.namespaces or DEFAULT_NAMESPACES
  if spec.namespaces then check_list("namespaces", ns) end
  c.namespaces = {}
  for _, n in ipairs(ns) do
    if not ({ mount = true, uts = true, ipc = true, pid = true, net = true, user = true, cgroup = true })[n] then
      spec_error("unknown namespace '" .. n .. "' (mount, uts, ipc, pid, net, user, cgroup)")
    end
    if not (n == "net" and c.network == "host") then c.namespaces[n] = true end
  end
  if c.network == "none" and not spec.namespaces then c.namespaces.net = true end
  if not c.namespaces.mount then spec_error("the mount namespace is required (the rootfs is mounted in it)") end
  if rootless then c.namespaces.user = true end
  -- env: a map, defaults as docker gives them
  c.env = { PATH = DEFAULT_PATH, HOME = (c.user and c.user.uid ~= 0) and "/" or "/root", HOSTNAME = c.hostname or "moonbox" }
  for _, kv in ipairs(image_config and image_config.Env or {}) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if k then c.env[k] = v end
  end
  if c.tty then c.env.TERM = os.getenv("TERM") or "xterm" end
  if spec.env ~= nil then
    if type(spec.env) ~= "table" then spec_error("env must be a table {NAME = \"value\"}") end
    for k, v in pairs(spec.env) do
      if type(k) == "number" and type(v) == "string" and v:find("=") then
        k, v = v:match("^([^=]+)=(.*)$")
      end
      if type(k) ~= "string" or k == "" or k:find("[=%z]") then spec_error("env: bad variable name " .. tostring(k)) end
      if type(v) ~= "string" and type(v) ~= "number" then spec_error("env." .. k .. " must be a string") end
      c.env[k] = tostring(v)
    end
  end
  -- limits
  c.limits = spec.limits or {}
  if type(c.limits) ~= "table" then spec_error("limits must be a table") end
  for k in pairs(c.limits) do
    if not LIMIT_KEYS[k] then spec_error("limits: unknown limit '" .. tostring(k) .. "' (memory, swap, pids, cpus, cpu_weight)") end
  end
  if c.limits.cpus ~= nil and (type(c.limits.cpus) ~= "number" or c.limits.cpus <= 0) then
    spec_error("limits.cpus must be a number of CPUs > 0, like 0.5")
  end
  if c.limits.pids ~= nil and (math.type(c.limits.pids) ~= "integer" or c.limits.pids < 1) then
    spec_error("limits.pids must be an integer >= 1")
  end
  -- mounts
  c.mounts = {}
  if spec.mounts ~= nil then
    if type(spec.mounts) ~= "table" then spec_error("mounts must be a list") end
    for i, m in ipairs(spec.mounts) do c.mounts[i] = normalize_mount(m, i) end
  end
  -- security: docker's capabilities and seccomp profile, and no_new_privs, unless the spec says otherwise
  for _, k in ipairs({ "cap_add", "cap_drop" }) do
    if spec[k] ~= nil and type(spec[k]) ~= "table" then spec_error(k .. " must be a list of capability names") end
  end
  local okc, caps = pcall(security.capabilities, spec.cap_add, spec.cap_drop)
  if not okc then spec_error(tostring(caps):gsub("^.-: ", "")) end
  c.capabilities = caps
  if spec.seccomp == false then
    c.seccomp = false
  elseif spec.seccomp == nil or spec.seccomp == true then
    c.seccomp = security.default_seccomp(caps)
  else
    local oks, profile = pcall(security.resolve_seccomp, spec.seccomp, caps)
    if not oks then spec_error(tostring(profile)) end
    c.seccomp = profile
  end
  c.no_new_privileges = spec.no_new_privileges ~= false
  c.rlimits = {}
  if c.cpu_time then
    -- A backstop per process; the group's total is watched by the parent.
    c.rlimits[1] = { "cpu", math.ceil(c.cpu_time) + 1, math.ceil(c.cpu_time) + 2 }
  end
  if spec.rlimits ~= nil then
    if type(spec.rlimits) ~= "table" then spec_error("rlimits must be a table {nofile = 64, ...}") end
    for k, v in pairs(spec.rlimits) do
      if type(k) ~= "string" then spec_error("rlimits keys must be resource names") end
      local soft, hard = v, v
      if type(v) == "table" then soft, hard = v[1], v[2] or v[1] end
      if not (math.type(soft) == "integer" or soft == "unlimited") or not (math.type(hard) == "integer" or hard == "unlimited") then
        spec_error("rlimits." .. k .. " must be an integer, \"unlimited\" or {soft, hard}")
      end
      c.rlimits[#c.rlimits + 1] = { k, soft, hard }
    end
    table.sort(c.rlimits, function(a, b) return a[1] < b[1] end)
  end
  -- stdio
  c.stdin = spec.stdin or (c.tty and "inherit" or "null")
  if type(c.stdin) ~= "string" then spec_error("stdin must be a string, \"inherit\" or \"null\"") end
  for _, k in ipairs({ "stdout", "stderr" }) do
    local v = spec[k] or "inherit"
    if type(v) ~= "string" then spec_error(k .. " must be \"inherit\", \"capture\", \"null\" or a file path") end
    if v ~= "inherit" and v ~= "capture" and v ~= "null" and v:sub(1, 1) ~= "/" then
      spec_error(k .. " must be \"inherit\", \"capture\", \"null\" or an absolute file path, got " .. v)
    end
    c[k] = v
  end
  return c
end

-- MARK: the registry of live containers, cleaned up whatever happens

local live = {}         -- id -> container
local owner_pid = sys.getpid()
local signals_installed = false

local function cleanup_all()
  if sys.getpid() ~= owner_pid then return end
  for _, c in pairs(live) do pcall(c.remove, c) end
end
container.cleanup_all = cleanup_all

-- Finalized when the Lua state closes (script end, error, os.exit): nothing is left behind.
container._sentinel = setmetatable({}, { __gc = cleanup_all })

-- SIGINT, SIGTERM and SIGHUP: remove every container, then die of the same signal.
local function check_signals()
  local caught = sys.signals_caught()
  if #caught == 0 then return end
  local sig
  for _, s in ipairs(caught) do
    if s == "WINCH" then
      -- The terminal was resized: so are the containers' terminals.
      local rows, cols = sys.winsize(0)
      for _, c in pairs(live) do
        if c.tty_master and rows and rows > 0 then sys.winsize(c.tty_master, rows, cols) end
      end
    else
      sig = sig or s
    end
  end
  if not sig then return end
  debug.sethook()
  cleanup_all()
  sys.signal({ "INT", "TERM", "HUP" }, "default")
  io.stdout:flush()
  sys.kill(sys.getpid(), sig)
  sys.nanosleep(1)
  os.exit(128 + 15)
end
container.check_signals = check_signals

local function install_signals()
  if signals_installed or sys.getpid() ~= owner_pid then return end
  signals_installed = true
  assert(sys.signal({ "INT", "TERM", "HUP" }, "catch"))
  -- A child that died early must not take moonbox with it through SIGPIPE: writes fail instead.
  assert(sys.signal("PIPE", "ignore"))
  -- Between waits the script may be busy in Lua: look at signals every 1000 instructions.
  if not debug.gethook() then debug.sethook(check_signals, "", 1000) end
end

-- MARK: the child: everything between clone and exec

local function check(ok, msg, errno)
  if not ok then error({ message = msg, errno = errno }, 0) end
  return ok
end

-- A bind remount read-only that keeps the mount's other flags: in a user namespace the
-- kernel refuses a remount that would drop a locked nosuid, nodev, noexec or atime flag.
local function remount_ro(path, extra, userns)
  local flags = { "bind", "remount", "ro" }
  local sv = userns and sys.statvfs(path)
  for _, f in ipairs(sv and sv.flags or {}) do if f ~= "ro" then flags[#flags + 1] = f end end
  for _, f in ipairs(extra or {}) do flags[#flags + 1] = f end
  check(sys.mount(nil, path, nil, flags))
end

local function mkdir_target(path, is_file)
  if sys.lstat(path) then return end
  if is_file then
    check(sys.mkdir(path:match("^(.*)/[^/]*$") or "/"))
    local f = check(sys.open(path, { "wronly", "creat" }, tonumber("644", 8)))
    f:close()
  else
    check(sys.mkdir(path))
  end
end

-- /dev as runc makes it: a tmpfs with the standard nodes (bind-mounted from the host where
-- mknod is not allowed, as in a user namespace), the fd links, pts, shm and mqueue.
-- gid 5 (tty) exists in the container only when its id map covers it.
local function maps_tty_group(c)
  if not c.namespaces.user then return true end
  for _, m in ipairs(c.id_map or {}) do
    if m[1] <= 5 and 5 < m[1] + m[3] then return true end
  end
  return false
end

local function setup_dev(c, root)
  local dev = root .. "/dev"
  mkdir_target(dev)
  check(sys.mount("tmpfs", dev, "tmpfs", { "nosuid", "strictatime" }, "mode=755,size=65536k"))
  for _, d in ipairs(container.devices) do
    local path = dev .. "/" .. d[1]
    if not sys.mknod(path, "char", tonumber("666", 8), d[2], d[3]) then
      mkdir_target(path, true)
      check(sys.mount("/dev/" .. d[1], path, nil, { "bind" }))
    else
      sys.chmod(path, tonumber("666", 8))
    end
  end
  for name, target in pairs({ fd = "/proc/self/fd", stdin = "/proc/self/fd/0", stdout = "/proc/self/fd/1",
    stderr = "/proc/self/fd/2", ptmx = "pts/ptmx", core = "/proc/kcore" }) do
    check(sys.symlink(target, dev .. "/" .. name))
  end
  mkdir_target(dev .. "/pts")
  check(sys.mount("devpts", dev .. "/pts", "devpts", { "nosuid", "noexec" },
    "newinstance,ptmxmode=0666,mode=0620" .. (maps_tty_group(c) and ",gid=5" or "")))
  mkdir_target(dev .. "/shm")
  check(sys.mount("shm", dev .. "/shm", "tmpfs", { "nosuid", "nodev", "noexec" }, "mode=1777,size=65536k"))
  mkdir_target(dev .. "/mqueue")
  if not sys.mount("mqueue", dev .. "/mqueue", "mqueue", { "nosuid", "nodev", "noexec" }) then
    sys.rmdir(dev .. "/mqueue")  -- no ipc namespace of our own: leave it out
  end
end

local function setup_mounts(c, root)
  check(sys.mount(nil, "/", nil, { "rprivate" }))
  -- An image's layers, combined by overlayfs with this container's empty upper folder.
  if c.overlay then check(sys.overlay(c.overlay)) end
  check(sys.mount(root, root, nil, { "bind", "rec" }))
  mkdir_target(root .. "/proc")
  check(sys.mount("proc", root .. "/proc", "proc", { "nosuid", "nodev", "noexec" }))
  setup_dev(c, root)
  mkdir_target(root .. "/sys")
  if not sys.mount("sysfs", root .. "/sys", "sysfs", { "nosuid", "nodev", "noexec", "ro" }) then
    -- sysfs needs a net namespace of our own; otherwise bind the host's, read-only.
    check(sys.mount("/sys", root .. "/sys", nil, { "rbind" }))
    remount_ro(root .. "/sys", { "nosuid", "nodev", "noexec" }, c.namespaces.user)
  end
  for _, m in ipairs(c.mounts) do
    local target = root .. m.target
    if m.type == "bind" then
      local st = check(sys.stat(m.source))
      mkdir_target(target, st.type ~= "dir")
      check(sys.mount(m.source, target, nil, { "bind", "rec" }))
      if m.readonly then remount_ro(target, nil, c.namespaces.user) end
    elseif m.type == "tmpfs" then
      mkdir_target(target)
      local data = "mode=" .. (m.mode or "1777") .. (m.size and (",size=" .. m.size) or "")
      check(sys.mount("tmpfs", target, "tmpfs", { "nosuid", "nodev", m.readonly and "ro" or "rw" }, data))
    elseif m.type == "proc" then
      mkdir_target(target)
      check(sys.mount("proc", target, "proc", { "nosuid", "nodev", "noexec" }))
    end
  end
end

-- pivot_root the way runc does it: no put_old folder, so a read-only rootfs works too.
local function enter_root(c, root)
  check(sys.chdir(root))
  if c.chroot then
    check(sys.chroot("."))
  else
    check(sys.pivot_root(".", "."))
    check(sys.mount(nil, ".", nil, { "rslave", "rec" }))  -- the old root's unmount stays here
    check(sys.umount(".", { "detach" }))
  end
  check(sys.chdir("/"))
end

local function mask_paths(c)
  for _, p in ipairs(c.masked_paths) do
    local st = sys.stat(p)
    if st and st.type == "dir" then
      check(sys.mount("tmpfs", p, "tmpfs", { "ro", "nosuid", "nodev", "noexec" }, "size=0"))
    elseif st then
      check(sys.mount("/dev/null", p, nil, { "bind" }))
    end
  end
  for _, p in ipairs(c.readonly_paths) do
    if sys.stat(p) then
      check(sys.mount(p, p, nil, { "bind", "rec" }))
      remount_ro(p, { "nosuid", "nodev", "noexec" }, c.namespaces.user)
    end
  end
  if c.readonly_rootfs then remount_ro("/", nil, c.namespaces.user) end
end

-- A minimal PID 1 (docker's --init): runs the command as its child, forwards signals to
-- it, reaps every zombie, and exits with the command's status.
local function run_init(argv, env)
  local forward = { "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH" }
  sys.signal(forward, "catch")
  local pid = sys.fork()
  if pid == 0 then
    sys.signal(forward, "default")
    sys.setsid()
    local _, msg, errno = sys.exec(argv, env)
    io.stderr:write("moonbox-init: ", msg, "\n")
    sys._exit(errno == "ENOENT" and 127 or 126)
  end
  while true do
    local st, _, errno = sys.wait(-1)
    for _, s in ipairs(sys.signals_caught()) do sys.kill(pid, s) end
    if st and st.pid == pid then
      sys._exit(st.status == "exited" and st.code or 128 + (st.signal or 0))
    elseif not st and errno == "ECHILD" then
      sys._exit(0)
    end
  end
end

-- Limits, capabilities, the user switch and no_new_privs, in the order they need:
-- the bounding set is dropped while CAP_SETPCAP is still held, and a non-root user
-- loses the rest at setuid.
local function harden(c, user)
  for _, r in ipairs(c.rlimits) do check(sys.setrlimit(r[1], r[2], r[3])) end
  check(security.drop_bounding(c.capabilities))
  if user then
    -- In a user namespace setgroups is denied (the map was written that way): no groups to drop.
    if not c.namespaces.user then check(sys.setgroups({})) end
    check(sys.setgid(user.gid))
    check(sys.setuid(user.uid))
  end
  if not user or user.uid == 0 then check(security.set_capabilities(c.capabilities)) end
  if c.no_new_privileges then check(sys.prctl("set_no_new_privs")) end
end
container.harden = harden

local function child_main(c, io_fds, sync_r, err_w)
  local step = "start"
  local ok, err = xpcall(function()
    step = "prctl"
    check(sys.prctl("set_pdeathsig", "KILL"))
    -- Wait for the parent: cgroup, id maps and limits are in place when it says go.
    step = "sync"
    local go = sys.read(sync_r, 1)
    if go ~= "g" then sys._exit(125) end  -- the parent went away
    -- Non-dumpable from here to exec: nothing in the container may read or ptrace this
    -- process (its /proc files turn root-owned; the parent needed them for the id maps).
    check(sys.prctl("set_dumpable", false))
    -- The namespaces and the root are made while the parent moves this process into its
    -- cgroup (a v1 migration waits out an RCU grace period): the two overlap.
    if c.namespaces.user then
      -- Become the namespace's root (the mapped uid 0): until then files made here would
      -- belong to an unmapped owner.
      step = "user namespace"
      check(sys.setgid(0))
      check(sys.setuid(0))
    end
    step = "stdio"
    if io_fds.stdin then check(sys.dup2(io_fds.stdin, 0)) end
    if io_fds.stdout then check(sys.dup2(io_fds.stdout, 1)) end
    if io_fds.stderr then check(sys.dup2(io_fds.stderr, 2)) end
    check(sys.setsid())  -- a session of its own: no TIOCSTI into the caller's terminal
    if c.namespaces.uts then step = "sethostname"; check(sys.sethostname(c.hostname or c.env.HOSTNAME)) end
    if c.namespaces.net and c.network == "none" then step = "network"; check(sys.netdev_up("lo")) end
    step = "mounts"
    local root = c.rootfs_path
    setup_mounts(c, root)
    step = "pivot_root"
    enter_root(c, root)
    step = "masks"
    mask_paths(c)
    if c.tty then
      -- As runc: the pty comes from the container's own devpts, its slave is /dev/console,
      -- and the master goes to the parent over the console socket.
      step = "tty"
      local master, slave, name = sys.openpty("/dev/pts/ptmx")
      check(master, slave, name)
      mkdir_target("/dev/console", true)
      check(sys.mount(name, "/dev/console", nil, { "bind" }))
      check(sys.send_fd(io_fds.console, master))
      master:close()
      for fd = 0, 2 do check(sys.dup2(slave, fd)) end
      slave:close()
      check(sys.tiocsctty(0))
    end
    -- The cgroup and its limits are in place when the parent says so; nothing of the
    -- caller's code (setup) or the command runs before.
    step = "sync"
    if sys.read(sync_r, 1) ~= "c" then sys._exit(125) end
    sync_r:close()
    if c.namespaces.cgroup then step = "unshare(cgroup)"; check(sys.unshare({ "cgroup" })) end
    if c.setup then
      step = "setup"
      local ok2, e2 = xpcall(c.setup, debug.traceback, sys)
      if not ok2 then error({ message = "setup: " .. tostring(type(e2) == "table" and e2.message or e2) }, 0) end
    end
    step = "security"
    harden(c, c.user)
    step = "cwd"
    check(sys.chdir(c.cwd))
    -- CVE-2024-21626: the working folder must be inside the container's root.
    local cwd = sys.getcwd()
    if not cwd or cwd:sub(1, 1) ~= "/" then error({ message = "chdir(" .. c.cwd .. "): working folder is outside the container" }, 0) end
    step = "fds"
    check(sys.close_range(3, nil, { "cloexec" }))
    -- seccomp last, just before exec: nothing of the setup runs under it.
    if c.seccomp_program then
      step = "seccomp"
      local oks, smsg, serr = sys.seccomp_load(c.seccomp_program)
      check(oks, smsg, serr)
    end
  end, function(e)
    if type(e) == "table" then return e end
    return { message = debug.traceback(tostring(e), 2) }
  end)
  if not ok then
    err.step = err.step or step
    sys.write(err_w, json.encode(err))
    sys._exit(125)
  end
  if c.init then
    err_w:close()  -- exec of the command is reported by the init itself
    run_init(c.command, c.env)
  end
  local _, msg, errno = sys.exec(c.command, c.env)
  sys.write(err_w, json.encode({ step = "exec", message = msg, errno = errno, exec = true }))
  sys._exit(errno == "ENOENT" and 127 or 126)
end

-- MARK: the handle

local Container = { __name = "moonbox.container" }
Container.__index = Container
Container.__tostring = function(c)
  return string.format("container(%s, %s%s)", c.id, c.state, c.pid and (", pid " .. c.pid) or "")
end
Container.__close = function(c) c:remove() end
Container.__gc = function(c) if c.state ~= "removed" and c.owner == sys.getpid() then pcall(c.remove, c) end end

local counter = 0

--- A container handle, not yet started.
function container.new(spec)
  local c = check_spec(spec)
  counter = counter + 1
  local id = c.name or string.format("mb-%d-%d-%04x", sys.getpid(), counter, math.random(0, 0xffff))
  if not id:match("^[%w._-]+$") then error("container spec: name may hold only letters, digits, '.', '_' and '-'", 2) end
  if not c.hostname then c.env.HOSTNAME = spec.env and spec.env.HOSTNAME or id end
  local self = setmetatable({ id = id, spec = c, state = "created", owner = sys.getpid(), group = "c-" .. id }, Container)
  return self
end

local warned_devices = false

local warned_cgroups = false

local function set_limits(self)
  local l = self.spec.limits
  local g = self.group
  if rootless then
    -- A cgroup only where this user was delegated one; otherwise limits are off, out loud.
    local ok, msg = sys.cgroup_set(g, "pids.max", l.pids or "max")
    if not ok then
      self.group = nil
      if next(l) and not warned_cgroups then
        warned_cgroups = true
        io.stderr:write("moonbox: warning: cgroup limits are off: this user has no delegated cgroup (", msg, ")\n")
      end
      return
    end
  end
  local function set(key, value)
    local ok, msg = sys.cgroup_set(g, key, value)
    if not ok then raise("container setup failed: " .. msg, { step = "cgroup" }, 4) end
  end
  -- Always a group of our own: accounting, freezing and killing need it.
  set("pids.max", l.pids or "max")
  if l.memory then set("memory.max", l.memory) end
  if l.swap then
    set("memory.swap.max", l.swap)
  elseif l.memory then
    pcall(sys.cgroup_set, g, "memory.swap.max", 0)  -- no swap unless asked (where accounted)
  end
  if l.cpus then
    local period = 100000
    set("cpu.max", string.format("%d %d", math.max(1000, math.floor(l.cpus * period + 0.5)), period))
  end
  if l.cpu_weight then set("cpu.weight", l.cpu_weight) end
  local ok, why = security.restrict_devices(g)
  if not ok and not warned_devices and not rootless then
    warned_devices = true
    io.stderr:write("moonbox: warning: devices are not restricted: ", tostring(why), "\n")
  end
end

local function open_output(self, which, fds)
  local v = self.spec[which]
  if v == "capture" then
    local r, w = assert(sys.pipe())
    self.capture[which] = { fd = r, parts = {}, total = 0 }
    fds[which] = w
  elseif v == "null" then
    fds[which] = assert(sys.open("/dev/null", "wronly"))
  elseif v ~= "inherit" then
    local f, msg = sys.open(v, { "wronly", "creat", "trunc" }, tonumber("644", 8))
    if not f then raise("container setup failed: " .. msg, { step = "stdio" }, 4) end
    fds[which] = f
  end
end

--- Starts the container: returns when the command runs (or raises with the failed step).
function Container:start()
  if self.state ~= "created" then error("container " .. self.id .. " is " .. self.state .. ", not created", 2) end
  check_signals()
  install_signals()
  local c = self.spec
  c.rootfs_path = c.rootfs
  if c.image and not c.overlay then
    local image = require "moonbox.image"
    local okl, lowers = pcall(image.lowers, c.image)
    if not okl then raise("container setup failed: " .. tostring(lowers), { step = "image" }, 2) end
    image.init()
    local dir = image.root() .. "/containers/" .. self.id
    assert(sys.mkdir(dir .. "/upper"))
    assert(sys.mkdir(dir .. "/work"))
    assert(sys.mkdir(dir .. "/merged"))
    self.container_dir = dir
    c.overlay = { lower = lowers, upper = dir .. "/upper", work = dir .. "/work", target = dir .. "/merged" }
    c.rootfs_path = dir .. "/merged"
  end
  if c.seccomp and not c.seccomp_program then
    local okp, program = pcall(security.compile, c.seccomp)
    if not okp then raise("container setup failed: " .. tostring(program), { step = "seccomp" }, 2) end
    c.seccomp_program = program
  end
  self.capture = {}
  -- The layers are recorded so that removing an image spares those a running container uses.
  self.record = state.new(self.id, { cgroup = self.group, layers = c.overlay and c.overlay.lower or nil,
    dirs = { self.container_dir } })
  live[self.id] = self
  self.state = "starting"
  local ok, err = pcall(function()
    set_limits(self)
    local fds = {}
    local console
    if c.tty then
      console, fds.console = assert(sys.socketpair())
    else
      if c.stdin == "null" then
        fds.stdin = assert(sys.open("/dev/null", "rdonly"))
      elseif c.stdin ~= "inherit" then
        local r, w = assert(sys.pipe())
        fds.stdin, self.stdin_w = r, w
      end
      open_output(self, "stdout", fds)
      open_output(self, "stderr", fds)
    end
    local sync_r, sync_w = assert(sys.pipe())
    local err_r, err_w = assert(sys.pipe())
    local names = {}
    for n in pairs(c.namespaces) do if n ~= "cgroup" then names[#names + 1] = n end end
    table.sort(names)
    -- A base mount namespace (a sandbox box's): step into it just for the clone, whose
    -- new mount namespace then starts as its copy, and come back.
    local home_ns, home_cwd
    if c.mount_namespace then
      home_ns = assert(sys.open("/proc/self/ns/mnt", "rdonly"))
      home_cwd = assert(sys.open(".", { "rdonly", "directory" }))
      local okn, msgn = sys.setns(c.mount_namespace, "mount")
      if not okn then raise("container setup failed: " .. msgn, { step = "clone" }, 3) end
    end
    local pid, msg = sys.clone(names)
    if pid == 0 then child_main(c, fds, sync_r, err_w) end
    if home_ns then
      assert(sys.setns(home_ns, "mount"))
      assert(sys.fchdir(home_cwd))
      home_ns:close()
      home_cwd:close()
    end
    if not pid then raise("container setup failed: " .. msg, { step = "clone" }, 3) end
    self.pid = pid
    self.started = sys.clock_gettime("monotonic")
    sys.close(sync_r)
    sys.close(err_w)
    for _, fd in pairs(fds) do if type(fd) ~= "number" then fd:close() end end
    self.pidfd = assert(sys.pidfd_open(pid))
    if c.namespaces.user then
      local uid, gid = sys.getuid(), sys.getgid()
      local okm, msgm = sys.id_map(pid, c.id_map and { uid = c.id_map, gid = c.id_map }
        or { uid = { { 0, uid, 1 } }, gid = { { 0, gid, 1 } } })
      if not okm then raise("container setup failed: " .. msgm, { step = "id_map" }, 3) end
    end
    sys.write(sync_w, "g")  -- the child makes its root meanwhile
    local okc, attach_error = cg(self.group, sys.cgroup_attach, pid)
    if okc or not self.group then
      attach_error = nil
      sys.write(sync_w, "c")  -- limits in place: setup and exec may go on
    end
    sys.close(sync_w)
    -- The error pipe closes on exec: nothing read means the command runs.
    local report = process.read_all(err_r)
    sys.close(err_r)
    if report ~= "" then
      local e = json.decode(report)
      local st = sys.wait(pid)
      self.pid = nil
      raise("container setup failed: " .. e.message, { step = e.step, errno = e.errno,
        code = e.exec and (e.errno == "ENOENT" and 127 or 126) or 125, exit = st }, 3)
    end
    if attach_error then raise("container setup failed: " .. attach_error, { step = "cgroup" }, 3) end
    if console then
      local master, msgm = sys.recv_fd(console)
      console:close()
      if not master then raise("container setup failed: " .. msgm, { step = "tty" }, 3) end
      self.tty_master = master
      if c.stdout == "capture" then self.capture.stdout = { fd = master, parts = {}, total = 0, tty = true } end
    end
    if self.stdin_w then
      self.feeder = process.feed(self.stdin_w, c.stdin)
      self.stdin_w = nil
    end
  end)
  if not ok then
    self.state = "failed"
    self:remove()
    if is_error(err) then error(err, 2) end
    raise("container setup failed: " .. tostring(err), { step = "start" }, 2)
  end
  self.state = "running"
  return self
end

local function cgroup_number(text, key)
  if not text then return nil end
  return tonumber(text:match(key .. " (%d+)"))
end

-- Reads what is ready on the capture pipes; returns true while any is open.
local function pump_output(self, ready)
  for which, cap in pairs(self.capture) do
    if cap.fd and (ready == nil or ready[cap.fd]) then
      local chunk = sys.read(cap.fd, 65536)
      if not chunk or chunk == "" then
        cap.fd:close()
        cap.fd = nil
      else
        local room = self.spec.capture_limit - cap.total
        if room > 0 then cap.parts[#cap.parts + 1] = chunk:sub(1, room) end
        cap.total = cap.total + #chunk
        if cap.total > self.spec.capture_limit and self.spec.kill_on_output_limit and not self.output_exceeded then
          self.output_exceeded = true
          cg(self.group, sys.cgroup_set, "cgroup.kill", 1)
        end
      end
    end
  end
end

-- The tty's master is the container's terminal: copy our stdin into it, and it to our stdout.
local function pump_tty(self, ready)
  local m = self.tty_master
  if not m or self.capture.stdout then return end
  if ready[0] then
    local data = sys.read(0, 4096)
    if data and data ~= "" then
      sys.write(m, data)
    else
      self.stdin_closed = true  -- our stdin ended: stop watching it
    end
  end
  if ready[m] then
    local data = sys.read(m, 65536)
    if data and data ~= "" then io.stdout:write(data) io.stdout:flush() end
  end
end

local function finish(self, st)
  self.ended = sys.clock_gettime("monotonic")
  self.exit = st
  -- Whatever the command left running in its group goes with it.
  local procs = cg(self.group, sys.cgroup_procs)
  if procs and #procs > 0 then cg(self.group, sys.cgroup_set, "cgroup.kill", 1) end
  while true do
    local any = false
    for _, cap in pairs(self.capture) do if cap.fd then any = true end end
    if not any then break end
    local fds, map = {}, {}
    for _, cap in pairs(self.capture) do if cap.fd then fds[#fds + 1] = cap.fd map[cap.fd] = true end end
    sys.poll(fds, 1)
    pump_output(self, nil)
  end
  if self.feeder then sys.kill(self.feeder, "KILL") sys.wait(self.feeder) self.feeder = nil end
  self.state = "exited"
  self.result = self:_result()
  return self.result
end

--- Builds the result, modelled on isolate's meta file.
function Container:_result()
  local st = self.exit
  local r = { id = self.id, wall = (self.ended or sys.clock_gettime("monotonic")) - self.started,
    code = st.code, signal = st.signal, signal_name = st.signal_name, timed_out = self.timed_out or false }
  local cpu = cg(self.group, sys.cgroup_get, "cpu.stat")
  local user, system = cgroup_number(cpu, "user_usec"), cgroup_number(cpu, "system_usec")
  r.cpu = { user = (user or 0) / 1e6, sys = (system or 0) / 1e6, total = ((user or 0) + (system or 0)) / 1e6 }
  if not self.group and st.rusage then
    -- No cgroup: the kernel's account of the first process and the children it reaped.
    r.cpu = { user = st.rusage.utime, sys = st.rusage.stime, total = st.rusage.utime + st.rusage.stime }
  end
  r.memory_peak = tonumber(cg(self.group, sys.cgroup_get, "memory.peak") or "")
  r.pids_peak = tonumber(cg(self.group, sys.cgroup_get, "pids.peak") or "")
  r.max_rss_kb = st.rusage and st.rusage.maxrss_kb
  r.cpu_time_exceeded = self.cpu_time_exceeded or false
  r.output_exceeded = self.output_exceeded or false
  local kills = cgroup_number(cg(self.group, sys.cgroup_get, "memory.events"), "oom_kill") or 0
  r.oom_killed = kills > 0 and st.status == "signaled" and st.signal == 9
  if r.timed_out or r.cpu_time_exceeded then
    r.status = "timeout"
  elseif r.oom_killed then
    r.status = "oom"
  else
    r.status = st.status
  end
  for which, cap in pairs(self.capture) do
    r[which] = table.concat(cap.parts)
    r[which .. "_bytes"] = cap.total
    r[which .. "_truncated"] = cap.total > self.spec.capture_limit
  end
  return r
end

-- Waits for any of `list` to end, or until `deadline`; returns the one that ended.
local function wait_some(list, deadline)
  while true do
    check_signals()
    local fds, index = {}, {}
    local next_deadline = deadline
    for _, c in ipairs(list) do
      if c.state == "exited" then return c end
      fds[#fds + 1] = c.pidfd
      index[c.pidfd] = c
      for _, cap in pairs(c.capture) do if cap.fd then fds[#fds + 1] = cap.fd index[cap.fd] = c end end
      if c.tty_master and not c.capture.stdout then
        fds[#fds + 1] = c.tty_master
        index[c.tty_master] = c
        if not c.stdin_closed and c.spec.stdin == "inherit" then fds[#fds + 1] = 0 end
      end
      if c.spec.timeout then
        local t = c.started + c.spec.timeout
        if not next_deadline or t < next_deadline then next_deadline = t end
      end
      if c.spec.cpu_time then
        -- CPU time is the group's, all processes together: look at it every 20 ms.
        local t = sys.clock_gettime("monotonic") + 0.02
        if not next_deadline or t < next_deadline then next_deadline = t end
      end
    end
    local now = sys.clock_gettime("monotonic")
    local ready = sys.poll(fds, next_deadline and math.max(0, next_deadline - now) or nil)
    local set = {}
    for _, fd in ipairs(ready or {}) do set[fd] = true end
    now = sys.clock_gettime("monotonic")
    for _, c in ipairs(list) do
      pump_output(c, set)
      pump_tty(c, set)
      if c.spec.timeout and not c.timed_out and now >= c.started + c.spec.timeout then
        c.timed_out = true
        cg(c.group, sys.cgroup_set, "cgroup.kill", 1)
        sys.kill(c.pid, "KILL")
      end
      if c.spec.cpu_time and not c.cpu_time_exceeded and c.state == "running" then
        local used = cgroup_number(cg(c.group, sys.cgroup_get, "cpu.stat"), "usage_usec")
        if used and used / 1e6 >= c.spec.cpu_time then
          c.cpu_time_exceeded = true
          cg(c.group, sys.cgroup_set, "cgroup.kill", 1)
          sys.kill(c.pid, "KILL")
        end
      end
      if set[c.pidfd] then
        local st = sys.wait(c.pid, { nohang = true })
        if st then
          finish(c, st)
          return c
        end
      end
    end
    if deadline and now >= deadline then return nil end
  end
end

--- Waits for the container to end; returns its result, or nil when `timeout` seconds pass first.
function Container:wait(timeout)
  if self.state == "exited" then return self.result end
  if self.state ~= "running" then error("container " .. self.id .. " is " .. self.state .. ", not running", 2) end
  local deadline = timeout and (sys.clock_gettime("monotonic") + timeout)
  local done = wait_some({ self }, deadline)
  if not done then return nil end
  if self.tty_saved then sys.tcsetattr(0, self.tty_saved) self.tty_saved = nil end
  return self.result
end

--- Waits until one of the containers ends; returns it and its result.
function container.wait_any(list, timeout)
  if type(list) ~= "table" or #list == 0 then error("container.wait_any: a list of started containers expected", 2) end
  for _, c in ipairs(list) do
    if getmetatable(c) ~= Container then error("container.wait_any: not a container: " .. tostring(c), 2) end
    if c.state == "exited" then return c, c.result end
    if c.state ~= "running" then error("container.wait_any: container " .. c.id .. " is " .. c.state, 2) end
  end
  local done = wait_some(list, timeout and (sys.clock_gettime("monotonic") + timeout))
  if done then return done, done.result end
  return nil
end

--- Sends a signal (default TERM) to the container's first process.
function Container:kill(sig)
  if self.state ~= "running" then return false end
  return sys.kill(self.pid, sig or "TERM")
end

local function wait_frozen(self, want)
  for _ = 1, 500 do
    if cg(self.group, sys.cgroup_get, "cgroup.freeze") == want then return true end
    sys.nanosleep(0.002)
  end
  error("container " .. self.id .. ": the freezer did not settle", 3)
end

function Container:pause()
  if self.state ~= "running" then error("container " .. self.id .. " is " .. self.state .. ", not running", 2) end
  if not self.group then error("container " .. self.id .. ": pause needs a cgroup, and this one has none", 2) end
  assert(cg(self.group, sys.cgroup_set, "cgroup.freeze", 1))
  wait_frozen(self, "1")
  self.paused = true
end

function Container:resume()
  assert(cg(self.group, sys.cgroup_set, "cgroup.freeze", 0))
  wait_frozen(self, "0")
  self.paused = false
end

--- Current usage: memory, pids and cpu from the container's cgroup.
function Container:stats()
  local cpu = cg(self.group, sys.cgroup_get, "cpu.stat")
  return {
    memory = tonumber(cg(self.group, sys.cgroup_get, "memory.current") or ""),
    memory_peak = tonumber(cg(self.group, sys.cgroup_get, "memory.peak") or ""),
    pids = tonumber(cg(self.group, sys.cgroup_get, "pids.current") or ""),
    cpu = { user = (cgroup_number(cpu, "user_usec") or 0) / 1e6, sys = (cgroup_number(cpu, "system_usec") or 0) / 1e6 },
    paused = self.paused or false, state = self.state,
  }
end

--- Runs argv inside the running container (setns into its namespaces) and waits for it.
-- opts: env (added to the container's), cwd, user, stdin (string), capture (default true).
function Container:exec(argv, opts)
  if self.state ~= "running" then error("container " .. self.id .. " is " .. self.state .. ", not running", 2) end
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then error("exec: argv must be a list of strings", 2) end
  opts = opts or {}
  process.check_options("container:exec", opts, { env = true, cwd = true, user = true, stdin = true, capture = true })
  local env = {}
  for k, v in pairs(self.spec.env) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local user = opts.user and parse_user(opts.user) or self.spec.user
  local stdio = process.stdio(opts.stdin, opts.capture ~= false)
  local rep_r, rep_w = assert(sys.pipe())
  local target = self.pid
  local kinds = { "user", "cgroup", "ipc", "uts", "net", "pid", "mnt" }
  local pid = assert(sys.fork())
  if pid == 0 then
    local ok, err = pcall(function()
      check(sys.prctl("set_dumpable", false))
      if self.group then check(cg(self.group, sys.cgroup_attach, sys.getpid())) end
      for _, k in ipairs(kinds) do
        local flag = ({ mnt = "mount" })[k] or k
        if self.spec.namespaces[flag] then check(sys.setns("/proc/" .. target .. "/ns/" .. k, flag)) end
      end
    end)
    if not ok then sys.write(rep_w, "setns: " .. tostring(err.message or err)) sys._exit(125) end
    -- The pid namespace applies to children: the command runs in a grandchild.
    local inner = sys.fork()
    if inner ~= 0 then
      -- This process only waits: its copies of the pipes would keep the command's stdin open.
      sys.close_range(3)
      local st = sys.wait(inner)
      sys._exit(st and (st.code or 128 + (st.signal or 0)) or 125)
    end
    stdio:child()
    local okh, herr = pcall(harden, self.spec, user)
    if not okh then sys.write(rep_w, tostring(herr.message or herr)) sys._exit(126) end
    local okc, msg = sys.chdir(opts.cwd or self.spec.cwd)
    if not okc then sys.write(rep_w, msg) sys._exit(126) end
    sys.close_range(3, nil, { "cloexec" })
    if self.spec.seccomp_program then
      local oks, smsg = sys.seccomp_load(self.spec.seccomp_program)
      if not oks then sys.write(rep_w, smsg) sys._exit(126) end
    end
    local _, emsg, errno = sys.exec(argv, env)
    sys.write(rep_w, emsg)
    sys._exit(errno == "ENOENT" and 127 or 126)
  end
  sys.close(rep_w)
  local stdout, stderr = stdio:finish(self.spec.capture_limit)
  local report = process.read_all(rep_r)
  sys.close(rep_r)
  local st = assert(sys.wait(pid))
  if report ~= "" then
    raise("container exec failed: " .. report, { step = "exec", code = st.code }, 2)
  end
  local code = st.code
  local result = { code = code, stdout = stdout, stderr = stderr, status = "exited" }
  if code and code > 128 then result.status, result.signal = "signaled", code - 128 end
  return result
end

--- Kills whatever still runs and removes the cgroup, the state record and temporary files.
-- Safe to call more than once, and from __close and __gc.
function Container:remove()
  if self.state == "removed" or self.owner ~= sys.getpid() then return end
  if self.pid and self.state ~= "exited" then
    if self.paused then pcall(cg, self.group, sys.cgroup_set, "cgroup.freeze", 0) end
    cg(self.group, sys.cgroup_set, "cgroup.kill", 1)
    sys.kill(self.pid, "KILL")
    local st = sys.wait(self.pid)
    if st and not self.exit then
      self.exit = st
      self.ended = sys.clock_gettime("monotonic")
    end
  end
  for _, cap in pairs(self.capture or {}) do if cap.fd then cap.fd:close() cap.fd = nil end end
  if self.tty_master then self.tty_master:close() self.tty_master = nil end
  if self.pidfd then self.pidfd:close() self.pidfd = nil end
  if self.feeder then sys.kill(self.feeder, "KILL") sys.wait(self.feeder) self.feeder = nil end
  if self.tty_saved then sys.tcsetattr(0, self.tty_saved) self.tty_saved = nil end
  local problems = {}
  -- The group empties once the kernel has reaped the killed processes.
  for _ = 1, 200 do
    if not self.group then break end
    local ok, msg, errno = sys.cgroup_remove(self.group)
    if ok or errno == "ENOENT" then break end
    if errno ~= "EBUSY" then problems[#problems + 1] = msg break end
    cg(self.group, sys.cgroup_set, "cgroup.kill", 1)
    sys.nanosleep(0.005)
  end
  if self.cleanup then
    for i = #self.cleanup, 1, -1 do
      local ok, err = pcall(self.cleanup[i])
      if not ok then problems[#problems + 1] = tostring(err) end
    end
    self.cleanup = nil
  end
  if self.container_dir then
    -- The upper folder goes with the container, unless commit saved it as a layer first.
    local ok, msg = sys.remove_tree(self.container_dir)
    if not ok then problems[#problems + 1] = msg else self.container_dir = nil end
  end
  if self.record and #problems == 0 then self.record:remove() self.record = nil end
  live[self.id] = nil
  self.state = "removed"
  if #problems > 0 then error("container " .. self.id .. " remove: " .. table.concat(problems, "; "), 2) end
end

--- Saves the container's upper folder as a new layer on top of its image, as `name`.
function Container:commit(name, changes)
  if not self.container_dir then error("container " .. self.id .. ": commit needs a container started from an image", 2) end
  local image = require "moonbox.image"
  local layer = image.layer_from_dir(self.container_dir .. "/upper")
  local layers = {}
  for _, l in ipairs(self.spec.image.manifest.layers) do layers[#layers + 1] = l end
  layers[#layers + 1] = layer
  local config = image.new_config({ layer }, self.spec.image.config)
  config.history = config.history or {}
  table.insert(config.history, { created = config.created, created_by = "moonbox commit " .. self.id })
  for k, v in pairs(changes or {}) do config.config[k] = v end
  return image.store(name, config, layers)
end

--- Runs a container to the end: new, start, wait, remove. Returns the result table.
function container.run(spec)
  local c = container.new(spec)
  local ok, err = pcall(function()
    if c.spec.tty and sys.isatty(0) then
      c.tty_saved = sys.tcgetattr(0)
      sys.tcsetattr(0, c.tty_saved, "raw")
      local rows, cols = sys.winsize(0)
      c:start()
      if rows and rows > 0 then sys.winsize(c.tty_master, rows, cols) end
      sys.signal("WINCH", "catch")
    else
      c:start()
    end
    return c:wait()
  end)
  local result = c.result
  local okr, errr = pcall(c.remove, c)
  if not ok then error(err, 2) end
  if not okr then error(errr, 2) end
  return result
end

--- The result as JSON, for scripts that report to other tools.
function container.to_json(result, indent)
  return json.encode(result, indent and { indent = "  " } or nil)
end

return container
