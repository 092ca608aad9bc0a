local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"

local moonbox = assert(sys.readlink("/proc/self/exe"))

-- Runs a chunk in a fresh moonbox whose cgroup root is a plain folder tree.
local function with_tree(root, chunk)
  local r = process.run({ moonbox, "run", "-e", chunk }, { env = { MOONBOX_CGROUP_ROOT = root, PATH = "/usr/bin:/bin" } })
  if r.code ~= 0 then error("moonbox failed: " .. r.stderr, 2) end
  return r.stdout
end

describe("cgroups on this host", function()
  local group
  before_each(function()
    needs_root()
    group = "test-" .. sys.getpid() .. "-" .. math.random(1 << 30)
  end)
  after_each(function()
    if group then
      pcall(sys.cgroup_set, group, "cgroup.kill", 1)
      sys.cgroup_remove(group)
    end
  end)

  it("sets and reads limits by their v2 names, with sizes", function()
    assert(sys.cgroup_set(group, "memory.max", "512M"))
    expect(sys.cgroup_get(group, "memory.max")).to_be("536870912")
    assert(sys.cgroup_set(group, "memory.max", "max"))
    expect(sys.cgroup_get(group, "memory.max")).to_be("max")
    assert(sys.cgroup_set(group, "pids.max", 10))
    expect(sys.cgroup_get(group, "pids.max")).to_be("10")
    assert(sys.cgroup_set(group, "cpu.max", "50000 100000"))
    expect(sys.cgroup_get(group, "cpu.max")).to_be("50000 100000")
    assert(sys.cgroup_set(group, "cpu.max", "max"))
    expect(sys.cgroup_get(group, "cpu.max")).to_match("^max ")
    assert(sys.cgroup_set(group, "cpu.weight", 100))
    expect(tonumber(sys.cgroup_get(group, "cpu.weight"))).to_be_near(100, 1)
    expect(sys.cgroup_get(group, "cpu.stat")).to_match("usage_usec %d+")
    expect(sys.cgroup_get(group, "memory.current")).to_match("^%d+$")
  end)

  it("also takes the v1 names on a v1 host", function()
    if sys.cgroup_version() ~= 1 then skip("v1 host only") end
    assert(sys.cgroup_set(group, "memory.limit_in_bytes", 268435456))
    expect(sys.cgroup_get(group, "memory.limit_in_bytes")).to_be("268435456")
    expect(sys.cgroup_get(group, "memory.max")).to_be("268435456")
    assert(sys.cgroup_set(group, "cpu.weight", 100))
    expect(sys.cgroup_get(group, "cpu.shares")).to_be("2597")
    assert(sys.cgroup_set(group, "memory.max", "64M"))
    assert(sys.cgroup_set(group, "memory.swap.max", "16M"))
    expect(sys.cgroup_get(group, "memory.memsw.limit_in_bytes")).to_be(tostring(80 << 20))
    expect(sys.cgroup_get(group, "memory.swap.max")).to_be(tostring(16 << 20))
  end)

  it("attaches, lists, freezes, thaws and kills processes", function()
    local pid = assert(sys.fork())
    if pid == 0 then while true do sys.nanosleep(0.01) end end
    assert(sys.cgroup_attach(group, pid))
    expect(sys.cgroup_procs(group)).to_equal({ pid })
    assert(sys.cgroup_set(group, "cgroup.freeze", 1))
    local frozen
    for _ = 1, 100 do
      frozen = sys.cgroup_get(group, "cgroup.freeze")
      if frozen == "1" then break end
      sys.nanosleep(0.01)
    end
    expect(frozen).to_be("1")
    local state = io.open("/proc/" .. pid .. "/stat"):read("a"):match("^%d+ %b() (%a)")
    assert(sys.cgroup_set(group, "cgroup.freeze", 0))
    expect(sys.cgroup_get(group, "cgroup.freeze")).to_be("0")
    local _, _, errno = sys.cgroup_remove(group)
    expect(errno).to_be("EBUSY")
    assert(sys.cgroup_set(group, "cgroup.kill", 1))
    local st = assert(sys.wait(pid))
    expect(st.signal_name).to_be("KILL")
    expect(#sys.cgroup_procs(group)).to_be(0)
    assert(sys.cgroup_remove(group))
    group = nil
  end)

  it("makes an absolute group below the hierarchy's root (an OCI cgroupsPath), and removes it", function()
    local abs = "/moonbox-test-" .. sys.getpid() .. "/inner"
    finally(function() sys.cgroup_destroy(abs) for _, p in ipairs(sys.cgroup_path("/moonbox-test-" .. sys.getpid())) do sys.rmdir(p) end end)
    assert(sys.cgroup_apply(abs, { ["pids.max"] = 7 }))
    expect(sys.cgroup_get(abs, "pids.max")).to_be("7")
    local paths = sys.cgroup_path(abs)
    expect(paths[1]).to_match("^/sys/fs/cgroup/.-/moonbox%-test%-%d+/inner$")
    expect(paths[1]).not_to_match("/moonbox/moonbox%-test")
    assert(sys.cgroup_destroy(abs))
    expect(sys.stat(paths[1])).to_be(nil)
  end)

  it("rejects unknown keys, bad values and bad group names", function()
    local v = sys.cgroup_version()
    expect(function() sys.cgroup_set(group, "memory.bogus", 1) end).to_fail("unknown key 'memory.bogus' for cgroup v" .. v)
    expect(function() sys.cgroup_get(group, "nonsense") end).to_fail("for cgroup v" .. v)
    expect(function() sys.cgroup_set(group, "memory.max", "lots") end).to_fail("bad size 'lots'")
    expect(function() sys.cgroup_set(group, "cpu.max", "fast") end).to_fail("bad value 'fast' for cpu.max")
    expect(function() sys.cgroup_set("../escape", "pids.max", 1) end).to_fail("bad component '..'")
    expect(function() sys.cgroup_set("//abs", "pids.max", 1) end).to_fail("must be a path")
    expect(function() sys.cgroup_set("/abs/", "pids.max", 1) end).to_fail("must be a path")
    local _, msg, errno = sys.cgroup_get("never-made-" .. sys.getpid(), "pids.max")
    expect(errno).to_be("ENOENT")
    expect(msg).to_match("^cgroup_get%(pids.max%)")
  end)

  it("kills a process whose memory limit is too small", function()
    assert(sys.cgroup_set(group, "memory.max", "24M"))
    pcall(sys.cgroup_set, group, "memory.swap.max", 0)
    local r, w = assert(sys.pipe())
    local pid = assert(sys.fork())
    if pid == 0 then
      sys.read(r, 1)
      local t = {}
      for i = 1, 200 do t[i] = string.rep("x", 1 << 20) .. i end
      sys._exit(0)
    end
    assert(sys.cgroup_attach(group, pid))
    sys.write(w, "x")
    local st = assert(sys.wait(pid))
    expect(st.signal_name).to_be("KILL")
    expect(sys.cgroup_get(group, "memory.events")).to_match("oom_kill [1-9]")
  end)
end)

describe("cgroup backends on a folder tree", function()
  it("writes v2 keys as v2 files", function()
    local dir <close> = fs.tempdir("cg2-")
    local root = dir.path
    fs.write(root .. "/cgroup.controllers", "cpu io memory pids\n")
    fs.write(root .. "/cgroup.subtree_control", "")
    assert(sys.mkdir(root .. "/moonbox/web"))
    fs.write(root .. "/moonbox/cgroup.controllers", "cpu io memory pids\n")
    fs.write(root .. "/moonbox/cgroup.subtree_control", "")
    for _, f in ipairs({ "memory.max", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight", "cgroup.freeze", "cgroup.procs", "memory.peak" }) do
      fs.write(root .. "/moonbox/web/" .. f, "0\n")
    end
    local out = with_tree(root, [[
      local sys = require "moonbox.sys"
      print(sys.cgroup_version())
      assert(sys.cgroup_set("web", "memory.max", "512M"))
      assert(sys.cgroup_set("web", "memory.swap.max", "max"))
      assert(sys.cgroup_set("web", "pids.max", 64))
      assert(sys.cgroup_set("web", "cpu.max", "25000 100000"))
      assert(sys.cgroup_set("web", "cgroup.freeze", 1))
      print(pcall(sys.cgroup_set, "web", "memory.bogus", 1))
      print(sys.cgroup_path("web")[1])
    ]])
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(lines[1]).to_be("2")
    expect(lines[2]).to_match("unknown key 'memory.bogus' for cgroup v2")
    expect(lines[3]).to_be(root .. "/moonbox/web")
    local web = root .. "/moonbox/web/"
    expect(fs.read(web .. "memory.max")).to_be("536870912")
    expect(fs.read(web .. "memory.swap.max")).to_be("max")
    expect(fs.read(web .. "pids.max")).to_be("64")
    expect(fs.read(web .. "cpu.max")).to_be("25000 100000")
    expect(fs.read(web .. "cgroup.freeze")).to_be("1")
    expect(fs.read(root .. "/cgroup.subtree_control")).to_match("^%+")
  end)

  it("translates v2 keys to v1 files", function()
    local dir <close> = fs.tempdir("cg1-")
    local root = dir.path
    local files = {
      memory = { "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max_usage_in_bytes" },
      cpu = { "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares" },
      cpuacct = {}, pids = { "pids.max" }, freezer = { "freezer.state" }, devices = {}, blkio = {},
    }
    for controller, names in pairs(files) do
      assert(sys.mkdir(root .. "/" .. controller .. "/moonbox/job"))
      for _, n in ipairs(names) do fs.write(root .. "/" .. controller .. "/moonbox/job/" .. n, "0\n") end
    end
    local out = with_tree(root, [[
      local sys = require "moonbox.sys"
      print(sys.cgroup_version())
      assert(sys.cgroup_set("job", "memory.max", "1G"))
      assert(sys.cgroup_set("job", "memory.swap.max", "256M"))
      assert(sys.cgroup_set("job", "cpu.max", "50000 100000"))
      assert(sys.cgroup_set("job", "cpu.weight", 10000))
      assert(sys.cgroup_set("job", "pids.max", "max"))
      assert(sys.cgroup_set("job", "cgroup.freeze", 1))
      print(sys.cgroup_get("job", "cpu.max"))
      print(pcall(sys.cgroup_set, "job", "memory.high", "1G"))
    ]])
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(lines[1]).to_be("1")
    expect(lines[2]).to_be("50000 100000")
    expect(lines[3]).to_match("unknown key 'memory.high' for cgroup v1 %(it has no v1 equivalent%)")
    local function file(c, n) return fs.read(root .. "/" .. c .. "/moonbox/job/" .. n) end
    expect(file("memory", "memory.limit_in_bytes")).to_be(tostring(1 << 30))
    expect(file("memory", "memory.memsw.limit_in_bytes")).to_be(tostring((1 << 30) + (256 << 20)))
    expect(file("cpu", "cpu.cfs_quota_us")).to_be("50000")
    expect(file("cpu", "cpu.cfs_period_us")).to_be("100000")
    expect(file("cpu", "cpu.shares")).to_be("262144")
    expect(file("pids", "pids.max")).to_be("max")
    expect(file("freezer", "freezer.state")).to_be("FROZEN")
  end)
end)

describe("cgroup v2 device filters", function()
  it("allows only the devices named, through an eBPF program", function()
    needs_root()
    -- A v2 folder of our own: the group's on a v2 host, on the unified hierarchy of a hybrid one.
    local dir
    if sys.cgroup_version() == 2 then
      assert(sys.cgroup_set("devfilter-" .. sys.getpid(), "pids.max", "max"))
      dir = sys.cgroup_path("devfilter-" .. sys.getpid())[1]
    else
      if not sys.stat("/sys/fs/cgroup/unified/cgroup.procs") then skip("no cgroup v2 hierarchy on this host") end
      local own = io.open("/proc/self/cgroup"):read("a"):match("\n?0::([^\n]*)")
      if not own then skip("this process is in no v2 cgroup") end
      dir = "/sys/fs/cgroup/unified" .. (own == "/" and "" or own) .. "/moonbox-devfilter-" .. sys.getpid()
      assert(sys.mkdir(dir))
    end
    finally(function()
      if sys.cgroup_version() == 2 then sys.cgroup_remove("devfilter-" .. sys.getpid()) else sys.rmdir(dir) end
    end)
    assert(sys.bpf_device_filter(dir, { "c 1:3 rwm", "c 1:9 r" }))
    local r, w = assert(sys.pipe())
    local out_r, out_w = assert(sys.pipe())
    local pid = assert(sys.fork())
    if pid == 0 then
      sys.read(r, 1)
      local seen = {}
      local function try(path, mode)
        local f = io.open(path, mode)
        if f then f:close() end
        seen[#seen + 1] = path .. ":" .. mode .. "=" .. (f and "ok" or "denied")
      end
      try("/dev/null", "w")
      try("/dev/zero", "r")
      try("/dev/urandom", "r")
      try("/dev/urandom", "w")
      local ok = sys.mknod("/tmp/moonbox-devfilter-" .. sys.getpid(), "char", tonumber("600", 8), 1, 5)
      if ok then sys.unlink("/tmp/moonbox-devfilter-" .. sys.getpid()) end
      seen[#seen + 1] = "mknod=" .. (ok and "ok" or "denied")
      sys.write(out_w, table.concat(seen, " "))
      sys._exit(0)
    end
    out_w:close()
    local f = assert(io.open(dir .. "/cgroup.procs", "w"))
    f:write(tostring(pid))
    f:close()
    sys.write(w, "g")
    local seen = sys.read(out_r, 4096)
    sys.wait(pid)
    expect(seen).to_be("/dev/null:w=ok /dev/zero:r=denied /dev/urandom:r=ok /dev/urandom:w=denied mknod=denied")
    expect(function() sys.bpf_device_filter(dir, { "x 1:3 rwm" }) end).to_fail("bad rule 'x 1:3 rwm'")
    local okf, msg = sys.bpf_device_filter("/tmp", { "c 1:3 rwm" })
    expect(okf).to_be_nil()
    expect(msg).to_match("^bpf_device_filter%(/tmp%)")
  end)
end)
