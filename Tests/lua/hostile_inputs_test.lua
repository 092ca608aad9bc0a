-- Hostile inputs: what a hostile rootfs, image, archive, registry, state folder or name could do
-- to the host, each tried and refused. Every attack here worked before moonbox was fixed.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local json = require "moonbox.json"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local image = require "moonbox.image"
local recipe = require "moonbox.recipe"
local registry = require "moonbox.registry"
local gc = require "moonbox.gc"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root, store

local function setup()
  if root then return end
  base = fs.tempdir("hostile-inputs")
  assert(sys.chmod(base.path, tonumber("755", 8)))
  root = rootfs.busybox(base.path .. "/rootfs")
  store = base.path .. "/store"
  image.use_root(store)
  if not image.resolve("base:1") then image.import_dir(root, "base:1") end
end

local function sh(script, spec)
  spec = spec or {}
  if not spec.image then spec.rootfs = spec.rootfs or root end
  spec.command = { "/bin/sh", "-c", script }
  spec.stdout, spec.stderr = "capture", "capture"
  return container.run(spec)
end

local function has_tool(name) return process.run({ "sh", "-c", "command -v " .. name }).code == 0 end

-- A copy of the busybox rootfs for a test that changes it.
local function fresh_rootfs(name)
  local dir = base.path .. "/" .. name
  rootfs.busybox(dir)
  return dir
end

describe("names", function()
  before_each(function() needs_root() setup() end)

  it("refuses a container name that is not a name, and the store survives", function()
    for _, bad in ipairs({ "..", ".", "a/b", "../../x", "", string.rep("x", 200), "-lead", "spa ce" }) do
      expect(function() container.run({ image = "base:1", name = bad, command = { "/bin/true" } }) end)
        .to_fail("name must be a name of letters, digits")
    end
    expect(sys.stat(store .. "/index.json")).to_be_truthy()
    expect(image.resolve("base:1")).to_be_truthy()
    expect(sh("echo ok", { image = "base:1", name = "fine.name_1-2" }).stdout).to_be("ok\n")
  end)

  it("refuses a second live container with the same name", function()
    local a <close> = container.new({ rootfs = root, name = "twin", command = { "/bin/sleep", "30" } })
    a:start()
    local ok, err = pcall(function()
      local b <close> = container.new({ rootfs = root, name = "twin", command = { "/bin/true" } })
      b:start()
    end)
    expect(ok).to_be(false)
    expect(tostring(err)).to_match("container name twin is in use by a running container")
    expect(a:stats().pids).to_be_at_least(1)  -- the first one is untouched
    a:remove()
    expect(sh("echo again", { name = "twin" }).stdout).to_be("again\n")
  end)

  it("takes image names and tags only in the OCI reference grammar", function()
    for _, bad in ipairs({ "BAD NAME!!", "Upper:1", "a//b:1", "../x:1", "x:" .. string.rep("t", 200), "a:b:c" }) do
      expect(function() image.import_dir(root, bad) end).to_fail("image")
    end
    for _, good in ipairs({ "a", "a/b:1", "localhost:5000/a/b:v1.2", "example.com/x_y:latest", "a__b--c.d" }) do
      expect(image.parse_ref(good)).to_be_truthy()
    end
    local r = process.run({ moonbox, "image", "import", root, "BAD NAME!!" }, { env = { MOONBOX_ROOT = store } })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("^moonbox image: image: image name BAD NAME!! is not a valid reference")
    expect(select(2, r.stderr:gsub("\n", ""))).to_be(1)
  end)
end)

describe("a hostile rootfs", function()
  before_each(function() needs_root() setup() end)

  it("cannot send a mount target onto the host through a symlink", function()
    local host = base.path .. "/host-target"
    assert(sys.mkdir(host))
    local evil = fresh_rootfs("evil-data")
    assert(sys.symlink(host, evil .. "/data"))             -- absolute, to a host folder
    assert(sys.symlink("../../../../../../" .. host:sub(2), evil .. "/up"))  -- relative, climbing out
    local data = base.path .. "/payload"
    assert(sys.mkdir(data))
    fs.write(data .. "/f", "payload")
    local r = sh("ls /data/x /up/y; cat /data/x/f", { rootfs = evil,
      mounts = { data .. ":/data/x:ro", { type = "tmpfs", target = "/up/y" } } })
    expect(r.code).to_be(0)
    expect(r.stdout).to_match("payload")
    expect(sys.listdir(host)).to_equal({})                -- nothing made on the host
    expect(sys.stat(evil .. host .. "/x")).to_be_truthy()  -- made inside the rootfs instead
  end)

  it("cannot redirect /dev, /proc or /sys, or a masked path, onto the host", function()
    local host = base.path .. "/host-dev"
    assert(sys.mkdir(host))
    for _, name in ipairs({ "dev", "proc", "sys" }) do
      local evil = fresh_rootfs("evil-" .. name)
      assert(sys.remove_tree(evil .. "/" .. name))
      assert(sys.symlink(host, evil .. "/" .. name))
      local r = sh("ls /dev/null >/dev/null && echo ok", { rootfs = evil })
      expect(r.stdout).to_be("ok\n")
      expect(sys.listdir(host)).to_equal({})
    end
  end)

  it("starts from the folder that was checked, even if the path is swapped meanwhile", function()
    local dir = fresh_rootfs("swapped")
    local c <close> = container.new({ rootfs = dir, command = { "/bin/sh", "-c", "cat /marker" }, stdout = "capture" })
    fs.write(dir .. "/marker", "original\n")
    -- The path now names an empty folder: the container still runs on what was checked at start.
    assert(sys.rename(dir, dir .. "-moved"))
    assert(sys.mkdir(dir))
    c:start()
    expect(c:wait().stdout).to_be("original\n")
    expect(#sys.listdir(dir)).to_be(0)  -- nothing was made at the path on the host
    assert(sys.remove_tree(dir))
    assert(sys.rename(dir .. "-moved", dir))
  end)
end)

describe("the state folder", function()
  local dir
  before_each(function()
    needs_root()
    setup()
    dir = fs.tempdir("state")
  end)
  after_each(function() if dir then dir:remove() end end)

  local function in_moonbox(chunk, state)
    return process.run({ moonbox, "run", "-e", chunk, root }, { env = { MOONBOX_STATE = state, PATH = "/usr/bin:/bin" } })
  end

  it("never loads a planted seccomp program", function()
    local state = dir.path .. "/run"
    local probe = [[
      local container = require "moonbox.container"
      local r = container.run({ rootfs = arg[1], stdout = "capture", stderr = "capture",
        command = { "/bin/sh", "-c", "unshare -U true 2>/dev/null && echo escaped || echo blocked" } })
      io.write(r.stdout)]]
    expect(in_moonbox(probe, state).stdout).to_be("blocked\n")
    -- Every cached program replaced by one that allows everything.
    local allow_all = assert(sys.seccomp_compile({ defaultAction = "SCMP_ACT_ALLOW", syscalls = {} }))
    local planted = 0
    for _, name in ipairs(sys.listdir(state .. "/cache") or {}) do
      fs.write(state .. "/cache/" .. name, allow_all, tonumber("600", 8))
      planted = planted + 1
    end
    expect(planted).to_be_at_least(1)
    expect(in_moonbox(probe, state).stdout).to_be("blocked\n")
  end)

  it("refuses a state folder that is not the user's own, or that others may write", function()
    local state = dir.path .. "/theirs"
    assert(sys.mkdir(state, tonumber("700", 8)))
    assert(sys.chown(state, 65534, 65534))
    local r = in_moonbox("require('moonbox.container').run({ rootfs = arg[1], command = { '/bin/true' } })", state)
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("state folder refused: .* belongs to uid 65534")
    assert(sys.chown(state, 0, 0))
    assert(sys.chmod(state, tonumber("777", 8)))
    r = in_moonbox("require('moonbox.container').run({ rootfs = arg[1], command = { '/bin/true' } })", state)
    expect(r.stderr).to_match("state folder refused: .* writable by others")
  end)

  it("gc removes only what moonbox makes, whatever a record says", function()
    local state = dir.path .. "/run"
    assert(sys.mkdir(state, tonumber("700", 8)))
    local victim = dir.path .. "/precious"
    assert(sys.mkdir(victim))
    fs.write(victim .. "/data", "keep me")
    fs.write(state .. "/evil.json", json.encode({ id = "evil", owner = 1, owner_start = 1, dirs = { victim, "/etc" },
      cgroup = { "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids/user.slice" } }))
    local r = process.run({ moonbox, "gc" }, { env = { MOONBOX_STATE = state, MOONBOX_ROOT = store } })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("refused folder " .. victim:gsub("%p", "%%%0") .. ": not below moonbox's own folders")
    expect(r.stderr).to_match("refused cgroup /sys/fs/cgroup/memory: not a folder moonbox makes")
    expect(fs.read(victim .. "/data")).to_be("keep me")
    expect(sys.stat("/etc/passwd")).to_be_truthy()
    expect(sys.stat("/sys/fs/cgroup/memory/cgroup.procs")).to_be_truthy()
  end)
end)

describe("hostile archives", function()
  before_each(function() needs_root() setup() end)

  -- A docker-save style tarball: a folder with manifest.json, files and symlinks, tarred.
  local function docker_save(name, manifest, files, links)
    local dir = base.path .. "/save-" .. name
    assert(sys.mkdir(dir))
    fs.write(dir .. "/manifest.json", json.encode(manifest))
    for n, text in pairs(files or {}) do fs.write(dir .. "/" .. n, text) end
    for n, target in pairs(links or {}) do assert(sys.symlink(target, dir .. "/" .. n)) end
    local tar = base.path .. "/" .. name .. ".tar"
    assert(process.run({ "tar", "-cf", tar, "-C", dir, "." }).code == 0)
    return tar
  end

  it("reads no host file into the store through a docker-save manifest", function()
    local config = json.encode({ architecture = "amd64", os = "linux", rootfs = { type = "layers", diff_ids = {} } })
    for _, case in ipairs({
      { "dotdot", { { Config = "../../../../../../etc/passwd", Layers = {} } }, {}, {} },
      { "layerdotdot", { { Config = "c.json", Layers = { "../../../../../../etc/passwd" } } }, { ["c.json"] = config }, {} },
      { "symlink", { { Config = "c.json", Layers = { "l.tar" } } }, { ["c.json"] = config }, { ["l.tar"] = "/etc/passwd" } },
      { "abslink", { { Config = "link.json", Layers = {} } }, {}, { ["link.json"] = "/etc/os-release" } },
    }) do
      local tar = docker_save(case[1], case[2], case[3], case[4])
      local before = #(sys.listdir(store .. "/blobs/sha256") or {})
      expect(function() image.import(tar, "evil-" .. case[1] .. ":1") end).to_fail("image")
      expect(#(sys.listdir(store .. "/blobs/sha256") or {})).to_be(before)
    end
  end)

  it("checks every layer against its diff_id, compressed or not", function()
    -- A real image as docker save writes it, with a gzip layer whose content is not the config's.
    local good = image.resolve("base:1")
    local layer_gz = base.path .. "/layer.tar.gz"
    assert(process.run({ "sh", "-c", "gzip -c < " .. image.blob_path(good.manifest.layers[1].digest) .. " > " .. layer_gz }).code == 0)
    local config = json.decode(json.encode(good.config))
    config.rootfs.diff_ids = { "sha256:" .. string.rep("0", 64) }
    local tar = docker_save("wrongdiff", { { Config = "c.json", Layers = { "layer.tar.gz" }, RepoTags = { "x:1" } } },
      { ["c.json"] = json.encode(config), ["layer.tar.gz"] = fs.read(layer_gz) })
    expect(function() image.import(tar, "wrongdiff:1") end).to_fail("not the config's diff_id")
    -- The right diff_id: imported, with the gzip media type that umoci expects.
    config.rootfs.diff_ids = { good.manifest.layers[1].digest }
    tar = docker_save("rightdiff", { { Config = "c.json", Layers = { "layer.tar.gz" }, RepoTags = { "x:1" } } },
      { ["c.json"] = json.encode(config), ["layer.tar.gz"] = fs.read(layer_gz) })
    image.import(tar, "gzipped:1")
    local img = assert(image.resolve("gzipped:1"))
    expect(img.manifest.layers[1].mediaType).to_be("application/vnd.oci.image.layer.v1.tar+gzip")
    expect(sh("echo from-gzip", { image = "gzipped:1" }).stdout).to_be("from-gzip\n")
    if has_tool("umoci") then
      local out = base.path .. "/gz-oci"
      image.export("gzipped:1", out)
      local r = process.run({ "umoci", "unpack", "--rootless", "--image", out .. ":gzipped:1", base.path .. "/gz-unpacked" })
      expect(r.stderr).to_be("")
      expect(sys.stat(base.path .. "/gz-unpacked/rootfs/bin/busybox")).to_be_truthy()
    end
  end)

  it("keeps a sparse file sparse and counts bytes written, not its size (a 10 GB bomb in 10 KB)", function()
    local dir = base.path .. "/sparse-src"
    assert(sys.mkdir(dir))
    fs.write(dir .. "/bomb", "")
    assert(sys.truncate(dir .. "/bomb", 10 << 30))
    local tar = base.path .. "/sparse.tar"
    local r = process.run({ "tar", "--sparse", "-cf", tar, "-C", dir, "bomb" })
    expect(r.code).to_be(0)
    expect(sys.stat(tar).size).to_be_at_most(64 << 10)
    local t0 = sys.clock_gettime()
    local digest = image.import(tar, "sparse:1")
    expect(sys.clock_gettime() - t0).to_be_at_most(30)
    local img = assert(image.resolve("sparse:1"))
    expect(img.digest).to_be(digest)
    expect(img.manifest.layers[1].size).to_be_at_most(1 << 20)
    local unpacked = image.layer_dir(img.manifest.layers[1].digest)
    expect(sys.stat(unpacked .. "/bomb").size).to_be(10 << 30)
    expect(sys.stat(unpacked .. "/bomb").blocks).to_be_at_most(64)
    image.remove("sparse:1")
  end)

  it("keeps UTF-8 names from folders and from other tools' pax archives", function()
    local dir = base.path .. "/utf8"
    assert(sys.mkdir(dir .. "/usr/share/ca-certificates/mozilla"))
    local names = { "NetLock_Arany_=Class_Gold=_Főtanúsítvány.crt", "héllo wörld", "日本語" }
    for _, n in ipairs(names) do fs.write(dir .. "/usr/share/ca-certificates/mozilla/" .. n, n) end
    fs.write(dir .. "/" .. string.char(0x62, 0xff, 0x61, 0x64), "not utf-8")
    image.import_dir(dir, "utf8:1")
    local layer = image.layer_dir(assert(image.resolve("utf8:1")).manifest.layers[1].digest)
    for _, n in ipairs(names) do expect(fs.read(layer .. "/usr/share/ca-certificates/mozilla/" .. n)).to_be(n) end
    expect(sys.lstat(layer .. "/" .. string.char(0x62, 0xff, 0x61, 0x64))).to_be_nil()  -- skipped, with a warning
    -- pax UTF-8 names written by Python's tarfile
    local tar = base.path .. "/pax.tar"
    local r = process.run({ "python3", "-c", [[
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    for n in ["bin/", "etc/Ünïcødé.txt", "etc/ΑΒΓ"]:
        ti = tarfile.TarInfo(n.rstrip("/")); ti.type = tarfile.DIRTYPE if n.endswith("/") else tarfile.REGTYPE
        data = n.encode(); ti.size = 0 if n.endswith("/") else len(data)
        t.addfile(ti, None if n.endswith("/") else io.BytesIO(data))
]], tar })
    if r.code ~= 0 then skip("needs python3: " .. r.stderr) end
    image.import(tar, "pax:1")
    local pax = image.layer_dir(assert(image.resolve("pax:1")).manifest.layers[1].digest)
    expect(fs.read(pax .. "/etc/Ünïcødé.txt")).to_be("etc/Ünïcødé.txt")
    expect(fs.read(pax .. "/etc/ΑΒΓ")).to_be("etc/ΑΒΓ")
  end)
end)

describe("registry trust", function()
  before_each(function() needs_root() setup() end)

  it("uses plain HTTP only for exact loopback hosts or registries named insecure", function()
    expect(registry.parse("localhost:5000/a:1").base).to_match("^http://")
    expect(registry.parse("127.0.0.1:5000/a:1").base).to_match("^http://")
    expect(registry.parse("127.8.9.10/a:1").base).to_match("^http://")
    expect(registry.parse("[::1]:5000/a:1").base).to_match("^http://")
    for _, host in ipairs({ "localhost.evil.example", "127.0.0.1.evil.example", "localhostx:5000", "1270.0.0.1:5000" }) do
      expect(registry.parse(host .. "/a:1").base).to_match("^https://")
    end
  end)

  -- A fake registry on loopback that misbehaves as asked.
  local function fake_registry(mode)
    if not has_tool("python3") then skip("needs python3 for a fake registry") end
    local py = [[
import hashlib, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
mode = sys.argv[1]
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64, "size": 2}, "layers": []}).encode()
index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "2" * 64, "size": len(manifest),
                 "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if mode == "realm":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="file:///etc/passwd",service="x"')
            self.end_headers(); return
        body = index if "/manifests/latest" in self.path else manifest
        ctype = "application/vnd.oci.image.index.v1+json" if body is index else "application/vnd.oci.image.manifest.v1+json"
        self.send_response(200); self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_port, flush=True)
s.serve_forever()
]]
    local r, w = assert(sys.pipe())
    local pid = assert(sys.fork())
    if pid == 0 then
      sys.dup2(w, 1)
      process.exec({ "python3", "-c", py, mode })
      sys._exit(127)
    end
    w:close()
    local port = tonumber((sys.read(r, 64) or ""):match("%d+"))
    finally(function() sys.kill(pid, "KILL") sys.wait(pid) r:close() end)
    if not port then skip("the fake registry did not start") end
    return port
  end

  it("refuses a token realm that is not https", function()
    local port = fake_registry("realm")
    expect(function() registry.pull("127.0.0.1:" .. port .. "/app:1") end).to_fail("token realm file:///etc/passwd is not https; refused")
  end)

  it("checks a manifest picked from an index against the index's digest", function()
    local port = fake_registry("index")
    expect(function() registry.pull("127.0.0.1:" .. port .. "/app:latest") end)
      .to_fail("manifest sha256:2+ arrived as sha256:%x+, not sha256:2+; refused")
  end)
end)

describe("isolation details", function()
  before_each(function() needs_root() setup() end)

  it("honours no_new_privileges = false with seccomp on", function()
    local r = sh("grep NoNewPrivs /proc/self/status", { no_new_privileges = false })
    expect(r.stdout).to_match("NoNewPrivs:%s+0")
    expect(sh("grep NoNewPrivs /proc/self/status").stdout).to_match("NoNewPrivs:%s+1")
    -- seccomp is still there
    expect(sh("grep Seccomp: /proc/self/status", { no_new_privileges = false }).stdout).to_match("Seccomp:%s+2")
  end)

  it("checks exec's working folder against the container's root (CVE-2024-21626)", function()
    local c <close> = container.new({ rootfs = root, command = { "/bin/sleep", "30" } })
    c:start()
    local leak = assert(sys.open(base.path, { "rdonly", "directory", "inherit" }))
    finally(function() leak:close() end)
    local ok, err = pcall(c.exec, c, { "/bin/pwd" }, { cwd = "/proc/self/fd/" .. leak:fileno() })
    expect(ok).to_be(false)
    expect(tostring(err)).to_match("working folder is outside the container")
  end)

  it("reports an exec's exit code above 128 as an exit, and a signal as a signal", function()
    local c <close> = container.new({ rootfs = root, command = { "/bin/sleep", "30" } })
    c:start()
    local e = c:exec({ "/bin/sh", "-c", "exit 200" })
    expect(e.status).to_be("exited")
    expect(e.code).to_be(200)
    e = c:exec({ "/bin/sh", "-c", "kill -9 $$" })
    expect(e.status).to_be("signaled")
    expect(e.signal).to_be(9)
  end)

  it("runs an image's User given by name, resolved in the image's own /etc/passwd", function()
    local dir = fresh_rootfs("named-users")
    fs.write(dir .. "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
      .. "www-data:x:33:33:www-data:/var/www:/bin/false\n")
    fs.write(dir .. "/etc/group", "root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\nstaff:x:50:www-data\n")
    image.import_dir(dir, "named:1")
    local img = assert(image.resolve("named:1"))
    for _, case in ipairs({ { "nobody", "65534 65534" }, { "www-data:www-data", "33 33" }, { "www-data", "33 33" } }) do
      local cfg = image.new_config({}, img.config)
      cfg.config.User = case[1]
      image.store("named:" .. case[1]:gsub(":", "-"), cfg, img.manifest.layers)
      local r = sh("echo $(id -u) $(id -g); echo $HOME", { image = "named:" .. case[1]:gsub(":", "-") })
      expect(r.stdout:match("^[^\n]*")).to_be(case[2])
    end
    expect(sh("id -G", { image = "named:www-data" }).stdout).to_match("50")  -- a supplementary group
    expect(sh("id -u", { rootfs = dir, user = "nobody" }).stdout).to_be("65534\n")
    local ok, err = pcall(sh, "true", { rootfs = dir, user = "ghost" })
    expect(ok).to_be(false)
    expect(tostring(err)).to_match("user ghost is not in the container's /etc/passwd")
  end)
end)

describe("recipes", function()
  before_each(function() needs_root() setup() end)

  local function build(dir, body, args)
    local file = fs.write(dir .. "/recipe.lua", body)
    return recipe.build(recipe.load(file, args), { quiet = true, args = args })
  end

  it("keys a Lua step on its upvalues and args, and refuses what cannot be keyed", function()
    local dir = base.path .. "/rk"
    assert(sys.mkdir(dir))
    local body = [[
      local message = %q
      local function write(sys, text) local f = io.open("/msg", "w") f:write(text) f:close() end
      return recipe "keyed:1" {
        from "base:1",
        arg { SUFFIX = "" },
        step("write", function(sys) write(sys, message .. args.SUFFIX) end),
      }]]
    expect(build(dir, body:format("one")).runs).to_be(1)
    expect(build(dir, body:format("one")).runs).to_be(0)
    expect(build(dir, body:format("two")).runs).to_be(1)   -- an upvalue changed
    expect(sh("cat /msg", { image = "keyed:1" }).stdout).to_be("two")
    expect(build(dir, body:format("two"), { SUFFIX = "!" }).runs).to_be(1)  -- an arg changed
    expect(sh("cat /msg", { image = "keyed:1" }).stdout).to_be("two!")
    expect(function() build(dir, [[
      local co = coroutine.create(function() end)
      return recipe "unkeyable:1" { from "base:1", step("x", function(sys) return co end) }]]) end)
      .to_fail("the upvalue co is a thread, which cannot be part of the cache key")
    expect(function() build(dir, body:format("x"), { NOPE = "1" }) end).to_fail("%-%-arg NOPE: the recipe declares no such arg")
  end)

  it("copies a single file, and adds a tarball on an image already in the store", function()
    local dir = base.path .. "/rc"
    assert(sys.mkdir(dir .. "/tree/sub"))
    fs.write(dir .. "/one.txt", "one\n")
    fs.write(dir .. "/tree/sub/f", "in tar\n")
    assert(process.run({ "tar", "-cf", dir .. "/app.tar", "-C", dir .. "/tree", "." }).code == 0)
    build(dir, [[
      return recipe "copied:1" {
        from "base:1",
        copy("one.txt", "/etc/one.txt"),
        copy("one.txt", "/opt/dir/"),
        add("app.tar", "/opt"),
      }]])
    expect(sh("cat /etc/one.txt /opt/dir/one.txt /opt/sub/f; ls -a / | grep -c moonbox-src", { image = "copied:1" }).stdout)
      .to_be("one\none\nin tar\n0\n")
  end)

  it("gives the same digest for the same inputs, builds a second apart", function()
    local dir = base.path .. "/rr"
    assert(sys.mkdir(dir))
    local body = [[return recipe "repro:1" { from "base:1", run "echo hi > /f", env { A = "1" }, cmd { "/bin/sh" } }]]
    local first = build(dir, body)
    sys.nanosleep(1.1)
    local second = build(dir, body)
    expect(second.digest).to_be(first.digest)
  end)
end)

describe("limits.disk", function()
  before_each(function() needs_root() setup() end)

  it("caps what a container writes, with ENOSPC, and leaves a rootfs folder as it was", function()
    if not has_tool("mkfs.ext4") then skip("needs mkfs.ext4 (e2fsprogs)") end
    local dir = fresh_rootfs("disk")
    local r = sh("dd if=/dev/zero of=/big bs=1M count=100 2>&1; echo dd=$?; ls -la /big | awk '{print $5}'; echo ok > /small && cat /small",
      { rootfs = dir, limits = { disk = "32M" } })
    expect(r.stdout).to_match("No space left on device")
    expect(r.stdout).to_match("dd=1")
    expect(tonumber(r.stdout:match("\n(%d+)\n"))).to_be_at_most(32 << 20)
    expect(sys.lstat(dir .. "/big")).to_be_nil()     -- the rootfs folder is the read-only lower
    expect(sys.lstat(dir .. "/small")).to_be_nil()
    local img = sh("dd if=/dev/zero of=/big bs=1M count=50 2>&1 | grep -c 'No space'", { image = "base:1", limits = { disk = "16M" } })
    expect(img.stdout).to_be("1\n")
    -- nothing of it stays: no loop device, no image file
    expect(process.run({ "sh", "-c", "losetup -a | grep -c disk.img" }).stdout).to_be("0\n")
    expect(sys.listdir(store .. "/containers")).to_equal({})
  end)
end)

describe("hostile inputs teardown", function()
  it("removes the store and the rootfs", function()
    if base then
      image.use_root(nil)
      base:remove()
    end
    base, root = nil, nil
  end)
end)
