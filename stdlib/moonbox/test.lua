-- moonbox.test: a scenario runner in the style of busted.
--
-- Test files (*_test.lua) see these globals:
--   describe(name, fn), it(name, fn), before_each(fn), after_each(fn)
--   finally(fn)      inside an `it`: runs when the test ends, pass or fail
--   skip(reason)     inside an `it`: stop here and count the test as skipped
--   pending(name)    a test that is written down but not yet there
--   expect(value)    expectations: expect(x).to_be(y), .to_equal(t), .to_match(p), ...
--   needs_root()     inside an `it`: skip with a visible reason unless running as root
--
-- Reporters subscribe to the runner's events (file, test, done); the readable one,
-- TAP and JUnit ship here. The output ends with "N passed, N failed, N skipped".
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"

local test = {}

-- MARK: expectations

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local ok, json = pcall(require, "moonbox.json")
  local ok2, text = pcall(json.encode, v)
  return ok and ok2 and text or tostring(v)
end

local function deep_equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not deep_equal(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
test.deep_equal = deep_equal

local Failure = { __name = "moonbox.test.failure" }
Failure.__tostring = function(f) return f.message end
local Skip = { __name = "moonbox.test.skip" }

-- Fails at the caller of the expectation, so the message names the test's own line.
local function fail(message, level)
  local info = debug.getinfo(level or 3, "Sl")
  local where = info and (info.short_src .. ":" .. info.currentline .. ": ") or ""
  error(setmetatable({ message = where .. message }, Failure), 0)
end

function test.expect(actual)
  local e = {}
  local function check(ok, message) if not ok then fail(message, 4) end end
  function e.to_be(expected)
    check(actual == expected, "expected: " .. show(expected) .. "\n  actual: " .. show(actual))
  end
  function e.to_equal(expected)
    check(deep_equal(actual, expected), "expected (deep): " .. show(expected) .. "\n  actual: " .. show(actual))
  end
  function e.not_to_be(other)
    check(actual ~= other, "expected something other than " .. show(other))
  end
  function e.to_be_truthy() check(actual, "expected a true value, got " .. show(actual)) end
  function e.to_be_falsy() check(not actual, "expected false or nil, got " .. show(actual)) end
  function e.to_be_nil() check(actual == nil, "expected nil, got " .. show(actual)) end
  function e.to_be_a(kind)
    check(type(actual) == kind or (math.type(actual) == kind),
      "expected a " .. kind .. ", got " .. type(actual) .. " " .. show(actual))
  end
  function e.to_match(pattern)
    check(type(actual) == "string" and actual:find(pattern) ~= nil,
      "expected a string matching " .. show(pattern) .. "\n  actual: " .. show(actual))
  end
  function e.not_to_match(pattern)
    check(type(actual) == "string" and actual:find(pattern) == nil,
      "expected a string not matching " .. show(pattern) .. "\n  actual: " .. show(actual))
  end
  function e.to_contain(item)
    local found = false
    if type(actual) == "string" then
      found = actual:find(item, 1, true) ~= nil
    elseif type(actual) == "table" then
      for _, v in pairs(actual) do
        if deep_equal(v, item) then found = true break end
      end
    end
    check(found, "expected " .. show(actual) .. " to contain " .. show(item))
  end
  function e.to_be_near(expected, tolerance)
    check(type(actual) == "number" and math.abs(actual - expected) <= tolerance,
      string.format("expected %s within %s of %s", show(actual), show(tolerance), show(expected)))
  end
  function e.to_be_at_least(n) check(type(actual) == "number" and actual >= n, "expected >= " .. show(n) .. ", got " .. show(actual)) end
  function e.to_be_at_most(n) check(type(actual) == "number" and actual <= n, "expected <= " .. show(n) .. ", got " .. show(actual)) end
  -- expect(fn).to_fail([pattern]): fn raises an error whose text matches pattern.
  function e.to_fail(pattern)
    check(type(actual) == "function", "to_fail needs a function, got " .. type(actual))
    local ok, err = pcall(actual)
    check(not ok, "expected an error, but the function returned normally")
    if pattern then
      local text = tostring(err)
      check(text:find(pattern) ~= nil, "expected an error matching " .. show(pattern) .. "\n  actual error: " .. show(text))
    end
  end
  return e
end

--- Calls fn every 10 ms until it returns a true value (returned) or `seconds` pass (nil):
-- for waiting on what another process does.
function test.eventually(fn, seconds)
  local deadline = sys.clock_gettime() + (seconds or 10)
  while true do
    local v = fn()
    if v then return v end
    if sys.clock_gettime() >= deadline then return nil end
    sys.nanosleep(0.01)
  end
end

-- MARK: collecting tests

local function new_group(name, parent)
  return { name = name, parent = parent, children = {}, before = {}, after = {} }
end

local current_group, current_test

local function full_name(group, name)
  local parts = { name }
  while group and group.name do
    table.insert(parts, 1, group.name)
    group = group.parent
  end
  return table.concat(parts, " > ")
end

local function api(file_group)
  current_group = file_group
  local env = {}
  function env.describe(name, fn)
    if type(name) ~= "string" or type(fn) ~= "function" then error("describe(name, fn) expected", 2) end
    local g = new_group(name, current_group)
    table.insert(current_group.children, g)
    local saved = current_group
    current_group = g
    local ok, err = xpcall(fn, debug.traceback)
    current_group = saved
    if not ok then error(err, 0) end
  end
  function env.it(name, fn)
    if type(name) ~= "string" or type(fn) ~= "function" then error("it(name, fn) expected", 2) end
    local info = debug.getinfo(2, "Sl")
    table.insert(current_group.children, { test = true, name = name, fn = fn, group = current_group,
      where = info.short_src .. ":" .. info.currentline })
  end
  function env.pending(name)
    table.insert(current_group.children, { test = true, name = name, group = current_group, pending = true })
  end
  function env.before_each(fn) table.insert(current_group.before, fn) end
  function env.after_each(fn) table.insert(current_group.after, fn) end
  function env.finally(fn)
    if not current_test then error("finally() belongs inside it()", 2) end
    table.insert(current_test.finallies, fn)
  end
  function env.skip(reason)
    error(setmetatable({ message = reason or "skipped" }, Skip), 0)
  end
  env.expect = test.expect
  env.eventually = test.eventually
  -- needs_root(): skip the test with a visible reason unless running as root.
  function env.needs_root()
    if sys.geteuid() ~= 0 then env.skip("needs root") end
  end
  return env
end

-- MARK: running

local function collect_hooks(group, key)
  local chain = {}
  while group do
    table.insert(chain, 1, group)
    group = group.parent
  end
  local hooks = {}
  for _, g in ipairs(chain) do
    for _, h in ipairs(g[key]) do hooks[#hooks + 1] = h end
  end
  return hooks
end

local function classify(err)
  if getmetatable(err) == Skip then return "skipped", err.message end
  if getmetatable(err) == Failure then return "failed", err.message end
  return "errored", tostring(err)
end

local function run_test(t, emit, owner)
  local result = { name = full_name(t.group, t.name), where = t.where }
  if t.pending then
    result.status, result.message = "skipped", "pending"
    emit("test", result)
    return result
  end
  current_test = { finallies = {} }
  local started = sys.clock_gettime("monotonic")
  local status, message = "passed", nil
  local function step(fn)
    if status ~= "passed" then return end
    local ok, err = xpcall(fn, function(e)
      if getmetatable(e) == Skip or getmetatable(e) == Failure then return e end
      -- The runner's own frames say nothing about the test: cut them.
      local tb = debug.traceback(tostring(e), 2)
      return (tb:gsub("\n\t%[C%]: in function 'xpcall'.*$", ""))
    end)
    if sys.getpid() ~= owner then
      -- A forked child came back into the runner: it must never report or go on.
      io.stderr:write("moonbox.test: a forked child returned into the runner: ", tostring(err and (err.message or err)), "\n")
      sys._exit(70)
    end
    if not ok then status, message = classify(err) end
  end
  for _, h in ipairs(collect_hooks(t.group, "before")) do step(h) end
  step(t.fn)
  -- after_each and finally run whatever happened.
  -- after_each hooks run innermost first, the mirror of before_each.
  local outer_first = collect_hooks(t.group, "after")
  local after = {}
  for i = #outer_first, 1, -1 do after[#after + 1] = outer_first[i] end
  for i = #current_test.finallies, 1, -1 do table.insert(after, 1, current_test.finallies[i]) end
  for _, h in ipairs(after) do
    local ok, err = xpcall(h, debug.traceback)
    if sys.getpid() ~= owner then sys._exit(70) end
    if not ok and status == "passed" then status, message = "errored", "in cleanup: " .. tostring(err) end
  end
  current_test = nil
  result.status, result.message = status, message
  result.time = sys.clock_gettime("monotonic") - started
  emit("test", result)
  return result
end

local function walk(group, fn)
  for _, child in ipairs(group.children) do
    if child.test then fn(child) else walk(child, fn) end
  end
end

-- MARK: reporters

local reporters = {}

function reporters.plain(out, verbose)
  local r = {}
  function r.file(path) if verbose then out:write(path, "\n") end end
  function r.test(res)
    if res.status == "passed" then
      out:write(verbose and ("  ok   " .. res.name .. "\n") or ".")
    elseif res.status == "skipped" then
      out:write(verbose and ("  skip " .. res.name .. " (" .. tostring(res.message) .. ")\n") or "s")
    else
      out:write(verbose and ("  FAIL " .. res.name .. "\n") or "F")
    end
    out:flush()
  end
  function r.done(results, counts)
    out:write("\n")
    local skipped = {}
    for _, res in ipairs(results) do
      if res.status == "failed" or res.status == "errored" then
        out:write("\n", res.status == "failed" and "FAILED: " or "ERROR: ", res.name, "\n  ",
          (tostring(res.message):gsub("\n", "\n  ")), "\n")
      elseif res.status == "skipped" then
        skipped[res.message] = (skipped[res.message] or 0) + 1
      end
    end
    for reason, n in pairs(skipped) do out:write(string.format("skipped %d: %s\n", n, reason)) end
  end
  return r
end

function reporters.tap(out)
  local r, n = {}, 0
  function r.test(res)
    n = n + 1
    if res.status == "passed" then
      out:write("ok ", n, " - ", res.name, "\n")
    elseif res.status == "skipped" then
      out:write("ok ", n, " - ", res.name, " # SKIP ", tostring(res.message), "\n")
    else
      out:write("not ok ", n, " - ", res.name, "\n")
      for line in tostring(res.message):gmatch("[^\n]+") do out:write("# ", line, "\n") end
    end
    out:flush()
  end
  function r.done() out:write("1..", n, "\n") end
  return r
end

local function xml(s)
  return (tostring(s):gsub("[<>&\"]", { ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ['"'] = "&quot;" })
    :gsub("[%z\1-\8\11\12\14-\31]", "?"))
end

function reporters.junit(path)
  local r = {}
  function r.done(results, counts)
    local f, err = io.open(path, "w")
    if not f then
      io.stderr:write("moonbox test: cannot write JUnit file: ", err, "\n")
      return
    end
    f:write('<?xml version="1.0" encoding="UTF-8"?>\n')
    f:write(string.format('<testsuite name="moonbox" tests="%d" failures="%d" errors="%d" skipped="%d">\n',
      #results, counts.failed, counts.errored, counts.skipped))
    for _, res in ipairs(results) do
      f:write(string.format('  <testcase name="%s" classname="%s" time="%.3f"', xml(res.name),
        xml(res.file or "moonbox"), res.time or 0))
      if res.status == "passed" then
        f:write("/>\n")
      elseif res.status == "skipped" then
        f:write(string.format('><skipped message="%s"/></testcase>\n', xml(res.message)))
      else
        local tag = res.status == "failed" and "failure" or "error"
        f:write(string.format('><%s message="%s">%s</%s></testcase>\n', tag,
          xml((tostring(res.message):match("[^\n]*"))), xml(res.message), tag))
      end
    end
    f:write("</testsuite>\n")
    f:close()
  end
  return r
end

test.reporters = reporters

-- MARK: files

local function find_tests(path, out, experiments)
  local st = sys.stat(path)
  if not st then error("moonbox test: no such file or folder: " .. path, 0) end
  if st.type == "dir" then
    for _, name in ipairs(assert(sys.listdir(path))) do
      local child = path .. "/" .. name
      local cst = sys.lstat(child)
      if cst and cst.type == "dir" and not name:match("^%.") then
        find_tests(child, out, experiments)
      elseif name:match("_test%.lua$") then
        out[#out + 1] = child
      elseif experiments and name:match("%.lua$") and (fs.read_if_exists(child) or ""):find("moonbox%.experiment") then
        out[#out + 1] = child
      end
    end
  else
    out[#out + 1] = path
  end
  return out
end

--- What a suite must leave as it found it: the mount table, moonbox cgroups, the hostname,
-- the host's network links, and moonbox's helper processes (relays, proxies, keepers).
function test.host_state()
  local mounts = {}
  for _, m in ipairs(assert(sys.mounts())) do mounts[#mounts + 1] = m.target .. " " .. m.fstype .. " " .. m.source end
  table.sort(mounts)
  local cgroups = {}
  local function scan(dir, depth)
    local names = sys.listdir(dir)
    if not names or depth > 4 then return end
    for _, n in ipairs(names) do
      local p = dir .. "/" .. n
      local st = sys.lstat(p)
      if st and st.type == "dir" then
        if n:match("^moonbox") then cgroups[#cgroups + 1] = p end
        scan(p, depth + 1)
      end
    end
  end
  scan("/sys/fs/cgroup", 0)
  table.sort(cgroups)
  local links = sys.listdir("/sys/class/net") or {}
  table.sort(links)
  local helpers = {}
  for _, pid in ipairs(sys.listdir("/proc") or {}) do
    local comm = pid:match("^%d+$") and require("moonbox.fs").read_if_exists("/proc/" .. pid .. "/comm")
    if comm and comm:match("^moonbox%-") then
      -- a dead helper whose reaper has not come by yet (a zombie) is gone all the same
      local _, letter = require("moonbox.process").start_time(tonumber(pid))
      if letter and letter ~= "Z" and letter ~= "X" then helpers[#helpers + 1] = comm:gsub("%s+$", "") .. " " .. pid end
    end
  end
  table.sort(helpers)
  return { mounts = mounts, cgroups = cgroups, hostname = sys.gethostname(), links = links, helpers = helpers }
end

local function state_diff(before, after)
  local problems = {}
  local function diff(name, a, b)
    local set = {}
    for _, x in ipairs(a) do set[x] = (set[x] or 0) + 1 end
    for _, x in ipairs(b) do set[x] = (set[x] or 0) - 1 end
    for x, n in pairs(set) do
      if n > 0 then problems[#problems + 1] = name .. " gone: " .. x end
      if n < 0 then problems[#problems + 1] = name .. " left behind: " .. x end
    end
  end
  diff("mount", before.mounts, after.mounts)
  diff("cgroup", before.cgroups, after.cgroups)
  diff("link", before.links or {}, after.links or {})
  diff("moonbox process", before.helpers or {}, after.helpers or {})
  if before.hostname ~= after.hostname then
    problems[#problems + 1] = "hostname changed: " .. tostring(before.hostname) .. " -> " .. tostring(after.hostname)
  end
  table.sort(problems)
  return problems
end

--- Runs test files. options: paths, filter, reporters (list of subscriber tables),
-- check_host (add a last test: the host's mounts, cgroups and hostname are unchanged).
-- Returns counts {passed=, failed=, errored=, skipped=} and the results.
function test.run(options)
  local files = {}
  for _, p in ipairs(options.paths) do find_tests(p, files, options.experiments) end
  local subscribers = options.reporters
  local function emit(event, ...)
    for _, s in ipairs(subscribers) do
      if s[event] then s[event](...) end
    end
  end
  local owner = sys.getpid()
  local results = {}
  local counts = { passed = 0, failed = 0, errored = 0, skipped = 0 }
  local before = options.check_host and test.host_state()
  for _, file in ipairs(files) do
    emit("file", file)
    local root = new_group(nil, nil)
    local env = setmetatable(api(root), { __index = _G })
    local chunk, err = loadfile(file, "t", env)
    local ok = chunk ~= nil
    -- An experiment file's e:run() makes its trials tests of this file.
    local experiment = require "moonbox.experiment"
    experiment.test_api = env
    if ok then ok, err = xpcall(chunk, debug.traceback) end
    experiment.test_api = nil
    if sys.getpid() ~= owner then sys._exit(70) end
    if not ok then
      local res = { name = file .. " (loading)", status = "errored", message = err, file = file }
      results[#results + 1] = res
      counts.errored = counts.errored + 1
      emit("test", res)
    else
      walk(root, function(t)
        local name = full_name(t.group, t.name)
        if options.filter and not name:find(options.filter) then return end
        local res = run_test(t, emit, owner)
        res.file = file
        results[#results + 1] = res
        counts[res.status] = counts[res.status] + 1
      end)
    end
  end
  if before then
    local problems = state_diff(before, test.host_state())
    local res = { name = "the host is unchanged after the suite (mounts, moonbox cgroups, hostname)", file = "moonbox test",
      status = #problems == 0 and "passed" or "failed", message = table.concat(problems, "\n") }
    results[#results + 1] = res
    counts[res.status] = counts[res.status] + 1
    emit("test", res)
  end
  emit("done", results, counts)
  return counts, results
end

--- `moonbox test [--tap] [--junit FILE] [--filter PATTERN] [--verbose] [--check-host] [PATH...]`
function test.main(args)
  local cli = require "moonbox.cli"
  local o = cli.parse("test", args, {
    usage = "moonbox test [--tap] [--junit FILE] [--filter PATTERN] [--verbose] [--check-host] [--experiments] [PATH...]",
    about = "Runs *_test.lua files written with moonbox.test; PATH defaults to the current folder.",
    any_positional = true,
    options = {
      { "--tap", kind = "flag", help = "TAP output" },
      { "--junit", kind = "string", metavar = "FILE", help = "also write a JUnit XML report" },
      { "--filter", kind = "string", metavar = "PATTERN", help = "only tests whose full name matches (a Lua pattern)" },
      { "--verbose", "-v", kind = "flag", help = "a line per test" },
      { "--check-host", kind = "flag", help = "a last test: the host's mounts, moonbox cgroups and hostname are unchanged" },
      { "--experiments", kind = "flag", help = "in folders, also experiment files (*.lua using moonbox.experiment): each trial is a test" },
    },
  })
  local options = { paths = o.args, reporters = {}, filter = o.filter, check_host = o["check-host"], experiments = o.experiments }
  if #options.paths == 0 then options.paths[1] = "." end
  table.insert(options.reporters, o.tap and reporters.tap(io.stdout) or reporters.plain(io.stdout, o.verbose))
  if o.junit then table.insert(options.reporters, reporters.junit(o.junit)) end
  local counts
  cli.main("test", function() counts = test.run(options) end, 1)
  local failed = counts.failed + counts.errored
  io.stdout:write(string.format("%d passed, %d failed, %d skipped\n", counts.passed, failed, counts.skipped))
  io.stdout:flush()
  os.exit(failed == 0 and 0 or 1)
end

return test
