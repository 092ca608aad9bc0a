-- moonbox.image: a local image store laid out as an OCI image layout ($MOONBOX_ROOT, or
-- /var/lib/moonbox): oci-layout, index.json (names in org.opencontainers.image.ref.name),
-- blobs/sha256/..., and unpacked layers cached by digest in layers/, shared by every image.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"

local image = {}

local MANIFEST = "application/vnd.oci.image.manifest.v1+json"
local CONFIG = "application/vnd.oci.image.config.v1+json"
local LAYER = "application/vnd.oci.image.layer.v1.tar"
local REF = "org.opencontainers.image.ref.name"
image.media_types = { manifest = MANIFEST, config = CONFIG, layer = LAYER }

local chosen_root

function image.root()
  return chosen_root or os.getenv("MOONBOX_ROOT") or "/var/lib/moonbox"
end

--- Points this process at another store (tests, or several stores from one script).
function image.use_root(dir) chosen_root = dir end

local function path(...) return table.concat({ image.root(), ... }, "/") end

local function fail(msg, level) error("image: " .. msg, (level or 1) + 1) end

--- Makes the store's folders and files when missing.
function image.init()
  for _, d in ipairs({ "", "blobs/sha256", "layers", "tmp" }) do
    local ok, msg = sys.mkdir(path(d), tonumber("700", 8))
    if not ok then fail(msg, 2) end
  end
  if not sys.stat(path("oci-layout")) then fs.write(path("oci-layout"), '{"imageLayoutVersion":"1.0.0"}') end
  if not sys.stat(path("index.json")) then
    fs.write(path("index.json"), json.encode({ schemaVersion = 2, manifests = {} }))
  end
end

local function read_json(p)
  local text = fs.read_if_exists(p)
  if not text then fail(p .. " does not exist", 3) end
  local ok, value = pcall(json.decode, text)
  if not ok then fail(p .. ": " .. tostring(value), 3) end
  return value
end

local function write_atomic(p, text)
  local tmp = p .. ".tmp" .. sys.getpid()
  fs.write(tmp, text)
  assert(sys.rename(tmp, p))
end

--- Normalizes "name" to "name:latest".
function image.ref(name)
  if type(name) ~= "string" or name == "" then fail("an image name like \"app:1\" expected", 3) end
  if not name:find(":[^/]*$") then name = name .. ":latest" end
  return name
end

function image.blob_path(digest)
  local hex = digest:match("^sha256:(%x+)$")
  if not hex then fail("bad digest " .. tostring(digest), 3) end
  return path("blobs/sha256", hex)
end

--- Adds a file as a blob, moving it when `move` (it must then be in the store's tmp/).
-- Returns digest and size.
function image.add_blob(file, move)
  local hex = assert(sys.sha256(file))
  local size = assert(sys.stat(file)).size
  local dest = path("blobs/sha256", hex)
  if not sys.stat(dest) then
    if move then
      assert(sys.rename(file, dest))
    else
      fs.write(dest, assert(fs.read(file)))
    end
  elseif move then
    sys.unlink(file)
  end
  return "sha256:" .. hex, size
end

function image.add_json(value)
  local text = json.encode(value)
  local hex = sys.sha256_string(text)
  local dest = path("blobs/sha256", hex)
  if not sys.stat(dest) then write_atomic(dest, text) end
  return "sha256:" .. hex, #text
end

local function load_index() return read_json(path("index.json")) end

--- Records `name` for a manifest of `config` and `layers` ({digest=, size=}, base first).
function image.store(name, config, layers)
  image.init()
  name = image.ref(name)
  local config_digest, config_size = image.add_json(config)
  local manifest = { schemaVersion = 2, mediaType = MANIFEST,
    config = { mediaType = CONFIG, digest = config_digest, size = config_size }, layers = {} }
  for i, l in ipairs(layers) do
    manifest.layers[i] = { mediaType = l.mediaType or LAYER, digest = l.digest, size = l.size }
  end
  local digest, size = image.add_json(manifest)
  image.tag_manifest(name, digest, size)
  return digest
end

--- Points `name` at a stored manifest blob.
function image.tag_manifest(name, digest, size, media_type)
  image.init()
  name = image.ref(name)
  local index = load_index()
  local kept = {}
  for _, m in ipairs(index.manifests or {}) do
    if not (m.annotations and m.annotations[REF] == name) then kept[#kept + 1] = m end
  end
  kept[#kept + 1] = { mediaType = media_type or MANIFEST, digest = digest, size = size, annotations = { [REF] = name } }
  index.manifests = kept
  write_atomic(path("index.json"), json.encode(index))
end

--- {name=, digest=, manifest=, config=} for a stored image; nil and a message if unknown.
function image.resolve(name)
  name = image.ref(name)
  if not sys.stat(path("index.json")) then return nil, "no image " .. name .. " (the store is empty)" end
  for _, m in ipairs(load_index().manifests or {}) do
    if m.annotations and m.annotations[REF] == name then
      local manifest = read_json(image.blob_path(m.digest))
      local config = read_json(image.blob_path(manifest.config.digest))
      return { name = name, digest = m.digest, manifest = manifest, config = config }
    end
  end
  return nil, "no image " .. name
end

--- The unpacked folder of a layer, made on first use (extraction is the secure one).
function image.layer_dir(digest)
  local hex = digest:match("^sha256:(%x+)$")
  local dir = path("layers", hex)
  if sys.stat(dir) then return dir end
  image.init()
  local tmp = assert(sys.mkdtemp(path("tmp", "layer-")))
  local ok, msg = sys.archive_extract(image.blob_path(digest), tmp)
  if not ok then
    sys.remove_tree(tmp)
    fail("layer " .. digest .. ": " .. msg, 2)
  end
  assert(sys.chmod(tmp, tonumber("755", 8)))
  assert(sys.rename(tmp, dir))
  return dir
end

--- Makes a layer blob from a folder (an upper folder's whiteouts become OCI ones).
function image.layer_from_dir(dir)
  image.init()
  local tmp = path("tmp", "layer-" .. sys.getpid() .. "-" .. math.random(1 << 30) .. ".tar")
  local ok, msg = sys.archive_create(dir, tmp)
  if not ok then fail(msg, 2) end
  local digest, size = image.add_blob(tmp, true)
  return { digest = digest, size = size, mediaType = LAYER, diff_id = digest }
end

local function new_config(layers, from)
  local config = from and json.decode(json.encode(from)) or {
    architecture = "amd64", os = "linux", config = { Env = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" } },
    rootfs = { type = "layers", diff_ids = {} }, history = {},
  }
  config.rootfs = config.rootfs or { type = "layers", diff_ids = {} }
  config.rootfs.diff_ids = config.rootfs.diff_ids or {}
  for _, l in ipairs(layers) do table.insert(config.rootfs.diff_ids, l.diff_id or l.digest) end
  config.created = os.date("!%Y-%m-%dT%H:%M:%SZ")
  return config
end
image.new_config = new_config

--- Imports a rootfs folder as a one-layer image.
function image.import_dir(dir, name, config)
  local st = sys.stat(dir)
  if not st or st.type ~= "dir" then fail(tostring(dir) .. " is not a folder", 2) end
  local layer = image.layer_from_dir(dir)
  local cfg = new_config({ layer })
  for k, v in pairs(config or {}) do cfg.config[k] = v end
  return image.store(name, cfg, { layer })
end

--- Imports a rootfs tarball (as `docker export` makes), unpacked securely and packed again.
function image.import_tar(tar, name, config)
  image.init()
  local tmp = assert(sys.mkdtemp(path("tmp", "import-")))
  local ok, msg = sys.archive_extract(tar, tmp)
  if not ok then
    sys.remove_tree(tmp)
    fail(msg, 2)
  end
  local okd, digest = pcall(image.import_dir, tmp, name, config)
  sys.remove_tree(tmp)
  if not okd then error(digest, 2) end
  return digest
end

-- The Debian mirror apt already uses here, or Debian's own.
local function debian_mirror()
  for _, f in ipairs({ "/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list" }) do
    local text = fs.read_if_exists(f) or ""
    local uri = text:match("URIs:%s*(%S+/debian)%s") or text:match("\ndeb%s+(%S+/debian)%s") or text:match("^deb%s+(%S+/debian)%s")
    if uri then return uri end
  end
  return "http://deb.debian.org/debian"
end

--- A Debian image from debootstrap: image.debootstrap("bookworm", {variant = "minbase"}).
-- Its progress is shown as debootstrap prints it. The image is named debian:SUITE[-VARIANT]
-- (or opts.name) and made once.
function image.debootstrap(suite, opts)
  opts = opts or {}
  if type(suite) ~= "string" or not suite:match("^[%w-]+$") then fail("debootstrap: a suite like \"bookworm\" expected", 2) end
  local name = image.ref(opts.name or ("debian:" .. suite .. (opts.variant and ("-" .. opts.variant) or "")))
  if not opts.rebuild then
    local existing = image.resolve(name)
    if existing then return existing.digest, name end
  end
  local process = require "moonbox.process"
  if process.run({ "sh", "-c", "command -v debootstrap" }).code ~= 0 then
    fail("debootstrap is not installed (apt-get install debootstrap)", 2)
  end
  image.init()
  local tmp = assert(sys.mkdtemp(path("tmp", "debootstrap-")))
  local argv = { "debootstrap" }
  if opts.variant then argv[#argv + 1] = "--variant=" .. opts.variant end
  if opts.include then argv[#argv + 1] = "--include=" .. table.concat(opts.include, ",") end
  argv[#argv + 1] = suite
  argv[#argv + 1] = tmp .. "/root"
  argv[#argv + 1] = opts.mirror or debian_mirror()
  -- debootstrap's own I: lines are the progress; they go to our stdout as they come.
  local r = process.run(argv, { capture = false })
  local ok, digest = false, "debootstrap failed (exit " .. tostring(r.code or r.signal) .. ")"
  if r.code == 0 then ok, digest = pcall(image.import_dir, tmp .. "/root", name, { Cmd = { "/bin/bash" } }) end
  sys.remove_tree(tmp)
  if not ok then fail(tostring(digest), 2) end
  return digest, name
end

--- Imports the image `ref` (or the only one) from an OCI image layout folder, checking every digest.
function image.import_oci(layout, name, ref)
  image.init()
  local index = read_json(layout .. "/index.json")
  local chosen
  for _, m in ipairs(index.manifests or {}) do
    local r = m.annotations and m.annotations[REF]
    if not ref or r == ref or (r and image.ref(r) == image.ref(ref)) then chosen = m break end
  end
  if not chosen then fail("no manifest" .. (ref and (" named " .. ref) or "") .. " in " .. layout, 2) end
  local function copy(digest)
    local hex = digest:match("^sha256:(%x+)$")
    if not hex then fail("unsupported digest " .. digest, 3) end
    local src = layout .. "/blobs/sha256/" .. hex
    local got = sys.sha256(src)
    if got ~= hex then fail("digest mismatch for " .. digest .. ": the blob hashes to sha256:" .. tostring(got), 3) end
    local dest = path("blobs/sha256", hex)
    if not sys.stat(dest) then fs.write(dest, assert(fs.read(src))) end
    return src
  end
  local manifest = json.decode(assert(fs.read(copy(chosen.digest))))
  copy(manifest.config.digest)
  for _, l in ipairs(manifest.layers or {}) do copy(l.digest) end
  name = name or (chosen.annotations and chosen.annotations[REF]) or fail("give the image a name", 2)
  -- Keep the manifest as it was, under our name.
  image.tag_manifest(name, chosen.digest, chosen.size, chosen.mediaType)
  return chosen.digest
end

--- Imports a `docker save` tarball's contents (unpacked in `dir`): the OCI form when it has
-- one, else the legacy manifest.json with its config and layer tars.
local function import_docker_save(dir, name)
  if sys.stat(dir .. "/oci-layout") and sys.stat(dir .. "/index.json") then
    return image.import_oci(dir, name)
  end
  local manifest = read_json(dir .. "/manifest.json")[1]
  if not manifest or not manifest.Config or not manifest.Layers then fail("manifest.json has no image", 3) end
  name = name or (manifest.RepoTags and manifest.RepoTags[1]) or fail("give the image a name", 3)
  local config = read_json(dir .. "/" .. manifest.Config)
  local layers = {}
  for i, l in ipairs(manifest.Layers) do
    local digest, size = image.add_blob(dir .. "/" .. l)
    local want = config.rootfs and config.rootfs.diff_ids and config.rootfs.diff_ids[i]
    if want and want ~= digest then
      -- A compressed layer: its diff_id is of the uncompressed tar, which libarchive reads either way.
      local head = fs.read_if_exists(dir .. "/" .. l) or ""
      if not (head:sub(1, 2) == "\31\139" or head:sub(1, 4) == "\40\181\47\253") then
        fail(string.format("layer %s hashes to %s, not the config's %s", l, digest, want), 3)
      end
    end
    layers[i] = { digest = digest, size = size, mediaType = LAYER }
  end
  return image.store(name, config, layers)
end

--- Imports any image source: a rootfs folder, an OCI layout folder, or a tarball holding a
-- rootfs (docker export), an OCI layout (an OCI archive) or a `docker save` image.
function image.import(source, name, ref)
  local st = sys.stat(source)
  if not st then fail("no such file or folder: " .. tostring(source), 2) end
  if st.type == "dir" then
    if sys.stat(source .. "/oci-layout") and sys.stat(source .. "/index.json") then return image.import_oci(source, name, ref) end
    if not name then fail("give the image a name", 2) end
    return image.import_dir(source, name)
  end
  image.init()
  local tmp = assert(sys.mkdtemp(path("tmp", "import-")))
  local ok, result = pcall(function()
    local okx, msg = sys.archive_extract(source, tmp)
    if not okx then fail(msg, 3) end
    if sys.stat(tmp .. "/oci-layout") and sys.stat(tmp .. "/index.json") then
      if sys.stat(tmp .. "/manifest.json") then return import_docker_save(tmp, name) end
      return image.import_oci(tmp, name, ref)
    end
    if sys.stat(tmp .. "/manifest.json") and not sys.stat(tmp .. "/bin") then return import_docker_save(tmp, name) end
    if not name then fail("give the image a name", 3) end
    return image.import_dir(tmp, name)
  end)
  sys.remove_tree(tmp)
  if not ok then error(result, 2) end
  return result
end

--- Writes an image as an OCI image layout folder (skopeo and umoci read it), or as an OCI
-- archive (a tar of the layout) when `dest` ends in .tar.
function image.export(name, dest)
  if dest:match("%.tar$") then
    image.init()
    local tmp = assert(sys.mkdtemp(path("tmp", "export-")))
    local ok, err = pcall(image.export, name, tmp .. "/layout")
    if ok then
      local okc, msg = sys.archive_create(tmp .. "/layout", dest)
      if not okc then ok, err = false, msg end
    end
    sys.remove_tree(tmp)
    if not ok then error(err, 2) end
    return dest
  end
  return image.export_layout(name, dest)
end

function image.export_layout(name, dest)
  local img, err = image.resolve(name)
  if not img then fail(err, 2) end
  assert(sys.mkdir(dest .. "/blobs/sha256"))
  fs.write(dest .. "/oci-layout", '{"imageLayoutVersion":"1.0.0"}')
  local digests = { img.digest, img.manifest.config.digest }
  for _, l in ipairs(img.manifest.layers) do digests[#digests + 1] = l.digest end
  for _, d in ipairs(digests) do
    local hex = d:match("^sha256:(%x+)$")
    fs.write(dest .. "/blobs/sha256/" .. hex, assert(fs.read(image.blob_path(d))))
  end
  local size = assert(sys.stat(image.blob_path(img.digest))).size
  fs.write(dest .. "/index.json", json.encode({ schemaVersion = 2, manifests = {
    { mediaType = MANIFEST, digest = img.digest, size = size, annotations = { [REF] = img.name:match(":([^:/]+)$") and img.name or img.name } },
  } }))
  return dest
end

function image.list()
  if not sys.stat(path("index.json")) then return {} end
  local out = {}
  for _, m in ipairs(load_index().manifests or {}) do
    local name = m.annotations and m.annotations[REF]
    if name then
      local manifest = read_json(image.blob_path(m.digest))
      local size = 0
      for _, l in ipairs(manifest.layers or {}) do size = size + (l.size or 0) end
      out[#out + 1] = { name = name, digest = m.digest, layers = #(manifest.layers or {}), size = size }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

--- Forgets a name, then removes blobs and unpacked layers no image (and no cache entry)
-- uses any more, unless `keep_blobs`.
function image.remove(name, keep_blobs)
  name = image.ref(name)
  local idx = load_index()
  local kept, found = {}, false
  for _, m in ipairs(idx.manifests or {}) do
    if m.annotations and m.annotations[REF] == name then found = true else kept[#kept + 1] = m end
  end
  if not found then fail("no image " .. name, 2) end
  idx.manifests = kept
  write_atomic(path("index.json"), json.encode(idx))
  if keep_blobs then return end
  local used = {}
  for _, m in ipairs(kept) do
    used[m.digest:match("%x+$")] = true
    local manifest = read_json(image.blob_path(m.digest))
    used[manifest.config.digest:match("%x+$")] = true
    for _, l in ipairs(manifest.layers or {}) do used[l.digest:match("%x+$")] = true end
  end
  local cache = path("cache.json")
  if sys.stat(cache) then
    for _, entry in pairs(read_json(cache)) do
      if type(entry) == "table" and entry.digest then used[entry.digest:match("%x+$")] = true end
    end
  end
  for _, hex in ipairs(sys.listdir(path("blobs/sha256")) or {}) do
    if not used[hex] then sys.unlink(path("blobs/sha256", hex)) end
  end
  -- Layers under running containers stay, whoever runs them.
  for _, rec in ipairs(require("moonbox.state").list()) do
    if rec.alive then
      for _, l in ipairs(rec.layers or {}) do used[l:match("(%x+)$") or ""] = true end
    end
  end
  for _, hex in ipairs(sys.listdir(path("layers")) or {}) do
    if not used[hex] then sys.remove_tree(path("layers", hex)) end
  end
end

--- Saves a container's upper folder as a new layer on top of its image `img`, as `name`.
function image.commit(img, upper, name, changes, created_by)
  local layer = image.layer_from_dir(upper)
  local layers = {}
  for _, l in ipairs(img.manifest.layers) do layers[#layers + 1] = l end
  layers[#layers + 1] = layer
  local config = image.new_config({ layer }, img.config)
  config.history = config.history or {}
  table.insert(config.history, { created = config.created, created_by = created_by })
  for k, v in pairs(changes or {}) do config.config[k] = v end
  return image.store(name, config, layers)
end

--- The unpacked layer folders of an image, top first (as overlay's lowerdir wants them).
function image.lowers(img)
  local lowers = {}
  for i = #img.manifest.layers, 1, -1 do
    lowers[#lowers + 1] = image.layer_dir(img.manifest.layers[i].digest)
  end
  return lowers
end

-- MARK: the command line

local function usage()
  io.stderr:write([[
usage: moonbox images
       moonbox image import SOURCE NAME     (a rootfs folder or tarball, an OCI layout or archive, a docker save tarball)
       moonbox image export NAME DEST       (an OCI image layout folder, or an OCI archive when DEST ends in .tar)
       moonbox image inspect NAME
       moonbox image rm NAME
]])
  os.exit(2)
end

function image.main(args)
  local cmd = args[1]
  if cmd == "ls" or cmd == "list" or cmd == nil then
    print(string.format("%-30s %-20s %7s %12s", "NAME", "DIGEST", "LAYERS", "SIZE"))
    for _, i in ipairs(image.list()) do
      print(string.format("%-30s %-20s %7d %12d", i.name, i.digest:sub(8, 19), i.layers, i.size))
    end
  elseif cmd == "import" and args[2] and args[3] then
    local ok, digest = pcall(image.import, args[2], args[3], args[4])
    if not ok then io.stderr:write("moonbox image: ", tostring(digest), "\n") os.exit(1) end
    print(image.ref(args[3]) .. " " .. digest)
  elseif cmd == "export" and args[2] and args[3] then
    image.export(args[2], args[3])
  elseif cmd == "inspect" and args[2] then
    local img, err = image.resolve(args[2])
    if not img then io.stderr:write("moonbox image: ", err, "\n") os.exit(1) end
    print(json.encode({ name = img.name, digest = img.digest, manifest = img.manifest, config = img.config }, { indent = "  " }))
  elseif (cmd == "rm" or cmd == "remove") and args[2] then
    image.remove(args[2])
  else
    usage()
  end
end

function image.main_images(args) return image.main({ "ls" }) end

return image
