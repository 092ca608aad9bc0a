-- moonbox.oci.config: an OCI bundle's config.json (runtime-spec 1.x) mapped onto a
-- moonbox.container spec. One engine: everything config.json asks for becomes a spec key that
-- moonbox.container applies; what moonbox cannot honour is an error naming the field, never
-- dropped in silence. Labels for LSMs moonbox does not drive (AppArmor, SELinux) are accepted
-- with a warning.
local check = require "moonbox.check"
local errors = require "moonbox.errors"
local fs = require "moonbox.fs"
local json = require "moonbox.json"

local config = {}

local function fail(field, message)
  errors.raise("config.json: " .. field .. ": " .. message, { op = "config", code = 1 }, 0)
end

local function warn(warnings, field, message)
  warnings[#warnings + 1] = field .. ": " .. message
end

-- Fields of a table that moonbox does not know. The runtime spec says an unknown property must
-- not be an error (a newer spec may add it): each one is a warning. What moonbox knows but
-- cannot honour is an error, where it is mapped.
local unknown_fields = {}
local function only(field, t, known)
  if t == nil then return end
  if type(t) ~= "table" then fail(field, "an object expected") end
  for k, v in pairs(t) do
    if not known[k] and v ~= json.null then unknown_fields[#unknown_fields + 1] = field .. "." .. tostring(k) end
  end
end

local function set(list)
  local out = {}
  for _, k in ipairs(list) do out[k] = true end
  return out
end

-- mount(2) flags by option name (runc's table); "r"-prefixed ones are recursive.
local FLAG_OPTIONS = {
  ro = "ro", rw = "rw", nosuid = "nosuid", suid = false, nodev = "nodev", dev = false, noexec = "noexec", exec = false,
  sync = "sync", async = false, dirsync = "dirsync", remount = "remount", mand = "mandlock", nomand = false,
  atime = false, noatime = "noatime", diratime = false, nodiratime = "nodiratime", relatime = "relatime",
  norelatime = false, strictatime = "strictatime", nostrictatime = false, lazytime = "lazytime", nosymfollow = "nosymfollow",
  bind = "bind", rbind = "rbind", private = "private", rprivate = "rprivate", shared = "shared", rshared = "rshared",
  slave = "slave", rslave = "rslave", unbindable = "unbindable", runbindable = "runbindable", silent = "silent",
  defaults = false,
}

--- Splits OCI mount options into mount(2) flags and the data string.
function config.mount_options(options)
  local flags, data = {}, {}
  for _, o in ipairs(options or {}) do
    local f = FLAG_OPTIONS[o]
    if f then flags[#flags + 1] = f elseif f == nil then data[#data + 1] = o end
  end
  return flags, table.concat(data, ",")
end

local function mounts(spec_mounts, bundle)
  local out = {}
  for i, m in ipairs(spec_mounts or {}) do
    local field = "mounts[" .. (i - 1) .. "]"
    only(field, m, set({ "destination", "type", "source", "options", "uidMappings", "gidMappings" }))
    if m.uidMappings or m.gidMappings then fail(field, "idmapped mounts are not supported by moonbox") end
    if type(m.destination) ~= "string" or m.destination:sub(1, 1) ~= "/" then fail(field .. ".destination", "an absolute path expected") end
    local flags, data = config.mount_options(m.options)
    local is_bind = m.type == "bind"
    for _, f in ipairs(flags) do if f == "bind" or f == "rbind" then is_bind = true end end
    if is_bind then
      local source = m.source or ""
      if source:sub(1, 1) ~= "/" then source = bundle .. "/" .. source end
      local ro, rec = false, false
      local extra, propagation = {}, {}
      for _, f in ipairs(flags) do
        if f == "ro" then ro = true elseif f == "rbind" then rec = true
        elseif f:match("private$") or f:match("slave$") or f:match("shared$") or f:match("bindable$") then propagation[#propagation + 1] = f
        elseif f ~= "bind" and f ~= "rw" then extra[#extra + 1] = f
        end
      end
      if rec then extra[#extra + 1] = "rec" end
      out[#out + 1] = { type = "bind", source = source, target = m.destination, readonly = ro, flags = extra,
        propagation = #propagation > 0 and propagation or nil }
    else
      local kind = m.type or "tmpfs"
      local known = { proc = true, sysfs = true, devpts = true, mqueue = true, tmpfs = true, cgroup = true, cgroup2 = true }
      if not known[kind] then fail(field .. ".type", "filesystem " .. check.show(kind) .. " is not supported by moonbox") end
      -- propagation is set by a mount call of its own, after the mount
      local plain, propagation = {}, {}
      for _, f in ipairs(flags) do
        if f:match("private$") or f:match("slave$") or f:match("shared$") or f:match("bindable$") then propagation[#propagation + 1] = f else plain[#plain + 1] = f end
      end
      out[#out + 1] = { type = kind == "cgroup2" and "cgroup" or kind, source = m.source, target = m.destination, flags = plain, data = data,
        propagation = #propagation > 0 and propagation or nil }
    end
  end
  return out
end

local NS_TYPES = { pid = "pid", network = "net", mount = "mount", ipc = "ipc", uts = "uts", user = "user", cgroup = "cgroup" }

local RLIMITS = { RLIMIT_CPU = "cpu", RLIMIT_FSIZE = "fsize", RLIMIT_DATA = "data", RLIMIT_STACK = "stack", RLIMIT_CORE = "core",
  RLIMIT_RSS = "rss", RLIMIT_NPROC = "nproc", RLIMIT_NOFILE = "nofile", RLIMIT_MEMLOCK = "memlock", RLIMIT_AS = "as",
  RLIMIT_LOCKS = "locks", RLIMIT_SIGPENDING = "sigpending", RLIMIT_MSGQUEUE = "msgqueue", RLIMIT_NICE = "nice",
  RLIMIT_RTPRIO = "rtprio", RLIMIT_RTTIME = "rttime" }

-- Capability names as moonbox knows them ("net_bind_service").
local function caps(list)
  local out = {}
  for _, c in ipairs(list or {}) do out[#out + 1] = tostring(c):lower():gsub("^cap_", "") end
  return out
end

--- The process part (also a process.json for exec): {command=, env=, cwd=, user=, tty=,
-- capability_sets=, no_new_privileges=, rlimits=, additional_gids=, umask=, oom_score_adj=}.
function config.process(p, warnings, field, in_config)
  field = field or "process"
  local before = #unknown_fields
  if type(p) ~= "table" then fail(field, "an object expected") end
  only(field, p, set({ "terminal", "consoleSize", "user", "args", "commandLine", "env", "cwd", "capabilities", "rlimits",
    "noNewPrivileges", "apparmorProfile", "oomScoreAdj", "selinuxLabel", "ioPriority", "scheduler", "personality" }))
  if p.commandLine then fail(field .. ".commandLine", "is for Windows") end
  if p.ioPriority then fail(field .. ".ioPriority", "not supported by moonbox") end
  if p.scheduler then fail(field .. ".scheduler", "not supported by moonbox") end
  if type(p.args) ~= "table" or #p.args == 0 then fail(field .. ".args", "a non-empty list expected") end
  if type(p.cwd) ~= "string" or p.cwd:sub(1, 1) ~= "/" then fail(field .. ".cwd", "an absolute path expected") end
  local out = { command = p.args, cwd = p.cwd, tty = p.terminal == true, no_new_privileges = p.noNewPrivileges == true }
  local env = {}
  for i, kv in ipairs(p.env or {}) do
    if type(kv) ~= "string" or not kv:find("=", 1, true) then fail(field .. ".env[" .. (i - 1) .. "]", "NAME=value expected") end
    env[#env + 1] = kv
  end
  out.env = env
  local u = p.user or {}
  only(field .. ".user", u, set({ "uid", "gid", "umask", "additionalGids", "username" }))
  if u.username then fail(field .. ".user.username", "is for Windows") end
  out.user = string.format("%d:%d", math.tointeger(u.uid or 0) or 0, math.tointeger(u.gid or 0) or 0)
  out.additional_gids = u.additionalGids
  out.umask = u.umask
  if p.capabilities then
    only(field .. ".capabilities", p.capabilities, set({ "bounding", "effective", "permitted", "inheritable", "ambient" }))
    out.capability_sets = { bounding = caps(p.capabilities.bounding), effective = caps(p.capabilities.effective),
      permitted = caps(p.capabilities.permitted), inheritable = caps(p.capabilities.inheritable), ambient = caps(p.capabilities.ambient) }
  else
    out.capability_sets = { bounding = {}, effective = {}, permitted = {}, inheritable = {}, ambient = {} }
  end
  if p.rlimits then
    out.rlimits = {}
    for i, r in ipairs(p.rlimits) do
      local name = RLIMITS[r.type]
      if not name then fail(field .. ".rlimits[" .. (i - 1) .. "].type", "unknown limit " .. check.show(r.type)) end
      out.rlimits[name] = { r.soft, r.hard }
    end
  end
  if p.apparmorProfile and p.apparmorProfile ~= "" then warn(warnings, field .. ".apparmorProfile", "ignored (moonbox does not drive AppArmor)") end
  if p.selinuxLabel and p.selinuxLabel ~= "" then warn(warnings, field .. ".selinuxLabel", "ignored (moonbox does not drive SELinux)") end
  out.oom_score_adj = p.oomScoreAdj
  if not in_config then  -- a process.json of exec: its own warnings
    for i = before + 1, #unknown_fields do warn(warnings, unknown_fields[i], "unknown to moonbox, ignored") end
  end
  return out
end

local function id_map(maps, field)
  local out = {}
  for i, m in ipairs(maps or {}) do
    out[i] = { m.containerID, m.hostID, m.size }
    for j, v in ipairs(out[i]) do
      if math.tointeger(v) == nil then fail(field .. "[" .. (i - 1) .. "]", "containerID, hostID and size must be whole numbers") end
      out[i][j] = math.tointeger(v)
    end
  end
  return out
end

-- cgroupsPath: "/a/b" (from the hierarchy's root, as runc takes it), "a/b" (below moonbox's own
-- cgroup parent), or systemd's "slice:prefix:name" (/parent.slice/slice/prefix-name.scope; the
-- systemd cgroup manager is not asked, the folders are made as it would name them).
function config.cgroup_path(path, id)
  if path == nil or path == "" then return "oci/" .. id end
  local slice, prefix, name = path:match("^([^:/]*):([^:]*):([^:]*)$")
  local rel, absolute
  if slice then
    slice = slice ~= "" and slice or "system.slice"
    -- "a-b.slice" lives in "a.slice/a-b.slice", as systemd nests them
    local parts, acc = {}, nil
    for piece in slice:gsub("%.slice$", ""):gmatch("[^-]+") do
      acc = acc and (acc .. "-" .. piece) or piece
      parts[#parts + 1] = acc .. ".slice"
    end
    rel = table.concat(parts, "/") .. "/" .. (prefix ~= "" and (prefix .. "-") or "") .. name .. ".scope"
    absolute = true
  else
    absolute = path:sub(1, 1) == "/"
    rel = path:gsub("^/+", ""):gsub("/+$", "")
  end
  for part in rel:gmatch("[^/]+") do
    if part == "." or part == ".." or not part:match("^[%w._-]+$") then fail("linux.cgroupsPath", "bad component " .. check.show(part)) end
  end
  if rel == "" then fail("linux.cgroupsPath", "empty") end
  return absolute and ("/" .. rel) or ("oci/" .. rel)
end

local function resources(r, warnings)
  if r == nil then return {}, nil, {} end
  local keys = {}
  local function key(k, v) keys[#keys + 1] = { k, v } end
  only("linux.resources", r, set({ "devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma", "unified" }))
  local limits = {}
  local m = r.memory
  if m then
    only("linux.resources.memory", m, set({ "limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy", "checkBeforeUpdate" }))
    if m.limit and m.limit > 0 then limits.memory = math.tointeger(m.limit) end
    if m.swap and m.swap > 0 and limits.memory then limits.swap = math.max(0, math.tointeger(m.swap) - limits.memory) end
    if m.swap == -1 then limits.swap = "max" end
    if m.reservation and m.reservation > 0 then key("memory.low", math.tointeger(m.reservation)) end
    -- deprecated, and gone from newer kernels: set where the files are, else a warning
    if m.kernel and m.kernel ~= 0 then keys[#keys + 1] = { "memory.kmem.limit_in_bytes", math.tointeger(m.kernel), optional = true } end
    if m.kernelTCP and m.kernelTCP ~= 0 then keys[#keys + 1] = { "memory.kmem.tcp.limit_in_bytes", math.tointeger(m.kernelTCP), optional = true } end
    if m.swappiness then key("memory.swappiness", math.tointeger(m.swappiness)) end
    if m.disableOOMKiller then key("memory.oom_control", 1) end
  end
  local c = r.cpu
  if c then
    only("linux.resources.cpu", c, set({ "shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle" }))
    -- quota and period exactly as given (a cpus number would round them to moonbox's period)
    if (c.quota and c.quota > 0) or (c.period and c.period > 0) then
      key("cpu.max", string.format("%s %d", (c.quota and c.quota > 0) and tostring(math.tointeger(c.quota)) or "max",
        (c.period and c.period > 0) and math.tointeger(c.period) or 100000))
    end
    if c.shares and c.shares > 0 then
      if require("moonbox.sys").cgroup_version() == 1 then
        key("cpu.shares", math.tointeger(c.shares))  -- exact, not through a weight
      else
        limits.cpu_weight = math.max(1, math.min(10000, 1 + ((math.max(c.shares, 2) - 2) * 9999) // 262142))
      end
    end
    if c.cpus and c.cpus ~= "" then key("cpuset.cpus", c.cpus) end
    if c.mems and c.mems ~= "" then key("cpuset.mems", c.mems) end
    if c.realtimePeriod and c.realtimePeriod ~= 0 then key("cpu.rt_period_us", math.tointeger(c.realtimePeriod)) end
    if c.realtimeRuntime and c.realtimeRuntime ~= 0 then key("cpu.rt_runtime_us", math.tointeger(c.realtimeRuntime)) end
    if c.burst and c.burst ~= 0 then fail("linux.resources.cpu.burst", "not supported by moonbox") end
    if c.idle and c.idle ~= 0 then fail("linux.resources.cpu.idle", "not supported by moonbox") end
  end
  if r.pids and r.pids.limit and r.pids.limit > 0 then limits.pids = math.tointeger(r.pids.limit) end
  if r.blockIO then
    only("linux.resources.blockIO", r.blockIO, set({ "weight", "leafWeight", "weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice", "throttleWriteIOPSDevice" }))
    local b = r.blockIO
    local v1 = require("moonbox.sys").cgroup_version() == 1
    if b.weight and b.weight > 0 then
      if v1 then key("blkio.weight", math.tointeger(b.weight)) else key("io.weight", math.tointeger(b.weight)) end
    end
    if b.leafWeight and b.leafWeight > 0 then
      if not v1 then fail("linux.resources.blockIO.leafWeight", "cgroup v2 has no leaf weight") end
      key("blkio.leaf_weight", math.tointeger(b.leafWeight))
    end
    for _, d in ipairs(b.weightDevice or {}) do
      if not v1 then fail("linux.resources.blockIO.weightDevice", "not supported by moonbox on cgroup v2") end
      if d.weight then key("blkio.weight_device", string.format("%d:%d %d", d.major, d.minor, d.weight)) end
      if d.leafWeight then key("blkio.leaf_weight_device", string.format("%d:%d %d", d.major, d.minor, d.leafWeight)) end
    end
    local throttles = { throttleReadBpsDevice = { "blkio.throttle.read_bps_device", "rbps" }, throttleWriteBpsDevice = { "blkio.throttle.write_bps_device", "wbps" },
      throttleReadIOPSDevice = { "blkio.throttle.read_iops_device", "riops" }, throttleWriteIOPSDevice = { "blkio.throttle.write_iops_device", "wiops" } }
    for field, names in pairs(throttles) do
      for _, d in ipairs(b[field] or {}) do
        if v1 then
          key(names[1], string.format("%d:%d %d", d.major, d.minor, d.rate))
        else
          key("io.max", string.format("%d:%d %s=%d", d.major, d.minor, names[2], d.rate))
        end
      end
    end
  end
  for _, k in ipairs({ "hugepageLimits", "rdma" }) do
    if type(r[k]) == "table" and next(r[k]) then fail("linux.resources." .. k, "not supported by moonbox") end
  end
  if type(r.network) == "table" and next(r.network) then fail("linux.resources.network", "not supported by moonbox") end
  if type(r.unified) == "table" and next(r.unified) then fail("linux.resources.unified", "not supported by moonbox") end
  -- device rules: the allowed ones, added to moonbox's own list (a deny-all comes first anyway)
  local rules
  for i, d in ipairs(r.devices or {}) do
    if d.allow then
      rules = rules or {}
      local t = d.type or "a"
      if t == "a" then
        rules[#rules + 1] = "a *:* " .. (d.access or "rwm")
      else
        rules[#rules + 1] = string.format("%s %s:%s %s", t, d.major and tostring(math.tointeger(d.major)) or "*",
          d.minor and tostring(math.tointeger(d.minor)) or "*", d.access or "rwm")
      end
    elseif d.type and d.type ~= "a" then
      warn(warnings, "linux.resources.devices[" .. (i - 1) .. "]", "a deny rule beyond the default deny-all is ignored")
    end
  end
  return limits, rules, keys
end

local function seccomp(s)
  if s == nil then return nil end
  only("linux.seccomp", s, set({ "defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath", "listenerMetadata", "syscalls" }))
  if s.listenerPath and s.listenerPath ~= "" then fail("linux.seccomp.listenerPath", "seccomp notify is not supported by moonbox") end
  local rules = {}
  for i, r in ipairs(s.syscalls or {}) do
    only("linux.seccomp.syscalls[" .. (i - 1) .. "]", r, set({ "names", "action", "errnoRet", "args" }))
    rules[i] = { names = r.names, action = r.action, errnoRet = r.errnoRet, args = r.args }
  end
  return { defaultAction = s.defaultAction, defaultErrnoRet = s.defaultErrnoRet, syscalls = rules }
end

--- Reads BUNDLE/config.json. Returns the decoded document.
function config.read(bundle)
  local text, err = fs.read_if_exists(bundle .. "/config.json")
  if not text then fail("config.json", "cannot read " .. bundle .. "/config.json" .. (err and (": " .. err) or "")) end
  local ok, doc = pcall(json.decode, text)
  if not ok or type(doc) ~= "table" then fail("config.json", "not valid JSON: " .. tostring(doc)) end
  return config.strip_nulls(doc)
end

--- A decoded document with every null removed (a null field is an absent one).
function config.strip_nulls(v)
  if type(v) ~= "table" then return v end
  for k, x in pairs(v) do
    if x == json.null then v[k] = nil else config.strip_nulls(x) end
  end
  return v
end

--- The container spec for a bundle. Returns spec, warnings, extras (hooks, annotations,
-- oom_score_adj: what moonbox.oci does around the container).
function config.to_spec(doc, bundle, id)
  local warnings = {}
  unknown_fields = {}
  only("config.json", doc, set({ "ociVersion", "root", "mounts", "process", "hostname", "domainname", "hooks", "annotations", "linux", "solaris", "windows", "vm", "zos" }))
  if type(doc.ociVersion) ~= "string" or not doc.ociVersion:match("^1%.") then fail("ociVersion", "a 1.x version expected, got " .. check.show(doc.ociVersion)) end
  for _, k in ipairs({ "solaris", "windows", "vm", "zos" }) do if doc[k] then fail(k, "not a Linux container") end end
  if type(doc.root) ~= "table" or type(doc.root.path) ~= "string" then fail("root.path", "required") end
  local rootfs = doc.root.path
  if rootfs:sub(1, 1) ~= "/" then rootfs = bundle .. "/" .. rootfs end
  if not doc.process then fail("process", "required to create a container") end
  local p = config.process(doc.process, warnings, "process", true)
  local linux = doc.linux or {}
  only("linux", linux, set({ "namespaces", "uidMappings", "gidMappings", "timeOffsets", "devices", "cgroupsPath", "resources", "rootfsPropagation",
    "seccomp", "sysctl", "maskedPaths", "readonlyPaths", "mountLabel", "intelRdt", "personality" }))
  local namespaces, join = {}, {}
  local has = {}
  for i, n in ipairs(linux.namespaces or {}) do
    local kind = NS_TYPES[n.type]
    if not kind then fail("linux.namespaces[" .. (i - 1) .. "].type", "namespace " .. check.show(n.type) .. " is not supported by moonbox") end
    if has[kind] then fail("linux.namespaces[" .. (i - 1) .. "]", n.type .. " is named twice") end
    has[kind] = true
    if n.path and n.path ~= "" then
      if kind == "user" or kind == "mount" then fail("linux.namespaces[" .. (i - 1) .. "].path", "joining a " .. n.type .. " namespace is not supported by moonbox") end
      join[kind] = n.path
    else
      namespaces[#namespaces + 1] = kind
    end
  end
  if not has.mount then fail("linux.namespaces", "a mount namespace is required by moonbox") end
  if linux.timeOffsets then fail("linux.timeOffsets", "not supported by moonbox") end
  if linux.intelRdt then fail("linux.intelRdt", "not supported by moonbox") end
  if linux.personality then fail("linux.personality", "not supported by moonbox") end
  if linux.mountLabel and linux.mountLabel ~= "" then warn(warnings, "linux.mountLabel", "ignored (moonbox does not drive SELinux)") end
  local prop = linux.rootfsPropagation
  local known_prop = { private = true, rprivate = true, slave = true, rslave = true, shared = true, rshared = true, unbindable = true, runbindable = true }
  if prop and prop ~= "" and not known_prop[prop] then fail("linux.rootfsPropagation", "unknown propagation " .. check.show(prop)) end
  local uid_map, gid_map = id_map(linux.uidMappings, "linux.uidMappings"), id_map(linux.gidMappings, "linux.gidMappings")
  if #gid_map > 0 and #uid_map == 0 then fail("linux.gidMappings", "needs linux.uidMappings") end
  if #uid_map > 0 and not has.user then fail("linux.uidMappings", "needs a user namespace") end
  local limits, device_rules, cgroup_keys = resources(linux.resources, warnings)
  local devices = {}
  for i, d in ipairs(linux.devices or {}) do
    devices[i] = { path = d.path, type = d.type, major = d.major, minor = d.minor, mode = d.fileMode, uid = d.uid, gid = d.gid }
  end
  if doc.domainname and doc.domainname ~= "" then warn(warnings, "domainname", "ignored") end
  if doc.hostname and doc.hostname ~= "" and not has.uts then fail("hostname", "needs a uts namespace of its own") end
  local env = {}
  for _, kv in ipairs(p.env) do env[#env + 1] = kv end
  local spec = {
    name = id, rootfs = rootfs, command = p.command, env = env, cwd = p.cwd, user = p.user, tty = p.tty,
    hostname = doc.hostname ~= "" and doc.hostname or nil, readonly_rootfs = doc.root.readonly == true,
    namespaces = namespaces, join = join, network = (has.net and "none" or "host"),
    id_map = #uid_map > 0 and uid_map or nil, gid_map = (#gid_map > 0 and json.encode(gid_map) ~= json.encode(uid_map)) and gid_map or nil, limits = limits, mounts = mounts(doc.mounts, bundle), default_mounts = false,
    devices = devices, sysctl = linux.sysctl, masked_paths = linux.maskedPaths or {}, readonly_paths = linux.readonlyPaths or {},
    capability_sets = p.capability_sets, no_new_privileges = p.no_new_privileges, rlimits = p.rlimits,
    additional_gids = p.additional_gids, umask = p.umask,
    seccomp = linux.seccomp and seccomp(linux.seccomp) or false,
    stdin = "inherit", stdout = "inherit", stderr = "inherit",
    cgroup = config.cgroup_path(linux.cgroupsPath, id), device_rules = device_rules,
    root_propagation = (prop and prop ~= "") and prop:gsub("^r", "") or nil,
    cgroup_keys = #cgroup_keys > 0 and cgroup_keys or nil,
  }
  if not has.net then spec.network = "host" end
  local extras = { hooks = doc.hooks or {}, annotations = doc.annotations or {}, oom_score_adj = p.oom_score_adj, rootfs = rootfs }
  only("hooks", doc.hooks, set({ "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop" }))
  for _, f in ipairs(unknown_fields) do warn(warnings, f, "unknown to moonbox, ignored") end
  return spec, warnings, extras
end

return config
