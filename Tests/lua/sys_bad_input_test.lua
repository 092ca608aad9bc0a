-- Bad input to any primitive gives a Lua error naming the function and the argument,
-- or nil, message, errno; never a crash. Calls run in a child so nothing reaches the host.
local sys = require "moonbox.sys"
local process = require "moonbox.process"

-- Functions whose every call has an effect beyond argument checking.
local unsafe = { fork = true, clone = true, _exit = true, exec = true, setsid = true, unshare = true,
  close_range = true, signal = true, seccomp_load = true }

local junk = { false, true, 0, -1, math.maxinteger, math.mininteger, 2 ^ 70, 0 / 0, 0.5, "", "bogus", "\0nul", {}, { "bogus" }, { bogus = 1 }, print,
  io.stdout, 1e308 }

describe("bad input", function()
  it("never crashes any primitive, and every raised error names the function", function()
    local report = process.call(function()
      -- relative paths the junk names (mkdtemp("bogus"), mkdir("")) land in a folder of its own
      local scratch = assert(sys.mkdtemp("/tmp/moonbox-fuzz-"))
      assert(sys.chdir(scratch))
      local names, problems, calls = {}, {}, 0
      for name in pairs(sys) do
        if type(sys[name]) == "function" and not unsafe[name] then names[#names + 1] = name end
      end
      table.sort(names)
      for _, name in ipairs(names) do
        for _, a in ipairs(junk) do
          for _, b in ipairs({ junk[1], junk[8], junk[11] }) do
            calls = calls + 1
            local ok, err = pcall(sys[name], a, b, a)
            if not ok and not tostring(err):find(name, 1, true) then
              problems[#problems + 1] = name .. ": " .. tostring(err)
            end
          end
        end
      end
      sys.chdir("/")
      sys.remove_tree(scratch)
      return { problems = problems, calls = calls }
    end, { namespaces = sys.geteuid() == 0 and { "mount", "uts", "ipc", "net", "pid" } or {} })
    expect(report.problems).to_equal({})
    -- seccomp_load, left out above because a valid table loads a filter, checks its input too.
    expect(function() sys.seccomp_load({ syscalls = { { names = { "read" }, action = "SCMP_ACT_NOPE" } } }) end)
      .to_fail("unknown action 'SCMP_ACT_NOPE'")
    expect(function() sys.seccomp_load({ defaultAction = "bogus" }) end).to_fail("unknown action 'bogus'")
    expect(function() sys.seccomp_load({ syscalls = { { names = { "read" }, action = "SCMP_ACT_ALLOW",
      args = { { index = 9, op = "SCMP_CMP_EQ" } } } } }) end).to_fail("index must be 0 to 5")
    expect(report.calls).to_be_at_least(1000)
  end)

  it("names the argument, its position and what was expected", function()
    expect(function() sys.mount() end).to_fail("mount: bad argument #2 'target' %(string or fd expected, got no value%)")
    expect(function() sys.mkdir({}) end).to_fail("mkdir: bad argument #1 'path' %(string expected, got table%)")
    expect(function() sys.kill("1") end).to_fail("kill: bad argument #1 'pid' %(integer expected, got string%)")
    expect(function() sys.kill(1.5) end).to_fail("no integer representation")
    expect(function() sys.kill(1, "NOPE") end).to_fail("unknown signal 'NOPE'")
    expect(function() sys.wait(1, { forever = true }) end).to_fail("unknown option 'forever'")
    expect(function() sys.exec({}) end).to_fail("must not be empty")
    expect(function() sys.exec({ "a", 5 }) end).to_fail("item 2 must be a string")
    expect(function() sys.unshare({ "mount", "space" }) end).to_fail("unknown flag 'space'")
    expect(function() sys.stat("a\0b") end).to_fail("NUL byte")
    expect(function() sys.mount("a", "b", nil, { flags = "bind" }) end).to_fail("expected a list")
  end)

  it("returns nil, message, errno for paths that do not exist", function()
    for _, call in ipairs({
      { "stat", "/nonexistent/x" }, { "lstat", "/nonexistent/x" }, { "rmdir", "/nonexistent/x" },
      { "unlink", "/nonexistent/x" }, { "readlink", "/nonexistent/x" }, { "chmod", "/nonexistent/x", 420 },
      { "listdir", "/nonexistent/x" }, { "chdir", "/nonexistent/x" }, 
    }) do
      local ok, msg, errno = sys[call[1]](table.unpack(call, 2))
      expect(ok).to_be_nil()
      expect(msg).to_be(call[1] .. "(/nonexistent/x): No such file or directory")
      expect(errno).to_be("ENOENT")
    end
  end)

  it("keeps no objects alive after failed calls", function()
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    local fds = #sys.listdir("/proc/self/fd")
    for _ = 1, 5000 do
      sys.open("/nonexistent/x", "rdonly")
      pcall(sys.mount, 1)
      pcall(sys.cgroup_set, "../x", "pids.max", 1)
      sys.stat("/nonexistent")
    end
    collectgarbage()
    collectgarbage()
    expect(collectgarbage("count") - before).to_be_at_most(64)
    expect(#sys.listdir("/proc/self/fd")).to_be(fds)
  end)
end)
