-- Tutorial, "pivot_root": a busybox rootfs becomes /, the old root is detached
-- and its mount point removed.
local sys = require "moonbox.sys"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local fs = require "moonbox.fs"

local dir <close> = fs.tempdir("tutorial-rootfs-")
local root = rootfs.busybox(dir.path .. "/rootfs")

local view = process.call(function()
  assert(sys.mount(nil, "/", nil, { "rprivate" }))
  assert(sys.mount(root, root, nil, { "bind", "rec" }))
  assert(sys.mkdir(root .. "/oldroot"))
  assert(sys.chdir(root))
  assert(sys.pivot_root(".", "oldroot"))
  assert(sys.chdir("/"))
  assert(sys.mount("proc", "/proc", "proc"))
  local with_old = #assert(sys.listdir("/oldroot"))
  assert(sys.umount("/oldroot", { "detach" }))
  assert(sys.rmdir("/oldroot"))
  local mounts = {}
  for _, m in ipairs(assert(sys.mounts())) do mounts[#mounts + 1] = m.target .. " (" .. m.fstype .. ")" end
  return { root = sys.listdir("/"), old_entries = with_old, mounts = mounts, oldroot = sys.stat("/oldroot") ~= nil }
end, { namespaces = { "mount", "pid" } })

print("ls / inside:      " .. table.concat(view.root, " "))
print("/oldroot before umount held " .. view.old_entries .. " host entries")
print("/oldroot after umount -l and rmdir: " .. (view.oldroot and "still there" or "gone"))
print("mounts inside:    " .. table.concat(view.mounts, ", "))
