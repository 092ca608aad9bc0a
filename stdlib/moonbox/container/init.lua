-- moonbox.container: containers as a Lua library, built only on moonbox.sys.
--
--   local result = container.run{ rootfs = dir, command = {"/bin/sh", "-c", "echo hi"} }
--   local c <close> = container.new{ rootfs = dir, command = {"sleep", "60"} }
--   c:start(); c:exec{"ps"}; c:pause(); c:resume(); c:stats(); c:kill(); c:wait(); c:remove()
--
-- The environment follows runc's defaults: pivot_root into the rootfs, /proc, a tmpfs /dev
-- with the standard devices, /dev/pts, /dev/shm, /dev/mqueue, a read-only /sys, runc's masked
-- and read-only paths, fds above 2 closed, and limits in place before the command runs.
-- The pieces: container.spec checks a spec, container.plan makes the filesystem, container.child
-- is everything between clone and exec, container.io waits and pumps output; this file is the
-- handle's lifecycle.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local errors = require "moonbox.errors"
local check = require "moonbox.check"
local cleanup = require "moonbox.cleanup"
local state = require "moonbox.state"
local security = require "moonbox.security"
local cgroup = require "moonbox.cgroup"
local loop = require "moonbox.loop"
local process = require "moonbox.process"
local spec = require "moonbox.container.spec"
local plan = require "moonbox.container.plan"
local child = require "moonbox.container.child"
local cio = require "moonbox.container.io"
local events = require "moonbox.events"

local container = {}

-- Running as a plain user: a user namespace maps the user to root inside.
local rootless = sys.geteuid() ~= 0
container.rootless = rootless
container.masked_paths = spec.defaults.masked_paths
container.readonly_paths = spec.defaults.readonly_paths
container.devices = spec.defaults.devices
container.spec_keys = spec.keys

-- The error type of the stdlib: tostring(err) is the message; err.step names the step;
-- err.code is 125 for the runtime, or 126 or 127 when the command could not be executed.
container.Error = errors.Error
container.is_error = errors.is

local function setup_failed(message, fields, level)
  local f = { code = 125, op = "start" }
  for k, v in pairs(fields or {}) do f[k] = v end
  errors.raise("container setup failed: " .. message, f, level and level + 1 or 0)
end

-- Running containers with a terminal: they follow our terminal's size.
local with_tty = {}
local winch_installed = false
local function follow_terminal_size()
  if winch_installed then return end
  winch_installed = true
  cleanup.on("WINCH", function()
    local rows, cols = sys.winsize(0)
    if not rows or rows == 0 then return end
    for c in pairs(with_tty) do
      if c.tty_master then sys.winsize(c.tty_master, rows, cols) end
    end
  end)
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

--- A container handle, not yet started. Its fields: id (the name, or a made-up one), pid (the
-- container's first process, as the host sees it, once started: /proc/PID/ns/* are its
-- namespaces), state ("created", "running", "exited", "removed").
function container.new(s)
  local c = spec.check(s)
  counter = counter + 1
  local id = c.name or string.format("mb-%d-%d-%04x", sys.getpid(), counter, math.random(0, 0xffff))
  c.env.HOSTNAME = c.env.HOSTNAME or (s.env and s.env.HOSTNAME) or id
  local self = setmetatable({ id = id, spec = c, input = s, state = "created", owner = sys.getpid() }, Container)
  if c.networks and #c.networks > 0 then require("moonbox.net").register(self) end
  if c.rootfs and not c.mount_namespace then
    -- The rootfs is pinned now: whatever happens to its path later, this folder is the one used,
    -- and nothing is ever made at the path on the host. (In a base mount namespace it is pinned
    -- at start, in that namespace.)
    local fd, msg = sys.open(c.rootfs, { "path", "directory" })
    if not fd then check.fail("container spec", "rootfs " .. c.rootfs .. ": " .. msg) end
    self.rootfs_fd = fd
  end
  return self
end

--- The plan of a spec's filesystem, as text (what `moonbox box --dry-run` prints).
function container.dry_run(s)
  local c = spec.check(s)
  return plan.describe(plan.build(c, spec.defaults))
end

-- A record for this container, made exclusively: two live containers never share a name (they
-- would share a cgroup and an upper folder). A record left by a killed run is collected first.
local function make_record(self, fields)
  for _ = 1, 3 do
    local rec = state.new(self.id, fields, "container")
    if rec then return rec end
    local existing = state.find(self.id)
    if existing and existing.alive then
      errors.raise(string.format("container name %s is in use by a running container (moonbox pid %s)", self.id,
        tostring(existing.owner)), { code = 125, op = "name" }, 0)
    end
    if existing then require("moonbox.gc").collect_one(existing) end
  end
  errors.raise("container name " .. self.id .. " is taken (its record could not be collected; run moonbox gc)", { code = 125, op = "name" }, 0)
end

local warned_devices, warned_cgroups = false, false

-- The group and its limits. Rootless, a group exists only where this user was delegated one;
-- otherwise limits are off, out loud.
local function apply_limits(self)
  local l = self.spec.limits
  local ok, msg, errno = self.group:apply({ memory = l.memory, swap = l.swap, pids = l.pids, cpus = l.cpus,
    cpu_weight = l.cpu_weight })
  if not ok then
    if rootless then
      self.group = nil
      if next(l) and not warned_cgroups then
        warned_cgroups = true
        io.stderr:write("moonbox: warning: cgroup limits are off: this user has no delegated cgroup (", msg, ")\n")
      end
      return
    end
    setup_failed(msg, { step = "cgroup", errno = errno })
  end
  for _, kv in ipairs(self.spec.cgroup_keys or {}) do
    local okc, okk, msgk, errk = pcall(sys.cgroup_set, self.group.name, kv[1], kv[2])
    if not okc then okk, msgk = nil, "cgroup key " .. kv[1] .. ": not available on this host (" .. tostring(okk):gsub("^.-cgroup_set: ", "") .. ")" end
    if not okk then
      if kv.optional then
        io.stderr:write("moonbox: warning: ", msgk, "\n")
      else
        setup_failed(msgk, { step = "cgroup", errno = errk })
      end
    end
  end
  local rules = security.allowed_devices
  if self.spec.device_rules then
    -- a bundle's rules first, in its order (runc's), then moonbox's standard devices
    rules = {}
    for _, r in ipairs(self.spec.device_rules) do rules[#rules + 1] = r end
    for _, r in ipairs(security.allowed_devices) do rules[#rules + 1] = r end
  end
  local okd, why = self.group:restrict_devices(rules)
  if not okd and not warned_devices and not rootless then
    warned_devices = true
    io.stderr:write("moonbox: warning: devices are not restricted: ", tostring(why), "\n")
  end
end

--- Kills everything the container runs: its cgroup, and its first process.
function Container:_kill_all()
  if self.group then self.group:kill() end
  if self.pid then sys.kill(self.pid, "KILL") end
end

-- Reads the child's error pipe until it closes (exec happened) or the child reports. Waits
-- with the container's timeout in force, and with timers and signals handled (moonbox.loop).
local function await_exec(self, err_r)
  local c = self.spec
  local deadline = c.timeout and (self.started + c.timeout)
  local ready = loop.poll({ err_r }, deadline)
  if ready and #ready == 0 then
    self:_kill_all()
    setup_failed(string.format("timed out after %gs before the command started", c.timeout), { step = "setup" })
  end
  local report = process.read_all(err_r)
  if report ~= "" then
    local e = json.decode(report:match("^[^\n]*"))
    local st = sys.wait(self.pid)
    self.pid = nil
    setup_failed(e.message, { step = e.step, errno = e.errno, code = e.code or 125, exit = st })
  end
end

-- The container's writable layer when limits.disk caps it: an ext4 image on a loop device,
-- mounted detached. The image file is unlinked once attached, so it takes no disk after the
-- container is gone, even after a SIGKILL. Returns the mount's fd.
local function disk_layer(dir, bytes)
  local img = dir .. "/disk.img"
  local f, msg = sys.open(img, { "wronly", "creat", "excl" }, tonumber("600", 8))
  if not f then setup_failed(msg, { step = "disk" }) end
  f:close()
  errors.check({ step = "disk", code = 125 }, sys.truncate(img, bytes))
  local ok, r = pcall(process.run, { "mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "root_owner=0:0", img })
  if not ok or r.code ~= 0 then
    sys.unlink(img)
    setup_failed("limits.disk: mkfs.ext4 failed" .. (ok and (": " .. r.stderr) or " (install e2fsprogs)"), { step = "disk" })
  end
  local dev, hold = sys.loop_attach(img)
  if not dev then sys.unlink(img) setup_failed("limits.disk: " .. tostring(hold), { step = "disk" }) end
  local m, mmsg, merr = sys.fsmount("ext4", { { "source", dev } }, { "nosuid", "nodev" })
  hold:close()
  sys.unlink(img)
  if not m then setup_failed("limits.disk: " .. mmsg, { step = "disk", errno = merr }) end
  local base = "/proc/self/fd/" .. m:fileno()
  errors.check({ step = "disk", code = 125 }, sys.mkdir(base .. "/upper"))
  errors.check({ step = "disk", code = 125 }, sys.mkdir(base .. "/work"))
  return m, base
end

-- The root tree, made by the parent as real root: a detached clone of the rootfs folder, or a
-- detached overlay (an image's layers, or the rootfs under a size-capped upper). Fills
-- ctx.root_tree (or ctx.overlay on a kernel without "lowerdir+") and returns the folder the
-- child attaches it over.
local function make_root_tree(self, c, ctx, lowers)
  if rootless then
    -- Without CAP_SYS_ADMIN here, the child makes the trees in its own user namespace, where it
    -- reaches what this user reaches: the rootfs as its working folder ("."), pinned.
    if c.image then
      local dir = self.container_dir
      ctx.overlay = { lower = lowers, upper = dir .. "/upper", work = dir .. "/work", target = dir .. "/merged" }
      return dir .. "/merged"
    end
    ctx.clone_cwd = true
    return self.rootfs_fd
  end
  local upper, work
  if c.limits.disk then
    local m, base = disk_layer(self.container_dir, c.limits.disk)
    self.holds[#self.holds + 1] = m
    upper, work = base .. "/upper", base .. "/work"
  elseif c.image then
    upper, work = self.container_dir .. "/upper", self.container_dir .. "/work"
  end
  if not upper then
    ctx.root_tree = errors.check({ step = "rootfs", code = 125 }, sys.open_tree(self.rootfs_fd, { "clone", "recursive" }))
    return self.rootfs_fd
  end
  local attach = c.image and (self.container_dir .. "/merged") or self.rootfs_fd
  local spec_overlay = { lower = lowers or { "/proc/self/fd/" .. self.rootfs_fd:fileno() }, upper = upper, work = work }
  local tree, msg, errno = sys.overlay(spec_overlay)
  if tree then
    ctx.root_tree = tree
  elseif errno == "EINVAL" and msg:find("lowerdir+", 1, true) then
    spec_overlay.target = attach  -- an older kernel: the child mounts it by its paths
    ctx.overlay = spec_overlay
  else
    setup_failed(msg, { step = "overlay", errno = errno })
  end
  return attach
end

-- Published ports: a proxy process from this namespace into the container's (moonbox.net.proxy),
-- connecting to the container's first address, or its lo.
local function publish_ports(self)
  local c = self.spec
  local att = self.net_attachments and self.net_attachments[1]
  local ports = {}
  for i, p in ipairs(c.ports) do
    local q = {}
    for k, v in pairs(p) do q[k] = v end
    local v6 = p.host_ip:find(":", 1, true) ~= nil
    q.target_ip = v6 and (att and att.ip6 or "::1") or (att and att.ip or "127.0.0.1")
    ports[i] = q
  end
  local netns = errors.check({ step = "ports", code = 125 }, sys.open("/proc/" .. self.pid .. "/ns/net", "rdonly"))
  local userns = c.namespaces.user and errors.check({ step = "ports", code = 125 }, sys.open("/proc/" .. self.pid .. "/ns/user", "rdonly")) or nil
  local ok, p = pcall(require("moonbox.net.proxy").start, { netns = netns, userns = userns, ports = ports })
  netns:close()
  if userns then userns:close() end
  if not ok then setup_failed(tostring(p), { step = "ports", errno = errors.is(p) and p.errno or nil }) end
  self.proxy = p
  self.ports = ports
  local helpers = self.record.data.helpers or {}
  helpers[#helpers + 1] = { pid = p.pid, start = p.start, name = "moonbox-proxy" }
  self.record:update({ helpers = helpers })
end

function Container:_start()
  local c = self.spec
  self.holds = {}
  -- An image's layers are unpacked (shared, cached by digest) before anything is recorded.
  local lowers
  if c.image then
    local image = require "moonbox.image"
    local ok, l = pcall(image.lowers, c.image)
    if not ok then setup_failed(tostring(l), { step = "image" }) end
    lowers = l
  end
  -- What the container will make is recorded first, durably; then it is made. Until its record
  -- exists (a name in use refuses it), the container owns nothing, so removal touches nothing.
  local group = cgroup.new(c.cgroup or cgroup.container_group(self.id))
  local dir
  if c.image or c.limits.disk then
    local image = require "moonbox.image"
    image.init()
    dir = image.root() .. "/containers/" .. self.id
  end
  local hosts_dir = c.networks and #c.networks > 0 and (state.ensure("hosts") .. "/" .. self.id) or nil
  local dirs = {}
  for _, d in ipairs({ dir or false, hosts_dir or false }) do if d then dirs[#dirs + 1] = d end end
  self.record = make_record(self, { name = c.name, cgroup = group.paths, dirs = dirs, layers = lowers })
  self.group = group
  if hosts_dir then
    -- /etc/hosts of a container on networks: itself until net.attach lists the members
    if sys.lstat(hosts_dir) then sys.remove_tree(hosts_dir) end
    errors.check({ step = "network", code = 125 }, sys.mkdir(hosts_dir, tonumber("700", 8)))
    self.hosts_dir = hosts_dir
    c.hosts_file = hosts_dir .. "/hosts"
    require("moonbox.net.hosts").write_new(c.hosts_file, { { "127.0.1.1", { self.id } } })
  end
  if dir then
    errors.check({ step = "image", code = 125 }, sys.mkdir(dir, tonumber("700", 8)))
    self.container_dir = dir
    if c.image then
      for _, d in ipairs({ "/upper", "/work", "/merged" }) do errors.check({ step = "image", code = 125 }, sys.mkdir(dir .. d)) end
    end
  end
  if c.seccomp and not c.seccomp_program then
    local ok, program = pcall(security.compile, c.seccomp)
    if not ok then setup_failed(tostring(program), { step = "seccomp" }) end
    c.seccomp_program = program
  end
  if c.setup then
    -- libarchive cannot be found after pivot_root: a setup function gets it loaded here.
    sys.archive_load()
  end
  apply_limits(self)
  local ctx = { ops = plan.build(c, spec.defaults) }
  local fds, capture, stdin_w, console = cio.open(c)
  self.capture = capture
  ctx.stdio = fds
  local sync_r, sync_w = assert(sys.pipe())
  local err_r, err_w = assert(sys.pipe())
  ctx.sync_r, ctx.sync_w, ctx.err_r, ctx.err_w = sync_r, sync_w, err_r, err_w
  ctx.parent_pidfd = assert(sys.pidfd_open(sys.getpid()))
  local names = {}
  for n in pairs(c.namespaces) do if n ~= "cgroup" then names[#names + 1] = n end end
  table.sort(names)
  -- A base mount namespace (a sandbox box's): step into it for the clone, whose new mount
  -- namespace then starts as its copy, and come back. Trees and sources are opened there.
  local home_cwd = assert(sys.open(".", { "path", "directory" }))
  local home_ns
  if c.mount_namespace then
    home_ns = assert(sys.open("/proc/self/ns/mnt", "rdonly"))
    local okn, msgn, errn = sys.setns(c.mount_namespace, "mount")
    if not okn then setup_failed(msgn, { step = "clone", errno = errn }) end
  end
  local function go_home()
    if home_ns then assert(sys.setns(home_ns, "mount")) home_ns:close() home_ns = nil end
    if home_cwd then assert(sys.fchdir(home_cwd)) home_cwd:close() home_cwd = nil end
  end
  local okt, errt = pcall(function()
    if c.rootfs and not self.rootfs_fd then
      self.rootfs_fd = errors.check({ step = "rootfs", code = 125 }, sys.open(c.rootfs, { "path", "directory" }))
    end
    local attach = make_root_tree(self, c, ctx, lowers)
    ctx.trees = rootless and {} or errors.check({ step = "mounts", code = 125 }, plan.open_sources(ctx.ops))
    -- The child attaches the root over its working folder: this one, in its namespace.
    if type(attach) == "string" then
      errors.check({ step = "rootfs", code = 125 }, sys.chdir(attach))
    else
      errors.check({ step = "rootfs", code = 125 }, sys.fchdir(attach))
    end
  end)
  if not okt then go_home() error(errt, 0) end
  if c.exec_fifo then
    ctx.exec_fifo = errors.check({ step = "exec fifo", code = 125 }, sys.open(c.exec_fifo, { "path" }))
  end
  -- A pid namespace to join applies to the children made after setns: the clone goes into it.
  local home_pid
  if c.join.pid then
    home_pid = assert(sys.open("/proc/self/ns/pid", "rdonly"))
    local okp, msgp, errp = sys.setns(c.join.pid, "pid")
    if not okp then home_pid:close() go_home() setup_failed(msgp, { step = "join pid namespace", errno = errp }) end
  end
  local pid, msg, errno = sys.clone(names)
  if pid == 0 then child.main(c, ctx) end
  if home_pid then assert(sys.setns(home_pid, "pid")) home_pid:close() end
  if ctx.exec_fifo then ctx.exec_fifo:close() end
  go_home()
  if ctx.root_tree then ctx.root_tree:close() end
  for _, t in pairs(ctx.trees) do t:close() end
  for _, h in ipairs(self.holds) do h:close() end
  self.holds = {}
  if not pid then setup_failed(msg, { step = "clone", errno = errno }) end
  self.pid = pid
  self.started = loop.now()
  sync_r:close()
  err_w:close()
  ctx.parent_pidfd:close()
  for _, fd in pairs(fds) do fd:close() end
  self.pidfd = assert(sys.pidfd_open(pid))
  child.fault("after_fork")
  if c.namespaces.user then
    local okm, msgm, errm = sys.id_map(pid, c.id_map and { uid = c.id_map, gid = c.gid_map or c.id_map }
      or { uid = { { 0, sys.getuid(), 1 } }, gid = { { 0, sys.getgid(), 1 } } })
    if not okm then setup_failed(msgm, { step = "id_map", errno = errm }) end
  end
  sys.write(sync_w, "g")  -- the child makes its root meanwhile
  child.fault("after_go")
  if self.group then
    local oka, msga, erra = self.group:attach(pid)
    if not oka then setup_failed(msga, { step = "cgroup", errno = erra }) end
  end
  child.fault("after_attach")
  if c.networks and #c.networks > 0 then
    local okn, errn = pcall(require("moonbox.net").attach, self)
    if not okn then setup_failed(tostring(errn), { step = "network", errno = errors.is(errn) and errn.errno or nil }) end
    child.fault("after_network")
  end
  if c.on_created then
    -- an OCI bundle's prestart and createRuntime hooks: namespaces made, nothing run yet
    local okc, errc = pcall(c.on_created, self)
    if not okc then setup_failed(tostring(errors.is(errc) and errc.message or errc), { step = "hooks" }) end
  end
  sys.write(sync_w, "c")  -- limits in place: setup and exec may go on
  sync_w:close()
  child.fault("after_limits")
  await_exec(self, err_r)
  err_r:close()
  child.fault("after_exec")
  if c.ports and #c.ports > 0 then publish_ports(self) end
  if console then
    local master, msgm = sys.recv_fd(console)
    console:close()
    if not master then setup_failed(msgm, { step = "tty" }) end
    self.tty_master = master
    with_tty[self] = true
    follow_terminal_size()
    if c.stdout == "capture" then self.capture.stdout = { fd = master, buf = sys.buffer(c.capture_limit), tty = true } end
  end
  if stdin_w then self.feeder = cio.feed(stdin_w, c.stdin) end
end

-- A detached container (an OCI create) outlives this moonbox: no cleanup at exit, and its
-- record is owned by its first process, so gc leaves it alone while it lives. Whoever knows its
-- id removes it later (moonbox.oci's delete: container.adopt, then remove).
function Container:_hand_off()
  cleanup.remove(self.token)
  self.token = nil
  local start = process.start_time(self.pid)
  if self.record then self.record:update({ owner = self.pid, owner_start = start, detached = true }) end
  if self.pidfd then self.pidfd:close() self.pidfd = nil end
  self.owner = 0  -- neither remove nor __gc acts from this process any more
end

--- A handle on a detached container made by another moonbox process, from what it recorded:
-- o = {id=, pid=, spec= (a checked spec), cgroup= (the group name), own= (true: this handle
-- may remove it)}. It can exec, pause, resume and kill; it is not waited for (its parent reaps
-- it). Without own, remove and garbage collection leave the container alone.
function container.adopt(o)
  local self = setmetatable({ id = o.id, spec = o.spec, state = o.pid and "running" or "exited", pid = o.pid,
    owner = o.own and sys.getpid() or 0, adopted = true }, Container)
  self.group = cgroup.new(o.cgroup or cgroup.container_group(o.id))
  self.record = state.open(o.id)
  self.capture = {}
  return self
end

--- Starts the container: returns when the command runs (or raises with the failed step).
function Container:start()
  if self.state ~= "created" then error("container " .. self.id .. " is " .. self.state .. ", not created", 2) end
  self.token = cleanup.add(function() self:remove() end, "container " .. self.id)
  self.state = "starting"
  local ok, err = xpcall(self._start, function(e)
    if errors.is(e) then return e end
    return errors.new("container setup failed: " .. debug.traceback(tostring(e), 2), { code = 125, step = "start" })
  end, self)
  if not ok then
    self.state = "failed"
    pcall(self.remove, self)
    error(err, 2)
  end
  self.state = "running"
  if self.spec.detach then self:_hand_off() return self end
  -- what a script asked of its links before it started (moonbox.net)
  local net = package.loaded["moonbox.net"]
  if net then
    local okn, errn = pcall(net.started, self)
    if not okn then pcall(self.remove, self) error(errn, 2) end
  end
  return self
end

local function finish(self, st)
  self.ended = loop.now()
  self.exit = st
  -- Whatever the command left running in its group goes with it.
  if self.group and #self.group:procs() > 0 then self.group:kill() end
  cio.drain(self)
  if self.feeder then sys.kill(self.feeder, "KILL") sys.wait(self.feeder) self.feeder = nil end
  self.state = "exited"
  self.result = self:_result()
  return self.result
end

--- The result, modelled on isolate's meta file.
function Container:_result()
  local st = self.exit
  local r = { id = self.id, wall = (self.ended or loop.now()) - self.started,
    code = st.code, signal = st.signal, signal_name = st.signal_name, timed_out = self.timed_out or false }
  local stats = self.group and self.group:stats()
  if stats then
    r.cpu = { user = stats.cpu.user, sys = stats.cpu.sys, total = stats.cpu.total }
    r.memory_peak, r.pids_peak = stats.memory_peak, stats.pids_peak
  elseif st.rusage then
    -- No cgroup: the kernel's account of the first process and the children it reaped.
    r.cpu = { user = st.rusage.utime, sys = st.rusage.stime, total = st.rusage.utime + st.rusage.stime }
  end
  -- The peak of all the container's processes together (its cgroup's), in KiB too, as isolate's
  -- max-rss: the first process's own rusage would count the runtime's setup before exec.
  r.max_rss_kb = r.memory_peak and (r.memory_peak // 1024) or nil
  r.cpu_time_exceeded = self.cpu_time_exceeded or false
  r.output_exceeded = self.output_exceeded or false
  r.oom_killed = (stats and stats.oom_kills or 0) > 0 and st.status == "signaled" and st.signal == 9
  if r.timed_out or r.cpu_time_exceeded then
    r.status = "timeout"
  elseif r.oom_killed then
    r.status = "oom"
  else
    r.status = st.status
  end
  for which, cap in pairs(self.capture) do
    if not cap.fn then
      r[which .. "_bytes"] = cap.buf:total()
      r[which .. "_truncated"] = cap.buf:total() > self.spec.capture_limit
      r[which] = cap.buf:take()
    end
  end
  return r
end

--- Waits for the container to end; returns its result, or nil when `timeout` seconds pass first.
function Container:wait(timeout)
  if self.state == "exited" then return self.result end
  if self.state ~= "running" then error("container " .. self.id .. " is " .. self.state .. ", not running", 2) end
  if timeout ~= nil then check.number("container:wait", "timeout", timeout, 0) end
  local done = cio.wait_some({ self }, timeout and (loop.now() + timeout), finish)
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
  if timeout ~= nil then check.number("container.wait_any", "timeout", timeout, 0) end
  local done = cio.wait_some(list, timeout and (loop.now() + timeout), finish)
  if done then return done, done.result end
  return nil
end

-- The container's name in messages and on timelines: an experiment's short name, or its id.
function Container:_label() return self.short_name or self.id end

-- One step of a wait done elsewhere (container.ready): up to `seconds` of pumping output and
-- firing timers; true when the container ended meanwhile.
function Container:_wait_step(seconds)
  return cio.wait_some({ self }, loop.now() + seconds, finish) ~= nil
end

for name, fn in pairs(require "moonbox.container.ready") do Container[name] = fn end

--- Stops the container (TERM, then KILL after `grace` seconds, default 10) and starts its spec
-- again under the same name, on the same networks. The handle stays valid and now names the
-- new run; its writable layer is new too (volumes keep their data).
function Container:restart(grace)
  if self.state ~= "running" and self.state ~= "exited" then error("container " .. self.id .. " is " .. self.state .. ", not running or exited", 2) end
  if grace ~= nil then check.number("container:restart", "grace", grace, 0) end
  if self.state == "running" then
    if self.paused then self:resume() end
    self:kill("TERM")
    if not self:wait(grace or 10) then self:_kill_all() self:wait() end
  end
  local short_name = self.short_name
  self:remove()
  local fresh = container.new(self.input)
  fresh:start()
  -- This handle becomes the new run: the script's and the networks' references stay good.
  cleanup.remove(fresh.token)
  for k in pairs(self) do self[k] = nil end
  for k, v in pairs(fresh) do self[k] = v end
  for k in pairs(fresh) do fresh[k] = nil end
  fresh.state = "removed"
  self.short_name = short_name
  self.token = cleanup.add(function() self:remove() end, "container " .. self.id)
  events.emit("fault", "restart " .. self:_label())
  return self
end

--- Sends a signal (default TERM) to the container's first process. False when not running.
function Container:kill(sig)
  if self.state ~= "running" then return false end
  events.emit("fault", "kill " .. self:_label() .. " " .. tostring(sig or "TERM"))
  return sys.kill(self.pid, sig or "TERM")
end

function Container:pause()
  if self.state ~= "running" then error("container " .. self.id .. " is " .. self.state .. ", not running", 2) end
  if not self.group then error("container " .. self.id .. ": pause needs a cgroup, and this one has none", 2) end
  self.group:freeze()
  self.paused = true
  events.emit("fault", "pause " .. self:_label())
end

function Container:resume()
  if not self.group then error("container " .. self.id .. ": resume needs a cgroup, and this one has none", 2) end
  self.group:thaw()
  self.paused = false
  events.emit("fault", "resume " .. self:_label())
end

--- Current usage: memory, pids and cpu from the container's cgroup.
function Container:stats()
  local s = self.group and self.group:stats() or { cpu = {} }
  return { memory = s.memory, memory_peak = s.memory_peak, pids = s.pids,
    cpu = { user = s.cpu.user or 0, sys = s.cpu.sys or 0 }, paused = self.paused or false, state = self.state }
end

local NS_ORDER = { { "user", "user" }, { "cgroup", "cgroup" }, { "ipc", "ipc" }, { "uts", "uts" }, { "net", "net" },
  { "pid", "pid" }, { "mnt", "mount" } }

-- The container's attachment to a network (a name or handle; the first network when nil).
local function attachment(self, network, where)
  for _, att in ipairs(self.net_attachments or {}) do
    if network == nil or att.network.name == network or att.network == network then return att end
  end
  errors.raise(string.format("%s: container %s is not on network %s", where, self.id, tostring(network and (network.name or network) or "(any)")),
    { op = "network", code = 125 }, 3)
end

-- Before start, the address the spec asks for (an automatic one is known once it runs).
local function requested(self, network, key)
  for _, e in ipairs(self.spec.networks or {}) do
    local name = type(e.network) == "table" and e.network.name or e.network
    if network == nil or name == network or e.network == network then return e[key] end
  end
  return nil
end

--- The container's IPv4 address on a network (default: its first), or nil without one.
function Container:ip(network)
  if self.state == "created" then return requested(self, network, "ip") end
  return attachment(self, network, "container:ip").ip
end

--- The container's IPv6 address on a network (default: its first), or nil without one.
function Container:ip6(network)
  if self.state == "created" then return requested(self, network, "ip6") end
  return attachment(self, network, "container:ip6").ip6
end

--- Counters of the container's link to a network: {rx_bytes=, tx_bytes=, rx_packets=,
-- tx_packets=, rx_errors=, tx_errors=, rx_dropped=, tx_dropped=}, as the container sees them.
function Container:net_stats(network)
  local att = attachment(self, network, "container:net_stats")
  local ns = errors.check({ op = "network" }, sys.open("/proc/" .. self.pid .. "/ns/net", "rdonly"))
  local nl, msg, errno = sys.netlink(ns)
  ns:close()
  if not nl then errors.raise("container:net_stats: " .. msg, { op = "network", errno = errno }, 2) end
  local links = nl:links() or {}
  nl:close()
  for _, l in ipairs(links) do if l.name == att.ifname then return l.stats end end
  return nil
end

--- The host port published for a container port (and protocol, "tcp" by default): where
-- "80" or "0:80" asked for any free port, the one the kernel gave.
function Container:port(port, proto)
  for _, p in ipairs(self.ports or {}) do
    if p.port == port and p.proto == (proto or "tcp") then return p.host_port end
  end
  return nil
end

--- Runs argv inside the running container (setns into its namespaces) and waits for it.
-- opts: env (added to the container's), cwd, user, stdin (string), capture (default true).
-- Returns {status=, code=, signal=, stdout=, stderr=}; raises when argv cannot be executed
-- (err.code 127 or 126).
function Container:exec(argv, opts)
  if self.state ~= "running" then error("container " .. self.id .. " is " .. self.state .. ", not running", 2) end
  check.strings("container:exec", "argv", argv)
  opts = check.options("container:exec", opts or {}, { env = true, cwd = true, user = true, stdin = true, capture = true,
    detach = true, console_socket = true, capabilities = true, no_new_privileges = true })
  local env = {}
  for k, v in pairs(self.spec.env) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = check.string("container:exec", "env." .. tostring(k), v, true) end
  local kinds = {}
  for _, k in ipairs(NS_ORDER) do if self.spec.namespaces[k[2]] then kinds[#kinds + 1] = k end end
  local ctx = {
    stdio = process.stdio(opts.stdin, opts.capture ~= false), parent_pidfd = assert(sys.pidfd_open(sys.getpid())),
    group = self.group, target = self.pid, kinds = kinds, argv = argv, env = env,
    user = opts.user and spec.parse_user(opts.user, "container:exec") or self.spec.user, cwd = opts.cwd or self.spec.cwd,
    detach = opts.detach, console_socket = opts.console_socket,
  }
  if opts.console_socket then
    -- the command's terminal master goes to the caller's socket (an OCI exec --console-socket)
    ctx.console = assert(sys.socket("unix", "stream"))
    local okc, msgc, errc = sys.connect(ctx.console, opts.console_socket)
    if not okc then errors.raise("container exec failed: console socket: " .. msgc, { step = "tty", errno = errc, code = 125 }, 2) end
  end
  local c = self.spec
  if opts.capabilities ~= nil or opts.no_new_privileges ~= nil then
    -- an OCI process.json's own capabilities and no_new_privileges
    c = setmetatable({ capability_sets = opts.capabilities or self.spec.capability_sets,
      capabilities = opts.capabilities and opts.capabilities.bounding or self.spec.capabilities,
      no_new_privileges = opts.no_new_privileges == nil and self.spec.no_new_privileges or opts.no_new_privileges }, { __index = self.spec })
  end
  local rep_r, rep_w = assert(sys.pipe())
  ctx.report = rep_w
  local pid = assert(sys.fork())
  if pid == 0 then child.exec_main(c, ctx) end
  rep_w:close()
  ctx.parent_pidfd:close()
  if ctx.console then ctx.console:close() end
  if opts.detach then
    -- the first line is the command's pid (or a failure); nobody here waits for it
    local line = process.read_all(rep_r):match("^[^\n]*")
    rep_r:close()
    sys.wait(pid)
    local m = line ~= "" and json.decode(line) or {}
    if m.message then errors.raise("container exec failed: " .. m.message, { step = m.step or "exec", errno = m.errno, code = m.code or 125 }, 2) end
    if not m.pid then errors.raise("container exec failed: the command's pid was lost", { code = 125 }, 2) end
    return { pid = m.pid }
  end
  local stdout, stderr = ctx.stdio:finish(self.spec.capture_limit)
  local lines = process.read_all(rep_r)
  rep_r:close()
  sys.wait(pid)
  local status
  for line in lines:gmatch("[^\n]+") do
    local m = json.decode(line)
    if m.message then
      errors.raise("container exec failed: " .. m.message, { step = m.step or "exec", errno = m.errno, code = m.code or 125 }, 2)
    end
    status = m
  end
  if not status or not status.status then errors.raise("container exec failed: the command's status was lost", { code = 125 }, 2) end
  return { status = status.status, code = status.code, signal = status.signal, stdout = stdout, stderr = stderr }
end

--- Kills whatever still runs and removes the cgroup, the state record and temporary files.
-- Safe to call more than once, and from __close and __gc.
function Container:remove()
  if self.state == "removed" or self.owner ~= sys.getpid() then return end
  if self.pid and not self.exit then
    if self.paused and self.group then pcall(self.group.thaw, self.group) end
    self:_kill_all()
    local st = sys.wait(self.pid)
    if st and not self.exit then
      self.exit = st
      self.ended = loop.now()
    end
  end
  if self.proxy then self.proxy:stop() self.proxy = nil end
  if self.net_attachments then require("moonbox.net").detach(self) end
  for _, cap in pairs(self.capture or {}) do if cap.fd then cap.fd:close() cap.fd = nil end end
  if self.tty_master then self.tty_master:close() self.tty_master = nil end
  with_tty[self] = nil
  if self.pidfd then self.pidfd:close() self.pidfd = nil end
  for _, h in ipairs(self.holds or {}) do h:close() end
  self.holds = nil
  if self.rootfs_fd then self.rootfs_fd:close() self.rootfs_fd = nil end
  if self.feeder then sys.kill(self.feeder, "KILL") sys.wait(self.feeder) self.feeder = nil end
  if self.tty_saved then sys.tcsetattr(0, self.tty_saved) self.tty_saved = nil end
  local problems = {}
  if self.group then
    local ok, msg = self.group:destroy()
    if not ok then problems[#problems + 1] = msg end
  end
  if self.hosts_dir then sys.remove_tree(self.hosts_dir) self.hosts_dir = nil end
  if self.container_dir and sys.lstat(self.container_dir) then
    -- The upper folder goes with the container, unless commit saved it as a layer first.
    local ok, msg = sys.remove_tree(self.container_dir)
    if not ok then problems[#problems + 1] = msg end
  end
  if self.record and #problems == 0 then self.record:remove() self.record = nil end
  cleanup.remove(self.token)
  self.state = "removed"
  if #problems > 0 then errors.raise("container " .. self.id .. " remove: " .. table.concat(problems, "; "), { op = "remove" }, 2) end
end

--- Saves the container's upper folder as a new layer on top of its image, as `name`.
function Container:commit(name, changes)
  if not self.container_dir then error("container " .. self.id .. ": commit needs a container started from an image", 2) end
  local image = require "moonbox.image"
  return image.commit(self.spec.image, self.container_dir .. "/upper", name, changes, "moonbox commit " .. self.id)
end

--- Runs a container to the end: new, start, wait, remove. Returns the result table.
function container.run(s)
  local c = container.new(s)
  local ok, err = pcall(function()
    if c.spec.tty and sys.isatty(0) then
      c.tty_saved = sys.tcgetattr(0)
      sys.tcsetattr(0, c.tty_saved, "raw")
      local rows, cols = sys.winsize(0)
      c:start()
      if rows and rows > 0 then sys.winsize(c.tty_master, rows, cols) end
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
