-- Crash safety: the child side, SIGKILL at every step of a start, and a gc that tells the truth.
-- Windows are opened with MOONBOX_TEST_FAULT=STEP, which makes moonbox (or its child) wait at
-- that step under the name "fault-STEP", so the test can kill it exactly there.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local json = require "moonbox.json"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root

local function setup()
  if root then return end
  base = fs.tempdir("crash")
  assert(sys.chmod(base.path, tonumber("755", 8)))
  root = rootfs.busybox(base.path .. "/rootfs")
end

-- The state letter: R, S, T (stopped), Z, or nil when gone.
local function proc_state(pid) return select(2, process.start_time(pid)) end

-- Every descendant of pid, from /proc.
local function descendants(pid)
  local children = {}
  for _, name in ipairs(sys.listdir("/proc")) do
    local p = tonumber(name)
    if p then
      local f = io.open("/proc/" .. p .. "/stat")
      local text = f and f:read("a")
      if f then f:close() end
      local ppid = text and tonumber(text:match("^.*%) %S+ (%d+)"))
      if ppid then children[ppid] = children[ppid] or {} table.insert(children[ppid], p) end
    end
  end
  local out, queue = {}, { pid }
  while #queue > 0 do
    local p = table.remove(queue)
    for _, c in ipairs(children[p] or {}) do out[#out + 1] = c queue[#queue + 1] = c end
  end
  return out
end

local function spawn(script, env)
  local path = fs.write(base.path .. "/script-" .. sys.getpid() .. ".lua", script)
  local pid = assert(sys.fork())
  if pid == 0 then
    sys.dup2(assert(sys.open("/dev/null", "rdwr")), 1)
    process.exec({ moonbox, "run", path, root }, env)
    sys._exit(127)
  end
  return pid
end

local function records(state)
  local out = {}
  for _, n in ipairs(sys.listdir(state) or {}) do if n:match("%.json") then out[#out + 1] = n end end
  return out
end

describe("SIGKILL at each step of a container start", function()
  before_each(function() needs_root() setup() end)

  local starter = [[
    local container = require "moonbox.container"
    local c = container.new({ rootfs = arg[1], user = "1000:1000", limits = { memory = "64M", pids = 16 },
      command = { "/bin/sleep", "60" } })
    c:start()
    c:wait()
  ]]

  for _, step in ipairs({ "child_started", "after_fork", "after_go", "during_setup", "after_attach", "after_limits", "after_exec" }) do
    it("leaves nothing alive, and gc leaves nothing, when killed at " .. step, function()
      local state = base.path .. "/state-" .. step
      local store = base.path .. "/store-" .. step
      local env = { MOONBOX_STATE = state, MOONBOX_ROOT = store, MOONBOX_TEST_FAULT = step, PATH = "/usr/bin:/bin" }
      local pid = spawn(starter, env)
      -- Whoever waits at the step: moonbox itself, or its child.
      local function comm(p)
        local f = io.open("/proc/" .. p .. "/comm")
        local name = f and f:read("l")
        if f then f:close() end
        return name
      end
      local stopped = eventually(function()
        for _, p in ipairs({ pid, table.unpack(descendants(pid)) }) do
          if (comm(p) or ""):match("^fault%-") then return p end
        end
      end)
      expect(stopped).to_be_truthy()
      if step == "after_exec" then
        -- The command really runs: sleep, as uid 1000, below moonbox.
        expect(eventually(function()
          for _, d in ipairs(descendants(pid)) do
            local cmd = io.open("/proc/" .. d .. "/comm")
            if cmd and cmd:read("l") == "sleep" then return true end
          end
        end)).to_be(true)
      end
      local family = descendants(pid)
      -- The record names the group before anything is made.
      local recs = records(state)
      assert(sys.kill(pid, "KILL"))
      sys.wait(pid)
      for _, p in ipairs(family) do
        expect(eventually(function() local s = proc_state(p) return s == nil or s == "Z" end, 5)).to_be(true)
      end
      local groups = {}
      for _, name in ipairs(recs) do
        local data = json.decode(fs.read(state .. "/" .. name))
        for _, g in ipairs(type(data.cgroup) == "table" and data.cgroup or {}) do groups[#groups + 1] = g end
      end
      for _, g in ipairs(groups) do
        local procs = fs.read_if_exists(g .. "/cgroup.procs")
        expect(procs == nil or procs == "").to_be(true)
      end
      local r = process.run({ moonbox, "gc" }, { env = { MOONBOX_STATE = state, MOONBOX_ROOT = store } })
      expect(r.stderr).to_be("")
      expect(r.code).to_be(0)
      expect(records(state)).to_equal({})
      for _, g in ipairs(groups) do expect(sys.lstat(g)).to_be_nil() end
      expect(sys.listdir(store .. "/containers") or {}).to_equal({})
      r = process.run({ moonbox, "gc" }, { env = { MOONBOX_STATE = state, MOONBOX_ROOT = store } })
      expect(r.stdout).to_match("nothing to collect")
    end)
  end
end)

describe("the child side", function()
  before_each(function() needs_root() setup() end)

  it("never runs the caller's script again when exec fails in the child", function()
    local marker = base.path .. "/ran-twice"
    local script = string.format([[
      local container = require "moonbox.container"
      local ok, err = pcall(container.run, { rootfs = arg[1], command = { "echo", "a\0b" }, stdout = "capture" })
      local f = io.open(%q, "a") f:write("x") f:close()
      print(ok, err)
    ]], marker)
    local path = fs.write(base.path .. "/nul.lua", script)
    local r = process.run({ moonbox, "run", path, root })
    expect(r.stdout).to_match("command%[2%] must be a string without NUL bytes")
    expect(fs.read(marker)).to_be("x")  -- once, by the caller; never by a child
    -- A primitive's own message names the NUL too.
    local okm, msg = pcall(sys.exec, { "echo", "a\0b" })
    expect(okm).to_be(false)
    expect(tostring(msg)).to_match("item 2 contains a NUL byte")
  end)

  it("keeps to the timeout and to signals while a setup function runs", function()
    local t0 = sys.clock_gettime()
    local ok, err = pcall(container.run, { rootfs = root, command = { "/bin/true" }, timeout = 1,
      setup = function() while true do end end })
    expect(ok).to_be(false)
    expect(tostring(err)).to_match("timed out after 1s before the command started")
    expect(sys.clock_gettime() - t0).to_be_at_most(5)
    local state = base.path .. "/state-hang"
    local pid = spawn([[
      local container = require "moonbox.container"
      container.run({ rootfs = arg[1], command = { "/bin/true" }, setup = function() while true do end end })
    ]], { MOONBOX_STATE = state, PATH = "/usr/bin:/bin" })
    expect(eventually(function() return #descendants(pid) > 0 and #records(state) > 0 end)).to_be(true)
    local family = descendants(pid)
    sys.nanosleep(0.2)
    assert(sys.kill(pid, "TERM"))
    local st = sys.wait(pid)
    expect(st.signal_name).to_be("TERM")
    for _, p in ipairs(family) do expect(proc_state(p)).to_be_nil() end
    expect(records(state)).to_equal({})
  end)

  it("reports an init that cannot start the command, instead of exit 0", function()
    local ok, err = pcall(container.run, { rootfs = root, init = true, limits = { pids = 1 }, command = { "/bin/true" } })
    expect(ok).to_be(false)
    expect(tostring(err)).to_match("init: cannot start the command")
    ok, err = pcall(container.run, { rootfs = root, init = true, command = { "/nonexistent" } })
    expect(ok).to_be(false)
    expect(err.code).to_be(127)
  end)

  it("gives the command default signal dispositions (no inherited SIGPIPE ignore)", function()
    local r = container.run({ rootfs = root, command = { "/bin/sh", "-c", "grep -E 'SigIgn|SigBlk' /proc/self/status; yes | head -n1" },
      stdout = "capture" })
    expect(r.stdout).to_match("SigIgn:%s+0+\n")
    expect(r.stdout).to_match("SigBlk:%s+0+\n")
    expect(r.stdout).to_match("\ny\n$")
    expect(r.code).to_be(0)
  end)
end)

describe("a gc that tells the truth", function()
  local state, store
  before_each(function()
    needs_root()
    setup()
    state = base.path .. "/gc-state-" .. math.random(1 << 30)
    store = base.path .. "/gc-store-" .. math.random(1 << 30)
    assert(sys.mkdir(state, tonumber("700", 8)))
  end)

  local function gc()
    return process.run({ moonbox, "gc" }, { env = { MOONBOX_STATE = state, MOONBOX_ROOT = store } })
  end

  it("removes a dead run's cgroups when run from another cgroup", function()
    local pid = spawn([[
      local container = require "moonbox.container"
      local c = container.new({ rootfs = arg[1], limits = { memory = "32M" }, command = { "/bin/sleep", "60" } })
      c:start()
      io.open(arg[1] .. "/../started-" .. require("moonbox.sys").getpid(), "w"):close()
      c:wait()
    ]], { MOONBOX_STATE = state, PATH = "/usr/bin:/bin" })
    expect(eventually(function() return sys.stat(base.path .. "/started-" .. pid) end)).to_be_truthy()
    local rec = json.decode(fs.read(state .. "/" .. records(state)[1]))
    assert(sys.kill(pid, "KILL"))
    sys.wait(pid)
    -- gc from a cgroup of its own, elsewhere in every hierarchy.
    local elsewhere = "gc-elsewhere-" .. sys.getpid()
    local r = process.run({ "sh", "-c", string.format([[
      for h in /sys/fs/cgroup/*/; do [ -e "$h/cgroup.procs" ] && mkdir -p "$h%s" && echo $$ > "$h%s/cgroup.procs" 2>/dev/null; done
      MOONBOX_STATE=%s MOONBOX_ROOT=%s %s gc; code=$?
      for h in /sys/fs/cgroup/*/; do [ -d "$h%s" ] && echo $$ > "$h/cgroup.procs" 2>/dev/null; done
      exit $code]], elsewhere, elsewhere, state, store, moonbox, elsewhere) })
    process.run({ "sh", "-c", "for h in /sys/fs/cgroup/*/; do rmdir $h" .. elsewhere .. " 2>/dev/null; done; true" })
    expect(r.code).to_be(0)
    for _, g in ipairs(rec.cgroup) do expect(sys.lstat(g)).to_be_nil() end
    expect(records(state)).to_equal({})
  end)

  it("collects partial records, temporary files and unrecorded folders, and treats a zombie owner as dead", function()
    fs.write(state .. "/empty.json", "")                 -- a full disk's 0-byte record
    fs.write(state .. "/torn.json.tmp12345", "{")        -- a torn write
    assert(sys.mkdir(store .. "/containers/orphan/upper"))   -- a folder made before its record existed
    assert(sys.mkdir(store .. "/tmp/import-1-2-abcdef"))     -- a temporary folder of a dead moonbox
    local zombie = assert(sys.fork())
    if zombie == 0 then sys._exit(0) end
    eventually(function() return proc_state(zombie) == "Z" end)
    local start = process.start_time(zombie)
    fs.write(state .. "/zombie.json", json.encode({ id = "zombie", owner = zombie, owner_start = start, dirs = {} }))
    local r = gc()
    sys.wait(zombie)
    expect(r.code).to_be(0)
    expect(r.stdout).to_match("removed zombie:")
    expect(records(state)).to_equal({})
    expect(sys.listdir(state)).to_equal({})
    expect(sys.listdir(store .. "/containers")).to_equal({})
    expect(sys.listdir(store .. "/tmp")).to_equal({})
  end)

  it("says so, and exits 1, when something stays", function()
    fs.write(state .. "/stuck.json", json.encode({ id = "stuck", owner = 1, owner_start = 1, dirs = { "/nonexistent-root/x" } }))
    local r = gc()
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("^moonbox gc: stuck: refused folder /nonexistent%-root/x")
    expect(records(state)).to_equal({ "stuck.json" })
  end)
end)

describe("inputs that were accepted but wrong", function()
  before_each(function() needs_root() setup() end)

  it("refuses them with a message naming the field", function()
    local function bad(field, value, pattern)
      local spec = { rootfs = root, command = { "/bin/true" } }
      if field:find("%.") then
        local a, b = field:match("^(%w+)%.(%w+)$")
        spec[a] = { [b] = value }
      else
        spec[field] = value
      end
      expect(function() container.run(spec) end).to_fail(pattern)
    end
    bad("timeout", 0 / 0, "timeout must be a finite number")
    bad("timeout", 1 / 0, "timeout must be a finite number")
    bad("limits.cpus", 0 / 0, "limits.cpus must be a finite number")
    bad("limits.pids", 1e30, "limits.pids must be a whole number")
    bad("limits.memory", "99999999999999G", "is too large")
    bad("readonly_rootfs", "false", "readonly_rootfs must be true or false")
    bad("id_map", { { 0, 1000, 1 } }, "id_map needs a user namespace")
    bad("mounts", { { type = "tmpfs", target = "/" } }, "a tmpfs on / would hide the rootfs")
    bad("env", { X = true }, "env.X must be a string or a number")
    expect(container.run({ rootfs = root, command = { "/bin/sh", "-c", "echo $N" }, env = { N = 5 }, stdout = "capture" }).stdout)
      .to_be("5\n")
    local r = process.run({ moonbox, "box", "--rootfs", root, "--pids", "1e30", "--", "true" })
    expect(r.code).to_be(125)
    expect(r.stderr).to_match("^moonbox box: %-%-pids must be a whole number")
    r = process.run({ moonbox, "sandbox", "--rootfs", root, "--open-files", "0", "--", "true" })
    expect(r.code).to_be(2)
    expect(r.stderr).to_match("^moonbox sandbox: %-%-open%-files must be a whole number from 3")
  end)

  it("captures a big output with one growing buffer, near its size in memory", function()
    local r = process.run({ moonbox, "run", "-e", [[
      local container = require "moonbox.container"
      local res = container.run({ rootfs = arg[1], command = { "/bin/sh", "-c", "head -c 200000000 /dev/zero" },
        stdout = "capture", capture_limit = "1G" })
      local hwm = io.open("/proc/self/status"):read("a"):match("VmHWM:%s+(%d+)")
      print(#res.stdout, hwm)
    ]], root })
    local n, hwm = r.stdout:match("(%d+)%s+(%d+)")
    expect(tonumber(n)).to_be(200000000)
    -- Once for the buffer, once for the Lua string it becomes: not the 709 MB of a string per chunk.
    expect(tonumber(hwm) * 1024).to_be_at_most(2.4 * 200000000)
  end)
end)

describe("crash teardown", function()
  it("removes the rootfs", function()
    if base then base:remove() end
    base, root = nil, nil
  end)
end)
