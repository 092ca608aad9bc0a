-- moonbox.container.spec: a container spec, checked and normalized. Pure: it reads the image
-- store and stats paths, and changes nothing. Every bad input is refused here, with a message
-- naming the field, before anything is created.
local sys = require "moonbox.sys"
local check = require "moonbox.check"
local security = require "moonbox.security"

local spec = {}

local WHERE = "container spec"

-- runc's defaults (libcontainer/specconv), as data.
spec.defaults = {
  namespaces = { "mount", "uts", "ipc", "pid", "net", "cgroup" },
  capture_limit = 16 << 20,
  masked_paths = {
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi", "/sys/devices/virtual/powercap",
  },
  readonly_paths = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger" },
  devices = {
    { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
  },
  umask = tonumber("022", 8),
}

local SPEC_KEYS = {
  rootfs = true, command = true, hostname = true, env = true, cwd = true, user = true, namespaces = true,
  network = true, limits = true, mounts = true, readonly_rootfs = true, stdin = true, stdout = true,
  stderr = true, tty = true, timeout = true, init = true, setup = true, capture_limit = true, chroot = true,
  name = true, masked_paths = true, readonly_paths = true, cap_add = true, cap_drop = true, seccomp = true,
  no_new_privileges = true, rlimits = true, cpu_time = true, kill_on_output_limit = true, id_map = true, gid_map = true,
  mount_namespace = true, image = true, networks = true, ports = true,
  -- what an OCI bundle asks beyond a script's needs (moonbox.oci maps config.json onto these)
  default_mounts = true, devices = true, sysctl = true, join = true, exec_fifo = true, console_socket = true,
  detach = true, cgroup = true, capability_sets = true, additional_gids = true, umask = true, on_created = true,
  start_hooks = true, device_rules = true, keep_fds = true, root_propagation = true, cgroup_keys = true,
}
spec.keys = SPEC_KEYS
local LIMIT_KEYS = { memory = true, pids = true, cpus = true, swap = true, cpu_weight = true, disk = true }
local NAMESPACES = { mount = true, uts = true, ipc = true, pid = true, net = true, user = true, cgroup = true }

local function fail(message) check.fail(WHERE, message) end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

--- A user: a uid, "uid:gid", or names resolved in the container's /etc/passwd and /etc/group
-- ("nobody", "www-data:www-data", "1000:staff"), as runc does. Returns {uid=, gid=} when
-- numeric, else {user=, group=} for the child to resolve.
function spec.parse_user(user, where)
  where = where or WHERE
  if user == nil then return nil end
  if math.type(user) == "integer" then
    check.integer(where, "user", user, 0, 4294967294)
    return { uid = user, gid = user }
  end
  if type(user) ~= "string" or user == "" or user:find("[%s%z]") then
    check.fail(where, "user must be a uid, \"uid:gid\" or a user name (\"nobody\", \"www-data:www-data\"), got " .. check.show(user))
  end
  local u, g = user:match("^([^:]+):([^:]+)$")
  if not u then u = user:match("^([^:]+)$") end
  if not u then check.fail(where, "user must be a uid, \"uid:gid\" or a user name, got " .. check.show(user)) end
  local uid, gid = math.tointeger(tonumber(u:match("^%d+$") or "")), g and math.tointeger(tonumber(g:match("^%d+$") or ""))
  if uid and uid > 4294967294 then check.fail(where, "user id " .. u .. " is out of range") end
  if gid and gid > 4294967294 then check.fail(where, "group id " .. g .. " is out of range") end
  if uid and (gid or not g) then return { uid = uid, gid = gid or uid } end
  return { user = u, uid = uid, group = g, gid = gid }
end

local MOUNT_TYPES = { bind = true, tmpfs = true, proc = true, sysfs = true, devpts = true, mqueue = true, cgroup = true }

--- "SRC:DST[:ro]" or {type=, source=, target=, readonly=, size=, mode=, options=, flags=, data=}.
local function normalize_mount(m, i, elsewhere)
  local label = string.format("mounts[%d]", i)
  if type(m) == "string" then
    local src, dst, opt = m:match("^([^:]+):([^:]+):?(.*)$")
    if not src or (opt ~= "" and opt ~= "ro" and opt ~= "rw") then
      fail(string.format("%s %q: use SRC:DST or SRC:DST:ro", label, m))
    end
    m = { type = "bind", source = src, target = dst, readonly = opt == "ro" }
  end
  if type(m) ~= "table" then fail(label .. " must be a table or \"SRC:DST[:ro]\"") end
  check.options(WHERE .. " " .. label, m, { type = true, source = true, target = true, readonly = true, size = true, mode = true, options = true,
    flags = true, data = true, propagation = true })
  local kind = m.type or (m.source and "bind") or nil
  if not MOUNT_TYPES[kind] then fail(label .. ": type must be bind, tmpfs, proc, sysfs, devpts, mqueue or cgroup, got " .. check.show(kind)) end
  check.absolute(WHERE, label .. ".target", m.target)
  if m.readonly ~= nil then check.boolean(WHERE, label .. ".readonly", m.readonly) end
  local out = { type = kind, target = m.target, readonly = m.readonly or false }
  -- mount(2)'s own flags and data, as an OCI mount's options give them
  if m.flags ~= nil then out.flags = check.strings(WHERE, label .. ".flags", m.flags, true) end
  if m.data ~= nil then out.data = check.string(WHERE, label .. ".data", m.data, true) end
  if m.propagation ~= nil then
    out.propagation = check.strings(WHERE, label .. ".propagation", m.propagation)
    for i, p in ipairs(out.propagation) do
      check.one_of(WHERE, label .. ".propagation[" .. i .. "]", p, { "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable" })
    end
  end
  if m.source ~= nil and kind ~= "bind" then out.source = check.string(WHERE, label .. ".source", m.source) end
  if kind == "bind" then
    check.string(WHERE, label .. ".source", m.source)
    -- In a base mount namespace (a sandbox box's) sources live there: they are checked at start.
    local st = not elsewhere and sys.stat(m.source)
    if not elsewhere and not st then fail(string.format("%s: source %s does not exist", label, m.source)) end
    out.source, out.file = m.source, st and st.type ~= "dir" or false
  elseif kind == "tmpfs" then
    if m.target:match("^/+$") then fail(label .. ": a tmpfs on / would hide the rootfs (use readonly_rootfs, or limits.disk for a writable layer)") end
    if m.size ~= nil then out.size = check.size(WHERE, label .. ".size", m.size) end
    if m.mode ~= nil then
      if type(m.mode) == "string" and m.mode:match("^[0-7]+$") then
        out.mode = m.mode
      else
        out.mode = string.format("%o", check.integer(WHERE, label .. ".mode", m.mode, 0, tonumber("7777", 8)))
      end
    end
  end
  if m.options ~= nil then out.options = check.string(WHERE, label .. ".options", m.options) end
  return out
end

-- The environment: moonbox's defaults, then the image's Env, then the spec's own, each
-- overriding the one before.
local function merge_env(spec_env, image_env, defaults)
  local env = {}
  for k, v in pairs(defaults) do env[k] = v end
  for _, kv in ipairs(image_env or {}) do
    local k, v = tostring(kv):match("^([^=]+)=(.*)$")
    if k then env[k] = v end
  end
  for k, v in pairs(spec_env) do env[k] = v end
  return env
end

local DEVICE_TYPES = { c = "char", b = "block", p = "fifo", u = "char" }
local JOINABLE = { net = true, ipc = true, uts = true, pid = true, cgroup = true }
local CAP_SETS = { bounding = true, effective = true, permitted = true, inheritable = true, ambient = true }

-- The keys an OCI bundle needs (see SPEC_KEYS): checked here, applied by plan, child and init.
function spec.check_runtime_keys(s, c)
  c.default_mounts = s.default_mounts ~= false
  if s.default_mounts ~= nil then check.boolean(WHERE, "default_mounts", s.default_mounts) end
  c.devices = {}
  if s.devices ~= nil then
    if type(s.devices) ~= "table" then fail("devices must be a list of {path=, type=, major=, minor=, mode=, uid=, gid=}") end
    for i, d in ipairs(s.devices) do
      local label = "devices[" .. i .. "]"
      if type(d) ~= "table" then fail(label .. " must be a table") end
      check.options(WHERE .. " " .. label, d, { path = true, type = true, major = true, minor = true, mode = true, uid = true, gid = true })
      check.absolute(WHERE, label .. ".path", d.path)
      local t = DEVICE_TYPES[d.type]
      if not t then fail(label .. ".type must be c, b, u or p, got " .. check.show(d.type)) end
      c.devices[i] = { path = d.path, type = t, major = t ~= "fifo" and check.integer(WHERE, label .. ".major", d.major or 0, 0) or 0,
        minor = t ~= "fifo" and check.integer(WHERE, label .. ".minor", d.minor or 0, 0) or 0,
        mode = d.mode ~= nil and check.integer(WHERE, label .. ".mode", d.mode, 0, tonumber("7777", 8)) or tonumber("666", 8),
        uid = d.uid ~= nil and check.integer(WHERE, label .. ".uid", d.uid, 0) or nil,
        gid = d.gid ~= nil and check.integer(WHERE, label .. ".gid", d.gid, 0) or nil }
    end
  end
  c.sysctl = {}
  if s.sysctl ~= nil then
    if type(s.sysctl) ~= "table" then fail("sysctl must be a table {[\"net.ipv4.ip_forward\"] = \"1\"}") end
    for k, v in pairs(s.sysctl) do
      if type(k) ~= "string" or not k:match("^[%w_][%w_.%-/]*$") or k:find("%.%.") then fail("sysctl: bad name " .. check.show(k)) end
      if type(v) ~= "string" and type(v) ~= "number" then fail("sysctl." .. k .. " must be a string") end
      c.sysctl[#c.sysctl + 1] = { k, tostring(v) }
    end
    table.sort(c.sysctl, function(a, b) return a[1] < b[1] end)
  end
  c.join = {}
  if s.join ~= nil then
    if type(s.join) ~= "table" then fail("join must be a table {net = \"/proc/PID/ns/net\", ...}") end
    for k, v in pairs(s.join) do
      if not JOINABLE[k] then fail("join: namespace " .. check.show(k) .. " cannot be joined (net, ipc, uts, pid, cgroup)") end
      c.join[k] = check.absolute(WHERE, "join." .. k, v)
      c.namespaces[k == "mnt" and "mount" or k] = nil
    end
  end
  for _, k in ipairs({ "exec_fifo", "console_socket", "cgroup" }) do
    if s[k] ~= nil then c[k] = check.string(WHERE, k, s[k]) end
  end
  if c.console_socket and not c.tty then fail("console_socket needs tty = true") end
  if s.detach ~= nil then c.detach = check.boolean(WHERE, "detach", s.detach) end
  if s.capability_sets ~= nil then
    if type(s.capability_sets) ~= "table" then fail("capability_sets must be a table {bounding=, effective=, permitted=, inheritable=, ambient=}") end
    local sets = {}
    for k, v in pairs(s.capability_sets) do
      if not CAP_SETS[k] then fail("capability_sets: unknown set " .. check.show(k)) end
      local ok, list = pcall(security.capabilities, { "all" }, nil)
      local known = {}
      for _, cap in ipairs(ok and list or {}) do known[cap] = true end
      if type(v) ~= "table" then fail("capability_sets." .. k .. " must be a list of capability names") end
      local out = {}
      for _, cap in ipairs(v) do
        local name = cap:lower():gsub("^cap_", "")
        if not known[name] then fail("capability_sets." .. k .. ": unknown capability " .. check.show(cap)) end
        out[#out + 1] = name
      end
      sets[k] = out
    end
    c.capability_sets = sets
    c.capabilities = sets.bounding or c.capabilities
  end
  if s.additional_gids ~= nil then
    if type(s.additional_gids) ~= "table" then fail("additional_gids must be a list of group ids") end
    c.additional_gids = {}
    for i, g in ipairs(s.additional_gids) do c.additional_gids[i] = check.integer(WHERE, "additional_gids[" .. i .. "]", g, 0, 4294967294) end
  end
  if s.cgroup_keys ~= nil then
    -- raw keys (v2 names, or a v1 controller's own files) written after the limits, in order
    if type(s.cgroup_keys) ~= "table" then fail("cgroup_keys must be a list of {key, value}") end
    c.cgroup_keys = {}
    for i, kv in ipairs(s.cgroup_keys) do
      if type(kv) ~= "table" or type(kv[1]) ~= "string" or (type(kv[2]) ~= "string" and type(kv[2]) ~= "number") then
        fail("cgroup_keys[" .. i .. "] must be {\"key\", value}")
      end
      c.cgroup_keys[i] = { kv[1], tostring(math.tointeger(kv[2]) or kv[2]), optional = kv.optional == true }
    end
  end
  if s.root_propagation ~= nil then
    c.root_propagation = check.one_of(WHERE, "root_propagation", s.root_propagation,
      { "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable" })
  end
  if s.keep_fds ~= nil then c.keep_fds = check.integer(WHERE, "keep_fds", s.keep_fds, 0, 65536) end
  if s.device_rules ~= nil then c.device_rules = check.strings(WHERE, "device_rules", s.device_rules) end
  if s.umask ~= nil then c.umask = check.integer(WHERE, "umask", s.umask, 0, tonumber("777", 8)) end
  if s.on_created ~= nil and type(s.on_created) ~= "function" then fail("on_created must be a function(container)") end
  c.on_created = s.on_created
  if s.start_hooks ~= nil then
    if type(s.start_hooks) ~= "table" then fail("start_hooks must be a list of {path=, args=, env=, timeout=}") end
    c.start_hooks = s.start_hooks
  end
end

--- Checks and normalizes a spec. Returns the normalized container description.
function spec.check(s)
  if type(s) ~= "table" then check.fail(WHERE, "a table expected, got " .. type(s)) end
  for k in pairs(s) do
    if not SPEC_KEYS[k] then fail("unknown field '" .. tostring(k) .. "' (known: " .. table.concat(sorted_keys(SPEC_KEYS), ", ") .. ")") end
  end
  -- An image fills what the spec leaves out, as docker does: command, env, cwd, user.
  local img, image_config
  if s.image ~= nil then
    if s.rootfs ~= nil then fail("give rootfs or image, not both") end
    local resolved, err
    if type(s.image) == "table" and s.image.manifest and s.image.config then
      resolved = s.image  -- an image as image.resolve gives it (a build step's layers so far)
    else
      check.string(WHERE, "image", s.image)
      resolved, err = require("moonbox.image").resolve(s.image)
      if not resolved then fail(err) end
    end
    img, image_config = resolved, resolved.config.config or {}
  else
    if s.rootfs == nil then fail("rootfs is required (a folder holding the container's files), or an image") end
    check.string(WHERE, "rootfs", s.rootfs)
    local st = sys.stat(s.rootfs)
    if not st or st.type ~= "dir" then fail("rootfs " .. s.rootfs .. " is not a folder") end
  end
  local command = s.command
  if command == nil and image_config then
    command = {}
    for _, a in ipairs(image_config.Entrypoint or {}) do command[#command + 1] = a end
    for _, a in ipairs(image_config.Cmd or {}) do command[#command + 1] = a end
    if #command == 0 then command = nil end
  end
  if command == nil then fail("command is required (a list like {\"/bin/sh\", \"-c\", \"...\"})") end
  check.strings(WHERE, "command", command)

  local c = { rootfs = s.rootfs, command = command, image = img, hostname = s.hostname }
  if s.name ~= nil then c.name = check.name(WHERE, "name", s.name) end
  if c.hostname ~= nil then
    check.string(WHERE, "hostname", c.hostname)
    if #c.hostname > 64 then fail("hostname must be at most 64 characters") end
  end
  local cwd = s.cwd or (image_config and image_config.WorkingDir ~= "" and image_config.WorkingDir) or nil
  c.cwd = cwd and check.absolute(WHERE, "cwd", cwd) or "/"
  -- An image's WorkingDir is made when missing, as runc and docker do; a spec's cwd must exist.
  c.make_cwd = s.cwd == nil and cwd ~= nil
  c.user = spec.parse_user(s.user or (image_config and image_config.User ~= "" and image_config.User) or nil)
  for _, k in ipairs({ "readonly_rootfs", "tty", "init", "chroot", "kill_on_output_limit" }) do
    if s[k] ~= nil then check.boolean(WHERE, k, s[k]) end
    c[k] = s[k] or false
  end
  if s.timeout ~= nil then c.timeout = check.seconds(WHERE, "timeout", s.timeout) end
  if s.cpu_time ~= nil then c.cpu_time = check.seconds(WHERE, "cpu_time", s.cpu_time) end
  if s.setup ~= nil and type(s.setup) ~= "function" then fail("setup must be a function(sys)") end
  c.setup = s.setup
  c.capture_limit = s.capture_limit ~= nil and check.size(WHERE, "capture_limit", s.capture_limit) or spec.defaults.capture_limit
  c.masked_paths = s.masked_paths ~= nil and check.strings(WHERE, "masked_paths", s.masked_paths, true) or spec.defaults.masked_paths
  c.readonly_paths = s.readonly_paths ~= nil and check.strings(WHERE, "readonly_paths", s.readonly_paths, true) or spec.defaults.readonly_paths
  if s.mount_namespace ~= nil then c.mount_namespace = check.string(WHERE, "mount_namespace", s.mount_namespace) end

  -- network and namespaces
  c.network = s.network or "none"
  if c.network ~= "none" and c.network ~= "host" then fail("network must be \"none\" or \"host\", got " .. check.show(c.network)) end
  if s.namespaces ~= nil then check.strings(WHERE, "namespaces", s.namespaces) end
  c.namespaces = {}
  for _, n in ipairs(s.namespaces or spec.defaults.namespaces) do
    if not NAMESPACES[n] then fail("unknown namespace '" .. n .. "' (mount, uts, ipc, pid, net, user, cgroup)") end
    if not (n == "net" and c.network == "host") then c.namespaces[n] = true end
  end
  if c.network == "none" and not s.namespaces then c.namespaces.net = true end
  if not c.namespaces.mount then fail("the mount namespace is required (the rootfs is mounted in it)") end
  if s.networks ~= nil then
    if c.network == "host" then fail("networks need the container's own network namespace, not network = \"host\"") end
    c.networks = require("moonbox.net").check_networks(WHERE, s.networks)
    if #c.networks > 0 and not c.namespaces.net then fail("networks need the net namespace") end
    if #c.networks > 0 and sys.geteuid() ~= 0 then
      fail("networks need root (a rootless container has its own lo, and ports can still be published)")
    end
  end
  if s.ports ~= nil then
    if c.network == "host" then fail("ports: with network = \"host\" the container uses the host's ports; there is nothing to publish") end
    if type(s.ports) ~= "table" then fail("ports must be a list like {\"8080:80\", \"127.0.0.1:5353:53/udp\"}, got " .. check.show(s.ports)) end
    c.ports = {}
    local proxy = require "moonbox.net.proxy"
    for i, p in ipairs(s.ports) do c.ports[i] = proxy.parse(WHERE .. " ports[" .. i .. "]", p) end
    if not c.namespaces.net then fail("ports need the net namespace") end
  end
  if sys.geteuid() ~= 0 then c.namespaces.user = true end  -- rootless: the user is root in a user namespace
  if s.id_map ~= nil then
    if not c.namespaces.user then fail("id_map needs a user namespace (namespaces = {..., \"user\"})") end
    if type(s.id_map) ~= "table" or #s.id_map == 0 then fail("id_map must be a list of {inside, outside, count}") end
    for i, m in ipairs(s.id_map) do
      if type(m) ~= "table" or #m ~= 3 then fail(string.format("id_map[%d] must be {inside, outside, count}", i)) end
      for j = 1, 3 do check.integer(WHERE, string.format("id_map[%d][%d]", i, j), m[j], j == 3 and 1 or 0, 4294967295) end
    end
    c.id_map = s.id_map
  end
  if s.gid_map ~= nil then
    -- groups mapped apart from users (an OCI bundle's gidMappings); id_map then maps users only
    if not c.id_map then fail("gid_map needs id_map") end
    if type(s.gid_map) ~= "table" or #s.gid_map == 0 then fail("gid_map must be a list of {inside, outside, count}") end
    for i, m in ipairs(s.gid_map) do
      if type(m) ~= "table" or #m ~= 3 then fail(string.format("gid_map[%d] must be {inside, outside, count}", i)) end
      for j = 1, 3 do check.integer(WHERE, string.format("gid_map[%d][%d]", i, j), m[j], j == 3 and 1 or 0, 4294967295) end
    end
    c.gid_map = s.gid_map
  end

  -- env: a map; numbers are written as text, as docker does with them
  local env = {}
  if s.env ~= nil then
    if type(s.env) ~= "table" then fail("env must be a table {NAME = \"value\"}") end
    for k, v in pairs(s.env) do
      if math.type(k) == "integer" and type(v) == "string" then
        k, v = v:match("^([^=]+)=(.*)$")
        if not k then fail("env entries in list form must be \"NAME=value\", got " .. check.show(s.env[k])) end
      end
      if type(k) ~= "string" or k == "" or k:find("[=%z]") then fail("env: bad variable name " .. check.show(k)) end
      if type(v) == "number" then v = math.tointeger(v) and tostring(math.tointeger(v)) or tostring(v) end
      if type(v) ~= "string" then fail("env." .. k .. " must be a string or a number, got " .. type(v)) end
      if v:find("\0", 1, true) then fail("env." .. k .. " contains a NUL byte") end
      env[k] = v
    end
  end
  c.env = merge_env(env, image_config and image_config.Env, {
    PATH = sys.default_path,
    HOSTNAME = c.hostname,
    TERM = c.tty and (os.getenv("TERM") or "xterm") or nil,
  })
  c.env_home_given = env.HOME ~= nil

  -- limits
  local l = s.limits or {}
  if type(l) ~= "table" then fail("limits must be a table") end
  for k in pairs(l) do
    if not LIMIT_KEYS[k] then fail("limits: unknown limit '" .. tostring(k) .. "' (memory, swap, pids, cpus, cpu_weight, disk)") end
  end
  c.limits = {}
  if l.memory ~= nil then c.limits.memory = check.size(WHERE, "limits.memory", l.memory, true) end
  if l.swap ~= nil then c.limits.swap = check.size(WHERE, "limits.swap", l.swap, true) end
  if l.pids ~= nil then c.limits.pids = check.integer(WHERE, "limits.pids", l.pids, 1, 4194304) end
  if l.cpus ~= nil then c.limits.cpus = check.number(WHERE, "limits.cpus", l.cpus, 0, 4096, true) end
  if l.cpu_weight ~= nil then c.limits.cpu_weight = check.integer(WHERE, "limits.cpu_weight", l.cpu_weight, 1, 10000) end
  if l.disk ~= nil then
    c.limits.disk = check.size(WHERE, "limits.disk", l.disk)
    if c.limits.disk < 1 << 20 then fail("limits.disk must be at least 1M") end
    if c.readonly_rootfs then fail("limits.disk limits what the container writes to its rootfs; readonly_rootfs leaves nothing to write") end
    if sys.geteuid() ~= 0 then fail("limits.disk needs root (it mounts a loop device)") end
  end

  -- mounts
  c.mounts = {}
  if s.mounts ~= nil then
    if type(s.mounts) ~= "table" then fail("mounts must be a list") end
    for i, m in ipairs(s.mounts) do c.mounts[i] = normalize_mount(m, i, s.mount_namespace ~= nil) end
  end

  -- security: docker's capabilities and seccomp profile, and no_new_privs, unless the spec says otherwise
  for _, k in ipairs({ "cap_add", "cap_drop" }) do
    if s[k] ~= nil and type(s[k]) ~= "table" then fail(k .. " must be a list of capability names") end
  end
  local okc, caps = pcall(security.capabilities, s.cap_add, s.cap_drop)
  if not okc then fail((tostring(caps):gsub("^.-: ", ""))) end
  c.capabilities = caps
  if s.seccomp == false then
    c.seccomp = false
  elseif s.seccomp == nil or s.seccomp == true then
    c.seccomp = security.default_seccomp(caps)
  else
    local oks, profile = pcall(security.resolve_seccomp, s.seccomp, caps)
    if not oks then fail(tostring(profile)) end
    c.seccomp = profile
  end
  if s.no_new_privileges ~= nil then check.boolean(WHERE, "no_new_privileges", s.no_new_privileges) end
  c.no_new_privileges = s.no_new_privileges ~= false
  c.rlimits = {}
  if c.cpu_time then
    -- A backstop per process; the group's total is watched by the parent.
    c.rlimits[1] = { "cpu", math.ceil(c.cpu_time) + 1, math.ceil(c.cpu_time) + 2 }
  end
  if s.rlimits ~= nil then
    if type(s.rlimits) ~= "table" then fail("rlimits must be a table {nofile = 64, ...}") end
    for k, v in pairs(s.rlimits) do
      if type(k) ~= "string" then fail("rlimits keys must be resource names") end
      local soft, hard = v, v
      if type(v) == "table" then soft, hard = v[1], v[2] or v[1] end
      for _, x in ipairs({ soft, hard }) do
        if x ~= "unlimited" then check.integer(WHERE, "rlimits." .. k, x, 0) end
      end
      c.rlimits[#c.rlimits + 1] = { k, soft == "unlimited" and soft or math.tointeger(soft), hard == "unlimited" and hard or math.tointeger(hard) }
    end
    table.sort(c.rlimits, function(a, b) return a[1] < b[1] end)
  end

  spec.check_runtime_keys(s, c)

  -- stdio
  c.stdin = s.stdin or (c.tty and "inherit" or "null")
  if type(c.stdin) ~= "string" then fail("stdin must be a string, \"inherit\" or \"null\"") end
  for _, k in ipairs({ "stdout", "stderr" }) do
    local v = s[k] or "inherit"
    local ok = type(v) == "function" or (type(v) == "string" and (v == "inherit" or v == "capture" or v == "null" or v:sub(1, 1) == "/"))
    if not ok then
      fail(k .. " must be \"inherit\", \"capture\", \"null\", an absolute file path or a function(chunk), got " .. check.show(v))
    end
    c[k] = v
  end
  return c
end

return spec
