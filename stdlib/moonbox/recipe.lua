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
-- its parent's key and its own content: for copy and add the hashes of the files, for run the
-- command and the args, for a Lua step its bytecode, the values of its upvalues and the args. A
-- rebuild with nothing changed runs nothing and gives the same digest: the image's time is
-- $SOURCE_DATE_EPOCH, or its base image's.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local errors = require "moonbox.errors"
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

--- The recipe language: the globals a recipe file sees. `args` holds the values given with
-- --arg; arg{} declares the names a recipe takes, with defaults.
function recipe.language(base_dir, args, declared)
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
    for k, v in pairs(defaults) do
      declared[k] = true
      if args[k] == nil then args[k] = v end
    end
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

local function build_error(msg) errors.raise(msg, { op = "build", code = 1 }, 0) end

--- Loads a recipe file; returns its description. An --arg the recipe does not declare with
-- arg{} is refused (a typo would silently build something else).
function recipe.load(file, args)
  args = args or {}
  local given = {}
  for k in pairs(args) do given[#given + 1] = k end
  local declared = {}
  local base = file:match("^(.*)/[^/]*$") or "."
  local env = setmetatable(recipe.language(base, args, declared), { __index = _G })
  local chunk, err = loadfile(file, "t", env)
  if not chunk then build_error("recipe: " .. err) end
  local ok, desc = pcall(chunk)
  if not ok then build_error("recipe " .. file .. ": " .. tostring(desc)) end
  if type(desc) ~= "table" or not desc.steps then build_error("recipe " .. file .. " must return recipe \"name\" { ... }") end
  table.sort(given)
  for _, k in ipairs(given) do
    if not declared[k] then
      local names = {}
      for n in pairs(declared) do names[#names + 1] = n end
      table.sort(names)
      build_error(string.format("--arg %s: the recipe declares no such arg (%s)", k,
        #names > 0 and ("it declares " .. table.concat(names, ", ")) or "it declares none; add arg{ " .. k .. " = ... }"))
    end
  end
  return desc
end

-- MARK: cache keys

local function hash(text) return sys.sha256_string(text) end

--- A stable hash of what copy/add would copy: paths, modes and file contents.
local function hash_tree(src)
  local st = sys.lstat(src)
  if not st then build_error("copy: " .. src .. " does not exist") end
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

-- C functions a step may capture, known by name (their addresses change from run to run).
local known_cfunctions
local function cfunction_name(f)
  if not known_cfunctions then
    known_cfunctions = {}
    for _, lib in ipairs({ "string", "table", "math", "io", "os", "utf8", "coroutine", "debug" }) do
      for k, v in pairs(_G[lib] or {}) do if type(v) == "function" then known_cfunctions[v] = lib .. "." .. k end end
    end
    for k, v in pairs(_G) do if type(v) == "function" then known_cfunctions[v] = k end end
    for k, v in pairs(sys) do if type(v) == "function" then known_cfunctions[v] = "sys." .. k end end
  end
  return known_cfunctions[f]
end

--- The cache-key text of a value a Lua step captures: nil, booleans, numbers, strings, tables of
-- those and functions (their bytecode and their own upvalues). Anything else cannot be keyed:
-- the step is refused, so a stale layer is never reused.
local function value_key(v, step_name, where, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" then return tostring(v) end
  if t == "number" then return (math.type(v) or "n") .. ":" .. string.format("%.17g", v) end
  if t == "string" then return "s" .. #v .. ":" .. v end
  if t == "table" then
    if seen[v] then build_error(string.format("step %q: the upvalue %s refers to itself; it cannot be part of the cache key", step_name, where)) end
    seen[v] = true
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" and type(k) ~= "number" then
        build_error(string.format("step %q: the upvalue %s has a %s key; it cannot be part of the cache key", step_name, where, type(k)))
      end
      keys[#keys + 1] = k
    end
    table.sort(keys, function(a, b) return value_key(a, step_name, where, {}) < value_key(b, step_name, where, {}) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = value_key(k, step_name, where, {}) .. "=" .. value_key(v[k], step_name, where .. "." .. tostring(k), seen) end
    seen[v] = nil
    return "{" .. table.concat(parts, ",") .. "}"
  end
  if t == "function" then
    local ok, code = pcall(string.dump, v, true)
    if not ok then
      local name = cfunction_name(v)
      if name then return "c:" .. name end
      build_error(string.format("step %q: the upvalue %s is a C function moonbox cannot name; it cannot be part of the cache key", step_name, where))
    end
    if seen[v] then return "f:" .. hash(code) end
    seen[v] = true
    local parts = { "f:" .. hash(code) }
    local i = 1
    while true do
      local name, value = debug.getupvalue(v, i)
      if not name then break end
      if name ~= "_ENV" then parts[#parts + 1] = name .. "=" .. value_key(value, step_name, name, seen) end
      i = i + 1
    end
    seen[v] = nil
    return table.concat(parts, ";")
  end
  build_error(string.format("step %q: the upvalue %s is a %s, which cannot be part of the cache key (pass it with arg{} or as a literal)", step_name, where, t))
end

local function step_key(s, args)
  local args_text = json.encode(args)
  if s.kind == "copy" or s.kind == "add" then return s.kind .. " " .. s.dst .. " " .. hash_tree(s.src) end
  if s.kind == "run" then return "run " .. json.encode(s.command) .. " args " .. args_text end
  if s.kind == "lua" then return "lua " .. s.name .. " " .. hash(value_key(s.fn, s.name, "step", {})) .. " args " .. args_text end
  return s.kind .. " " .. json.encode(s.values or s.value or {})
end
recipe.step_key = step_key

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
  local text = fs.read_if_exists(image.root() .. "/cache.json")
  return text and json.decode(text) or {}
end

local function save_cache(cache)
  fs.write_atomic(image.root() .. "/cache.json", json.encode(cache), true)
end

--- The base image of `from`: "busybox" is made from busybox-static; a path is a rootfs tarball.
local function base_image(source)
  if source == "busybox" or source == "scratch" then
    local name = "moonbox-base/" .. source .. ":latest"
    local existing = image.resolve(name)
    if existing then return existing end
    local dir <close> = fs.tempdir("recipe-base")
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
  if not img then build_error("from " .. source .. ": " .. err) end
  return img
end

-- The Lua run inside a copy or add step's container: the source is bound at /.moonbox-src.
local function copy_setup(s, st)
  return function(csys)
    local src = "/.moonbox-src"
    if s.kind == "add" and st.type == "file" then
      assert(csys.mkdir(s.dst))
      local ok, msg = csys.archive_extract(src, s.dst)
      if not ok then error(msg, 0) end
    else
      local function copy(from, to)
        local fst = assert(csys.lstat(from))
        if fst.type == "dir" then
          assert(csys.mkdir(to, fst.mode))
          for _, n in ipairs(assert(csys.listdir(from))) do copy(from .. "/" .. n, to .. "/" .. n) end
        elseif fst.type == "link" then
          csys.unlink(to)
          assert(csys.symlink(assert(csys.readlink(from)), to))
        else
          assert(csys.copy_file_range(from, to))
          assert(csys.chmod(to, fst.mode))
        end
      end
      local dst = s.dst
      if st.type ~= "dir" and dst:sub(-1) == "/" then dst = dst .. s.label:match("[^/]+$") end
      local parent = st.type == "dir" and dst or (dst:match("^(.*)/[^/]*$") or "")
      assert(csys.mkdir(parent ~= "" and parent or "/"))
      copy(src, dst)
    end
    -- The mount point goes too: nothing of the build's plumbing stays in the layer.
    assert(csys.umount(src, { "detach" }))
    assert((st.type == "dir" and csys.rmdir or csys.unlink)(src))
  end
end

--- Runs one filesystem step in a container on `img`, returning the layer of its changes.
-- output(chunk) receives the step's output as it comes.
local function build_layer(img, s, config, args, output)
  local env = {}
  for k, v in pairs(args) do env[k] = tostring(v) end
  local cwd = (config.WorkingDir ~= nil and config.WorkingDir ~= "") and config.WorkingDir or "/"
  local log = {}
  local function keep(chunk)
    log[#log + 1] = chunk
    if #log > 200 then table.remove(log, 1) end
    output(chunk)
  end
  local spec = { image = img, stdout = keep, stderr = keep, network = "host", env = env, cwd = cwd, command = { "/bin/true" } }
  if s.kind == "run" then
    spec.command = type(s.command) == "string" and { "/bin/sh", "-c", s.command } or s.command
    spec.setup = function(csys) assert(csys.mkdir(cwd)) end  -- as docker makes WORKDIR
  elseif s.kind == "lua" then
    spec.setup = s.fn
    spec.seccomp = false
  else  -- copy/add: the host files go in through a bind mount
    local st = assert(sys.stat(s.src))
    spec.mounts = { { type = "bind", source = s.src, target = "/.moonbox-src", readonly = true } }
    spec.setup = copy_setup(s, st)
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
    err = string.format("exit %s\n%s", tostring(result.code or result.status), table.concat(log))
  else
    err = tostring(result)
  end
  pcall(c.remove, c)
  if not layer then build_error(err) end
  return layer
end

-- Metadata steps that set one field of the image config.
local CONFIG_FIELDS = { workdir = "WorkingDir", user = "User", cmd = "Cmd", entrypoint = "Entrypoint" }

--- Builds a recipe description; returns a report {name=, digest=, steps={{text=, cached=, seconds=}}, runs=}.
-- options: tag, args, quiet (no step lines, no live output).
function recipe.build(desc, options)
  options = options or {}
  image.init()
  local args = options.args or {}
  local name = options.tag or desc.name
  local report = { name = image.ref(name), steps = {}, runs = 0 }
  local cache = load_cache()
  local function say(text) if not options.quiet then io.stdout:write(text) io.stdout:flush() end end
  local img = base_image(desc.steps[1].source)
  local layers = {}
  for i, l in ipairs(img.manifest.layers) do layers[i] = l end
  local config = json.decode(json.encode(img.config))
  config.config = config.config or {}
  config.rootfs = config.rootfs or { type = "layers", diff_ids = {} }
  config.rootfs.diff_ids = config.rootfs.diff_ids or {}
  config.history = config.history or {}
  -- The image's time: $SOURCE_DATE_EPOCH, or its base's: never the wall clock, so a rebuild of
  -- the same inputs gives the same digest.
  local created = image.created_time(img.config.created or "1970-01-01T00:00:00Z")
  local key = "from " .. img.digest
  say(string.format("[1/%d] %s\n", #desc.steps, describe(desc.steps[1])))
  report.steps[1] = { text = describe(desc.steps[1]), cached = true }
  for i = 2, #desc.steps do
    local s = desc.steps[i]
    local t0 = sys.clock_gettime()
    local text = describe(s)
    local okk, sk = pcall(step_key, s, args)
    if not okk then build_error(string.format("step %d (%s) failed: %s", i, text, tostring(sk))) end
    key = hash(key .. "\n" .. sk)
    local cached = false
    if s.kind == "copy" or s.kind == "add" or s.kind == "run" or s.kind == "lua" then
      local hit = cache[key]
      local layer
      if hit and sys.stat(image.blob_path(hit.digest)) then
        layer, cached = hit, true
      else
        say(string.format("[%d/%d] %s\n", i, #desc.steps, text))
        -- The step's output, live, each line with the step's prefix (docker's --progress=plain).
        local partial = ""
        local function output(chunk)
          if options.quiet then return end
          partial = partial .. chunk
          for line in partial:gmatch("([^\n]*)\n") do io.stdout:write(string.format("#%d %s\n", i, line)) end
          partial = partial:match("[^\n]*$")
          io.stdout:flush()
        end
        local current = { config = { config = config.config }, manifest = { layers = layers } }
        local okb, l = pcall(build_layer, current, s, config.config, args, output)
        if partial ~= "" and not options.quiet then io.stdout:write(string.format("#%d %s\n", i, partial)) end
        if not okb then build_error(string.format("step %d (%s) failed: %s", i, text, tostring(l))) end
        layer = l
        report.runs = report.runs + 1
        cache[key] = { digest = layer.digest, size = layer.size }
        save_cache(cache)
      end
      layers[#layers + 1] = { mediaType = image.media_types.layer, digest = layer.digest, size = layer.size }
      config.rootfs.diff_ids[#config.rootfs.diff_ids + 1] = layer.digest
      table.insert(config.history, { created = created, created_by = "moonbox: " .. text })
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
      build_error(string.format("step %d: from may only come first", i))
    end
    local seconds = sys.clock_gettime() - t0
    report.steps[i] = { text = text, cached = cached, seconds = seconds }
    if cached then
      say(string.format("[%d/%d] %s (cached)\n", i, #desc.steps, text))
    else
      say(string.format("[%d/%d] %s (done in %.2fs)\n", i, #desc.steps, text, seconds))
    end
  end
  config.created = created
  report.digest = image.store(name, config, layers)
  report.layers = #layers
  return report
end

--- `moonbox build RECIPE.lua [-t NAME:TAG] [--arg NAME=VALUE]... [--quiet]`
function recipe.main(args)
  local cli = require "moonbox.cli"
  local o = cli.parse("build", args, {
    usage = "moonbox build RECIPE.lua [-t NAME:TAG] [--arg NAME=VALUE]... [--quiet]",
    about = "Builds an image from a Lua recipe, step by step, with a layer cache.",
    positional = { "RECIPE.lua" },
    options = {
      { "--tag", "-t", kind = "string", metavar = "NAME:TAG", help = "the image's name (default: the recipe's)" },
      { "--arg", kind = "pairs", help = "a value for an arg{} the recipe declares" },
      { "--quiet", "-q", kind = "flag", help = "no step lines and no live output (a failure still shows it)" },
    },
  })
  cli.main("build", function()
    local build_args = o.arg or {}
    local report = recipe.build(recipe.load(o.args[1], build_args), { tag = o.tag, args = build_args, quiet = o.quiet })
    print(string.format("built %s %s (%d layers, %d steps run)", report.name, report.digest, report.layers, report.runs))
  end, 1)
end

return recipe
