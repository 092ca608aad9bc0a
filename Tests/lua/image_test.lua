-- Images: the store, overlay runs, commit and whiteouts, deep images, OCI round trips,
-- and recipes with their cache. Everything lives in a store under a temporary folder.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local image = require "moonbox.image"
local recipe = require "moonbox.recipe"

local store, base

local function setup()
  if store then return end
  store = fs.tempdir("image-test-")
  image.use_root(store.path .. "/store")
  base = rootfs.busybox(store.path .. "/busybox")
  image.import_dir(base, "busybox:test")
end

local function sh(img, script, extra)
  local spec = { image = img, command = { "/bin/sh", "-c", script }, stdout = "capture", stderr = "capture" }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return container.run(spec)
end

describe("images", function()
  before_each(function() needs_root() setup() end)

  it("lays the store out as an OCI image layout", function()
    local root = image.root()
    expect(fs.read(root .. "/oci-layout")).to_be('{"imageLayoutVersion":"1.0.0"}')
    local index = require("moonbox.json").decode(fs.read(root .. "/index.json"))
    expect(index.schemaVersion).to_be(2)
    expect(index.manifests[1].annotations["org.opencontainers.image.ref.name"]).to_be("busybox:test")
    local img = assert(image.resolve("busybox:test"))
    for _, d in ipairs({ img.digest, img.manifest.config.digest, img.manifest.layers[1].digest }) do
      expect("sha256:" .. sys.sha256(image.blob_path(d))).to_be(d)
    end
  end)

  it("runs the tutorial's overlay example through images: new_file in the upper, a whiteout for file3", function()
    local layers = {}
    for i = 1, 3 do
      local d = store.path .. "/tut" .. i
      assert(sys.mkdir(d))
      fs.write(d .. "/file" .. i, "layer" .. i .. " file\n")
      layers[i] = image.layer_from_dir(d)
    end
    local base_img = assert(image.resolve("busybox:test"))
    local all = { base_img.manifest.layers[1] }
    for i = 1, 3 do all[#all + 1] = layers[i] end
    image.store("tutorial:1", image.new_config(layers, base_img.config), all)
    local c <close> = container.new({ image = "tutorial:1", stdout = "capture",
      command = { "/bin/sh", "-c", "cat /file2; echo new file > /new_file; rm /file3; ls /file*" } })
    c:start()
    local r = c:wait()
    expect(r.stdout).to_be("layer2 file\n/file1\n/file2\n")
    local upper = c.container_dir .. "/upper"
    expect(sys.lstat(upper .. "/file3").type).to_be("char")
    expect(fs.read(upper .. "/new_file")).to_be("new file\n")
    for i = 1, 3 do
      expect(fs.read(image.layer_dir(layers[i].digest) .. "/file" .. i)).to_be("layer" .. i .. " file\n")
    end
  end)

  it("commits a container's changes, whiteouts included, and leaves the base alone", function()
    local c <close> = container.new({ image = "busybox:test", command = { "/bin/sh", "-c", "rm /etc/group; rm -r /home; echo x > /added" } })
    c:start()
    expect(c:wait().code).to_be(0)
    c:commit("busybox:changed")
    c:remove()
    expect(sh("busybox:changed", "ls /etc/group /home 2>&1 | grep -c 'No such'; cat /added").stdout).to_be("2\nx\n")
    expect(sh("busybox:test", "ls -d /etc/group /home; ls /added 2>&1 | grep -c 'No such'").stdout).to_be("/etc/group\n/home\n1\n")
    image.remove("busybox:changed")
    expect(image.resolve("busybox:changed")).to_be_nil()
  end)

  it("takes command, env, working folder and user from the image config", function()
    local img = assert(image.resolve("busybox:test"))
    local cfg = image.new_config({}, img.config)
    cfg.config.Cmd = { "/bin/sh", "-c", "echo $GREETING; pwd; id -u" }
    cfg.config.Env = { "PATH=/bin:/usr/bin", "GREETING=from-config" }
    cfg.config.WorkingDir = "/tmp"
    cfg.config.User = "1000"
    image.store("configured:1", cfg, img.manifest.layers)
    local r = container.run({ image = "configured:1", stdout = "capture" })
    expect(r.stdout).to_be("from-config\n/tmp\n1000\n")
    r = container.run({ image = "configured:1", stdout = "capture", env = { GREETING = "spec" }, command = { "/bin/sh", "-c", "echo $GREETING" } })
    expect(r.stdout).to_be("spec\n")
  end)

  it("mounts a 120-layer image, past one page of overlay options", function()
    local img = assert(image.resolve("busybox:test"))
    local layers = { img.manifest.layers[1] }
    local added = {}
    for i = 1, 120 do
      local d = store.path .. "/deep/" .. i
      assert(sys.mkdir(d))
      fs.write(d .. "/layer-" .. i, tostring(i))
      fs.write(d .. "/top", tostring(i))
      local l = image.layer_from_dir(d)
      layers[#layers + 1] = l
      added[#added + 1] = l
    end
    image.store("deep:1", image.new_config(added, img.config), layers)
    local r = sh("deep:1", "ls / | grep -c '^layer-'; cat /top")
    expect(r.code).to_be(0)
    expect(r.stdout).to_be("120\n120")
  end)

  it("exports an OCI layout and imports it again, checking digests", function()
    local out = store.path .. "/exported"
    image.export("busybox:test", out)
    expect(sys.stat(out .. "/index.json")).to_be_truthy()
    local digest = image.import_oci(out, "reimported:1")
    expect(digest).to_be(assert(image.resolve("busybox:test")).digest)
    expect(sh("reimported:1", "echo works").stdout).to_be("works\n")
    -- a tampered blob is refused
    local img = assert(image.resolve("busybox:test"))
    local hex = img.manifest.layers[1].digest:match("%x+$")
    fs.write(out .. "/blobs/sha256/" .. hex, "tampered")
    expect(function() image.import_oci(out, "tampered:1") end).to_fail("hashes to sha256:%x+; refused")
  end)

  it("imports a rootfs tarball, as docker export makes", function()
    local tar = store.path .. "/rootfs.tar"
    process.run({ "tar", "-C", base, "-cf", tar, "." }, { check = true })
    image.import_tar(tar, "fromtar:1")
    expect(sh("fromtar:1", "ls /bin/busybox").stdout).to_be("/bin/busybox\n")
  end)
end)

describe("interop with skopeo and umoci", function()
  before_each(function()
    needs_root()
    for _, tool in ipairs({ "skopeo", "umoci" }) do
      if process.run({ "sh", "-c", "command -v " .. tool }).code ~= 0 then skip("needs " .. tool) end
    end
    setup()
  end)

  it("exports an image skopeo inspects and umoci unpacks to the same files", function()
    local out = store.path .. "/interop"
    image.export("busybox:test", out)
    local inspect = process.run({ "skopeo", "inspect", "oci:" .. out .. ":busybox:test" })
    expect(inspect.code).to_be(0)
    local info = require("moonbox.json").decode(inspect.stdout)
    expect(info.Digest).to_be(assert(image.resolve("busybox:test")).digest)
    expect(#info.Layers).to_be(1)
    local bundle = store.path .. "/bundle"
    local unpack = process.run({ "umoci", "unpack", "--image", out .. ":busybox:test", bundle })
    expect(unpack.stderr:match("[Ee]rror") and unpack.stderr or "").to_be("")
    expect(process.run({ "diff", "-r", "--no-dereference", base, bundle .. "/rootfs" }).code).to_be(0)
  end)

  it("imports a layout skopeo made, and runs it", function()
    local src = store.path .. "/interop-src"
    image.export("busybox:test", src)
    local copied = store.path .. "/interop-copy"
    local r = process.run({ "skopeo", "copy", "oci:" .. src .. ":busybox:test", "oci:" .. copied .. ":copied" })
    expect(r.code).to_be(0)
    image.import_oci(copied, "copied:1", "copied")
    expect(sh("copied:1", "echo from skopeo").stdout).to_be("from skopeo\n")
  end)
end)

describe("more image sources", function()
  before_each(function() needs_root() setup() end)

  it("exports and imports an OCI archive (a tar of the layout)", function()
    local tar = store.path .. "/image.tar"
    image.export("busybox:test", tar)
    local digest = image.import(tar, "fromarchive:1")
    expect(digest).to_be(assert(image.resolve("busybox:test")).digest)
  end)

  it("imports a docker save tarball (legacy manifest.json)", function()
    if process.run({ "sh", "-c", "command -v skopeo" }).code ~= 0 then skip("needs skopeo to make a docker-archive") end
    local layout = store.path .. "/for-save"
    image.export("busybox:test", layout)
    local tar = store.path .. "/saved.tar"
    local r = process.run({ "skopeo", "copy", "oci:" .. layout .. ":busybox:test", "docker-archive:" .. tar .. ":saved:1" })
    expect(r.code).to_be(0)
    image.import(tar, "saved:1")
    expect(sh("saved:1", "echo from docker save").stdout).to_be("from docker save\n")
  end)

  it("runs layers compressed with gzip and zstd", function()
    local img = assert(image.resolve("busybox:test"))
    local layers = { img.manifest.layers[1] }
    for _, c in ipairs({ "gzip", "zstd" }) do
      local d = store.path .. "/compressed-" .. c
      assert(sys.mkdir(d))
      fs.write(d .. "/" .. c, c)
      local tar = image.root() .. "/tmp/" .. c .. ".tar"
      assert(sys.archive_create(d, tar, { compression = c }))
      local digest, size = image.add_blob(tar, true)
      layers[#layers + 1] = { digest = digest, size = size, mediaType = "application/vnd.oci.image.layer.v1.tar+" .. c }
    end
    image.store("compressed:1", img.config, layers)
    expect(sh("compressed:1", "cat /gzip /zstd").stdout).to_be("gzipzstd")
  end)
end)

describe("registries", function()
  local server, port, data
  before_each(function()
    needs_root()
    for _, tool in ipairs({ "docker-registry", "skopeo", "curl" }) do
      if process.run({ "sh", "-c", "command -v " .. tool }).code ~= 0 then skip("needs " .. tool) end
    end
    setup()
    -- A real registry on loopback, for this test only.
    data = store.path .. "/registry"
    assert(sys.mkdir(data))
    port = 40000 + sys.getpid() % 20000
    local config = fs.write(data .. "/config.yml", string.format(
      "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%d\n", data, port))
    server = assert(sys.fork())
    if server == 0 then
      sys.dup2(assert(sys.open("/dev/null", "wronly")), 1)
      sys.dup2(assert(sys.open("/dev/null", "wronly")), 2)
      sys.exec({ "docker-registry", "serve", config })
      sys._exit(127)
    end
    for _ = 1, 100 do
      if process.run({ "curl", "-sf", string.format("http://127.0.0.1:%d/v2/", port) }).code == 0 then return end
      sys.nanosleep(0.05)
    end
    error("the registry did not start on port " .. port)
  end)
  after_each(function()
    if server then sys.kill(server, "TERM") sys.wait(server) server = nil end
  end)

  it("pulls what skopeo pushed, and pushes what skopeo reads back", function()
    local registry = require "moonbox.registry"
    local layout = store.path .. "/for-registry"
    image.export("busybox:test", layout)
    local ref = string.format("127.0.0.1:%d/moonbox/busybox:test", port)
    local r = process.run({ "skopeo", "copy", "--dest-tls-verify=false", "oci:" .. layout .. ":busybox:test", "docker://" .. ref })
    expect(r.code).to_be(0)
    local name = registry.pull(ref, "pulled:1")
    expect(name).to_be("pulled:1")
    expect(sh("pulled:1", "echo pulled").stdout).to_be("pulled\n")
    local pushed = string.format("127.0.0.1:%d/moonbox/pushed:2", port)
    local digest = registry.push("busybox:test", pushed)
    local inspect = process.run({ "skopeo", "inspect", "--tls-verify=false", "docker://" .. pushed })
    expect(inspect.code).to_be(0)
    expect(require("moonbox.json").decode(inspect.stdout).Digest).to_be(digest)
    expect(function() registry.pull(string.format("127.0.0.1:%d/nothing:here", port)) end).to_fail("HTTP 404")
  end)

  it("pulls OCI and Docker schema-2 images into an empty store, and exports them for skopeo and umoci", function()
    local registry = require "moonbox.registry"
    local layout = store.path .. "/for-empty"
    image.export("busybox:test", layout)
    local empty = store.path .. "/empty-store"
    local formats = { oci = "oci", docker = "v2s2" }
    for kind, format in pairs(formats) do
      local ref = string.format("127.0.0.1:%d/moonbox/%s:1", port, kind)
      local r = process.run({ "skopeo", "copy", "--format", format, "--dest-tls-verify=false", "oci:" .. layout .. ":busybox:test", "docker://" .. ref })
      expect(r.code).to_be(0)
      image.use_root(empty .. "-" .. kind)  -- nothing there yet: every blob comes over the wire
      local ok, err = pcall(function()
        local name, digest = registry.pull(ref, "fresh:1")
        local img = assert(image.resolve("fresh:1"))
        expect(img.digest).to_be(digest)
        local want = kind == "oci" and "application/vnd.oci.image.manifest.v1+json" or "application/vnd.docker.distribution.manifest.v2+json"
        expect(img.manifest.mediaType).to_be(want)
        expect(sh("fresh:1", "echo " .. kind).stdout).to_be(kind .. "\n")
        local out = empty .. "-" .. kind .. "-export"
        image.export("fresh:1", out)
        local inspect = process.run({ "skopeo", "inspect", "oci:" .. out .. ":fresh:1" })
        expect(inspect.code).to_be(0)
        local unpacked = empty .. "-" .. kind .. "-unpacked"
        local u = process.run({ "umoci", "unpack", "--rootless", "--image", out .. ":fresh:1", unpacked })
        expect(u.stderr).to_be("")
        expect(sys.stat(unpacked .. "/rootfs/bin/busybox")).to_be_truthy()
      end)
      image.use_root(store.path .. "/store")
      if not ok then error(err, 0) end
    end
  end)
end)

describe("from the command line", function()
  before_each(function() needs_root() setup() end)

  local moonbox = assert(sys.readlink("/proc/self/exe"))
  local function mb(args, opts)
    opts = opts or {}
    opts.env = opts.env or { MOONBOX_ROOT = store.path .. "/store", PATH = "/usr/bin:/bin:/usr/sbin:/sbin" }
    return process.run({ moonbox, table.unpack(args) }, opts)
  end

  it("runs an image with box --image and sandbox --image, and unpacks one to a folder", function()
    local r = mb({ "box", "--image", "busybox:test", "--", "/bin/sh", "-c", "echo in the image" })
    expect(r.code).to_be(0)
    expect(r.stdout).to_be("in the image\n")
    r = mb({ "sandbox", "--image", "busybox:test", "--", "/bin/sh", "-c", "id -u" })
    expect(r.code).to_be(0)
    expect(r.stdout).to_be("1000\n")
    local out = store.path .. "/unpacked"
    r = mb({ "image", "unpack", "busybox:test", out })
    expect(r.code).to_be(0)
    expect(sys.stat(out .. "/bin/busybox")).to_be_truthy()
    expect(mb({ "image", "unpack", "busybox:test", out }).stderr).to_match("is not empty")
  end)

  it("applies whiteouts when it unpacks a layered image", function()
    local c <close> = container.new({ image = "busybox:test", command = { "/bin/sh", "-c", "rm -rf /home /etc/group; echo x > /added" } })
    c:start()
    c:wait()
    c:commit("layered:1")
    local out = store.path .. "/unpacked-layered"
    image.unpack("layered:1", out)
    expect(sys.lstat(out .. "/home")).to_be_nil()
    expect(sys.lstat(out .. "/etc/group")).to_be_nil()
    expect(fs.read(out .. "/added")).to_be("x\n")
    expect(sys.stat(out .. "/etc/passwd")).to_be_truthy()
  end)

  it("names the refs of a layout holding several images, and imports the one named", function()
    local layout = store.path .. "/two-images"
    image.export("busybox:test", layout)
    local index = require("moonbox.json").decode(fs.read(layout .. "/index.json"))
    local second = {}
    for k, v in pairs(index.manifests[1]) do second[k] = v end
    second.annotations = { ["org.opencontainers.image.ref.name"] = "other:2" }
    index.manifests[2] = second
    fs.write(layout .. "/index.json", require("moonbox.json").encode(index))
    local r = mb({ "image", "import", layout, "picked:1" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("holds 2 images; name one as REF %(busybox:test, other:2%)")
    r = mb({ "image", "import", layout, "picked:1", "other:2" })
    expect(r.code).to_be(0)
    expect(image.resolve("picked:1")).to_be_truthy()
  end)

  it("prunes what no image uses, and says what it freed", function()
    local c <close> = container.new({ image = "busybox:test", command = { "/bin/sh", "-c", "head -c 100000 /dev/urandom > /junk" } })
    c:start()
    c:wait()
    c:commit("doomed:1")
    image.remove("doomed:1", true)  -- the name goes, its blobs stay: prune's work
    local r = mb({ "image", "prune" })
    expect(r.code).to_be(0)
    local blobs, bytes = r.stdout:match("freed (%d+) blobs %((%d+) bytes%)")
    expect(tonumber(blobs)).to_be_at_least(3)  -- the layer, the config and the manifest
    expect(tonumber(bytes)).to_be_at_least(100000)
    expect(mb({ "image", "prune" }).stdout).to_match("freed 0 blobs")
    expect(sh("busybox:test", "echo still here").stdout).to_be("still here\n")
  end)

  it("streams a build's output as it comes, quiet with --quiet, and makes a missing WorkingDir", function()
    local dir = store.path .. "/live"
    assert(sys.mkdir(dir))
    local file = fs.write(dir .. "/recipe.lua", [[
      return recipe "live:1" {
        from "busybox:test",
        run "echo first line; echo second line >&2",
        workdir "/not/made/yet",
        cmd { "/bin/sh", "-c", "pwd" },
      }]])
    local r = mb({ "build", file })
    expect(r.code).to_be(0)
    expect(r.stdout).to_match("#2 first line\n")
    expect(r.stdout).to_match("#2 second line\n")
    expect(r.stdout).to_match("built live:1 sha256:%x+")
    expect(sh("live:1", "pwd", { command = nil }).stdout).to_be("/not/made/yet\n")
    expect(container.run({ image = "live:1", stdout = "capture" }).stdout).to_be("/not/made/yet\n")
    fs.write(file, (fs.read(file):gsub("first line", "changed line")))
    r = mb({ "build", "--quiet", file })
    expect(r.stdout).to_match("^built live:1")
    expect(r.stdout).not_to_match("changed line")
  end)
end)

describe("debootstrap", function()
  before_each(function()
    needs_root()
    if process.run({ "sh", "-c", "command -v debootstrap" }).code ~= 0 then skip("needs debootstrap") end
    setup()
  end)

  it("makes a Debian image without a registry, and builds the Debian recipe on it", function()
    local digest, name = image.debootstrap("bookworm", { variant = "minbase" })
    expect(name).to_be("debian:bookworm-minbase")
    expect(digest).to_match("^sha256:")
    local r = sh(name, "cat /etc/debian_version; dpkg -s bash | grep -c '^Status: install ok installed'")
    expect(r.stdout).to_match("^12%.%d+\n1\n$")
    local source = (os.getenv("MOONBOX_SOURCE") or ".") .. "/scripts/recipes/debian.lua"
    local report = recipe.build(recipe.load(source), { quiet = true })
    expect(report.runs).to_be(1)
    local out = container.run({ image = "debian-tools:bookworm", stdout = "capture" })
    expect(out.stdout).to_match("^jq%-1%.")
  end)
end)

describe("recipes", function()
  before_each(function() needs_root() setup() end)

  local function write_recipe(dir, body)
    return fs.write(dir .. "/recipe.lua", body)
  end

  it("builds, then rebuilds with nothing run, then rebuilds from the changed step on", function()
    local dir = store.path .. "/r1"
    assert(sys.mkdir(dir .. "/app"))
    fs.write(dir .. "/app/start.sh", "#!/bin/sh\necho v1\n")
    local file = write_recipe(dir, [[
      return recipe "app:1" {
        from "busybox:test",
        copy("app/", "/app"),
        run "chmod +x /app/start.sh",
        run "echo built > /app/stamp",
        env { MODE = "prod" },
        workdir "/app",
        cmd { "/app/start.sh" },
      }]])
    local first = recipe.build(recipe.load(file), { quiet = true })
    expect(first.runs).to_be(3)
    expect(first.layers).to_be(4)
    local second = recipe.build(recipe.load(file), { quiet = true })
    expect(second.runs).to_be(0)
    expect(second.digest).to_be(first.digest)
    for i = 2, 4 do expect(second.steps[i].cached).to_be(true) end
    fs.write(dir .. "/app/start.sh", "#!/bin/sh\necho v2\n")
    local third = recipe.build(recipe.load(file), { quiet = true })
    expect(third.runs).to_be(3)
    expect(third.layers).to_be(4)
    expect(container.run({ image = "app:1", stdout = "capture" }).stdout).to_be("v2\n")
    -- change only the last RUN: the steps before it come from the cache
    write_recipe(dir, fs.read(file):gsub("echo built", "echo rebuilt"))
    local fourth = recipe.build(recipe.load(file), { quiet = true })
    expect(fourth.runs).to_be(1)
    expect(fourth.steps[2].cached).to_be(true)
    expect(fourth.steps[3].cached).to_be(true)
  end)

  it("names the failing step and shows its output", function()
    local dir = store.path .. "/r2"
    assert(sys.mkdir(dir))
    local file = write_recipe(dir, [[
      return recipe "broken:1" { from "busybox:test", run "echo about to fail; exit 3" }]])
    expect(function() recipe.build(recipe.load(file), { quiet = true }) end)
      .to_fail("step 2 %(RUN echo about to fail; exit 3%) failed: exit 3\nabout to fail")
  end)

  it("rejects recipes that are not recipes", function()
    local dir = store.path .. "/r3"
    assert(sys.mkdir(dir))
    expect(function() recipe.load(write_recipe(dir, "return 5")) end).to_fail("must return recipe")
    expect(function() recipe.load(write_recipe(dir, 'return recipe "x" { run "true" }')) end).to_fail("the first step must be from")
    expect(function() recipe.load(write_recipe(dir, 'return recipe "x" { from "busybox", workdir "relative" }')) end)
      .to_fail("workdir: an absolute path expected")
  end)
end)

describe("image teardown", function()
  it("leaves no store behind", function()
    if store then store:remove() end
    image.use_root(nil)
    store = nil
  end)
end)
