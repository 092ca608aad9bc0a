local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local sandbox = require "moonbox.sandbox"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root

local function setup()
  if root then return end
  base = fs.tempdir("sandbox-test-")
  assert(sys.chmod(base.path, tonumber("755", 8)))
  root = rootfs.busybox(base.path .. "/rootfs")
end

-- A static C program in the rootfs, built with the host's compiler.
local function c_program(name, source)
  local path = root .. "/bin/" .. name
  if sys.stat(path) then return "/bin/" .. name end
  if process.run({ "sh", "-c", "command -v cc" }).code ~= 0 then skip("needs a C compiler (cc)") end
  local src = fs.write(base.path .. "/" .. name .. ".c", source)
  local r = process.run({ "cc", "-static", "-O1", "-o", path, src })
  if r.code ~= 0 then skip("cannot build a static program: " .. r.stderr) end
  return "/bin/" .. name
end

describe("sandbox verdicts", function()
  local box
  before_each(function()
    needs_root()
    setup()
    box = sandbox.open({ rootfs = root, time = 0.5, wall_time = 3, memory = "32M", pids = 16, output_limit = 4096 })
  end)
  after_each(function() if box then box:close() end end)

  it("says OK with accounting", function()
    local v = box:run({ "/bin/sh", "-c", "echo hello; id -u" })
    expect(v.status).to_be("OK")
    expect(v.stdout).to_be("hello\n1000\n")
    expect(v.exitcode).to_be(0)
    expect(v.wall).to_be_at_least(0)
    expect(v.memory_peak).to_be_at_least(1)
    expect(v.pids_peak).to_be_at_least(1)
    expect(v.killed).to_be(false)
  end)

  it("says RE for a non-zero exit and for a missing program", function()
    local v = box:run({ "/bin/sh", "-c", "exit 3" })
    expect(v.status).to_be("RE")
    expect(v.exitcode).to_be(3)
    v = box:run({ "/nonexistent" })
    expect(v.status).to_be("RE")
    expect(v.exitcode).to_be(127)
  end)

  it("says SG for a crash", function()
    local prog = c_program("segv", "int main(void) { *(volatile int *)0 = 1; return 0; }\n")
    local v = box:run({ prog })
    expect(v.status).to_be("SG")
    expect(v.exitsig).to_be(11)
  end)

  it("says TO for CPU time and for wall time, separately", function()
    local v = box:run({ "/bin/sh", "-c", "while :; do :; done" })
    expect(v.status).to_be("TO")
    expect(v.message).to_be("Time limit exceeded")
    expect(v.time).to_be_at_least(0.5)
    v = box:run({ "/bin/sleep", "10" })
    expect(v.status).to_be("TO")
    expect(v.message).to_be("Time limit exceeded (wall clock)")
    expect(v.time).to_be_at_most(0.2)
  end)

  it("says ML when memory runs out", function()
    local v = box:run({ "/bin/sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a)" })
    expect(v.status).to_be("ML")
    expect(v.oom_killed).to_be(true)
  end)

  it("says OL and cuts the output at the limit", function()
    local v = box:run({ "/bin/sh", "-c", "yes" })
    expect(v.status).to_be("OL")
    expect(#v.stdout).to_be(4096)
    expect(v.output_truncated).to_be(true)
  end)

  it("keeps /box across runs and gives each run a fresh /tmp", function()
    box:run({ "/bin/sh", "-c", "echo compiled > /box/prog; echo scratch > /tmp/x" })
    local v = box:run({ "/bin/sh", "-c", "cat /box/prog; ls /tmp | wc -l" })
    expect(v.stdout).to_be("compiled\n0\n")
  end)

  it("applies the file-size and open-files limits", function()
    local v = box:run({ "/bin/sh", "-c", "ulimit -n; ulimit -f" })
    expect(v.stdout).to_be("64\n131072\n")
  end)

  it("feeds stdin and binds inputs read-only; /output is copied out", function()
    local input = fs.write(base.path .. "/in.txt", "3 4\n")
    local out = fs.tempdir("sandbox-out-")
    local b <close> = sandbox.open({ rootfs = root, inputs = { input .. ":/input/in.txt" } })
    local v = b:run({ "/bin/sh", "-c", "read a b; echo $((a*b)) > /output/answer; cat /input/in.txt; echo x >> /input/in.txt || echo ro" },
      { stdin = "6 7\n", output = out.path })
    expect(v.stdout).to_be("3 4\nro\n")
    expect(fs.read(out.path .. "/answer")).to_be("42\n")
    expect(v.output_files).to_equal({ "answer" })
    out:remove()
  end)

  it("reports a setup failure as XX", function()
    local v = sandbox.verdict(nil, "container setup failed: something broke")
    expect(v.status).to_be("XX")
    expect(sandbox.meta(v)).to_match("status:XX\n")
  end)

  it("rejects bad options", function()
    expect(function() sandbox.open({ rootfs = root, colour = 1 }) end).to_fail("unknown option 'colour'")
    expect(function() sandbox.open({ rootfs = "/nonexistent" }) end).to_fail("is not a folder")
    -- Bad values are refused when the box opens, not at every run.
    expect(function() sandbox.open({ rootfs = root, memory = "lots" }) end).to_fail("memory must be a size like")
    expect(function() sandbox.open({ rootfs = root, memory = true }) end).to_fail("memory must be a size like")
    expect(function() sandbox.open({ rootfs = root, time = "1" }) end).to_fail("time must be a finite number > 0")
    expect(function() sandbox.open({ rootfs = root, time = 1e308 }) end).to_fail("time must be a finite number")
    expect(function() sandbox.open({ rootfs = root, open_files = 0 }) end).to_fail("open_files must be a whole number from 3")
    expect(function() box:run({ "true" }, { memory = "99999999999999G" }) end).to_fail("is too large")
    expect(function() box:run({ "true" }, { bogus = 1 }) end).to_fail("unknown option 'bogus'")
  end)
end)

describe("isolate's meta format", function()
  it("writes key:value lines, with status left out when OK", function()
    local ok = sandbox.meta({ status = "OK", time = 0.0123, wall = 0.05, memory_peak = 2048000, exitcode = 0, killed = false })
    expect(ok).to_be("time:0.012\ntime-wall:0.050\nmax-rss:2000\ncg-enabled:1\ncg-mem:2000\nexitcode:0\n")
    local to = sandbox.meta({ status = "TO", time = 1, wall = 1.2, exitsig = 9, killed = true, message = "Time limit exceeded",
      oom_killed = false })
    expect(to).to_match("exitsig:9\nkilled:1\nmessage:Time limit exceeded\nstatus:TO\n")
    for line in to:gmatch("[^\n]+") do expect(line).to_match("^[%w-]+:.+$") end
  end)
end)

describe("the sandbox's rootfs", function()
  before_each(function() needs_root() setup() end)

  it("never writes into the rootfs, so a read-only (immutable) one works", function()
    local dir = base.path .. "/pristine"
    rootfs.busybox(dir)
    for _, d in ipairs({ "tmp", "proc", "sys", "dev" }) do sys.remove_tree(dir .. "/" .. d) end
    local before = table.concat(sys.listdir(dir), " ")
    local chattr = process.run({ "chattr", "+i", dir })
    finally(function() process.run({ "chattr", "-i", dir }) end)
    local v = sandbox.run({ rootfs = dir, command = { "/bin/sh", "-c", "ls -d /box /output /tmp /proc; echo hi > /box/f; cat /box/f" },
      inputs = { base.path .. "/pristine/etc/passwd:/input/passwd" } })
    expect(v.status).to_be("OK")
    expect(v.stdout).to_be("/box\n/output\n/proc\n/tmp\nhi\n")
    process.run({ "chattr", "-i", dir })
    expect(table.concat(sys.listdir(dir), " ")).to_be(before)
    expect(sys.lstat(dir .. "/input")).to_be_nil()
    if chattr.code ~= 0 then skip("chattr is not available: the rootfs was checked unchanged, not immutable") end
  end)

  it("reaches a rootfs below a folder only root may enter, and takes a relative --rootfs", function()
    local hidden = base.path .. "/hidden"
    assert(sys.mkdir(hidden, tonumber("700", 8)))
    rootfs.busybox(hidden .. "/rootfs")
    expect(sandbox.run({ rootfs = hidden .. "/rootfs", command = { "/bin/sh", "-c", "id -u" } }).stdout).to_be("1000\n")
    local r = process.run({ moonbox, "sandbox", "--rootfs", "rootfs", "--", "/bin/echo", "relative" }, { cwd = hidden })
    expect(r.code).to_be(0)
    expect(r.stdout).to_be("relative\n")
  end)

  it("cannot be sent onto the host by a symlinked mount point", function()
    local dir = base.path .. "/evil-box"
    rootfs.busybox(dir)
    local host = base.path .. "/host-side"
    assert(sys.mkdir(host))
    assert(sys.symlink(host, dir .. "/box"))
    assert(sys.symlink(host, dir .. "/output"))
    -- The links are followed inside the root (where /tmp then covers them): the job may fail,
    -- but the host folder stays empty.
    sandbox.run({ rootfs = dir, cwd = "/", command = { "/bin/sh", "-c", "echo x > /box/f; echo y > /output/g" } })
    expect(sys.listdir(host)).to_equal({})
  end)
end)

describe("kept boxes", function()
  before_each(function() needs_root() setup() end)

  it("runs several jobs at once in one box, each with its own /tmp and /output", function()
    local box <close> = sandbox.open({ rootfs = root, time = 5, wall_time = 10 })
    expect(box:run({ "/bin/sh", "-c", "echo shared > /box/s" }).status).to_be("OK")
    local out = base.path .. "/async-out"
    local runs = {}
    for i = 1, 3 do
      runs[i] = box:start({ "/bin/sh", "-c", "sleep 0.3; cat /box/s; echo " .. i .. " > /tmp/t; cat /tmp/t; echo " .. i .. " > /output/o" },
        { output = out .. i })
    end
    local t0 = sys.clock_gettime()
    for i = 1, 3 do
      local v = runs[i]:wait()
      expect(v.status).to_be("OK")
      expect(v.stdout).to_be("shared\n" .. i .. "\n")
      expect(fs.read(out .. i .. "/o")).to_be(i .. "\n")
    end
    expect(sys.clock_gettime() - t0).to_be_at_most(0.9 * 3)  -- they ran together, not one by one
  end)

  it("keeps boxes for the command line: --init, --run, --cleanup, ids taken once", function()
    local id = tostring(900000 + sys.getpid() % 1000)
    local r = process.run({ moonbox, "sandbox", "--init", "--box-id", id, "--rootfs", root })
    expect(r.code).to_be(0)
    local path = r.stdout:match("^(%S+)\n$")
    expect(path).to_match("^/proc/%d+/root/")
    finally(function() process.run({ moonbox, "sandbox", "--cleanup", "--box-id", id }) end)
    fs.write(path .. "/box/prog.sh", "echo from the box; echo $1\n")
    r = process.run({ moonbox, "sandbox", "--run", "--box-id", id, "--", "/bin/sh", "/box/prog.sh", "one" })
    expect(r.code).to_be(0)
    expect(r.stdout).to_be("from the box\none\n")
    r = process.run({ moonbox, "sandbox", "--init", "--box-id", id, "--rootfs", root })
    expect(r.code).to_be(2)
    expect(r.stderr).to_match("box box%-" .. id .. " exists already")
    r = process.run({ moonbox, "sandbox", "--cleanup", "--box-id", id })
    expect(r.code).to_be(0)
    r = process.run({ moonbox, "sandbox", "--run", "--box-id", id, "--", "/bin/true" })
    expect(r.code).to_be(2)
    expect(r.stderr).to_match("no box box%-" .. id)
  end)
end)

describe("moonbox sandbox", function()
  before_each(function() needs_root() setup() end)

  it("writes the meta file and exits 0, 1 or 2", function()
    local dir <close> = fs.tempdir("sandbox-cli-")
    local meta = dir.path .. "/meta"
    local r = process.run({ moonbox, "sandbox", "--rootfs", root, "--meta", meta, "--", "/bin/sh", "-c", "echo out; exit 2" })
    expect(r.code).to_be(1)
    expect(r.stdout).to_be("out\n")
    local text = fs.read(meta)
    expect(text).to_match("exitcode:2\n")
    expect(text).to_match("status:RE\n")
    r = process.run({ moonbox, "sandbox", "--rootfs", root, "--json", "--", "/bin/true" })
    expect(r.code).to_be(0)
    expect(require("moonbox.json").decode(r.stdout:match("[^\n]*$") ~= "" and r.stdout:match("[^\n]*$") or r.stdout).status).to_be("OK")
    r = process.run({ moonbox, "sandbox", "--rootfs", root, "--time", "0.3", "--", "/bin/sh", "-c", "while :; do :; done" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("TO Time limit exceeded")
    r = process.run({ moonbox, "sandbox", "--bogus" })
    expect(r.code).to_be(2)
  end)

  it("makes --out, refuses an unwritable --meta before the job runs, and reports one memory figure", function()
    local dir <close> = fs.tempdir("sandbox-cli-")
    local out = dir.path .. "/not/yet/there"
    local r = process.run({ moonbox, "sandbox", "--rootfs", root, "--out", out, "--", "/bin/sh", "-c", "echo made > /output/f" })
    expect(r.code).to_be(0)
    expect(fs.read(out .. "/f")).to_be("made\n")
    local marker = dir.path .. "/ran"
    r = process.run({ moonbox, "sandbox", "--rootfs", root, "--dir", dir.path .. ":/d", "--meta", "/proc/nope/meta", "--",
      "/bin/sh", "-c", "touch /d/ran" })
    expect(r.code).to_be(2)
    expect(r.stderr).to_match("^moonbox sandbox: cannot write /proc/nope/meta")
    expect(r.stderr).not_to_match("traceback")
    expect(sys.lstat(marker)).to_be_nil()
    local meta = dir.path .. "/meta"
    r = process.run({ moonbox, "sandbox", "--rootfs", root, "--json", "--meta", meta, "--", "/bin/true" })
    local v = require("moonbox.json").decode(r.stdout)
    expect(fs.read(meta)).to_match("max%-rss:" .. v.max_rss_kb .. "\n")
    expect(fs.read(meta)).to_match("cg%-mem:" .. v.max_rss_kb .. "\n")
    expect(v.max_rss_kb).to_be(v.memory_peak // 1024)
  end)
end)

describe("sandbox teardown", function()
  it("leaves no box behind", function()
    if base then base:remove() end
    root = nil
    expect(sys.listdir(require("moonbox.state").dir() .. "/boxes") or {}).to_equal({})
  end)
end)
