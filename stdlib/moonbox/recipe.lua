-- moonbox.recipe: images built step by step from Lua, with a layer cache.
--
--   return recipe "hello:1" {
--     from "busybox",              -- busybox-static, an image name, a rootfs tarball path,
--                                  -- or debootstrap("bookworm", {variant = "minbase"})
--     arg { GREETING = "hi" },     -- parameters, overridden by `moonbox build --arg GREETING=yo`
--     copy("app/", "/app"),        -- host files (relative to the recipe), hashed into the cache key
--     run "chmod +x /app/start.sh",
--     step("make a file", function(sys) ... end),   -- Lua run inside the build container
--     env { MODE = "prod" }, workdir "/app", user "1000", label { version = "1" },
--     entrypoint { "/bin/sh" }, cmd { "/app/start.sh" },
--   }
--
-- Every filesystem step (copy, add, run, step) makes one layer: it runs in a container on the
-- layers so far with an empty upper, and the upper's diff becomes the layer. A step is cached by
-- its parent's key and its own content; a rebuild with nothing changed runs nothing.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local image = require "moonbox.image"
local container = require "moonbox.container"
local rootfs = require "moonbox.rootfs"

local recipe = {}

local Step = { __name = "moonbox.recipe.step" }

local function step(kind, fields)
  fields.kind = kind
  return setmetatable(fields, Step)
end

local function check_strings(fname, list)
  if type(list) ~= "table" then error(fname .. ": a list of strings expected", 3) end
  for _, v in ipairs(list) do if type(v) ~= "string" then error(fname .. ": a list of strings expected", 3) end end
end

--- The recipe language: the globals a recipe file sees.
function recipe.language(base_dir, args)
  local L = {}
  function L.from(source)
    if type(source) ~= "string" then error("from: an image name, \"busybox\" or a tarball path expected", 2) end
    return step("from", { source = source })
  end
  --- from(debootstrap "bookworm") or from(debootstrap("bookworm", {variant = "minbase"}))
  function L.debootstrap(suite, opts)
    opts = opts or {}
    return "debootstrap:" .. tostring(suite) .. ":" .. (opts.variant or "")
  end
  function L.copy(src, dst)
    if type(src) ~= "string" or type(dst) ~= "string" or dst:sub(1, 1) ~= "/" then
      error("copy(src, dst): a host path and an absolute path in the image expected", 2)
    end
    return step("copy", { src = src:sub(1, 1) == "/" and src or (base_dir .. "/" .. src), dst = dst, label = src })
  end
  function L.add(src, dst)
    local s = L.copy(src, dst)
    s.kind = "add"  -- a tarball is unpacked at dst
    return s
  end
  function L.run(command)
    if type(command) == "table" then check_strings("run", command) elseif type(command) ~= "string" then
      error("run: a shell command or an argv list expected", 2)
    end
    return step("run", { command = command })
  end
  function L.step(name, fn)
    if type(name) ~= "string" or type(fn) ~= "function" then error("step(name, function(sys) ... end) expected", 2) end
    return step("lua", { name = name, fn = fn })
  end
  function L.env(t)
    if type(t) ~= "table" then error("env: a table {NAME = \"value\"} expected", 2) end
    return step("env", { values = t })
  end
  function L.label(t)
    if type(t) ~= "table" then error("label: a table expected", 2) end
    return step("label", { values = t })
  end
  function L.workdir(dir)
    if type(dir) ~= "string" or dir:sub(1, 1) ~= "/" then error("workdir: an absolute path expected", 2) end
    return step("workdir", { value = dir })
  end
  function L.user(u) return step("user", { value = tostring(u) }) end
  function L.cmd(list) check_strings("cmd", list) return step("cmd", { value = list }) end
  function L.entrypoint(list) check_strings("entrypoint", list) return step("entrypoint", { value = list }) end
  function L.arg(defaults)
    if type(defaults) ~= "table" then error("arg: a table of defaults expected", 2) end
    for k, v in pairs(defaults) do if args[k] == nil then args[k] = v end end
    return step("arg", { values = defaults })
  end
  L.args = args
  function L.recipe(name)
    if type(name) ~= "string" then error("recipe: an image name expected", 2) end
    return function(steps)
      if type(steps) ~= "table" then error("recipe \"" .. name .. "\" { ... }: a list of steps expected", 2) end
      for i, s in ipairs(steps) do
        if getmetatable(s) ~= Step then error(string.format("recipe %s: step %d is not a step", name, i), 2) end
      end
      if not steps[1] or steps[1].kind ~= "from" then error("recipe " .. name .. ": the first step must be from(...)", 2) end
      return { name = name, steps = steps }
    end
  end
  return L
end

--- Loads a recipe file; returns its description.
function recipe.load(file, args)
  args = args or {}
  local base = file:match("^(.*)/[^/]*$") or "."
  local env = setmetatable(recipe.language(base, args), { __index = _G })
  local chunk, err = loadfile(file, "t", env)
  if not chunk then error("recipe: " .. err, 0) end
  local ok, desc = pcall(chunk)
  if not ok then error("recipe " .. file .. ": " .. tostring(desc), 0) end
  if type(desc) ~= "table" or not desc.steps then error("recipe " .. file .. " must return recipe \"name\" { ... }", 0) end
  return desc
end

-- MARK: cache keys

local function hash(text) return sys.sha256_string(text) end

--- A stable hash of what copy/add would copy: paths, modes and file contents.
local function hash_tree(src)
  local st = sys.lstat(src)
  if not st then error("copy: " .. src .. " does not exist", 0) end
  local parts = {}
  local function walk(p, rel)
    local s = assert(sys.lstat(p))
    if s.type == "dir" then
      parts[#parts + 1] = "d " .. rel .. " " .. s.mode
      for _, n in ipairs(assert(sys.listdir(p))) do walk(p .. "/" .. n, rel .. "/" .. n) end
    elseif s.type == "link" then
      parts[#parts + 1] = "l " .. rel .. " " .. assert(sys.readlink(p))
    elseif s.type == "file" then
      parts[#parts + 1] = "f " .. rel .. " " .. s.mode .. " " .. assert(sys.sha256(p))
    end
  end
  walk(src, "")
  return hash(table.concat(parts, "\n"))
end

local function step_key(s, args)
  if s.kind == "copy" or s.kind == "add" then return s.kind .. " " .. s.dst .. " " .. hash_tree(s.src) end
  if s.kind == "run" then
    return "run " .. json.encode(s.command) .. " args " .. json.encode(args)
  end
  if s.kind == "lua" then return "lua " .. s.name .. " " .. hash(string.dump(s.fn, true)) end
  return s.kind .. " " .. json.encode(s.values or s.value or {})
end

local function describe(s)
  if s.kind == "from" then return "FROM " .. s.source end
  if s.kind == "copy" or s.kind == "add" then return s.kind:upper() .. " " .. s.label .. " " .. s.dst end
  if s.kind == "run" then return "RUN " .. (type(s.command) == "string" and s.command or table.concat(s.command, " ")) end
  if s.kind == "lua" then return "STEP " .. s.name end
  if s.kind == "env" or s.kind == "label" or s.kind == "arg" then
    local keys = {}
    for k in pairs(s.values) do keys[#keys + 1] = k end
    table.sort(keys)
    return s.kind:upper() .. " " .. table.concat(keys, " ")
  end
  return s.kind:upper() .. " " .. (type(s.value) == "table" and json.encode(s.value) or tostring(s.value))
end

-- MARK: building

local function load_cache()
  local p = image.root() .. "/cache.json"
  local text = fs.read_if_exists(p)
  return text and json.decode(text) or {}
end

local function save_cache(cache)
  local p = image.root() .. "/cache.json"
  fs.write(p .. ".tmp", json.encode(cache))
  assert(sys.rename(p .. ".tmp", p))
end

--- The base image of `from`: "busybox" is made from busybox-static; a path is a rootfs tarball.
local function base_image(source, report)
  if source == "busybox" or source == "scratch" then
    local name = "moonbox-base/" .. source .. ":latest"
    local existing = image.resolve(name)
    if existing then return existing end
    local dir <close> = fs.tempdir("recipe-base-")
    local root = dir.path .. "/root"
    if source == "busybox" then rootfs.busybox(root) else assert(sys.mkdir(root)) end
    image.import_dir(root, name, { Cmd = { "/bin/sh" } })
    return assert(image.resolve(name))
  end
  local suite, variant = source:match("^debootstrap:([%w-]+):(.*)$")
  if suite then
    local _, name = image.debootstrap(suite, { variant = variant ~= "" and variant or nil })
    return assert(image.resolve(name))
  end
  local st = sys.stat(source)
  if st and st.type == "file" then
    local name = "moonbox-base/tar-" .. assert(sys.sha256(source)):sub(1, 16) .. ":latest"
    local existing = image.resolve(name)
    if existing then return existing end
    image.import_tar(source, name)
    return assert(image.resolve(name))
  end
  local img, err = image.resolve(source)
  if not img then error("from " .. source .. ": " .. err, 0) end
  return img
end

--- Runs one filesystem step in a container on `img`, returning the layer of its changes.
local function build_layer(img, s, config, args, out)
  local tmp_name = "moonbox-build/tmp-" .. sys.getpid() .. ":" .. math.random(1 << 30)
  image.store(tmp_name, img.config, img.manifest.layers)
  local env = {}
  for k, v in pairs(args) do env[k] = tostring(v) end
  local cwd = (config.WorkingDir ~= nil and config.WorkingDir ~= "") and config.WorkingDir or "/"
  local spec = { image = tmp_name, stdout = "capture", stderr = "capture", network = "host", env = env, cwd = cwd }
  if s.kind == "run" then
    spec.command = type(s.command) == "string" and { "/bin/sh", "-c", s.command } or s.command
    spec.setup = function(csys) assert(csys.mkdir(cwd)) end  -- as docker makes WORKDIR
  elseif s.kind == "lua" then
    spec.command = { "/bin/true" }
    spec.setup = s.fn
    spec.seccomp = false
  else  -- copy/add: the host files go in through a bind mount, copied by the container's own cp
    local st = assert(sys.stat(s.src))
    if s.kind == "add" and st.type == "file" then
      spec.command = { "/bin/true" }
      spec.setup = function(csys)
        assert(csys.mkdir(s.dst))
        local ok, msg = csys.archive_extract("/.moonbox-src", s.dst)
        if not ok then error(msg, 0) end
        assert(csys.umount("/.moonbox-src", { "detach" }))
        assert(csys.unlink("/.moonbox-src"))
      end
      spec.mounts = { { type = "bind", source = s.src, target = "/.moonbox-src", readonly = true } }
    else
      spec.command = { "/bin/true" }
      spec.mounts = { { type = "bind", source = s.src, target = "/.moonbox-src", readonly = true } }
      spec.setup = function(csys)
        local function copy(from, to)
          local fst = assert(csys.lstat(from))
          if fst.type == "dir" then
            assert(csys.mkdir(to, fst.mode))
            for _, n in ipairs(assert(csys.listdir(from))) do copy(from .. "/" .. n, to .. "/" .. n) end
          elseif fst.type == "link" then
            csys.unlink(to)
            assert(csys.symlink(assert(csys.readlink(from)), to))
          else
            local inf = assert(io.open(from, "rb"))
            local outf = assert(io.open(to, "wb"))
            outf:write(inf:read("a"))
            inf:close()
            outf:close()
            assert(csys.chmod(to, fst.mode))
          end
        end
        local dst = s.dst
        if st.type == "file" and dst:sub(-1) == "/" then dst = dst .. s.label:match("[^/]+$") end
        assert(csys.mkdir(st.type == "dir" and dst or (dst:match("^(.*)/[^/]*$") ~= "" and dst:match("^(.*)/[^/]*$") or "/")))
        copy("/.moonbox-src", dst)
        assert(csys.umount("/.moonbox-src", { "detach" }))
        assert(csys.rmdir("/.moonbox-src"))
      end
    end
  end
  local c = container.new(spec)
  local ok, result = pcall(function()
    c:start()
    return c:wait()
  end)
  local layer, err
  if ok and result.code == 0 then
    local okl, l = pcall(image.layer_from_dir, c.container_dir .. "/upper")
    if okl then layer = l else err = tostring(l) end
  elseif ok then
    err = string.format("exit %s\n%s%s", tostring(result.code or result.status), result.stdout or "", result.stderr or "")
  else
    err = tostring(result)
  end
  pcall(c.remove, c)
  image.remove(tmp_name, true)
  if not layer then error(err, 0) end
  out.runs = out.runs + 1
  return layer
end

-- Metadata steps that set one field of the image config.
local CONFIG_FIELDS = { workdir = "WorkingDir", user = "User", cmd = "Cmd", entrypoint = "Entrypoint" }

--- Builds a recipe description; returns a report {name=, digest=, steps={{text=, cached=, seconds=}}, runs=}.
function recipe.build(desc, options)
  options = options or {}
  image.init()
  local args = options.args or {}
  local name = options.tag or desc.name
  local report = { name = image.ref(name), steps = {}, runs = 0 }
  local cache = load_cache()
  local print_step = options.quiet and function() end or function(i, text, status)
    io.stdout:write(string.format("[%d/%d] %s %s\n", i, #desc.steps, text, status))
    io.stdout:flush()
  end
  local img = base_image(desc.steps[1].source, report)
  local layers = {}
  for i, l in ipairs(img.manifest.layers) do layers[i] = l end
  local config = json.decode(json.encode(img.config))
  config.config = config.config or {}
  local key = "from " .. img.digest
  print_step(1, describe(desc.steps[1]), "")
  report.steps[1] = { text = describe(desc.steps[1]), cached = true }
  for i = 2, #desc.steps do
    local s = desc.steps[i]
    local t0 = sys.clock_gettime()
    local okk, sk = pcall(step_key, s, args)
    if not okk then error(string.format("step %d (%s) failed: %s", i, describe(s), tostring(sk)), 0) end
    key = hash(key .. "\n" .. sk)
    local text = describe(s)
    local cached = false
    if s.kind == "copy" or s.kind == "add" or s.kind == "run" or s.kind == "lua" then
      local hit = cache[key]
      local layer
      if hit and sys.stat(image.blob_path(hit.digest)) then
        layer, cached = hit, true
      else
        local current = { config = config, manifest = { layers = layers } }
        local okb, l = pcall(build_layer, current, s, config.config, args, report)
        if not okb then error(string.format("step %d (%s) failed: %s", i, text, tostring(l)), 0) end
        layer = l
        cache[key] = { digest = layer.digest, size = layer.size }
        save_cache(cache)
      end
      layers[#layers + 1] = { mediaType = image.media_types.layer, digest = layer.digest, size = layer.size }
      config.rootfs.diff_ids[#config.rootfs.diff_ids + 1] = layer.digest
      config.history = config.history or {}
      table.insert(config.history, { created_by = "moonbox: " .. text })
    elseif s.kind == "env" then
      local env = config.config.Env or {}
      local keys = {}
      for k in pairs(s.values) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        for j = #env, 1, -1 do if env[j]:match("^([^=]+)=") == k then table.remove(env, j) end end
        env[#env + 1] = k .. "=" .. tostring(s.values[k])
      end
      config.config.Env = env
      cached = true
    elseif s.kind == "label" then
      config.config.Labels = config.config.Labels or {}
      for k, v in pairs(s.values) do config.config.Labels[k] = tostring(v) end
      cached = true
    elseif CONFIG_FIELDS[s.kind] then
      config.config[CONFIG_FIELDS[s.kind]] = s.value
      cached = true
    elseif s.kind == "arg" then
      cached = true
    elseif s.kind == "from" then
      error(string.format("step %d: from may only come first", i), 0)
    end
    local seconds = sys.clock_gettime() - t0
    report.steps[i] = { text = text, cached = cached, seconds = seconds }
    print_step(i, text, cached and "(cached)" or string.format("(done in %.2fs)", seconds))
  end
  config.created = os.date("!%Y-%m-%dT%H:%M:%SZ")
  report.digest = image.store(name, config, layers)
  report.layers = #layers
  return report
end

--- `moonbox build RECIPE.lua [-t NAME:TAG] [--arg NAME=VALUE]...`
function recipe.main(args)
  local file, tag, build_args = nil, nil, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-t" or a == "--tag" then tag = args[i + 1] i = i + 1
    elseif a == "--arg" then
      local k, v = (args[i + 1] or ""):match("^([^=]+)=(.*)$")
      if not k then io.stderr:write("moonbox build: --arg needs NAME=VALUE\n") os.exit(2) end
      build_args[k] = v
      i = i + 1
    elseif a:match("^%-") then io.stderr:write("moonbox build: unknown option ", a, "\n") os.exit(2)
    else file = a end
    i = i + 1
  end
  if not file then io.stderr:write("usage: moonbox build RECIPE.lua [-t NAME:TAG] [--arg NAME=VALUE]\n") os.exit(2) end
  local ok, report = pcall(function() return recipe.build(recipe.load(file, build_args), { tag = tag, args = build_args }) end)
  if not ok then
    io.stderr:write("moonbox build: ", tostring(report), "\n")
    os.exit(1)
  end
  print(string.format("built %s %s (%d layers, %d steps run)", report.name, report.digest, report.layers, report.runs))
end

return recipe
