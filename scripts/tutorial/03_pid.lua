-- Tutorial, "PID": in a new pid namespace the child is PID 1, and ps works once a
-- fresh /proc is mounted (in the child's own mount namespace, never the host's).
local sys = require "moonbox.sys"
local process = require "moonbox.process"

local view = process.call(function()
  local me = sys.getpid()
  assert(sys.mount(nil, "/", nil, { "rprivate" }))
  assert(sys.mount("proc", "/proc", "proc", { "nosuid", "nodev", "noexec" }))
  local ps = process.run({ "/bin/busybox", "ps", "-o", "pid,comm" })
  return { pid = me, ps = ps.stdout }
end, { namespaces = { "pid", "mount" } })

print("host sees itself as pid " .. sys.getpid())
print("the child sees itself as pid " .. view.pid)
print("ps inside, after mounting /proc:")
io.write(view.ps)
