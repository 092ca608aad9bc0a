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
end)

describe("sandbox teardown", function()
  it("leaves no box behind", function()
    if base then base:remove() end
    root = nil
    local left = {}
    for _, n in ipairs(sys.listdir("/tmp")) do if n:match("^moonbox%-box%-") then left[#left + 1] = n end end
    expect(left).to_equal({})
  end)
end)
