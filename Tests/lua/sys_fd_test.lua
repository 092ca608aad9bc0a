local sys = require "moonbox.sys"
local fs = require "moonbox.fs"

local function open_fd_count()
  return #assert(sys.listdir("/proc/self/fd"))
end

describe("fds", function()
  it("makes close-on-exec pipes whose ends are fd objects", function()
    local r, w = assert(sys.pipe())
    expect(tostring(r)).to_match("^fd%(%d+%)$")
    expect(sys.write(w, "hello")).to_be(5)
    expect(sys.read(r, 100)).to_be("hello")
    expect(w:write("x")).to_be(1)
    expect(r:read(1)).to_be("x")
    w:close()
    expect(sys.read(r)).to_be("")
    r:close()
    expect(tostring(r)).to_be("fd(closed)")
    expect(function() sys.read(r) end).to_fail("fd is closed")
    local flags = io.open("/proc/self/fdinfo/" .. assert(sys.pipe()):fileno()):read("a")
    expect(tonumber(flags:match("flags:%s+(%d+)"), 8) & tonumber("2000000", 8)).not_to_be(0)
  end)

  it("closes fds when their objects go out of scope or are collected", function()
    collectgarbage()
    collectgarbage()
    local before = open_fd_count()
    do
      local r, w = sys.pipe()
      local rc <close> = r
      local wc <close> = w
    end
    for _ = 1, 200 do sys.pipe() end
    collectgarbage()
    collectgarbage()
    expect(open_fd_count()).to_be(before)
  end)

  it("opens files with flags, dup2s and reports errors", function()
    local dir <close> = fs.tempdir()
    local fd = assert(sys.open(dir.path .. "/f", { "wronly", "creat", "trunc" }, tonumber("600", 8)))
    sys.write(fd, "data")
    fd:close()
    expect(sys.stat(dir.path .. "/f").mode).to_be(tonumber("600", 8))
    local ok, msg, errno = sys.open(dir.path .. "/missing", { "rdonly" })
    expect(ok).to_be_nil()
    expect(msg).to_be("open(" .. dir.path .. "/missing): No such file or directory")
    expect(errno).to_be("ENOENT")
    expect(function() sys.open(dir.path .. "/f", { "bogus" }) end).to_fail("unknown flag 'bogus'")
    local r, w = assert(sys.pipe())
    local spare = assert(sys.open("/dev/null", "rdonly"))
    expect(sys.dup2(r, spare:fileno())).to_be(spare:fileno())
    sys.write(w, "via dup2")
    expect(sys.read(spare:fileno(), 100)).to_be("via dup2")
  end)

  it("polls with a timeout and returns the ready fds", function()
    local r1, w1 = assert(sys.pipe())
    local r2, w2 = assert(sys.pipe())
    local t0 = sys.clock_gettime()
    expect(#sys.poll({ r1, r2 }, 0.05)).to_be(0)
    expect(sys.clock_gettime() - t0).to_be_at_least(0.04)
    sys.write(w2, "x")
    local ready = sys.poll({ r1, r2 }, 1)
    expect(#ready).to_be(1)
    expect(ready[1]).to_be(r2)
  end)

  it("closes a range of fds in a child", function()
    local pid = assert(sys.fork())
    if pid == 0 then
      for _ = 1, 5 do sys.pipe() end
      assert(sys.close_range(3))
      sys._exit(#sys.listdir("/proc/self/fd"))
    end
    -- 0, 1, 2 and the fd listdir itself opened.
    expect(sys.wait(pid).code).to_be(4)
  end)

  it("rejects bad fds", function()
    expect(function() sys.read("x") end).to_fail("bad argument #1 'fd' %(fd or integer expected, got string%)")
    expect(function() sys.write(1, 5) end).to_fail("bad argument #2 'data'")
    local ok, _, errno = sys.read(987654)
    expect(errno).to_be("EBADF")
  end)
end)
