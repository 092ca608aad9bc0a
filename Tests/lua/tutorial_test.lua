-- Every tutorial script runs, shows what its section shows, and leaves the host as it was.
local sys = require "moonbox.sys"
local process = require "moonbox.process"
local test = require "moonbox.test"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local tutorial = (os.getenv("MOONBOX_SOURCE") or ".") .. "/scripts/tutorial/"

local function run(name)
  local before = test.host_state()
  local r = process.run({ moonbox, "run", tutorial .. name })
  if r.code ~= 0 then error(name .. " failed: " .. r.stderr .. r.stdout, 2) end
  expect(test.host_state()).to_equal(before)
  return r.stdout
end

describe("tutorial scripts", function()
  before_each(function() needs_root() end)

  it("namespaces: shows new ids for the child", function()
    local out = run("01_namespaces.lua")
    for _, kind in ipairs({ "mnt", "uts", "ipc", "net", "pid" }) do
      expect(out).to_match("\n" .. kind .. "%s+%d+%s+%d+%s+new")
    end
    expect(out).to_match("\nuser%s+(%d+)%s+%1%s+shared")
  end)

  it("uts: the hostname changes inside only", function()
    local out = run("02_uts.lua")
    expect(out).to_match("hostname inside:%s+my%-test%-container")
    expect(out).to_match("host hostname after:%s+" .. sys.gethostname():gsub("%p", "%%%0"))
  end)

  it("pid: the child is pid 1 and ps works", function()
    local out = run("03_pid.lua")
    expect(out).to_match("the child sees itself as pid 1\n")
    expect(out).to_match("PID%s+COMMAND\n%s+1 ")
  end)

  it("pivot_root: oldroot is unmounted and gone", function()
    local out = run("04_pivot_root.lua")
    expect(out).to_match("ls / inside:%s+bin dev etc")
    expect(out).to_match("after umount %-l and rmdir: gone")
    expect(out).to_match("mounts inside:%s+/ %(%w+%), /proc %(proc%)\n")
  end)

  it("cgroups: 512M set and read back, and a process killed by a small limit", function()
    local out = run("05_cgroups.lua")
    expect(out).to_match("memory.max: 536870912")
    expect(out).to_match("the 256M child: signaled %(KILL%)")
    expect(out).to_match("oom kills in the group: [1-9]")
  end)

  it("overlay: new_file in the upper, a whiteout for file3, lowers untouched", function()
    local out = run("06_overlay.lua")
    expect(out).to_match("merged view:%s+file1 file2 file3\n")
    expect(out).to_match("after new_file, rm file3: file1 file2 new_file\n")
    expect(out).to_match("layer3\n%s+file3\n")
    expect(out).to_match("layer4\n%s+file3 %(char 0/0: whiteout%)\n%s+new_file")
  end)
end)
