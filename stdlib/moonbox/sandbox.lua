-- moonbox.sandbox: a strict box for untrusted jobs (graders, CI, plugin hosts), on top of
-- moonbox.container.
--
--   local box <close> = sandbox.open{ rootfs = dir, memory = "256M", time = 2, wall_time = 5 }
--   local r = box:run({ "/bin/sh", "-c", "cc -o prog prog.c" })   -- a kept box: /box persists
--   local t = box:run({ "./prog" }, { stdin = "1 2\n" })            -- only /tmp is fresh
--   print(t.status, t.time, t.memory_peak)                           -- OK RE SG TO ML OL XX
--
-- The box: a user namespace (root inside is an unprivileged uid outside, and the job runs as
-- uid 1000 inside), every capability dropped, a read-only rootfs, size-limited tmpfs for /tmp,
-- for the work folder /box and for /output (copied to the host afterwards), inputs read-only, no network, a new session, a minimal environment, death with the parent, seccomp,
-- and strict rlimits in the style of nsjail.
local sys = require "moonbox.sys"
local container = require "moonbox.container"
local process = require "moonbox.process"
local check = require "moonbox.check"
local state = require "moonbox.state"
local json = require "moonbox.json"

local sandbox = {}

-- Outside uids for the box's user namespace: inside 0..65535 is outside BASE..BASE+65535.
sandbox.uid_base = 200000
sandbox.uid_count = 65536

sandbox.defaults = {
  uid = 1000, memory = "256M", pids = 64, cpus = 1, time = 10, wall_time = 30,
  output_limit = 1 << 20, file_size = "64M", open_files = 64, work_size = "128M", tmp_size = "64M", output_size = "64M",
  stack = "8M", network = false,
}

local OPTION_KEYS = {
  rootfs = true, uid = true, memory = true, pids = true, cpus = true, time = true, wall_time = true,
  output_limit = true, file_size = true, open_files = true, work_size = true, tmp_size = true, stack = true,
  network = true, inputs = true, output = true, env = true, stdin = true, seccomp = true, cwd = true,
  output_size = true,
}

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
    if not sys.stat(src) then option_error(string.format("inputs[%d]: %s does not exist", i, src)) end
    out[#out + 1] = { source = src, target = dst }
  end
  return out
end

-- Mount points must exist in the rootfs before the job's user namespace starts: made here,
-- from outside, where the rootfs's owner can write.
local function ensure_mountpoint(rootfs, target, is_file)
  local path = rootfs .. target
  if sys.lstat(path) then return end
  if is_file then
    assert(sys.mkdir(path:match("^(.*)/[^/]*$")))
    local f, err = io.open(path, "w")
    if not f then option_error("cannot make mount point " .. path .. ": " .. err) end
    f:close()
  else
    local ok, msg = sys.mkdir(path)
    if not ok then option_error("cannot make mount point: " .. msg) end
  end
end

-- MARK: verdicts

--- The isolate-style verdict for a container result.
function sandbox.verdict(r, setup_error)
  local v = {
    time = r and r.cpu and r.cpu.total or 0, cpu_user = r and r.cpu and r.cpu.user or 0,
    cpu_sys = r and r.cpu and r.cpu.sys or 0, wall = r and r.wall or 0,
    memory_peak = r and r.memory_peak, max_rss_kb = r and r.max_rss_kb, pids_peak = r and r.pids_peak,
    oom_killed = r and r.oom_killed or false, exitcode = r and r.code, exitsig = r and r.signal,
    stdout = r and r.stdout or "", stderr = r and r.stderr or "",
    output_truncated = r and (r.stdout_truncated or r.stderr_truncated) or false,
    killed = false,
  }
  if setup_error then
    if container.is_error(setup_error) and (setup_error.code == 127 or setup_error.code == 126) then
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

--- The verdict as isolate's meta file: key:value lines (status is left out when OK, as isolate does).
function sandbox.meta(v)
  local lines = {}
  local function add(k, val) if val ~= nil then lines[#lines + 1] = k .. ":" .. tostring(val) end end
  add("time", string.format("%.3f", v.time))
  add("time-wall", string.format("%.3f", v.wall))
  -- max-rss is the job's peak from its cgroup: the kernel's own rusage figure would count
  -- the runtime's memory from before exec.
  add("max-rss", v.memory_peak and (v.memory_peak // 1024))
  add("cg-enabled", 1)
  add("cg-mem", v.memory_peak and (v.memory_peak // 1024))
  if v.oom_killed then add("cg-oom-killed", 1) end
  if v.exitsig then add("exitsig", v.exitsig) elseif v.exitcode then add("exitcode", v.exitcode) end
  if v.killed then add("killed", 1) end
  add("message", v.message)
  if v.status ~= "OK" then add("status", v.status) end
  add("pids-peak", v.pids_peak)
  if v.output_truncated then add("output-truncated", 1) end
  return table.concat(lines, "\n") .. "\n"
end

-- MARK: the box

local Box = { __name = "moonbox.sandbox.box" }
Box.__index = Box
Box.__tostring = function(b) return "sandbox(" .. b.id .. (b.closed and ", closed" or "") .. ")" end
Box.__close = function(b) b:close() end
Box.__gc = function(b) if not b.closed and b.owner == sys.getpid() then pcall(b.close, b) end end

local counter = 0

--- Opens a box: its work folder lives in a tmpfs held by a keeper process in a mount
-- namespace of its own, so it persists across runs and never shows on the host.
function sandbox.open(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("sandbox.open: options table expected", 2) end
  process.check_options("sandbox.open", opts, OPTION_KEYS)
  local o = normalize("sandbox.open", merge(sandbox.defaults, opts))
  if type(o.rootfs) ~= "string" or not (sys.stat(o.rootfs) or {}).type == "dir" then
    option_error("rootfs must be a folder")
  end
  local st = sys.stat(o.rootfs)
  if not st or st.type ~= "dir" then option_error("rootfs " .. tostring(o.rootfs) .. " is not a folder") end
  -- The box's root is an unprivileged uid on the host: every folder above the rootfs must let it through.
  local path = ""
  for part in o.rootfs:gmatch("[^/]+") do
    path = path .. "/" .. part
    local pst = sys.stat(path)
    if pst and pst.mode & 1 == 0 then
      option_error(string.format("rootfs %s is out of the box's reach: %s has mode %o (others need x)", o.rootfs, path, pst.mode))
    end
  end
  if math.type(o.uid) ~= "integer" or o.uid < 0 or o.uid >= sandbox.uid_count then
    option_error("uid must be an integer below " .. sandbox.uid_count)
  end
  counter = counter + 1
  local self = setmetatable({ id = string.format("box-%d-%d", sys.getpid(), counter), options = o,
    owner = sys.getpid(), runs = 0 }, Box)
  self.outside_uid = sandbox.uid_base + o.uid
  self.inputs = normalize_inputs(o.inputs)
  -- The folder the keeper mounts its tmpfs on; on the host it stays an empty folder.
  self.dir = assert(sys.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/moonbox-" .. self.id .. "-"))
  assert(sys.chmod(self.dir, tonumber("755", 8)))  -- the job's user namespace reaches its mounts through it
  assert(sys.mkdir(self.dir .. "/work"))
  assert(sys.mkdir(self.dir .. "/out"))
  self.record = state.new(self.id, { dirs = { self.dir } })
  local ok, err = pcall(function()
    for _, t in ipairs({ "/box", "/tmp", "/output", "/proc", "/dev", "/sys" }) do ensure_mountpoint(o.rootfs, t) end
    for _, m in ipairs(self.inputs) do
      ensure_mountpoint(o.rootfs, m.target, (sys.stat(m.source) or {}).type ~= "dir")
    end
    local ready_r, ready_w = assert(sys.pipe())
    local hold_r, hold_w = assert(sys.pipe())
    local pid = assert(sys.fork())
    if pid == 0 then
      ready_r:close()
      hold_w:close()
      sys.prctl("set_pdeathsig", "KILL")
      local function fail(msg) sys.write(ready_w, msg) sys._exit(1) end
      local okm, msg = sys.unshare({ "mount" })
      if not okm then fail(msg) end
      okm, msg = sys.mount(nil, "/", nil, { "rprivate" })
      if not okm then fail(msg) end
      -- /box and /output: tmpfs of their own, so no job can fill the host's disk.
      for _, part in ipairs({ { "work", o.work_size }, { "out", o.output_size } }) do
        local path = self.dir .. "/" .. part[1]
        okm, msg = sys.mount("tmpfs", path, "tmpfs", { "nosuid", "nodev" },
          string.format("size=%d,mode=0755,uid=%d,gid=%d", part[2], self.outside_uid, self.outside_uid))
        if not okm then fail(msg) end
      end
      sys.write(ready_w, "r")
      ready_w:close()
      sys.read(hold_r, 1)  -- until the box closes
      sys._exit(0)
    end
    ready_w:close()
    hold_r:close()
    local answer = process.read_all(ready_r, 4096)
    ready_r:close()
    if answer ~= "r" then
      hold_w:close()
      sys.wait(pid)
      error("sandbox: cannot prepare the work folder: " .. answer, 0)
    end
    self.keeper, self.hold = pid, hold_w
  end)
  if not ok then
    self:close()
    error(err, 2)
  end
  return self
end

--- Runs argv in the box and returns its verdict. Only /tmp (and the output folder, if
-- given) start fresh; /box keeps what earlier runs left.
-- opts: stdin (string), time, wall_time, memory, pids, output_limit, env, output (host folder), cwd.
function Box:run(argv, opts)
  if self.closed then error("sandbox: box " .. self.id .. " is closed", 2) end
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then error("sandbox: argv must be a list of strings", 2) end
  opts = opts or {}
  process.check_options("box:run", opts, { stdin = true, time = true, wall_time = true, memory = true, pids = true,
    output_limit = true, env = true, output = true, cwd = true, cpus = true })
  local o = merge(self.options, normalize("box:run", opts))
  local env = { PATH = "/usr/local/bin:/usr/bin:/bin", HOME = "/box", LANG = "C.UTF-8" }
  for k, v in pairs(o.env or {}) do env[k] = v end
  -- The keeper's tmpfs, seen from the host through its root; /output starts empty each run.
  local out_inside = "/proc/" .. self.keeper .. "/root" .. self.dir .. "/out"
  for _, name in ipairs(sys.listdir(out_inside) or {}) do assert(sys.remove_tree(out_inside .. "/" .. name)) end
  local mounts = {
    { type = "bind", source = self.dir .. "/work", target = "/box" },
    { type = "bind", source = self.dir .. "/out", target = "/output" },
    { type = "tmpfs", target = "/tmp", size = o.tmp_size, mode = "1777" },
    { type = "tmpfs", target = "/dev/shm", size = o.tmp_size, mode = "1777" },
  }
  for _, m in ipairs(self.inputs) do mounts[#mounts + 1] = { type = "bind", source = m.source, target = m.target, readonly = true } end
  if o.output then
    local st = sys.stat(o.output)
    if not st or st.type ~= "dir" then error("sandbox: output " .. tostring(o.output) .. " is not a folder", 2) end
  end
  local namespaces = { "mount", "uts", "ipc", "pid", "user", "cgroup" }
  if not o.network then namespaces[#namespaces + 1] = "net" end
  local spec = {
    rootfs = o.rootfs, command = argv, user = o.uid, cwd = o.cwd or "/box", env = env, hostname = "sandbox",
    namespaces = namespaces, network = o.network and "host" or "none",
    id_map = { { 0, sandbox.uid_base, sandbox.uid_count } }, mount_namespace = "/proc/" .. self.keeper .. "/ns/mnt",
    readonly_rootfs = true, cap_drop = { "ALL" }, seccomp = o.seccomp,
    mounts = mounts, limits = { memory = o.memory, pids = o.pids, cpus = o.cpus },
    timeout = o.wall_time, cpu_time = o.time, capture_limit = o.output_limit, kill_on_output_limit = true,
    stdin = o.stdin or "", stdout = "capture", stderr = "capture",
    rlimits = {
      fsize = o.file_size, nofile = o.open_files, core = 0,
      stack = o.stack, memlock = 65536, msgqueue = 0,
    },
  }
  self.runs = self.runs + 1
  local ok, result = pcall(container.run, spec)
  local v = sandbox.verdict(ok and result or nil, not ok and result or nil)
  if o.output then v.output_files = sandbox.copy_out(out_inside, o.output) end
  return v
end

--- Copies what a job left in its output folder to `to` on the host: regular files and
-- folders only (no links, no devices), without set-id bits. Returns the paths copied.
function sandbox.copy_out(from, to)
  local copied = {}
  local function walk(src, dst, rel)
    for _, name in ipairs(sys.listdir(src) or {}) do
      local s_path, d_path = src .. "/" .. name, dst .. "/" .. name
      local st = sys.lstat(s_path)
      if st and st.type == "dir" then
        assert(sys.mkdir(d_path))
        walk(s_path, d_path, rel .. name .. "/")
      elseif st and st.type == "file" then
        local fd = sys.open(s_path, { "rdonly", "nofollow" })
        if fd then
          local out = assert(io.open(d_path, "wb"))
          while true do
            local chunk = sys.read(fd, 1 << 16)
            if not chunk or chunk == "" then break end
            out:write(chunk)
          end
          out:close()
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

--- Ends the box: the keeper goes, and with it the work folder's tmpfs.
function Box:close()
  if self.closed or self.owner ~= sys.getpid() then return end
  self.closed = true
  if self.hold then self.hold:close() end
  if self.keeper then
    sys.kill(self.keeper, "KILL")
    sys.wait(self.keeper)
  end
  -- With the keeper gone its tmpfs are gone too: only empty folders remain.
  local ok, err = true, nil
  if self.dir then ok, err = sys.remove_tree(self.dir) end
  if ok and self.record then self.record:remove() end
  if not ok then error("sandbox: closing " .. self.id .. ": " .. tostring(err), 2) end
end

--- One job in a fresh box: open, run, close.
function sandbox.run(opts)
  if type(opts) ~= "table" then error("sandbox.run: options table expected", 2) end
  local command = opts.command
  if type(command) ~= "table" or type(command[1]) ~= "string" then
    error("sandbox.run: command must be a list of strings", 2)
  end
  local box_opts = {}
  for k, v in pairs(opts) do if k ~= "command" then box_opts[k] = v end end
  local stdin, output = box_opts.stdin, box_opts.output
  box_opts.stdin, box_opts.output = nil, nil
  local box <close> = sandbox.open(box_opts)
  return box:run(command, { stdin = stdin, output = output })
end

-- MARK: the command line

sandbox.usage = [[
usage: moonbox sandbox --rootfs DIR [options] -- CMD [ARG...]

options:
  --rootfs DIR          the root filesystem (required; mounted read-only)
  --time S              CPU-time limit, all processes together (default 10)
  --wall-time S         wall-clock limit (default 30)
  --mem SIZE            memory limit (default 256M)
  --pids N              process limit (default 64)
  --cpus X              CPU share (default 1)
  --output-limit BYTES  stdout and stderr are cut here, and the job is stopped (OL)
  --fsize SIZE          largest file the job may write (default 64M)
  --open-files N        open-files limit (default 64)
  --dir SRC:DST         bind SRC read-only at DST
  --out DIR             what the job writes to /output (a tmpfs) is copied here afterwards
  --env NAME=VALUE      environment variable (the environment is minimal otherwise)
  --uid N               the job's uid inside (default 1000)
  --share-net           keep the host network (off by default)
  --stdin FILE          the job's standard input (default empty)
  --stdout FILE, --stderr FILE   where the captured output goes (default: printed)
  --meta FILE           write the verdict as isolate's meta file (key:value lines)
  --json                print the verdict as JSON
Exit status: 0 when the verdict is OK, 1 for RE, SG, TO, ML and OL, 2 for XX.
]]

function sandbox.main(args)
  local opts, inputs = {}, {}
  local meta, as_json, stdout_file, stderr_file
  local i = 1
  local function value(name)
    i = i + 1
    if args[i] == nil then io.stderr:write("moonbox sandbox: ", name, " needs a value\n") os.exit(2) end
    return args[i]
  end
  local function number(name) return tonumber(value(name)) or (io.stderr:write("moonbox sandbox: ", name, " needs a number\n") and os.exit(2)) end
  local command
  while i <= #args do
    local a = args[i]
    if a == "--" then command = table.move(args, i + 1, #args, 1, {}) break
    elseif a == "--rootfs" then opts.rootfs = value(a)
    elseif a == "--time" then opts.time = number(a)
    elseif a == "--wall-time" then opts.wall_time = number(a)
    elseif a == "--mem" or a == "--memory" then opts.memory = value(a)
    elseif a == "--pids" then opts.pids = math.tointeger(number(a))
    elseif a == "--cpus" then opts.cpus = number(a)
    elseif a == "--output-limit" then opts.output_limit = math.tointeger(number(a))
    elseif a == "--fsize" then opts.file_size = value(a)
    elseif a == "--open-files" then opts.open_files = math.tointeger(number(a))
    elseif a == "--dir" then inputs[#inputs + 1] = value(a)
    elseif a == "--out" then opts.output = value(a)
    elseif a == "--env" then
      local k, v = value(a):match("^([^=]+)=(.*)$")
      opts.env = opts.env or {}
      if k then opts.env[k] = v end
    elseif a == "--uid" then opts.uid = math.tointeger(number(a))
    elseif a == "--share-net" then opts.network = true
    elseif a == "--stdin" then
      local path = value(a)
      local f, err = io.open(path, "rb")
      if not f then io.stderr:write("moonbox sandbox: ", err, "\n") os.exit(2) end
      opts.stdin = f:read("a")
      f:close()
    elseif a == "--stdout" then stdout_file = value(a)
    elseif a == "--stderr" then stderr_file = value(a)
    elseif a == "--meta" then meta = value(a)
    elseif a == "--json" then as_json = true
    elseif a == "-h" or a == "--help" then io.stdout:write(sandbox.usage) os.exit(0)
    else io.stderr:write("moonbox sandbox: unknown option ", a, "\n", sandbox.usage) os.exit(2) end
    i = i + 1
  end
  if not command or #command == 0 then io.stderr:write(sandbox.usage) os.exit(2) end
  if #inputs > 0 then opts.inputs = inputs end
  opts.command = command
  local ok, v = pcall(sandbox.run, opts)
  if not ok then
    v = sandbox.verdict(nil, v)
  end
  local function put(path, text, stream)
    if path then
      local f = assert(io.open(path, "wb"))
      f:write(text)
      f:close()
    else
      stream:write(text)
    end
  end
  put(stdout_file, v.stdout, io.stdout)
  put(stderr_file, v.stderr, io.stderr)
  if meta then put(meta, sandbox.meta(v)) end
  if as_json then
    local copy = {}
    for k, x in pairs(v) do if k ~= "stdout" and k ~= "stderr" then copy[k] = x end end
    io.stdout:write(json.encode(copy), "\n")
  end
  if v.status ~= "OK" and not as_json then io.stderr:write("moonbox sandbox: ", v.status, " ", v.message or "", "\n") end
  io.stdout:flush()
  os.exit(v.status == "OK" and 0 or (v.status == "XX" and 2 or 1))
end

return sandbox
