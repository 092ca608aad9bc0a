-- moonbox.oci: the OCI runtime operations (runc's command-line contract) on moonbox.container.
--
--   oci.create(root, id, {bundle=, pid_file=, console_socket=, preserve_fds=})
--   oci.start(root, id); oci.state(root, id); oci.kill(root, id, "TERM", all)
--   oci.delete(root, id, force); oci.exec(root, id, process, opts); oci.list(root)
--   oci.pause / resume / ps / update; oci.features()
--
-- A container is made by one moonbox process (create) and lives on after it: its first
-- process waits on ROOT/ID/exec.fifo, set up but not yet exec'ed, as runc's does, until start
-- opens the fifo. ROOT/ID/state.json says what create made; status is read from the kernel
-- (is the first process alive, a zombie, frozen; is the fifo still there).
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local check = require "moonbox.check"
local errors = require "moonbox.errors"
local process = require "moonbox.process"
local loop = require "moonbox.loop"
local container = require "moonbox.container"
local spec_mod = require "moonbox.container.spec"
local config = require "moonbox.oci.config"

local oci = {}
local remove_group_parents

oci.VERSION = "1.2.0"

local function fail(message, code)
  errors.raise(message, { op = "oci", code = code or 1 }, 0)
end

--- The state root: /run/moonbox-oci as root, $XDG_RUNTIME_DIR/moonbox-oci rootless.
function oci.default_root()
  if sys.geteuid() == 0 then return "/run/moonbox-oci" end
  local xdg = os.getenv("XDG_RUNTIME_DIR")
  if xdg and xdg ~= "" then return xdg .. "/moonbox-oci" end
  return "/tmp/moonbox-oci-" .. sys.geteuid()
end

local function ensure_root(root)
  if not sys.lstat(root) then
    local ok, msg = sys.mkdir(root, tonumber("700", 8))
    if not ok and not sys.lstat(root) then fail("state root " .. root .. ": " .. msg) end
  end
  local st = sys.lstat(root)
  if not st or st.type ~= "dir" then fail("state root " .. root .. " is not a folder") end
  if st.uid ~= sys.geteuid() then fail("state root " .. root .. " belongs to uid " .. st.uid .. ", not to this user") end
end

local function check_id(id)
  if type(id) ~= "string" or id == "" then fail("container id required") end
  if #id > 1024 or not id:match("^[%w][%w_.+-]*$") or id:find("+", 1, true) then
    fail("invalid container id " .. string.format("%q", id) .. " (letters, digits, '_', '.', '-')")
  end
end

local function dir_of(root, id) return root .. "/" .. id end

-- RFC 3339 with nanoseconds, in UTC, as runc writes "created".
local function rfc3339()
  local t = sys.clock_gettime("realtime")
  local secs = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%09dZ", math.floor((t - secs) * 1e9))
end

local function load_state(root, id)
  check_id(id)
  local text = fs.read_if_exists(dir_of(root, id) .. "/state.json")
  if not text then fail("container " .. id .. " does not exist") end
  local ok, st = pcall(json.decode, text)
  if not ok or type(st) ~= "table" then fail("container " .. id .. ": its state is damaged (" .. dir_of(root, id) .. "/state.json)") end
  return config.strip_nulls(st)
end

local function save(root, st)
  fs.write_atomic(dir_of(root, st.id) .. "/state.json", json.encode(st), true, tonumber("600", 8))
end

-- Alive and not a zombie: a dead init its parent has not reaped yet counts as stopped.
local function alive(pid, start)
  if not pid then return false end
  local s, st = process.start_time(pid)
  if not s or (start and s ~= start) then return false end
  return st ~= "Z" and st ~= "X"
end

local function frozen(st)
  local text = sys.cgroup_get(st.cgroup, "cgroup.freeze")
  return text == "1"
end

--- The runtime-spec status: creating, created, running, paused or stopped.
function oci.status(root, st)
  if st.status == "creating" and alive(st.pid, st.pid_start) and not st.created_done then return "creating" end
  if not alive(st.pid, st.pid_start) then return "stopped" end
  if sys.lstat(dir_of(root, st.id) .. "/exec.fifo") then return "created" end
  if frozen(st) then return "paused" end
  return "running"
end

-- The state document of the runtime spec (and runc's extra fields).
local function state_doc(root, st, status)
  status = status or oci.status(root, st)
  return { ociVersion = oci.VERSION, id = st.id, status = status, pid = status ~= "stopped" and st.pid or 0, bundle = st.bundle,
    rootfs = st.rootfs, created = st.created, owner = st.owner or "", annotations = json.object(st.annotations or {}) }
end

local function state_json(root, st, status) return json.encode(state_doc(root, st, status)) end

local function log_warning(o, text)
  if o and o.log then o.log("warning", text) end
end

-- Hooks of one kind, in order; `fatal` ones raise on the first failure, others warn.
local function run_hooks(kind, list, stdin, fatal, o)
  for i, h in ipairs(list or {}) do
    if type(h) ~= "table" or type(h.path) ~= "string" then fail("config.json: hooks." .. kind .. "[" .. (i - 1) .. "].path: required") end
    local r = process.run_hook(h, stdin)
    if not r.ok then
      local msg = kind .. " hook " .. (i - 1) .. " (" .. h.path .. ") failed: " .. r.why
      if fatal then fail(msg) end
      log_warning(o, msg)
    end
  end
end

-- createContainer hooks run in the container's mount namespace.
local function run_in_container_ns(pid, hooks, stdin)
  for i, h in ipairs(hooks or {}) do
    local ok, why = process.in_namespaces(pid, { { "mnt", "mount" } }, function()
      local res = process.run_hook(h, stdin)
      if not res.ok then error(res.why, 0) end
    end)
    if not ok then fail("createContainer hook " .. (i - 1) .. " (" .. h.path .. ") failed: " .. why) end
  end
end

-- org.moonbox.setup: a Lua file in the bundle, run as the container's setup function (inside
-- its namespaces, before exec), the way container.run{setup = fn} runs one.
local function setup_from_annotation(bundle, rel)
  if type(rel) ~= "string" or rel == "" then fail("annotation org.moonbox.setup: a file name in the bundle expected") end
  local bfd = sys.open(bundle, { "path", "directory" })
  if not bfd then fail("bundle " .. bundle .. " cannot be opened") end
  local fd, msg = sys.open_in_root(bfd, rel, { flags = { "rdonly" } })
  bfd:close()
  if not fd then fail("annotation org.moonbox.setup: " .. rel .. ": " .. msg) end
  local text = process.read_all(fd)
  fd:close()
  local chunk, err = load(text, "@" .. bundle .. "/" .. rel, "t")
  if not chunk then fail("annotation org.moonbox.setup: " .. err) end
  return function(s) return chunk(s) end
end

--- runc create.
function oci.create(root, id, o)
  check_id(id)
  ensure_root(root)
  local bundle = o.bundle or "."
  if bundle:sub(1, 1) ~= "/" then bundle = sys.getcwd() .. (bundle == "." and "" or ("/" .. bundle)) end
  local dir = dir_of(root, id)
  if sys.lstat(dir) then fail("container with id exists: " .. id) end
  local ok, msg = sys.mkdir(dir, tonumber("700", 8))
  if not ok then fail("cannot make " .. dir .. ": " .. msg) end
  local made, cgroup_made = false, nil
  local okc, errc = pcall(function()
    local doc = config.read(bundle)
    local spec, warnings, extras = config.to_spec(doc, bundle, id)
    cgroup_made = spec.cgroup
    for _, w in ipairs(warnings) do log_warning(o, w) end
    if extras.annotations["org.moonbox.setup"] then spec.setup = setup_from_annotation(bundle, extras.annotations["org.moonbox.setup"]) end
    if spec.tty and not o.console_socket then fail("cannot allocate a terminal without --console-socket") end
    if spec.tty then spec.console_socket = o.console_socket end
    local keep = math.tointeger(o.preserve_fds or 0) or 0
    local listen = math.tointeger(tonumber(os.getenv("LISTEN_FDS") or ""))
    if listen and listen > 0 then
      keep = keep + listen
      spec.env[#spec.env + 1] = "LISTEN_FDS=" .. listen
      spec.env[#spec.env + 1] = "LISTEN_PID=1"
    end
    if keep > 0 then spec.keep_fds = keep end
    local fifo = dir .. "/exec.fifo"
    local okf, msgf = sys.mknod(fifo, "fifo", tonumber("622", 8))
    if not okf then fail("exec fifo: " .. msgf) end
    sys.chmod(fifo, tonumber("622", 8))
    spec.exec_fifo = fifo
    spec.detach = true
    local st = { id = id, bundle = bundle, rootfs = extras.rootfs, annotations = extras.annotations, cgroup = spec.cgroup,
      status = "creating", hooks = extras.hooks, owner = "" }
    spec.on_created = function(c)
      st.pid, st.pid_start, st.created = c.pid, process.start_time(c.pid), rfc3339()
      save(root, st)
      if extras.oom_score_adj then fs.write("/proc/" .. c.pid .. "/oom_score_adj", tostring(extras.oom_score_adj)) end
      -- runc hands these hooks the state as "created" (what the runtime-tools suite checks)
      local doc_state = state_json(root, st, "created")
      run_hooks("prestart", extras.hooks.prestart, doc_state, true, o)
      run_hooks("createRuntime", extras.hooks.createRuntime, doc_state, true, o)
      run_in_container_ns(c.pid, extras.hooks.createContainer, doc_state)
    end
    if extras.hooks.startContainer then
      local hooks = {}
      for i, h in ipairs(extras.hooks.startContainer) do
        -- the state as of start (the pid is known only after the clone, in another process)
        hooks[i] = { path = h.path, args = h.args, env = h.env, timeout = h.timeout,
          stdin = json.encode({ ociVersion = oci.VERSION, id = id, status = "created", bundle = bundle, annotations = extras.annotations }) }
      end
      spec.start_hooks = hooks
    end
    local c = container.new(spec)
    c:start()
    st.status, st.created_done = "created", true
    save(root, st)
    if o.pid_file then fs.write_atomic(o.pid_file, tostring(c.pid), true) end
    made = c.pid
  end)
  if not okc then
    -- whatever was made goes: the container (its start removed it), its cgroup's parents, the folder
    if cgroup_made then remove_group_parents(cgroup_made) end
    sys.remove_tree(dir)
    error(errc, 0)
  end
  return made
end

--- runc start.
function oci.start(root, id, o)
  local st = load_state(root, id)
  local status = oci.status(root, st)
  if status == "stopped" then fail("cannot start a container that has stopped") end
  if status ~= "created" then fail("cannot start an already running container") end
  local path = dir_of(root, id) .. "/exec.fifo"
  local fifo, msg = sys.open(path, { "rdonly", "nonblock" })
  if not fifo then fail("exec fifo: " .. msg) end
  local pidfd = sys.pidfd_open(st.pid)
  local got = false
  local deadline = loop.now() + 30
  while not got do
    local ready = sys.poll(pidfd and { fifo, pidfd } or { fifo }, 0.5) or {}
    for _, fd in ipairs(ready) do
      if fd == fifo then
        local b = sys.read(fifo, 1)
        if b and #b > 0 then got = true end
      end
    end
    if not got and (not alive(st.pid, st.pid_start) or loop.now() > deadline) then
      fifo:close()
      if pidfd then pidfd:close() end
      fail("container " .. id .. ": its init ended before start (see the container's stderr)")
    end
  end
  fifo:close()
  if pidfd then pidfd:close() end
  sys.unlink(path)
  st.status = "running"
  save(root, st)
  run_hooks("poststart", (st.hooks or {}).poststart, state_json(root, st, "running"), false, o)
end

--- runc state: the state document.
function oci.state(root, id)
  local st = load_state(root, id)
  return state_doc(root, st)
end

local SIGNALS = { HUP = 1, INT = 2, QUIT = 3, ILL = 4, TRAP = 5, ABRT = 6, IOT = 6, BUS = 7, FPE = 8, KILL = 9, USR1 = 10,
  SEGV = 11, USR2 = 12, PIPE = 13, ALRM = 14, TERM = 15, STKFLT = 16, CHLD = 17, CONT = 18, STOP = 19, TSTP = 20,
  TTIN = 21, TTOU = 22, URG = 23, XCPU = 24, XFSZ = 25, VTALRM = 26, PROF = 27, WINCH = 28, IO = 29, POLL = 29, PWR = 30, SYS = 31 }

--- A signal from a name ("KILL", "SIGKILL") or a number ("9"); nil when unknown.
function oci.signal(text)
  text = tostring(text or "TERM")
  local n = math.tointeger(tonumber(text))
  if n then return (n >= 1 and n <= 64) and n or nil end
  local name = text:upper():gsub("^SIG", "")
  if SIGNALS[name] then return SIGNALS[name] end
  if name:match("^RTMIN") then return 34 + (tonumber(name:match("(%d+)$") or 0) or 0) end
  if name:match("^RTMAX") then return 64 - (tonumber(name:match("%-(%d+)$") or 0) or 0) end
  return nil
end

local function group_of(st) return require("moonbox.cgroup").new(st.cgroup) end

-- The parents of a nested cgroupsPath ("/a/b/ID") that moonbox made go with the container, when
-- empty (rmdir fails while anything else uses them).
remove_group_parents = function(group)
  local lead = group:sub(1, 1) == "/" and "/" or ""
  local parts = {}
  for part in group:gmatch("[^/]+") do parts[#parts + 1] = part end
  for i = #parts - 1, 1, -1 do
    for _, p in ipairs(sys.cgroup_path(lead .. table.concat(parts, "/", 1, i)) or {}) do sys.rmdir(p) end
  end
end

--- runc kill.
function oci.kill(root, id, sig, all)
  local st = load_state(root, id)
  local n = oci.signal(sig)
  if not n then fail("unknown signal " .. tostring(sig)) end
  local status = oci.status(root, st)
  if status == "stopped" and not all then fail("container not running") end
  if all then
    local g = group_of(st)
    for _, pid in ipairs(g:procs()) do sys.kill(pid, n) end
    if status ~= "stopped" then sys.kill(st.pid, n) end
    return
  end
  local ok, msg = sys.kill(st.pid, n)
  if not ok then fail("container not running (" .. msg .. ")") end
end

--- runc delete.
function oci.delete(root, id, force, o)
  local ok_load, st = pcall(load_state, root, id)
  if not ok_load then
    if force and type(id) == "string" and sys.lstat(dir_of(root, id)) then sys.remove_tree(dir_of(root, id)) return end
    error(st, 0)
  end
  local status = oci.status(root, st)
  if status ~= "stopped" and not force then
    fail("cannot delete container " .. id .. " that is not stopped: " .. status)
  end
  local c = container.adopt({ id = id, pid = alive(st.pid, st.pid_start) and st.pid or nil, cgroup = st.cgroup,
    spec = { namespaces = {}, env = {} }, own = true })
  c.paused = status == "paused"
  c:remove()
  -- a pid we did not make must not be waited for: it is gone once its cgroup is
  if st.pid and alive(st.pid, st.pid_start) then sys.kill(st.pid, "KILL") end
  remove_group_parents(st.cgroup)
  sys.remove_tree(dir_of(root, id))
  run_hooks("poststop", (st.hooks or {}).poststop, state_json(root, st, "stopped"), false, o)
end

local function adopt_running(root, id)
  local st = load_state(root, id)
  local status = oci.status(root, st)
  if status == "stopped" then fail("container not running") end
  local doc = config.read(st.bundle)
  local spec = config.to_spec(doc, st.bundle, id)
  spec.on_created, spec.exec_fifo, spec.detach = nil, nil, nil
  spec.tty, spec.console_socket = false, nil
  local c = container.adopt({ id = id, pid = st.pid, cgroup = st.cgroup, spec = spec_mod.check(spec) })
  return c, st, status
end

--- runc exec: `p` is a process object (process.json's). opts: detach, pid_file,
-- console_socket. Returns the exit code (not detached) or 0.
function oci.exec(root, id, p, opts)
  local c, _, status = adopt_running(root, id)
  if status == "paused" then fail("cannot exec in a paused container") end
  local warnings = {}
  local proc = config.process(p, warnings, "process")
  for _, w in ipairs(warnings) do log_warning(opts, w) end
  if proc.tty and not opts.console_socket then fail("cannot allocate a terminal without --console-socket") end
  local env = {}
  for _, kv in ipairs(proc.env) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    env[k] = v
  end
  local ok, r = pcall(c.exec, c, proc.command, { env = env, cwd = proc.cwd, user = proc.user, capture = false,
    detach = opts.detach, console_socket = proc.tty and opts.console_socket or nil,
    capabilities = p.capabilities and proc.capability_sets or nil, no_new_privileges = proc.no_new_privileges })
  if not ok then error(r, 0) end
  if opts.detach then
    if opts.pid_file then fs.write_atomic(opts.pid_file, tostring(r.pid), true) end
    return 0
  end
  return r.code or (128 + (r.signal or 0))
end

--- runc pause / resume.
function oci.pause(root, id)
  local st = load_state(root, id)
  local status = oci.status(root, st)
  if status ~= "running" then fail("container not running") end
  group_of(st):freeze()
end

function oci.resume(root, id)
  local st = load_state(root, id)
  if oci.status(root, st) ~= "paused" then fail("container not paused") end
  group_of(st):thaw()
end

--- runc ps: the pids in the container's cgroup.
function oci.ps(root, id)
  local st = load_state(root, id)
  return group_of(st):procs()
end

--- runc update --resources: a LinuxResources object.
function oci.update(root, id, resources)
  local st = load_state(root, id)
  if oci.status(root, st) == "stopped" then fail("container not running") end
  local doc = { ociVersion = "1.0.0", root = { path = "/" }, process = { args = { "x" }, cwd = "/" },
    linux = { namespaces = { { type = "mount" } }, resources = resources } }
  local spec = config.to_spec(doc, st.bundle, id)
  local ok, msg = group_of(st):apply(spec.limits)
  if not ok then fail("update: " .. msg) end
  for _, kv in ipairs(spec.cgroup_keys or {}) do
    local okk, msgk = sys.cgroup_set(st.cgroup, kv[1], kv[2])
    if not okk then fail("update: " .. msgk) end
  end
end

--- runc list: every container under root.
function oci.list(root)
  local out = {}
  for _, name in ipairs(sys.listdir(root) or {}) do
    local ok, st = pcall(load_state, root, name)
    if ok then out[#out + 1] = state_doc(root, st) end
  end
  return out
end

--- runc features: what moonbox supports, in the runtime-spec features format.
function oci.features()
  local mount_options = {}
  for k in pairs({ ro = 1, rw = 1, nosuid = 1, suid = 1, nodev = 1, dev = 1, noexec = 1, exec = 1, sync = 1, async = 1, dirsync = 1,
    remount = 1, mand = 1, nomand = 1, atime = 1, noatime = 1, diratime = 1, nodiratime = 1, relatime = 1, norelatime = 1,
    strictatime = 1, nostrictatime = 1, lazytime = 1, nosymfollow = 1, bind = 1, rbind = 1, private = 1, rprivate = 1,
    shared = 1, rshared = 1, slave = 1, rslave = 1, unbindable = 1, runbindable = 1, silent = 1, defaults = 1 }) do
    mount_options[#mount_options + 1] = k
  end
  table.sort(mount_options)
  local caps = {}
  for _, c in ipairs(require("moonbox.security").all_capabilities) do caps[#caps + 1] = "CAP_" .. c:upper() end
  return {
    ociVersionMin = "1.0.0", ociVersionMax = oci.VERSION,
    hooks = { "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop" },
    mountOptions = mount_options,
    linux = {
      namespaces = { "cgroup", "ipc", "mount", "network", "pid", "user", "uts" },
      capabilities = caps,
      cgroup = { v1 = true, v2 = true, systemd = false, systemdUser = false, rdma = false },
      seccomp = { enabled = true, actions = { "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP" },
        operators = { "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE" } },
      apparmor = { enabled = false }, selinux = { enabled = false }, intelRdt = { enabled = false },
      mountExtensions = { idmap = { enabled = false } },
    },
    annotations = { ["org.opencontainers.runtime-spec.features.name"] = "moonbox", ["org.moonbox.setup"] = "a Lua file in the bundle, run as the container's setup function" },
  }
end

return oci
