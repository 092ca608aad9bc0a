-- moonbox.registry: pull and push images through the OCI distribution API, over HTTPS with
-- curl. References look like HOST[:PORT]/REPO[:TAG|@DIGEST].
--
-- Trust: plain HTTP only for loopback registries (localhost, 127.0.0.0/8, [::1]) or for those
-- named insecure (MOONBOX_INSECURE_REGISTRIES="host:port,...", or MOONBOX_REGISTRY_INSECURE=1
-- for all). curl may speak only http and https, and redirects of a secure registry stay on
-- https. A bearer-token realm must be https (http only for an insecure registry). Every
-- manifest and blob is checked against its digest, a manifest picked from an index too, and
-- every layer against its config's diff_id.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local errors = require "moonbox.errors"
local process = require "moonbox.process"
local image = require "moonbox.image"

local registry = {}

local ACCEPT = table.concat({
  "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

local function fail(msg) errors.raise("registry: " .. msg, { op = "registry", code = 1 }, 0) end

--- True for a host that is this machine's loopback: localhost, 127.0.0.0/8, [::1].
function registry.loopback(host)
  local name = host:match("^%[(.*)%]") or host:match("^([^:]+)") or host
  if name == "localhost" or name == "::1" then return true end
  local a, b, c, d = name:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return a == "127" and tonumber(b) < 256 and tonumber(c) < 256 and tonumber(d) < 256
end

local function insecure(host)
  if os.getenv("MOONBOX_REGISTRY_INSECURE") == "1" then return true end
  for h in (os.getenv("MOONBOX_INSECURE_REGISTRIES") or ""):gmatch("[^,%s]+") do
    if h == host then return true end
  end
  return false
end

--- Splits a reference into host, repository and tag or digest, and picks the scheme.
function registry.parse(ref)
  if type(ref) ~= "string" then fail("a reference like localhost:5000/app:1 expected") end
  local host, rest = ref:match("^([^/]+)/(.+)$")
  if not host or not (host:find("[.:]") or host == "localhost" or host:match("^%[")) then
    fail(ref .. " names no registry host (like localhost:5000/app:1)")
  end
  if not image.parse_ref(ref) then fail(select(2, image.parse_ref(ref))) end
  local repo, digest = rest:match("^(.-)@(sha256:%x+)$")
  local tag
  if not repo then
    repo, tag = rest:match("^(.-):([%w_][%w_.%-]*)$")
    if not repo then repo, tag = rest, "latest" end
  end
  local plain = registry.loopback(host) or insecure(host)
  return { host = host, repo = repo, tag = tag, digest = digest, insecure = plain,
    base = (plain and "http" or "https") .. "://" .. host .. "/v2/" .. repo }
end

-- One HTTP request through curl. Returns status, body (nil when written to `out`), headers.
local function request(r, method, url, opts)
  opts = opts or {}
  r.count = (r.count or 0) + 1
  local headers_file = r.tmp.path .. "/headers-" .. r.count
  local protocols = r.insecure and "=http,https" or "=https"
  local argv = { "curl", "-sS", "-L", "--max-time", "600", "--proto", protocols, "--proto-redir", protocols,
    "-D", headers_file, "-o", opts.out or "-", "-w", opts.out and "%{http_code}" or "\n%{http_code}" }
  -- HEAD through -I: with -X HEAD curl would wait for a body that never comes.
  if method == "HEAD" then argv[#argv + 1] = "-I" else argv[#argv + 1] = "-X" argv[#argv + 1] = method end
  for _, h in ipairs(opts.headers or {}) do argv[#argv + 1] = "-H" argv[#argv + 1] = h end
  if r.token then argv[#argv + 1] = "-H" argv[#argv + 1] = "Authorization: Bearer " .. r.token end
  if opts.file then argv[#argv + 1] = "--data-binary" argv[#argv + 1] = "@" .. opts.file end
  if opts.data then argv[#argv + 1] = "--data-binary" argv[#argv + 1] = opts.data end
  argv[#argv + 1] = url
  local res = process.run(argv)
  local raw_headers = fs.read_if_exists(headers_file) or ""
  sys.unlink(headers_file)
  if res.code ~= 0 then fail(method .. " " .. url .. ": " .. res.stderr:gsub("\n$", "")) end
  local body, status
  if opts.out then
    status = res.stdout:match("(%d%d%d)$")
  else
    body, status = res.stdout:match("^(.*)\n(%d%d%d)$")
  end
  -- After redirects, the last response's headers count.
  local headers = {}
  for block in (raw_headers .. "\r\n\r\n"):gmatch("(.-)\r?\n\r?\n") do
    if block:match("^HTTP/") then
      headers = {}
      for line in block:gmatch("[^\r\n]+") do
        local k, v = line:match("^([%w-]+):%s*(.*)$")
        if k then headers[k:lower()] = v end
      end
    end
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
      if not (realm:match("^https://") or (r.insecure and realm:match("^http://"))) then
        fail("the token realm " .. realm .. " is not https; refused")
      end
      local query = {}
      for _, k in ipairs({ "service", "scope" }) do
        local v = auth:match(k .. '="([^"]+)"')
        if v then query[#query + 1] = k .. "=" .. v end
      end
      local _, tbody = request(r, "GET", realm .. (#query > 0 and ("?" .. table.concat(query, "&")) or ""))
      local ok, t = pcall(json.decode, tbody or "")
      r.token = ok and type(t) == "table" and (t.token or t.access_token) or nil
      if r.token then status, body, headers = request(r, method, url, opts) end
    end
  end
  return status, body, headers
end

local function expect_status(status, want, what, body)
  for _, w in ipairs(want) do if status == w then return end end
  fail(string.format("%s: HTTP %s %s", what, tostring(status), (body or ""):sub(1, 300)))
end

local function session(ref)
  local r = registry.parse(ref)
  r.tmp = image.tempdir("registry")
  return r
end

--- Pulls `ref` into the store as `name` (default: REPO:TAG), checking every digest.
function registry.pull(ref, name)
  local r = session(ref)
  local ok, result, digest_out = pcall(function()
    local function fetch_manifest(reference, want)
      local status, body, headers = call(r, "GET", r.base .. "/manifests/" .. reference, { headers = { "Accept: " .. ACCEPT } })
      expect_status(status, { 200 }, "manifest " .. reference, body)
      local got = "sha256:" .. sys.sha256_string(body)
      want = want or headers["docker-content-digest"]
      if want and got ~= want then fail("manifest " .. reference .. " arrived as " .. got .. ", not " .. want .. "; refused") end
      return body, headers["content-type"], got
    end
    local body, media, got = fetch_manifest(r.digest or r.tag, r.digest)
    local manifest = json.decode(body)
    if manifest.manifests then  -- an index: take linux/amd64, checked against the index's digest
      local chosen
      for _, m in ipairs(manifest.manifests) do
        local p = m.platform or {}
        if (p.os == nil or p.os == "linux") and (p.architecture == nil or p.architecture == "amd64") then chosen = m break end
      end
      if not chosen then fail(ref .. " has no linux/amd64 image") end
      body, media, got = fetch_manifest(chosen.digest, chosen.digest)
      manifest = json.decode(body)
    end
    if not manifest.config or not manifest.layers then fail(ref .. " is not an image manifest") end
    local function blob(digest)
      if sys.stat(image.blob_path(digest)) then return end
      local file = r.tmp.path .. "/" .. digest:match("%x+$")
      local status = call(r, "GET", r.base .. "/blobs/" .. digest, { out = file })
      expect_status(status, { 200 }, "blob " .. digest)
      image.add_blob(file, false, digest)
      sys.unlink(file)
    end
    blob(manifest.config.digest)
    for _, l in ipairs(manifest.layers) do blob(l.digest) end
    image.check_diff_ids(manifest, json.decode(fs.read(image.blob_path(manifest.config.digest))))
    -- The manifest is kept byte for byte, so its digest is the registry's.
    local digest, size = image.add_bytes(body)
    name = image.ref(name or (r.repo:match("[^/]+$") .. ":" .. (r.tag or "latest")))
    image.tag_manifest(name, digest, size, media or manifest.mediaType)
    return name, digest
  end)
  r.tmp:remove()
  if not ok then error(result, 2) end
  return result, digest_out
end

--- Pushes the stored image `name` to `ref`.
function registry.push(name, ref)
  local img, err = image.resolve(name)
  if not img then fail(err) end
  local r = session(ref)
  local ok, result = pcall(function()
    local function upload(digest)
      local status = call(r, "HEAD", r.base .. "/blobs/" .. digest)
      if status == 200 then return end
      local st, body, headers = call(r, "POST", r.base .. "/blobs/uploads/", { data = "" })
      expect_status(st, { 202 }, "start upload", body)
      local location = headers["location"] or fail("no upload location")
      if location:sub(1, 1) == "/" then location = r.base:match("^(https?://[^/]+)") .. location end
      local sep = location:find("?", 1, true) and "&" or "?"
      st, body = call(r, "PUT", location .. sep .. "digest=" .. digest,
        { file = image.blob_path(digest), headers = { "Content-Type: application/octet-stream" } })
      expect_status(st, { 201 }, "upload " .. digest, body)
    end
    upload(img.manifest.config.digest)
    for _, l in ipairs(img.manifest.layers) do upload(l.digest) end
    local media = img.manifest.mediaType or image.media_types.manifest
    local st, body = call(r, "PUT", r.base .. "/manifests/" .. (r.tag or r.digest),
      { file = image.blob_path(img.digest), headers = { "Content-Type: " .. media } })
    expect_status(st, { 201 }, "manifest", body)
    return img.digest
  end)
  r.tmp:remove()
  if not ok then error(result, 2) end
  return result
end

--- `moonbox pull REF [NAME]` and `moonbox push NAME REF`.
function registry.main(args)
  local cli = require "moonbox.cli"
  local cmd = table.remove(args, 1)
  if cmd == "pull" then
    local o = cli.parse("pull", args, { usage = "moonbox pull HOST[:PORT]/REPO[:TAG|@DIGEST] [NAME]", positional = { "REF", "[NAME]" } })
    cli.main("pull", function()
      local name, digest = registry.pull(o.args[1], o.args[2])
      print(name .. " " .. digest)
    end, 1)
  elseif cmd == "push" then
    local o = cli.parse("push", args, { usage = "moonbox push NAME HOST[:PORT]/REPO[:TAG]", positional = { "NAME", "REF" } })
    cli.main("push", function()
      print("pushed " .. o.args[2] .. " " .. registry.push(o.args[1], o.args[2]))
    end, 1)
  else
    cli.fail(cmd or "pull", "usage: moonbox pull REF [NAME] | moonbox push NAME REF", 2)
  end
end

return registry
