-- moonbox.registry: pull and push images through the OCI distribution API, over HTTP(S)
-- with curl. References look like HOST[:PORT]/REPO[:TAG|@DIGEST]; loopback registries are
-- spoken to over plain HTTP, others over HTTPS (MOONBOX_REGISTRY_INSECURE=1 allows HTTP).
-- Anonymous bearer tokens are fetched when a registry asks for them.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local process = require "moonbox.process"
local image = require "moonbox.image"

local registry = {}

local ACCEPT = table.concat({
  "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

--- Splits a reference into host, repository and tag or digest.
function registry.parse(ref)
  if type(ref) ~= "string" then error("registry: a reference like localhost:5000/app:1 expected", 3) end
  local host, rest = ref:match("^([^/]+)/(.+)$")
  if not host or not (host:find("[.:]") or host == "localhost") then
    error("registry: " .. ref .. " names no registry host (like localhost:5000/app:1)", 3)
  end
  local repo, digest = rest:match("^(.-)@(sha256:%x+)$")
  local tag
  if not repo then
    repo, tag = rest:match("^(.-):([%w_.-]+)$")
    if not repo then repo, tag = rest, "latest" end
  end
  local loopback = host:match("^localhost") or host:match("^127%.") or host:match("^%[::1%]")
  local scheme = (loopback or os.getenv("MOONBOX_REGISTRY_INSECURE") == "1") and "http" or "https"
  return { host = host, repo = repo, tag = tag, digest = digest, base = scheme .. "://" .. host .. "/v2/" .. repo }
end

-- One HTTP request. Returns status, body (or nil when written to `out`), headers.
local function request(r, method, url, opts)
  opts = opts or {}
  local headers_file = os.tmpname()
  -- HEAD through -I: with -X HEAD curl would wait for a body that never comes.
  local argv = { "curl", "-sS", "-L", "--max-time", "600", "-D", headers_file, "-o", opts.out or "-", "-w", "\n%{http_code}" }
  if method == "HEAD" then argv[#argv + 1] = "-I" else argv[#argv + 1] = "-X" argv[#argv + 1] = method end
  if opts.out then argv[#argv] = "%{http_code}" end
  for _, h in ipairs(opts.headers or {}) do argv[#argv + 1] = "-H" argv[#argv + 1] = h end
  if r.token then argv[#argv + 1] = "-H" argv[#argv + 1] = "Authorization: Bearer " .. r.token end
  if opts.file then argv[#argv + 1] = "--data-binary" argv[#argv + 1] = "@" .. opts.file end
  if opts.data then argv[#argv + 1] = "--data-binary" argv[#argv + 1] = opts.data end
  argv[#argv + 1] = url
  local res = process.run(argv)
  local raw_headers = fs.read_if_exists(headers_file) or ""
  os.remove(headers_file)
  if res.code ~= 0 then error("registry: " .. method .. " " .. url .. ": " .. res.stderr:gsub("\n$", ""), 0) end
  local body, status = res.stdout:match("^(.*)\n(%d%d%d)$")
  if opts.out then status = res.stdout:match("(%d%d%d)$") end
  local headers = {}
  for line in raw_headers:gmatch("[^\r\n]+") do
    local k, v = line:match("^([%w-]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  return tonumber(status), body, headers
end

-- Asks again with an anonymous bearer token when the registry answers 401 with one.
local function call(r, method, url, opts)
  local status, body, headers = request(r, method, url, opts)
  if status == 401 and headers["www-authenticate"] and not r.token then
    local auth = headers["www-authenticate"]
    local realm = auth:match('realm="([^"]+)"')
    if realm then
      local query = {}
      for _, k in ipairs({ "service", "scope" }) do
        local v = auth:match(k .. '="([^"]+)"')
        if v then query[#query + 1] = k .. "=" .. v end
      end
      local _, tbody = request(r, "GET", realm .. (#query > 0 and ("?" .. table.concat(query, "&")) or ""))
      local ok, t = pcall(json.decode, tbody or "")
      r.token = ok and (t.token or t.access_token) or nil
      if r.token then status, body, headers = request(r, method, url, opts) end
    end
  end
  return status, body, headers
end

local function check(status, want, what, body)
  for _, w in ipairs(want) do if status == w then return end end
  error(string.format("registry: %s: HTTP %s %s", what, tostring(status), (body or ""):sub(1, 300)), 0)
end

--- Pulls `ref` into the store as `name` (default: REPO:TAG), checking every digest.
function registry.pull(ref, name)
  local r = registry.parse(ref)
  image.init()
  local tmp <close> = fs.tempdir("moonbox-pull-")
  local function fetch_manifest(reference)
    local status, body, headers = call(r, "GET", r.base .. "/manifests/" .. reference, { headers = { "Accept: " .. ACCEPT } })
    check(status, { 200 }, "manifest " .. reference, body)
    return body, headers["content-type"]
  end
  local body, media = fetch_manifest(r.digest or r.tag)
  local manifest = json.decode(body)
  if manifest.manifests then  -- an index: take linux/amd64
    local chosen
    for _, m in ipairs(manifest.manifests) do
      local p = m.platform or {}
      if (p.os == nil or p.os == "linux") and (p.architecture == nil or p.architecture == "amd64") then chosen = m break end
    end
    if not chosen then error("registry: " .. ref .. " has no linux/amd64 image", 0) end
    body, media = fetch_manifest(chosen.digest)
    manifest = json.decode(body)
  end
  local function blob(digest)
    local dest = image.blob_path(digest)
    if sys.stat(dest) then return end
    local file = tmp.path .. "/" .. digest:match("%x+$")
    local status = call(r, "GET", r.base .. "/blobs/" .. digest, { out = file })
    check(status, { 200 }, "blob " .. digest)
    local got = "sha256:" .. assert(sys.sha256(file))
    if got ~= digest then error("registry: blob " .. digest .. " arrived as " .. got .. "; refused", 0) end
    image.add_blob(file)
  end
  blob(manifest.config.digest)
  for _, l in ipairs(manifest.layers or {}) do blob(l.digest) end
  -- The manifest is kept byte for byte, so its digest is the registry's.
  local mfile = fs.write(tmp.path .. "/manifest", body)
  local digest, size = image.add_blob(mfile)
  if r.digest and digest ~= r.digest then error("registry: manifest arrived as " .. digest .. ", not " .. r.digest, 0) end
  name = image.ref(name or (r.repo:match("[^/]+$") .. ":" .. (r.tag or "latest")))
  image.tag_manifest(name, digest, size, media)
  return name, digest
end

--- Pushes the stored image `name` to `ref`.
function registry.push(name, ref)
  local img, err = image.resolve(name)
  if not img then error("registry: " .. err, 0) end
  local r = registry.parse(ref)
  local function upload(digest)
    local status = call(r, "HEAD", r.base .. "/blobs/" .. digest)
    if status == 200 then return end
    local st, body, headers = call(r, "POST", r.base .. "/blobs/uploads/", { data = "" })
    check(st, { 202 }, "start upload", body)
    local location = headers["location"] or error("registry: no upload location", 0)
    if location:sub(1, 1) == "/" then location = r.base:match("^(https?://[^/]+)") .. location end
    local sep = location:find("?", 1, true) and "&" or "?"
    st, body = call(r, "PUT", location .. sep .. "digest=" .. digest,
      { file = image.blob_path(digest), headers = { "Content-Type: application/octet-stream" } })
    check(st, { 201 }, "upload " .. digest, body)
  end
  upload(img.manifest.config.digest)
  for _, l in ipairs(img.manifest.layers) do upload(l.digest) end
  local media = img.manifest.mediaType or image.media_types.manifest
  local st, body = call(r, "PUT", r.base .. "/manifests/" .. (r.tag or r.digest),
    { file = image.blob_path(img.digest), headers = { "Content-Type: " .. media } })
  check(st, { 201 }, "manifest", body)
  return img.digest
end

--- `moonbox pull REF [NAME]` and `moonbox push NAME REF`.
function registry.main(args)
  local cmd = table.remove(args, 1)
  if cmd == "pull" then return registry.main_pull(args) end
  if cmd == "push" then return registry.main_push(args) end
  io.stderr:write("usage: moonbox pull REF [NAME] | moonbox push NAME REF\n")
  os.exit(2)
end

function registry.main_pull(args)
  if not args[1] then io.stderr:write("usage: moonbox pull HOST/REPO[:TAG] [NAME]\n") os.exit(2) end
  local ok, name, digest = pcall(registry.pull, args[1], args[2])
  if not ok then io.stderr:write("moonbox pull: ", tostring(name), "\n") os.exit(1) end
  print(name .. " " .. digest)
end

function registry.main_push(args)
  if not args[1] or not args[2] then io.stderr:write("usage: moonbox push NAME HOST/REPO[:TAG]\n") os.exit(2) end
  local ok, digest = pcall(registry.push, args[1], args[2])
  if not ok then io.stderr:write("moonbox push: ", tostring(digest), "\n") os.exit(1) end
  print("pushed " .. args[2] .. " " .. digest)
end

return registry
