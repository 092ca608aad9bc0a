-- moonbox.container.plan: a container's filesystem as a list of setup operations, in the way
-- bubblewrap turns its arguments into SetupOps that one loop applies.
--
--   local ops = plan.build(c)          -- in the parent: pure, printable, testable without root
--   print(plan.describe(ops))          -- `moonbox box --dry-run`
--   plan.apply(ops, root_fd, userns)   -- in the child, before pivot_root
--
-- Every target is resolved inside the rootfs through its fd (sys.open_in_root: openat2 with
-- RESOLVE_IN_ROOT), and every mount lands on the fd it resolved to: a symlink in a hostile
-- rootfs can never send a mount, a folder or a device node onto the host. A target missing in
-- the rootfs is made, inside it. Operations:
--   mount    {fstype=, source=, target=, flags=, data=, optional=}   proc, tmpfs, devpts, ...
--   bind     {source=, target=, readonly=, file=, recursive=}        a host path onto target
--   device   {target=, major=, minor=, mode=, bind=}                 mknod, or bind the host's
--   symlink  {target=, link=}                                        target -> link
--   mask     {target=}                           runc's masked paths: tmpfs or /dev/null over it
--   readonly {target=, flags=}                   a read-only bind of target onto itself
--   remount_ro {target=}                         the rootfs itself read-only (last)
local sys = require "moonbox.sys"

local plan = {}

local MODE_666 = tonumber("666", 8)

-- gid 5 (tty) exists in the container only when its id map covers it.
local function maps_tty_group(c)
  if not c.namespaces.user then return true end
  for _, m in ipairs(c.gid_map or c.id_map or {}) do
    if m[1] <= 5 and 5 < m[1] + m[3] then return true end
  end
  return false
end

--- The operations that make c's filesystem, in order: /proc, /dev as runc makes it, /sys,
-- the spec's mounts, runc's masked and read-only paths, and a read-only rootfs last.
function plan.build(c, defaults)
  local ops = {}
  local function add(op) ops[#ops + 1] = op end
  local userns = c.namespaces.user or false
  if c.default_mounts == false then
    -- An OCI bundle lists every mount itself (/proc, /dev, /sys...): they come first, then the
    -- standard devices and links in its /dev, as runc makes them.
    plan.spec_mounts(c, add)
    for _, d in ipairs(defaults.devices) do
      add({ op = "device", target = "/dev/" .. d[1], major = d[2], minor = d[3], mode = MODE_666, bind = userns })
    end
    plan.devices(c, add, userns)
    for _, l in ipairs({ { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" }, { "stdout", "/proc/self/fd/1" },
      { "stderr", "/proc/self/fd/2" }, { "ptmx", "pts/ptmx" }, { "core", "/proc/kcore" } }) do
      add({ op = "symlink", target = "/dev/" .. l[1], link = l[2], optional = true })
    end
    plan.finish(c, add)
    return ops
  end
  add({ op = "mount", fstype = "proc", source = "proc", target = "/proc", flags = { "nosuid", "nodev", "noexec" } })
  -- /dev: a tmpfs with the standard nodes (bound from the host where mknod is not allowed, as
  -- in a user namespace), the fd links, pts, shm and mqueue.
  add({ op = "mount", fstype = "tmpfs", source = "tmpfs", target = "/dev", flags = { "nosuid", "strictatime" }, data = "mode=755,size=65536k" })
  for _, d in ipairs(defaults.devices) do
    add({ op = "device", target = "/dev/" .. d[1], major = d[2], minor = d[3], mode = MODE_666, bind = userns })
  end
  for _, l in ipairs({ { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" }, { "stdout", "/proc/self/fd/1" },
    { "stderr", "/proc/self/fd/2" }, { "ptmx", "pts/ptmx" }, { "core", "/proc/kcore" } }) do
    add({ op = "symlink", target = "/dev/" .. l[1], link = l[2] })
  end
  add({ op = "mount", fstype = "devpts", source = "devpts", target = "/dev/pts", flags = { "nosuid", "noexec" },
    data = "newinstance,ptmxmode=0666,mode=0620" .. (maps_tty_group(c) and ",gid=5" or "") })
  add({ op = "mount", fstype = "tmpfs", source = "shm", target = "/dev/shm", flags = { "nosuid", "nodev", "noexec" }, data = "mode=1777,size=65536k" })
  if c.namespaces.ipc then
    add({ op = "mount", fstype = "mqueue", source = "mqueue", target = "/dev/mqueue", flags = { "nosuid", "nodev", "noexec" } })
  end
  if c.namespaces.net then
    add({ op = "mount", fstype = "sysfs", source = "sysfs", target = "/sys", flags = { "nosuid", "nodev", "noexec", "ro" } })
  else
    -- sysfs needs a net namespace of our own: the host's, bound read-only.
    add({ op = "bind", source = "/sys", target = "/sys", recursive = true, readonly = true, flags = { "nosuid", "nodev", "noexec" } })
  end
  plan.spec_mounts(c, add)
  plan.devices(c, add, userns)
  plan.finish(c, add)
  return ops
end

-- Extra device nodes (an OCI bundle's linux.devices).
function plan.devices(c, add, userns)
  for _, d in ipairs(c.devices or {}) do
    add({ op = "device", target = d.path, type = d.type, major = d.major, minor = d.minor, mode = d.mode, uid = d.uid, gid = d.gid,
      bind = userns })
  end
end

-- The spec's own mounts. Raw flags and data (an OCI mount's options) are used as given.
function plan.spec_mounts(c, add)
  for _, m in ipairs(c.mounts) do
    if m.type == "bind" then
      add({ op = "bind", source = m.source, target = m.target, readonly = m.readonly, file = m.file,
        recursive = not (m.flags and not plan.has(m.flags, "rec")), flags = m.flags and plan.without(m.flags, { "bind", "rec", "ro", "rw" }) or nil,
        propagation = m.propagation })
    elseif m.type == "tmpfs" and not m.flags then
      add({ op = "mount", fstype = "tmpfs", source = "tmpfs", target = m.target, flags = { "nosuid", "nodev", m.readonly and "ro" or "rw" },
        data = "mode=" .. (m.mode or "1777") .. (m.size and (",size=" .. m.size) or "") .. (m.options and ("," .. m.options) or "") })
    elseif m.type == "proc" and not m.flags then
      add({ op = "mount", fstype = "proc", source = "proc", target = m.target, flags = { "nosuid", "nodev", "noexec" } })
    elseif m.type == "cgroup" then
      plan.cgroup_mounts(c, m, add)
    else
      local flags = m.flags or {}
      if m.readonly and not plan.has(flags, "ro") then flags = { "ro", table.unpack(flags) } end
      add({ op = "mount", fstype = m.type, source = m.source or m.type, target = m.target, flags = flags, data = m.data, propagation = m.propagation })
    end
  end
end

-- /sys/fs/cgroup as runc makes it: on v2 a cgroup2 mount (the container's own cgroup namespace
-- shows its group as the root); on v1 a tmpfs with the container's own folder of each
-- hierarchy bound at that hierarchy's name, so /sys/fs/cgroup/memory/memory.limit_in_bytes is
-- the container's limit. Read-only unless the mount says rw.
function plan.cgroup_mounts(c, m, add)
  local ro = not (m.flags and plan.has(m.flags, "rw"))
  local flags = { "nosuid", "nodev", "noexec" }
  if sys.cgroup_version() == 2 then
    add({ op = "mount", fstype = "cgroup2", source = "cgroup2", target = m.target, flags = { "nosuid", "nodev", "noexec", ro and "ro" or "rw" } })
    return
  end
  add({ op = "mount", fstype = "tmpfs", source = "tmpfs", target = m.target, flags = flags, data = "mode=755" })
  local group = c.cgroup or ("c-" .. tostring(c.name))
  for _, folder in ipairs(sys.cgroup_path(group) or {}) do
    local hierarchy = folder:match("^/sys/fs/cgroup/([^/]+)/")
    if hierarchy then
      add({ op = "bind", source = folder, target = m.target .. "/" .. hierarchy, recursive = false, readonly = ro, flags = flags, optional = true })
      -- "cpu,cpuacct" is reached as cpu and as cpuacct too
      if hierarchy:find(",", 1, true) then
        for name in hierarchy:gmatch("[^,]+") do add({ op = "symlink", target = m.target .. "/" .. name, link = hierarchy, optional = true }) end
      end
    end
  end
  if ro then add({ op = "readonly", target = m.target, flags = flags }) end
end

function plan.has(list, word)
  for _, w in ipairs(list) do if w == word then return true end end
  return false
end

function plan.without(list, words)
  local drop, out = {}, {}
  for _, w in ipairs(words) do drop[w] = true end
  for _, w in ipairs(list) do if not drop[w] then out[#out + 1] = w end end
  return out
end

-- What follows the mounts: /etc/hosts of networks, sysctls (while /proc/sys is writable),
-- masks, read-only paths, a read-only rootfs.
function plan.finish(c, add)
  if c.hosts_file then
    -- the names of its networks' members, kept current by moonbox.net (rewritten in place)
    add({ op = "bind", source = c.hosts_file, target = "/etc/hosts", file = true })
  end
  for _, kv in ipairs(c.sysctl or {}) do add({ op = "sysctl", target = "/proc/sys/" .. kv[1]:gsub("%.", "/"), value = kv[2], name = kv[1] }) end
  for _, p in ipairs(c.masked_paths) do add({ op = "mask", target = p }) end
  for _, p in ipairs(c.readonly_paths) do add({ op = "readonly", target = p, flags = { "nosuid", "nodev", "noexec" } }) end
  if c.readonly_rootfs then add({ op = "remount_ro", target = "/" }) end
end

--- One line per operation, for --dry-run and for tests.
function plan.describe(ops)
  local lines = {}
  for _, op in ipairs(ops) do
    local flags = op.flags and #op.flags > 0 and (" (" .. table.concat(op.flags, ",") .. ")") or ""
    local line
    if op.op == "mount" then
      line = string.format("mount %s on %s%s%s", op.fstype, op.target, op.data and (" " .. op.data) or "", flags)
    elseif op.op == "bind" then
      line = string.format("bind %s on %s%s%s", op.source, op.target, op.readonly and " read-only" or "", flags)
    elseif op.op == "device" then
      line = string.format("device %s %d:%d%s", op.target, op.major, op.minor, op.bind and " (bound from the host)" or "")
    elseif op.op == "symlink" then
      line = string.format("symlink %s -> %s", op.target, op.link)
    else
      line = op.op .. " " .. op.target .. flags
    end
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n")
end

-- MARK: applying, in the child

local function failure(what, msg, errno)
  return nil, what .. ": " .. (msg and msg:match(": ([^:]+)$") or tostring(msg)), errno
end

-- A read-only bind remount that keeps the mount's other flags: in a user namespace the kernel
-- refuses a remount that would drop a locked nosuid, nodev, noexec or atime flag. The target is
-- resolved again, so the walk lands on the mount just made, not the folder under it.
local function remount_ro(root, target, extra, userns)
  local fd, msg, errno = sys.open_in_root(root, target)
  if not fd then return nil, msg, errno end
  local flags = { "bind", "remount", "ro" }
  local sv = userns and sys.statvfs(fd)
  for _, f in ipairs(sv and sv.flags or {}) do if f ~= "ro" then flags[#flags + 1] = f end end
  for _, f in ipairs(extra or {}) do flags[#flags + 1] = f end
  local ok, mmsg, merr = sys.mount(nil, fd, nil, flags)
  fd:close()
  if not ok then return nil, mmsg, merr end
  return true
end

local apply = {}

-- A mount's propagation (an OCI mount's "shared", "rslave"...), set on the mount just made:
-- the target resolved again lands on it.
local function set_propagation(op, root)
  for _, p in ipairs(op.propagation or {}) do
    local fd, msg, errno = sys.open_in_root(root, op.target)
    if not fd then return failure("mount(" .. op.target .. ", " .. p .. ")", msg, errno) end
    local ok, mmsg, merr = sys.mount(nil, fd, nil, { p })
    fd:close()
    if not ok then return failure("mount(" .. op.target .. ", " .. p .. ")", mmsg, merr) end
  end
  return true
end

function apply.mount(op, root)
  local fd, msg, errno = sys.open_in_root(root, op.target, { create = "dir" })
  if not fd then return failure("mount(" .. op.source .. " on " .. op.target .. ")", msg, errno) end
  local ok, mmsg, merr = sys.mount(op.source, fd, op.fstype, op.flags, op.data)
  fd:close()
  if not ok then
    if op.optional then return true end
    return failure("mount(" .. op.source .. " on " .. op.target .. ")", mmsg, merr)
  end
  return set_propagation(op, root)
end

function apply.bind(op, root, userns, trees)
  if op.skip then return true end
  local what = "mount(" .. op.source .. " on " .. op.target .. ")"
  local fd, msg, errno = sys.open_in_root(root, op.target, { create = op.file and "file" or "dir" })
  if not fd then return failure(what, msg, errno) end
  local ok, mmsg, merr
  if trees and trees[op] then
    -- The parent opened the source as a detached tree: attached here, with no path walked.
    ok, mmsg, merr = sys.move_mount(trees[op], fd)
  else
    ok, mmsg, merr = sys.mount(op.source, fd, nil, op.recursive and { "bind", "rec" } or { "bind" })
  end
  fd:close()
  if not ok then return failure(what, mmsg, merr) end
  if op.readonly then
    ok, mmsg, merr = remount_ro(root, op.target, op.flags, userns)
    if not ok then return failure(what .. " read-only", mmsg, merr) end
  end
  return set_propagation(op, root)
end

function apply.sysctl(op, root)
  local fd, msg, errno = sys.open_in_root(root, op.target, { flags = { "wronly", "trunc" } })
  if not fd then return failure("sysctl " .. op.name, msg, errno) end
  local ok, wmsg, werr = sys.write(fd, op.value)
  fd:close()
  if not ok then return failure("sysctl " .. op.name, wmsg, werr) end
  return true
end

function apply.device(op, root)
  local dir_path, name = op.target:match("^(.*)/([^/]+)$")
  if op.bind then
    local fd, msg, errno = sys.open_in_root(root, op.target, { create = "file" })
    if not fd then return failure("device " .. op.target, msg, errno) end
    local ok, mmsg, merr = sys.mount(op.target, fd, nil, { "bind" })  -- the host's node, same path
    fd:close()
    if not ok then return failure("mount(" .. op.target .. ")", mmsg, merr) end
    return true
  end
  local dir, msg, errno = sys.open_in_root(root, dir_path, { create = "dir" })
  if not dir then return failure("device " .. op.target, msg, errno) end
  sys.unlinkat(dir, name)  -- a bundle's device replaces a default one of the same name
  local ok, mmsg, merr = sys.mknodat(dir, name, op.type or "char", op.mode, op.major, op.minor)
  if ok and (op.uid or op.gid) then ok, mmsg, merr = sys.fchownat(dir, name, op.uid or 0, op.gid or 0) end
  dir:close()
  if not ok then return failure("mknod(" .. op.target .. ")", mmsg, merr) end
  return true
end

function apply.symlink(op, root)
  local dir_path, name = op.target:match("^(.*)/([^/]+)$")
  local dir, msg, errno = sys.open_in_root(root, dir_path, { create = "dir" })
  if not dir then return failure("symlink(" .. op.target .. ")", msg, errno) end
  local ok, smsg, serr = sys.symlinkat(op.link, dir, name)
  dir:close()
  if not ok and op.optional and serr == "EEXIST" then return true end
  if not ok then return failure("symlink(" .. op.target .. ")", smsg, serr) end
  return true
end

function apply.mask(op, root)
  local fd = sys.open_in_root(root, op.target)
  if not fd then return true end  -- not there: nothing to hide
  local st = sys.stat(fd)
  local ok, msg, errno
  if st and st.type == "dir" then
    ok, msg, errno = sys.mount("tmpfs", fd, "tmpfs", { "ro", "nosuid", "nodev", "noexec" }, "size=0")
  else
    ok, msg, errno = sys.mount("/dev/null", fd, nil, { "bind" })
  end
  fd:close()
  if not ok then return failure("mask(" .. op.target .. ")", msg, errno) end
  return true
end

function apply.readonly(op, root, userns)
  local fd = sys.open_in_root(root, op.target)
  if not fd then return true end
  local ok, msg, errno = sys.mount(fd, fd, nil, { "bind", "rec" })
  fd:close()
  if not ok then return failure("readonly(" .. op.target .. ")", msg, errno) end
  ok, msg, errno = remount_ro(root, op.target, op.flags, userns)
  if not ok then return failure("readonly(" .. op.target .. ")", msg, errno) end
  return true
end

function apply.remount_ro(op, root, userns)
  local ok, msg, errno = remount_ro(root, op.target, nil, userns)
  if not ok then return failure("remount(/ read-only)", msg, errno) end
  return true
end

--- The sources of the plan's binds as detached mount trees (open_tree), opened by the parent:
-- as real root, before any user namespace, so a source below a folder only root may enter
-- works. Returns {op = fd}; the child attaches them with move_mount.
function plan.open_sources(ops)
  local trees = {}
  for _, op in ipairs(ops) do
    if op.op == "bind" then
      local fd, msg, errno = sys.open_tree(op.source, op.recursive and { "clone", "recursive" } or { "clone" })
      if not fd and op.optional then
        op.skip = true  -- an optional source that is not there (a cgroup hierarchy not used)
      elseif not fd then
        for _, t in pairs(trees) do t:close() end
        return nil, msg, errno
      end
      if fd then trees[op] = fd end
    end
  end
  return trees
end

--- Applies the operations below the rootfs fd `root`, with the detached sources `trees` from
-- plan.open_sources. Returns true, or nil, msg, errno for the first that failed.
function plan.apply(ops, root, userns, trees)
  for _, op in ipairs(ops) do
    local ok, msg, errno = apply[op.op](op, root, userns, trees)
    if not ok then return nil, msg, errno end
  end
  return true
end

return plan
