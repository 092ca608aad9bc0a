-- Tutorial, "Cgroups": a 512M memory limit set and read back as cgget shows it,
-- and a process killed by a limit too small for it.
local sys = require "moonbox.sys"

local version = assert(sys.cgroup_version())
local group = "tutorial-" .. sys.getpid()
local ok, err = pcall(function()
  assert(sys.cgroup_set(group, "memory.max", "512M"))
  print("cgroup v" .. version .. ", group " .. sys.cgroup_path(group)[1])
  if version == 1 then
    print("cgget -n -r memory.limit_in_bytes: " .. assert(sys.cgroup_get(group, "memory.limit_in_bytes")))
  end
  print("memory.max: " .. assert(sys.cgroup_get(group, "memory.max")))

  -- Now a limit too small: 32M, no swap, and a child that wants 256M.
  assert(sys.cgroup_set(group, "memory.max", "32M"))
  pcall(sys.cgroup_set, group, "memory.swap.max", 0)
  local r, w = assert(sys.pipe())
  local pid = assert(sys.fork())
  if pid == 0 then
    sys.read(r, 1)  -- wait until the parent has moved us into the group
    local chunks = {}
    for i = 1, 256 do chunks[i] = string.rep(string.char(i % 256), 1 << 20) end
    sys._exit(0)
  end
  assert(sys.cgroup_attach(group, pid))
  sys.write(w, "go")
  local st = assert(sys.wait(pid))
  local events = assert(sys.cgroup_get(group, "memory.events"))
  print(string.format("the 256M child: %s (%s)", st.status, st.signal_name or ("exit " .. tostring(st.code))))
  print("oom kills in the group: " .. (events:match("oom_kill (%d+)") or "?"))
end)
assert(sys.cgroup_remove(group))
if not ok then error(err, 0) end
