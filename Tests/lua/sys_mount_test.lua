local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"

-- Every mount here happens in a child's private mount namespace.
local function in_mount_ns(fn)
  return process.call(function()
    assert(sys.mount(nil, "/", nil, { "rprivate" }))
    return fn()
  end, { namespaces = { "mount" } })
end

describe("mounts", function()
  local dir
  before_each(function()
    needs_root()
    dir = fs.tempdir("mount-test-")
  end)
  after_each(function() if dir then dir:remove() end end)

  it("mounts a tmpfs with data and unmounts it", function()
    local got = in_mount_ns(function()
      local t = dir.path .. "/t"
      assert(sys.mkdir(t))
      assert(sys.mount("tmpfs", t, "tmpfs", { "nosuid", "nodev" }, "size=1m,mode=0750"))
      local found
      for _, m in ipairs(sys.mounts()) do if m.target == t then found = m end end
      fs.write(t .. "/f", "x")
      assert(sys.umount(t))
      return { fstype = found.fstype, options = found.options, super = found.super_options,
        after = sys.lstat(t .. "/f") ~= nil }
    end)
    expect(got.fstype).to_be("tmpfs")
    expect(got.options).to_match("nosuid")
    expect(got.super).to_match("size=1024k")
    expect(got.after).to_be(false)
  end)

  it("bind mounts and remounts read-only", function()
    local got = in_mount_ns(function()
      local src, dst = dir.path .. "/src", dir.path .. "/dst"
      assert(sys.mkdir(src))
      assert(sys.mkdir(dst))
      fs.write(src .. "/f", "from src")
      assert(sys.mount(src, dst, nil, { "bind", "rec" }))
      assert(sys.mount(nil, dst, nil, { "bind", "remount", "ro" }))
      local f, err = io.open(dst .. "/new", "w")
      return { read = fs.read(dst .. "/f"), err = err }
    end)
    expect(got.read).to_be("from src")
    expect(got.err).to_match("Read%-only file system")
  end)

  it("changes propagation", function()
    local got = in_mount_ns(function()
      local t = dir.path .. "/p"
      assert(sys.mkdir(t))
      assert(sys.mount("tmpfs", t, "tmpfs"))
      assert(sys.mount(nil, t, nil, { "shared" }))
      local shared
      for _, m in ipairs(sys.mounts()) do if m.target == t then shared = m.propagation[1] end end
      assert(sys.mount(nil, t, nil, { "private" }))
      return shared
    end)
    expect(got).to_match("^shared:")
  end)

  it("pivots into a new root and chroots", function()
    local got = in_mount_ns(function()
      local root = dir.path .. "/root"
      assert(sys.mkdir(root .. "/old"))
      assert(sys.mount("tmpfs", root, "tmpfs"))
      assert(sys.mkdir(root .. "/old"))
      assert(sys.mkdir(root .. "/jail/inner"))
      fs.write(root .. "/marker", "new root")
      assert(sys.chdir(root))
      assert(sys.pivot_root(".", "old"))
      assert(sys.chdir("/"))
      assert(sys.umount("/old", { "detach" }))
      local marker = fs.read("/marker")
      assert(sys.chroot("/jail"))
      assert(sys.chdir("/"))
      return { marker = marker, jail = sys.listdir("/") }
    end)
    expect(got.marker).to_be("new root")
    expect(got.jail).to_equal({ "inner" })
  end)

  it("reports mount failures with the source, target and errno", function()
    local got = in_mount_ns(function()
      local ok, msg, errno = sys.mount("proc", dir.path .. "/missing", "proc")
      return { msg, errno }
    end)
    expect(got[1]).to_be("mount(proc on " .. dir.path .. "/missing): No such file or directory")
    expect(got[2]).to_be("ENOENT")
    local _, msg, errno = sys.pivot_root("/nonexistent-a", "/nonexistent-b")
    expect(errno).to_be("ENOENT")
    expect(function() sys.mount("a", "b", nil, { "bind", "sideways" }) end).to_fail("unknown flag 'sideways'")
    expect(function() sys.umount("/x", { "lazy" }) end).to_fail("unknown flag 'lazy'")
  end)

  it("mounts an overlay, read-write and read-only", function()
    local got = in_mount_ns(function()
      local p = dir.path
      for _, d in ipairs({ "l1", "l2", "up", "work", "merged", "ro" }) do assert(sys.mkdir(p .. "/" .. d)) end
      fs.write(p .. "/l1/top", "l1")
      fs.write(p .. "/l2/top", "l2")
      fs.write(p .. "/l2/bottom", "l2")
      assert(sys.overlay({ lower = { p .. "/l1", p .. "/l2" }, upper = p .. "/up", work = p .. "/work", target = p .. "/merged" }))
      fs.write(p .. "/merged/new", "new")
      assert(sys.overlay({ lower = { p .. "/l1", p .. "/l2" }, target = p .. "/ro" }))
      local _, err = io.open(p .. "/ro/x", "w")
      return { top = fs.read(p .. "/merged/top"), listing = sys.listdir(p .. "/merged"),
        upper = sys.listdir(p .. "/up"), ro_err = err }
    end)
    expect(got.top).to_be("l1")
    expect(got.listing).to_equal({ "bottom", "new", "top" })
    expect(got.upper).to_equal({ "new" })
    expect(got.ro_err).to_match("Read%-only")
  end)

  it("explains what overlay needs when the kernel says EINVAL", function()
    local got = in_mount_ns(function()
      local p = dir.path
      assert(sys.mkdir(p .. "/l1"))
      assert(sys.mkdir(p .. "/m"))
      assert(sys.mkdir(p .. "/t"))
      assert(sys.mount("tmpfs", p .. "/t", "tmpfs"))
      assert(sys.mkdir(p .. "/t/work"))
      assert(sys.mkdir(p .. "/up"))
      -- upper and work on different filesystems
      local ok, msg, errno = sys.overlay({ lower = { p .. "/l1" }, upper = p .. "/up", work = p .. "/t/work", target = p .. "/m" })
      return { ok = ok or false, msg = msg, errno = errno }
    end)
    expect(got.ok).to_be(false)
    expect(got.errno).to_be("EINVAL")
    expect(got.msg).to_match("upper and work on one filesystem")
    expect(function() sys.overlay({ lower = {}, target = "/x" }) end).to_fail("at least one folder")
    -- Without a target the overlay is made detached (an fd for move_mount); a missing layer fails.
    local fd, dmsg, derr = sys.overlay({ lower = { "/nonexistent-layer-" .. sys.getpid() } })
    expect(fd).to_be_nil()
    expect(derr).to_be("ENOENT")
    expect(dmsg).to_match("^overlay%(detached%): fsconfig%(lowerdir%+ /nonexistent%-layer")
    expect(function() sys.overlay({ lower = { "/a" }, target = "/x", upper = "/u" }) end).to_fail("upper and work go together")
    expect(function() sys.overlay({ lower = { "/a" }, target = "/x", colour = 1 }) end).to_fail("unknown option 'colour'")
  end)

  it("mounts an overlay of 150 layers, past one page of options", function()
    local got = in_mount_ns(function()
      local p = dir.path
      local lower = {}
      for i = 1, 150 do
        local l = string.format("%s/layers/a-long-layer-folder-name-%03d", p, i)
        assert(sys.mkdir(l))
        fs.write(l .. "/f" .. i, tostring(i))
        fs.write(l .. "/shared", tostring(i))
        lower[i] = l
      end
      assert(sys.mkdir(p .. "/m"))
      assert(sys.overlay({ lower = lower, target = p .. "/m", flags = { "ro" } }))
      return { count = #sys.listdir(p .. "/m"), shared = fs.read(p .. "/m/shared") }
    end)
    expect(got.count).to_be(151)
    expect(got.shared).to_be("1")
  end)
end)
