-- Layer tarballs: round trips, digests, whiteouts, and hostile tars made by hand. Each hostile
-- tar gets a clear error, and nothing is written outside the layer folder.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"

-- Writes a tar with Python's tarfile: entries are {name, kind, data_or_target}.
local function make_tar(path, entries, extra)
  local lines = { "import tarfile, io, sys", "t = tarfile.open(sys.argv[1], 'w')" }
  for _, e in ipairs(entries) do
    local name, kind, data = e[1], e[2], e[3] or ""
    lines[#lines + 1] = string.format("ti = tarfile.TarInfo(%q)", name)
    if kind == "file" then
      lines[#lines + 1] = string.format("d = %q.encode(); ti.size = len(d); t.addfile(ti, io.BytesIO(d))", data)
    elseif kind == "sym" or kind == "hard" then
      lines[#lines + 1] = string.format("ti.type = tarfile.%s; ti.linkname = %q; t.addfile(ti)", kind == "sym" and "SYMTYPE" or "LNKTYPE", data)
    elseif kind == "dir" then
      lines[#lines + 1] = "ti.type = tarfile.DIRTYPE; ti.mode = 0o755; t.addfile(ti)"
    elseif kind == "dev" then
      lines[#lines + 1] = "ti.type = tarfile.BLKTYPE; ti.devmajor = 8; ti.devminor = 0; t.addfile(ti)"
    elseif kind == "suid" then
      lines[#lines + 1] = "d = b'#!/bin/sh\\n'; ti.size = len(d); ti.mode = 0o4755; t.addfile(ti, io.BytesIO(d))"
    end
  end
  lines[#lines + 1] = extra or ""
  lines[#lines + 1] = "t.close()"
  local script = fs.write(path .. ".py", table.concat(lines, "\n"))
  local r = process.run({ "python3", script, path })
  if r.code ~= 0 then error("making " .. path .. ": " .. r.stderr) end
  return path
end

describe("layer archives", function()
  local dir
  before_each(function()
    if process.run({ "sh", "-c", "command -v python3" }).code ~= 0 then skip("needs python3 to make tars") end
    dir = fs.tempdir("archive-test-")
  end)
  after_each(function() if dir then dir:remove() end end)

  it("round-trips a rootfs through a gzip layer, with a digest sha256sum agrees with", function()
    local root = rootfs.busybox(dir.path .. "/root")
    assert(sys.symlink("busybox", root .. "/bin/also-busybox"))
    assert(sys.link(root .. "/etc/passwd", root .. "/etc/passwd-hardlink"))
    local n = assert(sys.archive_create(root, dir.path .. "/layer.tar.gz", { compression = "gzip" }))
    expect(n.entries).to_be_at_least(250)
    local digest = assert(sys.sha256(dir.path .. "/layer.tar.gz"))
    expect(digest).to_be(process.run({ "sha256sum", dir.path .. "/layer.tar.gz" }).stdout:match("^(%x+)"))
    assert(sys.mkdir(dir.path .. "/out"))
    local r = assert(sys.archive_extract(dir.path .. "/layer.tar.gz", dir.path .. "/out"))
    expect(r.files).to_be(n.entries)
    expect(process.run({ "diff", "-r", "--no-dereference", root, dir.path .. "/out" }).code).to_be(0)
    expect(sys.stat(dir.path .. "/out/etc/passwd-hardlink").nlink).to_be(2)
    expect(sys.readlink(dir.path .. "/out/bin/also-busybox")).to_be("busybox")
    expect(sys.sha256_string("abc")).to_be("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  end)

  it("turns OCI whiteouts into overlay ones, and back", function()
    local tar = make_tar(dir.path .. "/wh.tar", { { "d", "dir" }, { "d/.wh..wh..opq", "file" }, { ".wh.gone", "file" }, { "kept", "file", "x" } })
    assert(sys.mkdir(dir.path .. "/out"))
    assert(sys.archive_extract(tar, dir.path .. "/out"))
    local st = sys.lstat(dir.path .. "/out/gone")
    expect(st.type).to_be("char")
    expect(st.major).to_be(0)
    expect(st.minor).to_be(0)
    if sys.geteuid() == 0 then
      expect(sys.getxattr(dir.path .. "/out/d", "trusted.overlay.opaque")).to_be("y")
      assert(sys.archive_create(dir.path .. "/out", dir.path .. "/back.tar"))
      local listing = process.run({ "tar", "-tf", dir.path .. "/back.tar" }).stdout
      expect(listing).to_contain(".wh.gone\n")
      expect(listing).to_contain("d/.wh..wh..opq\n")
    end
  end)

  describe("hostile tars", function()
    local outside
    before_each(function()
      outside = dir.path .. "/outside"
      assert(sys.mkdir(outside))
      fs.write(outside .. "/keep", "untouched")
      assert(sys.mkdir(dir.path .. "/layer"))
    end)
    after_each(function()
      expect(sys.listdir(outside)).to_equal({ "keep" })
      expect(fs.read(outside .. "/keep")).to_be("untouched")
    end)

    local function extract(entries, options, extra)
      local tar = make_tar(dir.path .. "/hostile.tar", entries, extra)
      return sys.archive_extract(tar, dir.path .. "/layer", options)
    end

    it("refuses '..' in entry names", function()
      local ok, msg, errno = extract({ { "../outside/evil", "file", "x" } })
      expect(ok).to_be_nil()
      expect(msg).to_match("entry %.%./outside/evil: '%.%.' in the path; refused")
      expect(errno).to_be("EINVAL")
      expect(extract({ { "a/../../outside/evil", "file", "x" } })).to_be_nil()
    end)

    it("keeps absolute names inside the layer", function()
      assert(extract({ { "/abs/file", "file", "in" } }))
      expect(fs.read(dir.path .. "/layer/abs/file")).to_be("in")
    end)

    it("never writes through a symlink the layer made", function()
      local ok, msg = extract({ { "link", "sym", outside }, { "link/evil", "file", "x" } })
      expect(ok).to_be_nil()
      expect(msg).to_match("link is a symlink; refused")
      ok, msg = extract({ { "rel", "sym", "../outside" }, { "rel/evil", "file", "x" } })
      expect(msg).to_match("rel is a symlink; refused")
    end)

    it("never writes through a symlink that was there before", function()
      assert(sys.symlink(outside, dir.path .. "/layer/pre"))
      local ok, msg = extract({ { "pre/evil", "file", "x" } })
      expect(msg).to_match("pre is a symlink; refused")
      -- and a file entry over a symlink replaces the link, not its target
      assert(sys.symlink(outside .. "/keep", dir.path .. "/layer/over"))
      assert(extract({ { "over", "file", "replaced" } }))
      expect(sys.lstat(dir.path .. "/layer/over").type).to_be("file")
    end)

    it("refuses hard links out of the layer", function()
      local ok, msg = extract({ { "h", "hard", outside .. "/keep" } })
      expect(msg).to_match("hard link target .* is not in the layer")
      ok, msg = extract({ { "h", "hard", "../outside/keep" } })
      expect(msg).to_match("leaves the layer; refused")
    end)

    it("keeps device nodes and set-id bits from taking effect", function()
      local r = assert(extract({ { "sda", "dev" }, { "suid", "suid" } }))
      expect(r.skipped).to_equal({ "sda" })
      expect(sys.lstat(dir.path .. "/layer/sda")).to_be_nil()
      expect(sys.stat(dir.path .. "/layer/suid").mode).to_be(tonumber("755", 8))
    end)

    it("refuses a huge file before writing it", function()
      local ok, msg, errno = extract({}, nil, [[
ti = tarfile.TarInfo("huge"); ti.size = 1 << 40
buf = ti.tobuf(tarfile.GNU_FORMAT)
t.fileobj.write(buf); t.fileobj.write(b"\0" * 512); t.offset += len(buf) + 512
]])
      expect(ok).to_be_nil()
      expect(msg).to_match("entry huge: the layer holds more than %d+ bytes; refused")
      expect(errno).to_be("EFBIG")
    end)

    it("refuses a bomb of many tiny files", function()
      local ok, msg = extract({}, { max_files = 1000 }, [[
for i in range(1200):
    ti = tarfile.TarInfo("bomb/f%d" % i); t.addfile(ti, io.BytesIO(b""))
]])
      expect(ok).to_be_nil()
      expect(msg).to_match("more than 1000 entries; refused as a bomb")
    end)

    it("reports a file that is not a tar", function()
      local bad = fs.write(dir.path .. "/not.tar", "this is not an archive")
      local ok, msg = sys.archive_extract(bad, dir.path .. "/layer")
      expect(ok).to_be_nil()
      expect(msg).to_match("^archive_extract%(.*not%.tar%): ")
    end)
  end)
end)
