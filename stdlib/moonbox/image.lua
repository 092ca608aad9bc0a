-- moonbox.image: a local image store laid out as an OCI image layout ($MOONBOX_ROOT, or
-- /var/lib/moonbox): oci-layout, index.json (names in org.opencontainers.image.ref.name),
-- blobs/sha256/..., and unpacked layers cached by digest in layers/, shared by every image.
--
-- Everything an image source holds is untrusted: a file named by a manifest is opened inside
-- the source (sys.open_in_root), never by joining paths on the host; every blob is checked
-- against its digest, and every layer against its diff_id, compressed or not.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local errors = require "moonbox.errors"
local cleanup = require "moonbox.cleanup"
local process = require "moonbox.process"

local image = {}

local MANIFEST = "application/vnd.oci.image.manifest.v1+json"
local INDEX = "application/vnd.oci.image.index.v1+json"
local CONFIG = "application/vnd.oci.image.config.v1+json"
local LAYER = "application/vnd.oci.image.layer.v1.tar"
local REF = "org.opencontainers.image.ref.name"
image.media_types = { manifest = MANIFEST, index = INDEX, config = CONFIG, layer = LAYER }

-- Docker schema 2 media types, and their OCI equivalents (for exports umoci accepts).
local DOCKER_TO_OCI = {
  ["application/vnd.docker.distribution.manifest.v2+json"] = MANIFEST,
  ["application/vnd.docker.container.image.v1+json"] = CONFIG,
  ["application/vnd.docker.image.rootfs.diff.tar"] = LAYER,
  ["application/vnd.docker.image.rootfs.diff.tar.gzip"] = LAYER .. "+gzip",
  ["application/vnd.docker.image.rootfs.diff.tar.zstd"] = LAYER .. "+zstd",
}
image.docker_to_oci = DOCKER_TO_OCI

--- The layer media type for a compression ("none", "gzip", "zstd").
function image.layer_media_type(compression)
  if compression == "gzip" then return LAYER .. "+gzip" end
  if compression == "zstd" then return LAYER .. "+zstd" end
  return LAYER
end

local chosen_root

function image.root()
  return chosen_root or os.getenv("MOONBOX_ROOT") or "/var/lib/moonbox"
end

--- Points this process at another store (tests, or several stores from one script).
function image.use_root(dir) chosen_root = dir end

local function path(...) return table.concat({ image.root(), ... }, "/") end

local function fail(msg, level) errors.raise("image: " .. msg, { op = "image", code = 1 }, (level or 1) + 1) end

--- Makes the store's folders and files when missing.
function image.init()
  for _, d in ipairs({ "", "blobs/sha256", "layers", "tmp", "containers" }) do
    local ok, msg = sys.mkdir(path(d), tonumber("700", 8))
    if not ok then fail(msg, 2) end
  end
  if not sys.stat(path("oci-layout")) then fs.write_atomic(path("oci-layout"), '{"imageLayoutVersion":"1.0.0"}') end
  if not sys.stat(path("index.json")) then
    fs.write_atomic(path("index.json"), json.encode({ schemaVersion = 2, manifests = {} }), true)
  end
end

--- A temporary folder in the store's tmp/, removed however the run ends; gc removes it after
-- a SIGKILL (its name says which moonbox made it).
function image.tempdir(kind)
  image.init()
  return fs.tempdir(kind, path("tmp"))
end

local function read_json(p)
  local text = fs.read_if_exists(p)
  if not text then fail(p .. " does not exist", 3) end
  local ok, value = pcall(json.decode, text)
  if not ok then fail(p .. ": " .. tostring(value), 3) end
  return value
end

-- MARK: names

-- One path component of a reference: lowercase letters and digits, joined by ".", "_", "__" or
-- runs of "-" (the OCI distribution grammar).
local function path_component_ok(c)
  local rest = c:match("^[a-z0-9]+(.*)$")
  while rest and rest ~= "" do
    local sep, more = rest:match("^([_.%-]+)([a-z0-9].*)$")
    if not sep or not (sep == "_" or sep == "." or sep == "__" or sep:match("^%-+$")) then return false end
    rest = more:match("^[a-z0-9]+(.*)$")
  end
  return rest == ""
end

local function domain_ok(d)
  local host, port = d:match("^(.-):(%d+)$")
  host = host or d
  if port and tonumber(port) > 65535 then return false end
  if host:match("^%[[%x:]+%]$") then return true end  -- [::1]
  for part in (host .. "."):gmatch("([^.]*)%.") do
    if not (part:match("^[%w]$") or part:match("^[%w][%w%-]*[%w]$")) then return false end
  end
  return true
end

--- Checks a reference by the OCI distribution grammar: [HOST[:PORT]/]PATH[:TAG][@sha256:HEX].
-- Returns name (with ":latest" added when no tag or digest is given), or nil and why.
function image.parse_ref(ref)
  if type(ref) ~= "string" or ref == "" then return nil, "an image name like \"app:1\" expected, got " .. tostring(ref) end
  if #ref > 255 + 128 + 72 then return nil, "image name " .. ref .. " is too long" end
  local rest, digest = ref:match("^(.-)@(sha256:%x+)$")
  rest = rest or ref
  if digest and #digest ~= 71 then return nil, "image name " .. ref .. " has a bad digest" end
  local name, tag = rest:match("^(.*[^/]):([%w_][%w_.%-]*)$")
  if not name or name:find(":", 1, true) and not name:match("^[^/]*:%d+/") then name, tag = rest, nil end
  if tag and #tag > 128 then return nil, "image tag in " .. ref .. " is longer than 128" end
  local parts = {}
  for p in (name .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = p end
  if #name > 255 then return nil, "image name " .. ref .. " is longer than 255" end
  local first = 1
  if #parts > 1 and (parts[1]:find("[.:]") or parts[1] == "localhost") then
    if not domain_ok(parts[1]) then return nil, "image name " .. ref .. " has a bad registry host '" .. parts[1] .. "'" end
    first = 2
  end
  for i = first, #parts do
    if not path_component_ok(parts[i]) then
      return nil, string.format("image name %s is not a valid reference: '%s' must be lowercase letters and digits, joined by '.', '_' or '-'", ref, parts[i])
    end
  end
  if not tag and not digest then tag = "latest" end
  return name .. (tag and (":" .. tag) or "") .. (digest and ("@" .. digest) or "")
end

--- Normalizes "name" to "name:latest"; refuses what is not a reference.
function image.ref(name)
  local ref, why = image.parse_ref(name)
  if not ref then fail(why, 2) end
  return ref
end

function image.blob_path(digest)
  local hex = type(digest) == "string" and digest:match("^sha256:(%x+)$")
  if not hex or #hex ~= 64 then fail("bad digest " .. tostring(digest), 2) end
  return path("blobs/sha256", hex:lower())
end

-- MARK: blobs

--- Adds a file (a path, or an fd) as a blob, checked against `want` when given. A path in the
-- store's tmp/ is moved when `move`. Returns digest and size.
function image.add_blob(file, move, want)
  image.init()
  local hex = assert(sys.sha256(file))
  local digest = "sha256:" .. hex
  if want and want ~= digest then fail("blob " .. want .. " hashes to " .. digest .. "; refused", 2) end
  local size = assert(sys.stat(file)).size
  local dest = path("blobs/sha256", hex)
  if not sys.stat(dest) then
    if move and type(file) == "string" then
      errors.check({ op = "rename" }, sys.rename(file, dest))
    else
      local tmp = dest .. ".tmp" .. sys.getpid()
      if type(file) ~= "string" then assert(sys.stat(file)) end
      errors.check({ op = "copy" }, sys.copy_file_range(file, tmp))
      if sys.sha256(tmp) ~= hex then sys.unlink(tmp) fail("blob " .. digest .. " changed while it was copied", 2) end
      errors.check({ op = "rename" }, sys.rename(tmp, dest))
    end
  elseif move and type(file) == "string" then
    sys.unlink(file)
  end
  return digest, size
end

--- Adds bytes as a blob. Returns digest and size.
function image.add_bytes(text)
  image.init()
  local hex = sys.sha256_string(text)
  local dest = path("blobs/sha256", hex)
  if not sys.stat(dest) then fs.write_atomic(dest, text) end
  return "sha256:" .. hex, #text
end

function image.add_json(value) return image.add_bytes(json.encode(value)) end

local function load_index() return read_json(path("index.json")) end

local function save_index(index) fs.write_atomic(path("index.json"), json.encode(index), true) end

--- Records `name` for a manifest of `config` and `layers` ({digest=, size=, mediaType=}, base first).
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
  save_index(index)
end

--- {name=, digest=, manifest=, config=} for a stored image; nil and a message if unknown.
function image.resolve(name)
  local ref, why = image.parse_ref(name)
  if not ref then return nil, why end
  if not sys.stat(path("index.json")) then return nil, "no image " .. ref .. " (the store is empty)" end
  for _, m in ipairs(load_index().manifests or {}) do
    if m.annotations and m.annotations[REF] == ref then
      local manifest = read_json(image.blob_path(m.digest))
      local config = read_json(image.blob_path(manifest.config.digest))
      return { name = ref, digest = m.digest, manifest = manifest, config = config, media_type = m.mediaType }
    end
  end
  return nil, "no image " .. ref
end

-- MARK: layers

--- The unpacked folder of a layer, made on first use (extraction is the secure one). What a
-- layer could not carry (device nodes, names that are not UTF-8) is named in a warning.
function image.layer_dir(digest)
  local hex = digest:match("^sha256:(%x+)$")
  local dir = path("layers", hex)
  if sys.stat(dir) then return dir end
  local tmp <close> = image.tempdir("layer")
  local result, msg = sys.archive_extract(image.blob_path(digest), tmp.path)
  if not result then fail("layer " .. digest .. ": " .. msg, 2) end
  for _, name in ipairs(result.skipped) do
    -- Device nodes in dev/ are expected (a container gets moonbox's own /dev): not worth a word.
    if not (name:match("^%.?/?dev/") and result.skipped_why[name] == "a device node") then
      io.stderr:write("moonbox: warning: layer ", digest:sub(8, 19), ": ", name, " skipped (", result.skipped_why[name] or "?", ")\n")
    end
  end
  assert(sys.chmod(tmp.path, tonumber("755", 8)))
  errors.check({ op = "rename" }, sys.rename(tmp.path, dir))
  tmp.removed = true
  cleanup.remove(tmp.token)
  return dir
end

--- Makes a layer blob from a folder (an upper folder's whiteouts become OCI ones). Entries a
-- layer cannot carry (sockets, names that are not UTF-8) are skipped, each named in a warning.
function image.layer_from_dir(dir)
  local tmp <close> = image.tempdir("layer")
  local file = tmp.path .. "/layer.tar"
  local result, msg = sys.archive_create(dir, file)
  if not result then fail(msg, 2) end
  for _, name in ipairs(result.skipped) do
    io.stderr:write("moonbox: warning: ", name, " is not in the layer (", result.skipped_why[name] or "?", ")\n")
  end
  local digest, size = image.add_blob(file, true)
  return { digest = digest, size = size, mediaType = LAYER, diff_id = digest, skipped = result.skipped }
end

local function new_config(layers, from, created)
  local config = from and json.decode(json.encode(from)) or {
    architecture = "amd64", os = "linux", config = { Env = { "PATH=" .. sys.default_path } },
    rootfs = { type = "layers", diff_ids = {} }, history = {},
  }
  config.config = config.config or {}
  config.rootfs = config.rootfs or { type = "layers", diff_ids = {} }
  config.rootfs.diff_ids = config.rootfs.diff_ids or {}
  for _, l in ipairs(layers) do table.insert(config.rootfs.diff_ids, l.diff_id or l.digest) end
  config.created = created or image.created_time()
  return config
end
image.new_config = new_config

--- The time images record as made: $SOURCE_DATE_EPOCH when set (reproducible builds), else now.
function image.created_time(fallback)
  local epoch = tonumber(os.getenv("SOURCE_DATE_EPOCH") or "")
  if epoch then return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(epoch)) end
  return fallback or os.date("!%Y-%m-%dT%H:%M:%SZ")
end

-- MARK: sources

--- Imports a rootfs folder as a one-layer image.
function image.import_dir(dir, name, config)
  local st = sys.stat(dir)
  if not st or st.type ~= "dir" then fail(tostring(dir) .. " is not a folder", 2) end
  name = image.ref(name)
  local layer = image.layer_from_dir(dir)
  local cfg = new_config({ layer })
  for k, v in pairs(config or {}) do cfg.config[k] = v end
  return image.store(name, cfg, { layer })
end

--- Imports a rootfs tarball (as `docker export` makes), unpacked securely and packed again.
function image.import_tar(tar, name, config)
  name = image.ref(name)
  local tmp <close> = image.tempdir("import")
  local ok, msg = sys.archive_extract(tar, tmp.path)
  if not ok then fail(msg, 2) end
  return image.import_dir(tmp.path, name, config)
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
  if process.run({ "sh", "-c", "command -v debootstrap" }).code ~= 0 then
    fail("debootstrap is not installed (apt-get install debootstrap)", 2)
  end
  local tmp <close> = image.tempdir("debootstrap")
  local argv = { "debootstrap" }
  if opts.variant then argv[#argv + 1] = "--variant=" .. opts.variant end
  if opts.include then argv[#argv + 1] = "--include=" .. table.concat(opts.include, ",") end
  argv[#argv + 1] = suite
  argv[#argv + 1] = tmp.path .. "/root"
  argv[#argv + 1] = opts.mirror or debian_mirror()
  -- debootstrap's own I: lines are the progress; they go to our stdout as they come.
  local r = process.run(argv, { capture = false })
  if r.code ~= 0 then fail("debootstrap failed (exit " .. tostring(r.code or r.signal) .. ")", 2) end
  return image.import_dir(tmp.path .. "/root", name, { Cmd = { "/bin/bash" } }), name
end

-- An untrusted tree (an unpacked archive or layout folder): files named inside it are opened
-- inside it, whatever symlinks or ".." it holds.
local Tree = {}
Tree.__index = Tree

local function tree(dir)
  local fd, msg = sys.open(dir, { "path", "directory" })
  if not fd then fail(msg, 3) end
  return setmetatable({ fd = fd, dir = dir }, Tree)
end

function Tree:open(name)
  if type(name) ~= "string" or name == "" then fail("a file name expected in " .. self.dir .. ", got " .. tostring(name), 3) end
  local fd, msg = sys.open_in_root(self.fd, name, { flags = { "rdonly" } })
  if not fd then fail(msg, 3) end
  local st = sys.stat(fd)
  if not st or st.type ~= "file" then fd:close() fail(name .. " in " .. self.dir .. " is not a file", 3) end
  return fd
end

function Tree:exists(name) local fd = sys.open_in_root(self.fd, name) if fd then fd:close() return true end return false end

function Tree:json(name)
  local fd = self:open(name)
  local text = process.read_all(fd)
  fd:close()
  local ok, value = pcall(json.decode, text)
  if not ok then fail(name .. ": " .. tostring(value), 3) end
  return value, text
end

function Tree:close() self.fd:close() end

--- The refs of an OCI layout's index.json, for messages.
local function layout_refs(index)
  local refs = {}
  for _, m in ipairs(index.manifests or {}) do
    refs[#refs + 1] = (m.annotations and m.annotations[REF]) or m.digest
  end
  return refs
end

--- Imports the image `ref` (or the only one) from an OCI image layout folder, checking every
-- digest. A layout holding several images needs `ref`: the refs are listed otherwise.
function image.import_oci(layout, name, ref)
  image.init()
  local t = tree(layout)
  local ok, result = pcall(function()
    local index = t:json("index.json")
    local manifests = index.manifests or {}
    local chosen
    if ref then
      for _, m in ipairs(manifests) do
        local r = m.annotations and m.annotations[REF]
        if r == ref or m.digest == ref or (r and image.parse_ref(r) == image.parse_ref(ref)) then chosen = m break end
      end
      if not chosen then fail("no image named " .. ref .. " in " .. layout .. " (it holds: " .. table.concat(layout_refs(index), ", ") .. ")", 2) end
    elseif #manifests == 1 then
      chosen = manifests[1]
    elseif #manifests == 0 then
      fail(layout .. " holds no image", 2)
    else
      fail(layout .. " holds " .. #manifests .. " images; name one as REF (" .. table.concat(layout_refs(index), ", ") .. ")", 2)
    end
    local function copy(digest)
      local hex = type(digest) == "string" and digest:match("^sha256:(%x+)$")
      if not hex or #hex ~= 64 then fail("unsupported digest " .. tostring(digest), 3) end
      local fd = t:open("blobs/sha256/" .. hex)
      local got = image.add_blob(fd, false, digest)
      fd:close()
      return got
    end
    copy(chosen.digest)
    local manifest = read_json(image.blob_path(chosen.digest))
    if manifest.manifests then fail("nested image indexes are not supported; name a platform's manifest as REF", 2) end
    if not manifest.config or not manifest.layers then fail("manifest " .. chosen.digest .. " is not an image manifest", 2) end
    copy(manifest.config.digest)
    for _, l in ipairs(manifest.layers or {}) do copy(l.digest) end
    local config = read_json(image.blob_path(manifest.config.digest))
    image.check_diff_ids(manifest, config)
    name = name or (chosen.annotations and chosen.annotations[REF]) or fail("give the image a name", 2)
    -- Keep the manifest as it was, under our name.
    image.tag_manifest(name, chosen.digest, chosen.size, chosen.mediaType)
    return chosen.digest
  end)
  t:close()
  if not ok then error(result, 2) end
  return result
end

--- Every layer's uncompressed digest must be the diff_id its config names.
function image.check_diff_ids(manifest, config)
  local ids = config.rootfs and config.rootfs.diff_ids or {}
  if #ids ~= #manifest.layers then
    fail(string.format("the config names %d diff_ids for %d layers", #ids, #manifest.layers), 2)
  end
  for i, l in ipairs(manifest.layers) do
    local got = assert(sys.archive_diff_id(image.blob_path(l.digest)))
    if got ~= ids[i] then fail(string.format("layer %s unpacks to %s, not the config's diff_id %s", l.digest, got, tostring(ids[i])), 2) end
  end
end

--- Imports a `docker save` tarball's contents (unpacked in `dir`): the OCI form when it has
-- one, else the legacy manifest.json with its config and layer files, each opened inside the
-- archive and checked against the config's diff_ids.
local function import_docker_save(dir, name, ref)
  if sys.lstat(dir .. "/oci-layout") and sys.lstat(dir .. "/index.json") then
    return image.import_oci(dir, name, ref)
  end
  local t = tree(dir)
  local ok, result = pcall(function()
    local list = t:json("manifest.json")
    if type(list) ~= "table" or #list == 0 then fail("manifest.json names no image", 3) end
    local manifest = list[1]
    if #list > 1 and ref then
      for _, m in ipairs(list) do
        for _, tag in ipairs(m.RepoTags or {}) do if tag == ref then manifest = m end end
      end
    elseif #list > 1 then
      local tags = {}
      for _, m in ipairs(list) do for _, tag in ipairs(m.RepoTags or {}) do tags[#tags + 1] = tag end end
      fail("the archive holds " .. #list .. " images; name one as REF (" .. table.concat(tags, ", ") .. ")", 3)
    end
    if type(manifest) ~= "table" or type(manifest.Config) ~= "string" or type(manifest.Layers) ~= "table" then
      fail("manifest.json has no image", 3)
    end
    name = name or (manifest.RepoTags and manifest.RepoTags[1]) or fail("give the image a name", 3)
    local config, config_text = t:json(manifest.Config)
    local ids = config.rootfs and config.rootfs.diff_ids or {}
    if #ids ~= #manifest.Layers then fail(string.format("the config names %d diff_ids for %d layers", #ids, #manifest.Layers), 3) end
    local layers = {}
    for i, l in ipairs(manifest.Layers) do
      local fd = t:open(l)
      local diff_id, compression = sys.archive_diff_id(fd)
      if not diff_id then fd:close() fail("layer " .. l .. ": " .. tostring(compression), 3) end
      if diff_id ~= ids[i] then fd:close() fail(string.format("layer %s unpacks to %s, not the config's diff_id %s", l, diff_id, tostring(ids[i])), 3) end
      local digest, size = image.add_blob(fd)
      fd:close()
      layers[i] = { digest = digest, size = size, mediaType = image.layer_media_type(compression) }
    end
    local config_digest, config_size = image.add_bytes(config_text)
    local m = { schemaVersion = 2, mediaType = MANIFEST, config = { mediaType = CONFIG, digest = config_digest, size = config_size }, layers = layers }
    local digest, size = image.add_json(m)
    image.tag_manifest(name, digest, size)
    return digest
  end)
  t:close()
  if not ok then error(result, 2) end
  return result
end

--- Imports any image source: a rootfs folder, an OCI layout folder, or a tarball holding a
-- rootfs (docker export), an OCI layout (an OCI archive) or a `docker save` image. REF picks
-- one image of a source holding several.
function image.import(source, name, ref)
  local st = sys.stat(source)
  if not st then fail("no such file or folder: " .. tostring(source), 2) end
  if name then name = image.ref(name) end
  if st.type == "dir" then
    if sys.lstat(source .. "/oci-layout") and sys.lstat(source .. "/index.json") then return image.import_oci(source, name, ref) end
    if not name then fail("give the image a name", 2) end
    return image.import_dir(source, name)
  end
  local tmp <close> = image.tempdir("import")
  local okx, msg = sys.archive_extract(source, tmp.path)
  if not okx then fail(msg, 2) end
  local t = tree(tmp.path)
  local has_layout = t:exists("oci-layout") and t:exists("index.json")
  local has_save = t:exists("manifest.json") and not t:exists("bin") and not t:exists("usr")
  t:close()
  if has_layout and not has_save then return image.import_oci(tmp.path, name, ref) end
  if has_save then return import_docker_save(tmp.path, name, ref) end
  if not name then fail("give the image a name", 2) end
  return image.import_dir(tmp.path, name)
end

-- MARK: exports

--- Writes an image as an OCI image layout folder (skopeo and umoci read it), or as an OCI
-- archive (a tar of the layout) when `dest` ends in .tar. A Docker schema 2 image (pulled, say)
-- is written with OCI media types: its manifest is converted, so its digest changes.
function image.export(name, dest)
  if dest:match("%.tar$") then
    local tmp <close> = image.tempdir("export")
    image.export_layout(name, tmp.path .. "/layout")
    local ok, msg = sys.archive_create(tmp.path .. "/layout", dest)
    if not ok then fail(msg, 2) end
    return dest
  end
  return image.export_layout(name, dest)
end

function image.export_layout(name, dest)
  local img, err = image.resolve(name)
  if not img then fail(err, 2) end
  errors.check({ op = "mkdir" }, sys.mkdir(dest .. "/blobs/sha256"))
  fs.write(dest .. "/oci-layout", '{"imageLayoutVersion":"1.0.0"}')
  local function put(digest)
    local hex = digest:match("^sha256:(%x+)$")
    errors.check({ op = "copy" }, sys.copy_file_range(image.blob_path(digest), dest .. "/blobs/sha256/" .. hex))
  end
  put(img.manifest.config.digest)
  for _, l in ipairs(img.manifest.layers) do put(l.digest) end
  local digest, size, media = img.digest, nil, img.manifest.mediaType or MANIFEST
  if DOCKER_TO_OCI[media] then
    -- Convert the manifest to OCI media types (the blobs stay as they are).
    local m = json.decode(json.encode(img.manifest))
    m.mediaType = MANIFEST
    m.config.mediaType = CONFIG
    for _, l in ipairs(m.layers) do l.mediaType = DOCKER_TO_OCI[l.mediaType] or l.mediaType end
    local text = json.encode(m)
    digest, size = "sha256:" .. sys.sha256_string(text), #text
    fs.write(dest .. "/blobs/sha256/" .. digest:sub(8), text)
    media = MANIFEST
  else
    put(img.digest)
    size = assert(sys.stat(image.blob_path(img.digest))).size
  end
  fs.write(dest .. "/index.json", json.encode({ schemaVersion = 2, manifests = {
    { mediaType = media, digest = digest, size = size, annotations = { [REF] = img.name } },
  } }))
  return dest
end

--- Unpacks an image into a plain rootfs folder (for tools that want one): its layers, in order,
-- whiteouts applied.
function image.unpack(name, dest)
  local img, err = image.resolve(name)
  if not img then fail(err, 2) end
  if sys.lstat(dest) and #(sys.listdir(dest) or {}) > 0 then fail(dest .. " is not empty", 2) end
  errors.check({ op = "mkdir" }, sys.mkdir(dest))
  for _, l in ipairs(img.manifest.layers) do
    local ok, msg = sys.archive_extract(image.blob_path(l.digest), dest, { whiteouts = "apply" })
    if not ok then fail("layer " .. l.digest .. ": " .. msg, 2) end
  end
  return dest
end

-- MARK: the store

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

-- The blobs and layers still in use: by images, the build cache, and running containers.
local function in_use()
  local used = {}
  local index = load_index()
  for _, m in ipairs(index.manifests or {}) do
    used[m.digest:match("%x+$")] = true
    local manifest = read_json(image.blob_path(m.digest))
    used[manifest.config.digest:match("%x+$")] = true
    for _, l in ipairs(manifest.layers or {}) do used[l.digest:match("%x+$")] = true end
  end
  local cache = fs.read_if_exists(path("cache.json"))
  if cache then
    for _, entry in pairs(json.decode(cache)) do
      if type(entry) == "table" and entry.digest then used[entry.digest:match("%x+$")] = true end
    end
  end
  -- Layers under running containers stay, whoever runs them.
  for _, rec in ipairs(require("moonbox.state").list()) do
    if rec.alive then
      for _, l in ipairs(rec.layers or {}) do used[l:match("(%x+)$") or ""] = true end
    end
  end
  return used
end

--- Removes the blobs and unpacked layers no image, cache entry or running container uses.
-- Returns {blobs=, layers=, bytes=} freed.
function image.prune()
  if not sys.stat(path("index.json")) then return { blobs = 0, layers = 0, bytes = 0 } end
  local used = in_use()
  local report = { blobs = 0, layers = 0, bytes = 0 }
  for _, hex in ipairs(sys.listdir(path("blobs/sha256")) or {}) do
    if not used[hex] then
      local st = sys.lstat(path("blobs/sha256", hex))
      if sys.unlink(path("blobs/sha256", hex)) then
        report.blobs = report.blobs + 1
        report.bytes = report.bytes + (st and st.size or 0)
      end
    end
  end
  for _, hex in ipairs(sys.listdir(path("layers")) or {}) do
    if not used[hex] and sys.remove_tree(path("layers", hex)) then report.layers = report.layers + 1 end
  end
  return report
end

--- Forgets a name, then removes blobs and unpacked layers no image (and no cache entry)
-- uses any more, unless `keep_blobs`.
function image.remove(name, keep_blobs)
  name = image.ref(name)
  if not sys.stat(path("index.json")) then fail("no image " .. name, 2) end
  local idx = load_index()
  local kept, found = {}, false
  for _, m in ipairs(idx.manifests or {}) do
    if m.annotations and m.annotations[REF] == name then found = true else kept[#kept + 1] = m end
  end
  if not found then fail("no image " .. name, 2) end
  idx.manifests = kept
  save_index(idx)
  if not keep_blobs then image.prune() end
end

--- The unpacked layer folders of an image, top first (as overlay's lowerdir wants them).
function image.lowers(img)
  local lowers = {}
  for i = #img.manifest.layers, 1, -1 do
    lowers[#lowers + 1] = image.layer_dir(img.manifest.layers[i].digest)
  end
  return lowers
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

-- MARK: the command line

local USAGE = [=[moonbox images
       moonbox image import SOURCE [NAME [REF]]   a rootfs folder or tarball, an OCI layout or archive,
                                                  or a docker save tarball; REF picks one of several images
       moonbox image export NAME DEST             an OCI layout folder, or an OCI archive when DEST ends in .tar
       moonbox image unpack NAME DIR              a plain rootfs folder
       moonbox image inspect NAME
       moonbox image rm NAME
       moonbox image prune                        remove blobs and layers no image uses]=]

function image.main(args)
  local cli = require "moonbox.cli"
  local cmd = args[1]
  local spec = { usage = USAGE, positional = { "COMMAND", "[ARG]", "[ARG]", "[ARG]" } }
  local o = cli.parse("image", args, spec)
  local a = o.args
  cli.main("image", function()
    if cmd == "ls" or cmd == "list" or cmd == nil then
      print(string.format("%-40s %-20s %7s %12s", "NAME", "DIGEST", "LAYERS", "SIZE"))
      for _, i in ipairs(image.list()) do
        print(string.format("%-40s %-20s %7d %12d", i.name, i.digest:sub(8, 19), i.layers, i.size))
      end
    elseif cmd == "import" and a[2] then
      local digest = image.import(a[2], a[3], a[4])
      print((a[3] and image.ref(a[3]) or "imported") .. " " .. digest)
    elseif cmd == "export" and a[2] and a[3] then
      image.export(a[2], a[3])
    elseif cmd == "unpack" and a[2] and a[3] then
      image.unpack(a[2], a[3])
    elseif cmd == "inspect" and a[2] then
      local img, err = image.resolve(a[2])
      if not img then fail(err) end
      print(json.encode({ name = img.name, digest = img.digest, manifest = img.manifest, config = img.config }, { indent = "  " }))
    elseif (cmd == "rm" or cmd == "remove") and a[2] then
      image.remove(a[2])
    elseif cmd == "prune" then
      local r = image.prune()
      print(string.format("freed %d blobs (%d bytes) and %d unpacked layers", r.blobs, r.bytes, r.layers))
    else
      cli.fail("image", "usage: " .. USAGE, 2)
    end
  end, 1)
end

return image
