-- moonbox.sandbox: a strict box for untrusted jobs (graders, CI, plugin hosts), on top of
-- moonbox.container.
--
--   local box <close> = sandbox.open{ rootfs = dir, memory = "256M", time = 2, wall_time = 5 }
--   local r = box:run({ "/bin/sh", "-c", "cc -o prog prog.c" })   -- a kept box: /box persists
--   local t = box:run({ "./prog" }, { stdin = "1 2\n" })            -- only /tmp and /output are fresh
--   local a, b = box:start({ "./prog" }, {...}), box:start(...)     -- several runs at once
--   print(a:wait().status, b:wait().status)                          -- OK RE SG TO ML OL XX
--
-- The box: a user namespace (root inside is an unprivileged uid outside, and the job runs as
-- uid 1000 inside), every capability dropped, a read-only rootfs, size-limited tmpfs for /tmp,
-- for the work folder /box and for /output (copied to the host afterwards), inputs read-only,
-- no network, a new session, a minimal environment, death with the parent, seccomp, and strict
-- rlimits in the style of nsjail.
--
-- The user's rootfs is never written: a keeper process, in a mount namespace of its own (never
-- the host's), lays an overlay over it whose upper is a small tmpfs, and makes the box's mount
-- points there, as bubblewrap builds its root on a tmpfs. The keeper is real root, so a rootfs
-- below a folder only root may enter works, and so does a read-only one. The keeper also holds
-- the /box tmpfs, so it persists across runs.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local errors = require "moonbox.errors"
local check = require "moonbox.check"
local cleanup = require "moonbox.cleanup"
local container = require "moonbox.container"
local process = require "moonbox.process"
local state = require "moonbox.state"

local sandbox = {}

-- Outside uids for the box's user namespace: inside 0..65535 is outside BASE..BASE+65535.
sandbox.uid_base = 200000
sandbox.uid_count = 65536

sandbox.defaults = {
  uid = 1000, memory = "256M", pids = 64, cpus = 1, time = 10, wall_time = 30,
  output_limit = 1 << 20, file_size = "64M", open_files = 64, work_size = "128M", tmp_size = "64M", output_size = "64M",
  stack = "8M", network = false,
}

local BOX_KEYS = {
  rootfs = true, image = true, uid = true, memory = true, pids = true, cpus = true, time = true, wall_time = true,
  output_limit = true, file_size = true, open_files = true, work_size = true, tmp_size = true, stack = true,
  network = true, inputs = true, output = true, env = true, stdin = true, seccomp = true, cwd = true,
  output_size = true,
}
local RUN_KEYS = { stdin = true, time = true, wall_time = true, memory = true, pids = true, output_limit = true,
  env = true, output = true, cwd = true, cpus = true }

local function option_error(msg) check.fail("sandbox", msg) end

--- Checks options (a box's or a run's) and normalizes sizes to bytes. Every bad value is refused
-- here, before anything runs, with a message naming the option.
local function normalize(where, o)
  local n = {}
  for k, v in pairs(o) do n[k] = v end
  for _, k in ipairs({ "memory", "output_limit", "file_size", "work_size", "tmp_size", "output_size", "stack" }) do
    if o[k] ~= nil then n[k] = check.size(where, k, o[k]) end
  end
  if o.pids ~= nil then n.pids = check.integer(where, "pids", o.pids, 1, 4194304) end
  if o.open_files ~= nil then n.open_files = check.integer(where, "open_files", o.open_files, 3, 1048576) end
  if o.uid ~= nil then n.uid = check.integer(where, "uid", o.uid, 0, sandbox.uid_count - 1) end
  if o.cpus ~= nil then n.cpus = check.number(where, "cpus", o.cpus, 0, 4096, true) end
  for _, k in ipairs({ "time", "wall_time" }) do
    if o[k] ~= nil then n[k] = check.seconds(where, k, o[k]) end
  end
  if o.network ~= nil then check.boolean(where, "network", o.network) end
  if o.stdin ~= nil then check.string(where, "stdin", o.stdin, true) end
  if o.cwd ~= nil then check.absolute(where, "cwd", o.cwd) end
  if o.output ~= nil then check.string(where, "output", o.output) end
  if o.env ~= nil then
    if type(o.env) ~= "table" then check.fail(where, "env must be a table {NAME = \"value\"}") end
    for k, v in pairs(o.env) do check.string(where, "env." .. tostring(k), v, true) end
  end
  return n
end

local function merge(base, over)
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(over or {}) do out[k] = v end
  return out
end

-- A path made absolute against the working folder (a relative --rootfs is the user's intent).
local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  return assert(sys.getcwd()) .. "/" .. p
end

--- "SRC:DST" strings, or {source=, target=}, made absolute mount specs.
local function normalize_inputs(list)
  local out = {}
  for i, m in ipairs(list or {}) do
    local src, dst
    if type(m) == "string" then
      src, dst = m:match("^([^:]+):([^:]+)$")
    elseif type(m) == "table" then
      src, dst = m.source, m.target
    end
    if not src or not dst or dst:sub(1, 1) ~= "/" then
      option_error(string.format("inputs[%d] must be \"SRC:DST\" with an absolute DST", i))
    end
    local st = sys.stat(src)
    if not st then option_error(string.format("inputs[%d]: %s does not exist", i, src)) end
    out[#out + 1] = { source = absolute(src), target = dst, file = st.type ~= "dir" }
  end
  return out
end

-- MARK: verdicts

--- The isolate-style verdict for a container result.
function sandbox.verdict(r, setup_error)
  local v = {
    time = r and r.cpu and r.cpu.total or 0, cpu_user = r and r.cpu and r.cpu.user or 0,
    cpu_sys = r and r.cpu and r.cpu.sys or 0, wall = r and r.wall or 0,
    -- One memory figure, everywhere: the peak of all the job's processes together (its cgroup's).
    memory_peak = r and r.memory_peak, max_rss_kb = r and r.max_rss_kb, pids_peak = r and r.pids_peak,
    oom_killed = r and r.oom_killed or false, exitcode = r and r.code, exitsig = r and r.signal,
    stdout = r and r.stdout or "", stderr = r and r.stderr or "",
    output_truncated = r and (r.stdout_truncated or r.stderr_truncated) or false,
    killed = false,
  }
  if setup_error then
    if errors.is(setup_error) and (setup_error.code == 127 or setup_error.code == 126) then
      v.status, v.exitcode, v.message = "RE", setup_error.code, tostring(setup_error)
    else
      v.status, v.message = "XX", tostring(setup_error)
    end
  elseif r.output_exceeded then
    v.status, v.killed, v.message = "OL", true, "Output limit exceeded"
  elseif r.oom_killed then
    v.status, v.killed, v.message = "ML", true, "Memory limit exceeded"
  elseif r.cpu_time_exceeded then
    v.status, v.killed, v.message = "TO", true, "Time limit exceeded"
  elseif r.timed_out then
    v.status, v.killed, v.message = "TO", true, "Time limit exceeded (wall clock)"
  elseif r.status == "signaled" then
    v.status, v.message = "SG", "Caught fatal signal " .. tostring(r.signal)
  elseif r.code ~= 0 then
    v.status, v.message = "RE", "Exited with error status " .. tostring(r.code)
  else
    v.status = "OK"
  end
  return v
end

--- The verdict as isolate's meta file: key:value lines (status is left out when OK, as isolate
-- does). max-rss and cg-mem are the same figure: the job's cgroup peak, in KiB.
function sandbox.meta(v)
  local lines = {}
  local function add(k, val) if val ~= nil then lines[#lines + 1] = k .. ":" .. tostring(val) end end
  add("time", string.format("%.3f", v.time))
  add("time-wall", string.format("%.3f", v.wall))
  local kb = v.max_rss_kb or (v.memory_peak and v.memory_peak // 1024)
  add("max-rss", kb)
  add("cg-enabled", 1)
  add("cg-mem", kb)
  if v.oom_killed then add("cg-oom-killed", 1) end
  if v.exitsig then add("exitsig", v.exitsig) elseif v.exitcode then add("exitcode", v.exitcode) end
  if v.killed then add("killed", 1) end
  add("message", v.message)
  if v.status ~= "OK" then add("status", v.status) end
  add("pids-peak", v.pids_peak)
  if v.output_truncated then add("output-truncated", 1) end
  return table.concat(lines, "\n") .. "\n"
end

-- MARK: the keeper

-- What the keeper makes, in its mount namespace, below the box folder:
--   box/     a tmpfs (work_size), owned by the job's uid: /box, kept across runs
--   out/     a tmpfs (output_size): one folder per run, mounted at /output
--   skel/    a small tmpfs holding the overlay's upper and work folders
--   root/    the overlay: the rootfs (or an image's layers) below, skel/upper above, with the
--            box's mount points made in the upper
local function keeper_body(self, o, lowers, ready, hold_r)
  local dir = self.dir
  local function step(what, ok, msg)
    if not ok then error(what .. ": " .. tostring(msg), 0) end
    return ok
  end
  step("unshare", sys.unshare({ "mount" }))
  step("mount", sys.mount(nil, "/", nil, { "rprivate" }))
  local uid = self.outside_uid
  for _, m in ipairs({ { "box", o.work_size, 755, uid }, { "out", o.output_size, 755, 0 }, { "skel", 16 << 20, 755, 0 } }) do
    step("mkdir", sys.mkdir(dir .. "/" .. m[1], tonumber("700", 8)))
    step("mount " .. m[1], sys.mount("tmpfs", dir .. "/" .. m[1], "tmpfs", { "nosuid", "nodev" },
      string.format("size=%d,mode=0%d,uid=%d,gid=%d", m[2], m[3], m[4], m[4])))
  end
  step("mkdir", sys.mkdir(dir .. "/skel/upper"))
  step("mkdir", sys.mkdir(dir .. "/skel/work"))
  step("mkdir", sys.mkdir(dir .. "/root"))
  step("overlay", sys.overlay({ lower = lowers, upper = dir .. "/skel/upper", work = dir .. "/skel/work", target = dir .. "/root" }))
  -- The mount points, made in the upper: the user's rootfs stays as it was.
  local root = step("open root", sys.open(dir .. "/root", { "path", "directory" }))
  local points = { { "/box" }, { "/tmp" }, { "/output" }, { "/proc" }, { "/dev" }, { "/sys" } }
  for _, m in ipairs(self.inputs) do points[#points + 1] = { m.target, m.file } end
  for _, p in ipairs(points) do
    local fd = step("mount point " .. p[1], sys.open_in_root(root, p[1], { create = p[2] and "file" or "dir" }))
    fd:close()
  end
  root:close()
  ready()
  if hold_r then
    sys.read(hold_r, 1)  -- until the box closes (or its owner dies)
  else
    while true do sys.nanosleep(3600) end  -- a box from the command line: until --cleanup
  end
end

local Box = { __name = "moonbox.sandbox.box" }
Box.__index = Box
Box.__tostring = function(b) return "sandbox(" .. b.id .. (b.closed and ", closed" or "") .. ")" end
Box.__close = function(b) if not b.daemon then b:close() end end
Box.__gc = function(b) if not b.closed and not b.daemon and b.owner == sys.getpid() then pcall(b.close, b) end end

local counter = 0

-- The lower layers of a box: the rootfs folder, or an image's unpacked layers.
local function box_lowers(o)
  if o.image then
    local image = require "moonbox.image"
    local img, err = image.resolve(o.image)
    if not img then option_error(err) end
    return image.lowers(img)
  end
  if type(o.rootfs) ~= "string" then option_error("rootfs (a folder) or image (a name) is required") end
  local st = sys.stat(o.rootfs)
  if not st or st.type ~= "dir" then option_error("rootfs " .. tostring(o.rootfs) .. " is not a folder") end
  return { absolute(o.rootfs) }
end

--- Opens a box. opts are the box's options (and the defaults of its runs); opts.id names a box
-- made for the command line (its keeper outlives this process: daemon = true).
function sandbox.open(opts, daemon_id)
  opts = opts or {}
  if type(opts) ~= "table" then error("sandbox.open: options table expected", 2) end
  check.options("sandbox.open", opts, BOX_KEYS)
  local o = normalize("sandbox.open", merge(sandbox.defaults, opts))
  if o.rootfs and o.image then option_error("give rootfs or image, not both") end
  local lowers = box_lowers(o)
  counter = counter + 1
  local id = daemon_id or string.format("box-%d-%d", sys.getpid(), counter)
  local self = setmetatable({ id = id, options = o, owner = sys.getpid(), runs = 0, daemon = daemon_id ~= nil }, Box)
  self.outside_uid = sandbox.uid_base + o.uid
  self.inputs = normalize_inputs(o.inputs)
  self.dir = state.ensure("boxes") .. "/" .. id
  local record = state.new(id, { dirs = { self.dir }, box = { options = opts, lowers = lowers } }, "box")
  if not record then errors.raise("sandbox: box " .. id .. " exists already (moonbox sandbox --cleanup removes it)", { code = 2 }, 2) end
  self.record = record
  self.token = cleanup.add(function() self:close() end, "sandbox " .. id)
  local ok, err = pcall(function()
    errors.check({ op = "mkdir" }, sys.mkdir(self.dir, tonumber("700", 8)))
    local hold_r, hold_w
    if not self.daemon then hold_r, hold_w = assert(sys.pipe()) end
    local okk, pid = pcall(process.helper, "moonbox-keeper", function(ready)
      if hold_w then hold_w:close() end
      keeper_body(self, o, lowers, ready, hold_r)
    end, { daemon = self.daemon })
    if hold_r then hold_r:close() end
    if not okk then errors.raise("sandbox: cannot prepare the box: " .. tostring(pid):gsub("^moonbox%-keeper: ", ""), { code = 2 }, 0) end
    self.keeper, self.hold = pid, hold_w
    -- Records name the keeper: for a box of the command line, it outlives us.
    record:update({ keeper = pid, keeper_start = (process.start_time(pid)) })
    if self.daemon then
      record:update({ owner = pid, owner_start = (process.start_time(pid)) })
      cleanup.remove(self.token)  -- it stays until --cleanup
    end
  end)
  if not ok then
    self.daemon = false  -- a box that never became one goes
    pcall(self.close, self)
    error(err, 2)
  end
  return self
end

--- A box of the command line, by id, as --init made it (its keeper still runs).
function sandbox.attach(id)
  local rec = state.find(id)
  if not rec or rec.kind ~= "box" then errors.raise("sandbox: no box " .. id .. " (moonbox sandbox --init makes one)", { code = 2 }, 0) end
  if not (rec.keeper and process.alive(rec.keeper, rec.keeper_start)) then
    errors.raise("sandbox: box " .. id .. " has no keeper any more; moonbox sandbox --cleanup removes it", { code = 2 }, 0)
  end
  local o = normalize("sandbox", merge(sandbox.defaults, rec.box.options))
  local self = setmetatable({ id = id, options = o, owner = sys.getpid(), runs = 0, daemon = true, attached = true,
    keeper = rec.keeper, dir = rec.dirs[1], outside_uid = sandbox.uid_base + o.uid, record = nil }, Box)
  self.inputs = normalize_inputs(o.inputs)
  return self
end

--- The box's /box folder as seen from the host, through the keeper (root only).
function Box:path() return "/proc/" .. self.keeper .. "/root" .. self.dir end

-- The keeper's view of a folder of the box.
local function inside(self, sub) return self:path() .. "/" .. sub end

local Run = { __name = "moonbox.sandbox.run" }
Run.__index = Run
Run.__tostring = function(r) return "sandbox-run(" .. r.box.id .. " #" .. r.n .. ")" end

--- Starts argv in the box; returns a run to :wait() on. Several runs may go at once: they share
-- /box, and each has its own /tmp and /output. A setup failure gives the run a verdict (XX, or
-- RE when the program cannot be executed) instead of raising.
-- opts: stdin (string), time, wall_time, memory, pids, cpus, output_limit, env, output (host folder), cwd.
function Box:start(argv, opts)
  if self.closed then error("sandbox: box " .. self.id .. " is closed", 2) end
  check.strings("box:run", "argv", argv)
  check.options("box:run", opts or {}, RUN_KEYS)
  local o = merge(self.options, normalize("box:run", opts or {}))
  self.runs = self.runs + 1
  local run = setmetatable({ box = self, n = self.runs, o = o }, Run)
  local env = { PATH = "/usr/local/bin:/usr/bin:/bin", HOME = "/box", LANG = "C.UTF-8" }
  for k, v in pairs(o.env or {}) do env[k] = v end
  -- This run's /output: a fresh folder in the keeper's output tmpfs.
  run.out = string.format("out/%d-%d", sys.getpid(), run.n)
  local ok, err = pcall(function()
    errors.check({ op = "mkdir" }, sys.mkdir(inside(self, run.out), tonumber("755", 8)))
    errors.check({ op = "chown" }, sys.chown(inside(self, run.out), self.outside_uid, self.outside_uid))
  end)
  if not ok then run.setup_error = err return run end
  local mounts = {
    { type = "bind", source = self.dir .. "/box", target = "/box" },
    { type = "bind", source = self.dir .. "/" .. run.out, target = "/output" },
    { type = "tmpfs", target = "/tmp", size = o.tmp_size, mode = "1777" },
    { type = "tmpfs", target = "/dev/shm", size = o.tmp_size, mode = "1777" },
  }
  for _, m in ipairs(self.inputs) do mounts[#mounts + 1] = { type = "bind", source = m.source, target = m.target, readonly = true } end
  local namespaces = { "mount", "uts", "ipc", "pid", "user", "cgroup" }
  if not o.network then namespaces[#namespaces + 1] = "net" end
  local spec = {
    rootfs = self.dir .. "/root", command = argv, user = o.uid, cwd = o.cwd or "/box", env = env, hostname = "sandbox",
    namespaces = namespaces, network = o.network and "host" or "none",
    id_map = { { 0, sandbox.uid_base, sandbox.uid_count } }, mount_namespace = "/proc/" .. self.keeper .. "/ns/mnt",
    readonly_rootfs = true, cap_drop = { "ALL" }, seccomp = o.seccomp,
    mounts = mounts, limits = { memory = o.memory, pids = o.pids, cpus = o.cpus },
    timeout = o.wall_time, cpu_time = o.time, capture_limit = o.output_limit, kill_on_output_limit = true,
    stdin = o.stdin or "", stdout = "capture", stderr = "capture",
    rlimits = { fsize = o.file_size, nofile = o.open_files, core = 0, stack = o.stack, memlock = 65536, msgqueue = 0 },
  }
  ok, err = pcall(function()
    run.c = container.new(spec)
    run.c:start()
  end)
  if not ok then
    run.setup_error = err
    if run.c then pcall(run.c.remove, run.c) run.c = nil end
  end
  return run
end

--- Waits for the run to end; returns its verdict. The run's /output is copied to opts.output.
function Run:wait()
  if self.verdict then return self.verdict end
  local result
  if self.c then
    local ok, r = pcall(self.c.wait, self.c)
    pcall(self.c.remove, self.c)
    if ok then result = r else self.setup_error = r end
  end
  local v = sandbox.verdict(result, self.setup_error)
  local out = inside(self.box, self.out)
  if self.o.output and sys.lstat(out) then
    local okc, files = pcall(sandbox.copy_out, out, self.o.output)
    if okc then v.output_files = files else v.status, v.message = "XX", "copying /output: " .. tostring(files) end
  end
  sys.remove_tree(out)
  self.verdict = v
  return v
end

--- Runs argv in the box and returns its verdict (start, then wait).
function Box:run(argv, opts)
  if self.closed then error("sandbox: box " .. self.id .. " is closed", 2) end
  return self:start(argv, opts):wait()
end

--- Copies what a job left in its output folder to `to` on the host: regular files and folders
-- only (no links, no devices), without set-id bits. Returns the paths copied.
function sandbox.copy_out(from, to)
  local copied = {}
  errors.check({ op = "mkdir" }, sys.mkdir(to))
  local function walk(src, dst, rel)
    for _, name in ipairs(sys.listdir(src) or {}) do
      local s_path, d_path = src .. "/" .. name, dst .. "/" .. name
      local st = sys.lstat(s_path)
      if st and st.type == "dir" then
        errors.check({ op = "mkdir" }, sys.mkdir(d_path))
        walk(s_path, d_path, rel .. name .. "/")
      elseif st and st.type == "file" then
        local fd = sys.open(s_path, { "rdonly", "nofollow" })
        if fd then
          errors.check({ op = "copy" }, sys.copy_file_range(fd, d_path))
          fd:close()
          sys.chmod(d_path, st.mode & tonumber("0777", 8))
          copied[#copied + 1] = rel .. name
        end
      end
    end
  end
  walk(from, to, "")
  return copied
end

--- Ends the box: the keeper goes, and with it the box's tmpfs.
function Box:close()
  if self.closed or self.owner ~= sys.getpid() or self.attached then return end
  self.closed = true
  cleanup.remove(self.token)
  if self.hold then self.hold:close() end
  if self.keeper then
    sys.kill(self.keeper, "KILL")
    sys.wait(self.keeper)
  end
  sandbox.remove_box(self.id, self.dir)
end

--- Removes a box's folder and record once its keeper is gone (the tmpfs went with it).
function sandbox.remove_box(id, dir)
  local ok, err = true, nil
  if dir and sys.lstat(dir) then ok, err = sys.remove_tree(dir) end
  if ok then
    local rec = state.find(id)
    if rec then sys.unlink(rec.path) end
  else
    errors.raise("sandbox: closing " .. id .. ": " .. tostring(err), { code = 2 }, 0)
  end
end

--- One job in a fresh box: open, run, close.
function sandbox.run(opts)
  if type(opts) ~= "table" then error("sandbox.run: options table expected", 2) end
  check.strings("sandbox.run", "command", opts.command)
  local box_opts, run_opts = {}, {}
  for k, v in pairs(opts) do
    if k == "stdin" or k == "output" then run_opts[k] = v elseif k ~= "command" then box_opts[k] = v end
  end
  local box <close> = sandbox.open(box_opts)
  return box:run(opts.command, run_opts)
end

-- MARK: the command line

sandbox.cli_spec = {
  usage = "moonbox sandbox (--rootfs DIR | --image NAME) [options] -- CMD [ARG...]\n"
    .. "       moonbox sandbox --init --box-id N (--rootfs DIR | --image NAME) [options]   prints the box's folder\n"
    .. "       moonbox sandbox --run --box-id N [run options] -- CMD [ARG...]\n"
    .. "       moonbox sandbox --cleanup --box-id N",
  about = "Runs one untrusted job in a strict box, with isolate-style verdicts, or keeps a box for many jobs.",
  footer = "Exit status: 0 when the verdict is OK, 1 for RE, SG, TO, ML and OL, 2 for XX and for bad arguments.",
  command = true,
  options = {
    { "--rootfs", kind = "string", metavar = "DIR", help = "the root filesystem (never written; it may be read-only)" },
    { "--image", kind = "string", metavar = "NAME", help = "an image from the store, instead of a folder" },
    { "--time", kind = "seconds", help = "CPU-time limit, all processes together (default 10)" },
    { "--wall-time", kind = "seconds", help = "wall-clock limit (default 30)" },
    { "--mem", kind = "size", aliases = { "--memory" }, key = "memory", help = "memory limit (default 256M)" },
    { "--pids", kind = "integer", min = 1, max = 4194304, help = "process limit (default 64)" },
    { "--cpus", kind = "number", min = 0.001, max = 4096, help = "CPU share (default 1)" },
    { "--output-limit", kind = "size", help = "stdout and stderr are cut here, and the job is stopped (OL)" },
    { "--fsize", kind = "size", key = "file_size", help = "largest file the job may write (default 64M)" },
    { "--open-files", kind = "integer", min = 3, max = 1048576, help = "open-files limit (default 64)" },
    { "--dir", kind = "list", metavar = "SRC:DST", help = "bind SRC read-only at DST" },
    { "--out", kind = "string", metavar = "DIR", help = "what the job writes to /output is copied here (made if missing)" },
    { "--env", kind = "pairs", help = "environment variable (the environment is minimal otherwise)" },
    { "--uid", kind = "integer", min = 0, max = 65535, help = "the job's uid inside (default 1000)" },
    { "--share-net", kind = "flag", help = "keep the host network (off by default)" },
    { "--stdin", kind = "string", metavar = "FILE", help = "the job's standard input (default empty)" },
    { "--stdout", kind = "string", metavar = "FILE", help = "where the captured stdout goes (default: printed)" },
    { "--stderr", kind = "string", metavar = "FILE", help = "where the captured stderr goes (default: printed)" },
    { "--meta", kind = "string", metavar = "FILE", help = "write the verdict as isolate's meta file" },
    { "--json", kind = "flag", help = "print the verdict as JSON" },
    { "--box-id", kind = "integer", min = 0, max = 999999, help = "a kept box, for --init, --run and --cleanup" },
    { "--init", kind = "flag", help = "make a kept box and print its folder (its box/ is the job's /box)" },
    { "--run", kind = "flag", help = "run in a kept box" },
    { "--cleanup", kind = "flag", help = "remove a kept box" },
  },
}

-- Checks before the job runs that its results can be written: a verdict must never be lost.
local function writable_file(path)
  local f, err = io.open(path, "a")
  if not f then check.fail("moonbox sandbox", "cannot write " .. tostring(err)) end
  f:close()
end

function sandbox.main(args)
  local cli = require "moonbox.cli"
  local o = cli.parse("sandbox", args, sandbox.cli_spec)
  cli.main("sandbox", function()
    local modes = (o.init and 1 or 0) + (o.run and 1 or 0) + (o.cleanup and 1 or 0)
    if modes > 1 then check.fail("moonbox sandbox", "--init, --run and --cleanup go one at a time") end
    if modes == 1 and not o["box-id"] then check.fail("moonbox sandbox", "--init, --run and --cleanup need --box-id N") end
    local id = o["box-id"] and ("box-" .. o["box-id"])
    local box_opts = { rootfs = o.rootfs and absolute(o.rootfs) or nil, image = o.image, time = o.time, wall_time = o["wall-time"],
      memory = o.memory, pids = o.pids, cpus = o.cpus, output_limit = o["output-limit"], file_size = o.file_size,
      open_files = o["open-files"], uid = o.uid, network = o["share-net"] or nil, env = o.env }
    if o.dir then box_opts.inputs = o.dir end
    if o.cleanup then
      local rec = state.find(id)
      if not rec then check.fail("moonbox sandbox", "no box " .. id) end
      if rec.keeper and process.alive(rec.keeper, rec.keeper_start) then sys.kill(rec.keeper, "KILL") end
      sandbox.remove_box(id, rec.dirs and rec.dirs[1])
      return
    end
    if o.init then
      local box = sandbox.open(box_opts, id)
      print(box:path())
      return
    end
    if not o.command or #o.command == 0 then check.fail("moonbox sandbox", "give the command after --\nusage: " .. sandbox.cli_spec.usage) end
    -- Results must have somewhere to go before the job runs.
    if o.meta then writable_file(o.meta) end
    if o.stdout then writable_file(o.stdout) end
    if o.stderr then writable_file(o.stderr) end
    local run_opts = {}
    if o.out then
      errors.check({ op = "mkdir", code = 2 }, sys.mkdir(o.out))
      local probe = o.out .. "/.moonbox-write-test"
      writable_file(probe)
      sys.unlink(probe)
      run_opts.output = o.out
    end
    if o.stdin then
      local text = fs.read_if_exists(o.stdin)
      if not text then check.fail("moonbox sandbox", "--stdin " .. o.stdin .. " does not exist") end
      run_opts.stdin = text
    end
    local v
    if o.run then
      local box = sandbox.attach(id)
      for k, val in pairs(box_opts) do if val ~= nil and RUN_KEYS[k] then run_opts[k] = val end end
      v = box:run(o.command, run_opts)
    else
      local ok, result = pcall(function()
        local box <close> = sandbox.open(box_opts)
        return box:run(o.command, run_opts)
      end)
      v = ok and result or sandbox.verdict(nil, result)
      if not ok and errors.is(result) and result.op == "check" then error(result, 0) end
    end
    local function put(path, text, stream)
      if path then fs.write(path, text) else stream:write(text) end
    end
    put(o.stdout, v.stdout, io.stdout)
    put(o.stderr, v.stderr, io.stderr)
    if o.meta then put(o.meta, sandbox.meta(v)) end
    if o.json then
      local copy = {}
      for k, x in pairs(v) do if k ~= "stdout" and k ~= "stderr" then copy[k] = x end end
      io.stdout:write(json.encode(copy), "\n")
    end
    if v.status ~= "OK" and not o.json then io.stderr:write("moonbox sandbox: ", v.status, " ", v.message or "", "\n") end
    io.stdout:flush()
    os.exit(v.status == "OK" and 0 or (v.status == "XX" and 2 or 1))
  end, 2, 2)
end

return sandbox
