local sys = require "moonbox.sys"
local process = require "moonbox.process"

describe("introspection", function()
  it("gives namespace ids like lsns", function()
    local ns = assert(sys.namespaces())
    for _, k in ipairs({ "mnt", "uts", "ipc", "net", "pid", "user", "cgroup" }) do
      expect(ns[k]).to_be_a("integer")
    end
    expect(sys.namespaces(sys.getpid())).to_equal(ns)
    local _, _, errno = sys.namespaces(999999999)
    expect(errno).to_be("ENOENT")
  end)

  it("sees a new namespace in a child", function()
    needs_root()
    local host = sys.namespaces()
    local child = process.call(function() return sys.namespaces() end, { namespaces = { "net", "ipc" } })
    expect(child.net).not_to_be(host.net)
    expect(child.ipc).not_to_be(host.ipc)
    expect(child.mnt).to_be(host.mnt)
  end)

  it("parses the mount table", function()
    local mounts = assert(sys.mounts())
    expect(#mounts).to_be_at_least(2)
    local root
    for _, m in ipairs(mounts) do if m.target == "/" then root = m end end
    expect(root).to_be_truthy()
    expect(root.id).to_be_a("integer")
    expect(root.fstype).to_be_a("string")
    expect(root.propagation).to_be_a("table")
  end)

  it("unescapes spaces in mount points", function()
    needs_root()
    local fs = require "moonbox.fs"
    local dir <close> = fs.tempdir()
    local target = process.call(function()
      assert(sys.mount(nil, "/", nil, { "rprivate" }))
      local t = dir.path .. "/with space"
      assert(sys.mkdir(t))
      assert(sys.mount("tmpfs", t, "tmpfs"))
      for _, m in ipairs(sys.mounts()) do if m.target == t then return m.target end end
    end, { namespaces = { "mount" } })
    expect(target).to_be(dir.path .. "/with space")
  end)
end)
