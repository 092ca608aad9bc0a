-- moonbox.experiment: experiments as Lua programs. A grid of parameters, a trial function run
-- once for each combination (in parallel, each in a worker process of its own), results written
-- as each trial ends, and a report.
--
--   local e = experiment.new{ name = "kv-under-loss", out = "results/kv" }
--   e:param("loss", { 0, 0.01, 0.05 })
--   e:param("rep", { 1, 2, 3 })                 -- "rep" (or {repeats = true}) averages in plots
--   e:trial(function(t, p) ... t:record{ throughput = x } end)
--   e:run{ jobs = 4 }
--
-- Outputs in out/: results.jsonl (a line per trial, written as it ends: the resume log),
-- results.csv, series/TRIAL.csv, logs/TRIAL/NAME.out and .err (each container's output, unless
-- its spec says otherwise), meta.json, report.html. A rerun skips the trials already
-- recorded for the same parameters and the same experiment file (fresh = true reruns all).
-- A trial's error is recorded with its message and does not stop the others.
-- `moonbox experiment FILE` runs the same from the command line; `moonbox test` runs an
-- experiment's trials as tests; experiment.scenario gives a test the same `t`.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local check = require "moonbox.check"
local errors = require "moonbox.errors"
local cleanup = require "moonbox.cleanup"
local process = require "moonbox.process"
local loop = require "moonbox.loop"
local trial = require "moonbox.experiment.trial"
local report = require "moonbox.experiment.report"

local experiment = {}

-- Set by `moonbox experiment` (command-line overrides) and `moonbox test` (trials as tests).
experiment.cli = nil
experiment.test_api = nil

local made = {}  -- experiments this process defined, for `moonbox experiment` to run

local Experiment = { __name = "moonbox.experiment" }
Experiment.__index = Experiment
Experiment.__tostring = function(e) return "experiment(" .. e.name .. ")" end

local REPEAT_NAMES = { rep = true, reps = true, ["repeat"] = true, repetition = true, run = true }

local function cpu_count()
  local text = fs.read_if_exists("/sys/devices/system/cpu/online") or ""
  local n = 0
  for a, b in text:gmatch("(%d+)%-?(%d*)") do n = n + (b ~= "" and (tonumber(b) - tonumber(a) + 1) or 1) end
  return n > 0 and n or 1
end
experiment.cpu_count = cpu_count

-- The experiment's file: its path, and a hash of its content (results are keyed on it).
local function caller_file(level)
  for l = level, level + 10 do
    local info = debug.getinfo(l, "S")
    if not info then break end
    if info.source:sub(1, 1) == "@" and not info.source:find("stdlib/moonbox/", 1, true) then
      return info.source:sub(2)
    end
  end
end

--- A new experiment. o: name (required), out (folder, default results/NAME), seed (an
-- integer: each trial's math.random starts from seed + its number; default 1), jobs.
function experiment.new(o)
  local where = "experiment.new"
  if type(o) ~= "table" then check.fail(where, "options must be a table {name = ..., out = ...}, got " .. check.show(o)) end
  check.options(where, o, { name = true, out = true, seed = true, jobs = true })
  check.name(where, "name", o.name)
  if o.out ~= nil then check.string(where, "out", o.out) end
  if o.seed ~= nil then check.integer(where, "seed", o.seed) end
  if o.jobs ~= nil then check.integer(where, "jobs", o.jobs, 1, 1024) end
  local file = caller_file(3)
  local hash
  if file then hash = sys.sha256(file) end
  local self = setmetatable({ name = o.name, out = o.out or ("results/" .. o.name), seed = o.seed or 1, jobs = o.jobs,
    params = { order = {} }, file = file, file_hash = hash or sys.sha256_string(o.name) }, Experiment)
  made[#made + 1] = self
  return self
end

--- A parameter and the values it takes (numbers, strings or booleans). opts.repeats marks a
-- repetition (plots average over it); a parameter named rep, reps, repeat, repetition or run
-- is one without saying.
function Experiment:param(name, values, opts)
  local where = "experiment:param"
  check.name(where, "name", name)
  if self.params[name] then check.fail(where, "parameter " .. name .. " is declared twice") end
  if type(values) ~= "table" or #values == 0 then check.fail(where, name .. ": a non-empty list of values expected, got " .. check.show(values)) end
  for i, v in ipairs(values) do
    local kind = type(v)
    if kind ~= "number" and kind ~= "string" and kind ~= "boolean" then
      check.fail(where, string.format("%s[%d] must be a number, string or boolean, got %s", name, i, check.show(v)))
    end
    if kind == "number" and (v ~= v or v == math.huge or v == -math.huge) then check.fail(where, name .. "[" .. i .. "] must be finite") end
  end
  opts = check.options(where, opts or {}, { repeats = true })
  local list = {}
  for i, v in ipairs(values) do list[i] = v end
  self.params[name] = { values = list, repeats = opts.repeats == nil and REPEAT_NAMES[name] or opts.repeats == true }
  table.insert(self.params.order, name)
  return self
end

--- n repetitions of every combination: a parameter "rep" from 1 to n.
function Experiment:repeats(n)
  check.integer("experiment:repeats", "n", n, 1)
  local list = {}
  for i = 1, n do list[i] = i end
  return self:param("rep", list, { repeats = true })
end

--- The trial function: fn(t, p), p the combination's values by name.
function Experiment:trial(fn)
  if type(fn) ~= "function" then check.fail("experiment:trial", "a function(t, p) expected, got " .. check.show(fn)) end
  self.fn = fn
  return self
end

local function value_text(v)
  if math.type(v) == "float" then return string.format("%.12g", v) end
  return tostring(v)
end

--- Every combination, in order (the first parameter varies slowest): {index=, params=, label=,
-- key=, file=}.
function Experiment:combinations(params)
  params = params or self.params
  local out = { {} }
  for _, name in ipairs(params.order) do
    local next_out = {}
    for _, partial in ipairs(out) do
      for _, v in ipairs(params[name].values) do
        local p = {}
        for k, x in pairs(partial) do p[k] = x end
        p[name] = v
        next_out[#next_out + 1] = p
      end
    end
    out = next_out
  end
  local width = #tostring(#out)
  for i, p in ipairs(out) do
    local parts = {}
    for _, name in ipairs(params.order) do parts[#parts + 1] = name .. "=" .. value_text(p[name]) end
    local label = #parts > 0 and table.concat(parts, " ") or "trial"
    out[i] = { index = i, params = p, label = label,
      key = sys.sha256_string(self.file_hash .. "\n" .. json.encode(p)):sub(1, 20),
      file = string.format("%0" .. width .. "d_%s", i, (label:gsub("[^%w%.=_-]+", "_"))) }
  end
  return out
end

-- MARK: one trial

-- The prefix of a trial's ids: the experiment's name and the trial's number.
local function prefix_of(self, combo)
  local base = self.name:sub(1, 24):gsub("[^%w_.-]", "-")
  return base .. "-" .. combo.index
end

local function message_of(err)
  if errors.is(err) then return err.message .. (err.where and (" (" .. err.where .. ")") or "") end
  if type(err) == "table" and err.message then return tostring(err.message) end
  return tostring(err)
end

-- Runs one combination in this process. Returns its record (and the error object, for tests).
local function run_one(self, combo, log_dir)
  local t = trial.new({ label = combo.label, prefix = prefix_of(self, combo), params = combo.params, index = combo.index, seed = self.seed,
    log_dir = log_dir })
  math.randomseed(self.seed + combo.index)
  local p = {}
  for k, v in pairs(combo.params) do p[k] = v end
  local traceback
  local ok, err = xpcall(self.fn, function(e)
    traceback = debug.traceback(message_of(e), 2)
    return e
  end, t, p)
  local okc, errc = pcall(t.close, t)
  if ok and not okc then ok, err = false, errc end
  local rec = { trial = combo.index, label = combo.label, key = combo.key, params = combo.params, values = t.values,
    status = ok and "ok" or "error", error = not ok and message_of(err) or nil, traceback = not ok and traceback or nil,
    duration = t.duration, started = t.started, events = t.events }
  return rec, t, not ok and err or nil
end

-- MARK: records

local function load_records(path)
  local out = {}
  local text = fs.read_if_exists(path)
  if not text then return out end
  for line in text:gmatch("[^\n]+") do
    local ok, rec = pcall(json.decode, line)
    if ok and type(rec) == "table" and rec.key then out[rec.key] = rec end  -- a torn last line is skipped
  end
  return out
end

local function append_record(path, rec)
  local f = assert(io.open(path, "a"))
  f:write(json.encode(rec), "\n")
  f:close()
end

-- MARK: progress

local function clock(seconds)
  seconds = math.floor(seconds + 0.5)
  if seconds >= 3600 then return string.format("%d:%02d:%02d", seconds // 3600, seconds % 3600 // 60, seconds % 60) end
  return string.format("%d:%02d", seconds // 60, seconds % 60)
end

local function progress(total, quiet)
  local tty = sys.isatty(2) and os.getenv("TERM") ~= "dumb"
  local p = { done = 0, failed = 0, running = 0, total = total, started = loop.now(), durations = {} }
  function p.line(jobs)
    local eta = ""
    if #p.durations > 0 and p.done < p.total then
      local sum = 0
      for _, d in ipairs(p.durations) do sum = sum + d end
      eta = ", ETA " .. clock((sum / #p.durations) * (p.total - p.done) / math.max(1, math.min(jobs, p.total - p.done)))
    end
    return string.format("%d/%d done, %d running, %d failed%s", p.done, p.total, p.running, p.failed, eta)
  end
  function p.show(jobs)
    if tty and not quiet then io.stderr:write("\r\27[K", p.line(jobs)) io.stderr:flush() end
  end
  function p.ended(rec, jobs)
    p.done = p.done + 1
    if rec.status ~= "ok" then p.failed = p.failed + 1 end
    p.durations[#p.durations + 1] = rec.duration or 0
    if quiet then return end
    local text = string.format("trial %d/%d %s: %s (%.1f s)%s", p.done, p.total, rec.label, rec.status, rec.duration or 0,
      rec.error and (": " .. rec.error:gsub("\n.*", "")) or "")
    if tty then io.stderr:write("\r\27[K", text, "\n") p.show(jobs) else io.stderr:write(text, "\n") end
    io.stderr:flush()
  end
  function p.finish()
    if tty and not quiet then io.stderr:write("\r\27[K") io.stderr:flush() end
  end
  return p
end

-- MARK: running

local function merged_options(self, opts)
  opts = check.options("experiment:run", opts or {}, { jobs = true, out = true, only = true, fresh = true, retry = true, quiet = true, params = true })
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  for k, v in pairs(experiment.cli or {}) do if v ~= nil then o[k] = v end end
  if o.jobs ~= nil then check.integer("experiment:run", "jobs", o.jobs, 1, 1024) end
  o.jobs = o.jobs or self.jobs or cpu_count()
  o.out = o.out or self.out
  -- absolute: container specs (log files) and workers need it whatever their working folder
  if o.out:sub(1, 1) ~= "/" then o.out = sys.getcwd() .. "/" .. o.out end
  if o.only ~= nil then check.string("experiment:run", "only", o.only) end
  return o
end

-- Parameters with the command line's --param overrides.
local function effective_params(self, overrides)
  if not overrides then return self.params end
  local params = { order = self.params.order }
  for _, name in ipairs(self.params.order) do params[name] = self.params[name] end
  for name, values in pairs(overrides) do
    if not self.params[name] then
      local known = table.concat(self.params.order, ", ")
      check.fail("experiment " .. self.name, "--param " .. name .. ": no such parameter (known: " .. (known ~= "" and known or "none") .. ")")
    end
    params[name] = { values = values, repeats = self.params[name].repeats }
  end
  return params
end

local function machine_meta(self, o)
  local uname = fs.read_if_exists("/proc/sys/kernel/osrelease") or "?"
  return {
    name = self.name, moonbox = _VERSION, kernel = (uname:gsub("%s+$", "")), cpus = cpu_count(),
    cgroup = "v" .. tostring(sys.cgroup_version()), seed = self.seed, started = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    file = self.file, file_sha256 = self.file_hash, jobs = o.jobs, params = (function()
      local p = {}
      for _, n in ipairs(self.params.order) do p[n] = self.params[n].values end
      return p
    end)(),
  }
end

-- Writes results.csv, report.html and meta.json from the records of the current combinations.
local function write_outputs(self, out, combos, records, params, meta)
  local list = {}
  local series = {}
  for _, c in ipairs(combos) do
    local rec = records[c.key]
    if rec then
      list[#list + 1] = rec
      local text = fs.read_if_exists(out .. "/series/" .. c.file .. ".csv")
      local rows, markers = {}, {}
      if text then
        local _, parsed = report.parse_csv(text)
        for _, r in ipairs(parsed) do
          if r.event then markers[#markers + 1] = { x = r.t, label = r.event } else rows[#rows + 1] = r end
        end
      end
      series[rec.label] = { rows = rows, markers = markers }
    end
  end
  fs.write_atomic(out .. "/results.csv", report.results_csv(list, params.order))
  fs.write_atomic(out .. "/report.html", report.html({ name = self.name, records = list, params = params, meta = meta, series = series }))
  fs.write_atomic(out .. "/meta.json", json.encode(meta, { indent = "  " }) .. "\n")
  return list
end

-- Runs combos in worker processes, `jobs` at a time; on_end(rec) as each ends.
local function run_workers(self, combos, o, out, on_end, prog)
  local queue = {}
  for i = #combos, 1, -1 do queue[#queue + 1] = combos[i] end
  local running = {}  -- pid -> {combo=, r=, chunks=}
  local count = 0
  local token = cleanup.add(function()
    -- Ctrl-C, SIGTERM: every worker cleans up its own trial (containers, networks) and ends.
    for pid in pairs(running) do sys.kill(pid, "TERM") end
    for pid in pairs(running) do sys.wait(pid) end
  end, "experiment " .. self.name .. " workers")
  local parent = sys.getpid()
  local function spawn(combo)
    local r, w = assert(sys.pipe())
    local pid, msg = sys.fork()
    if not pid then r:close() w:close() errors.raise("experiment: fork: " .. msg, { op = "fork" }, 0) end
    if pid == 0 then
      process.child(function()
        r:close()
        cleanup.adopt()
        -- moonbox killed outright: the worker still cleans up its trial (TERM runs its cleanup)
        sys.prctl("set_pdeathsig", "TERM")
        if sys.getppid() ~= parent then sys.kill(sys.getpid(), "TERM") end
        local log_dir = out .. "/logs/" .. combo.file
        if not sys.lstat(log_dir) then errors.check({ op = "mkdir" }, sys.mkdir(log_dir, tonumber("755", 8))) end
        local rec, t = run_one(self, combo, log_dir)
        if #t.rows > 0 or #t.events > 0 then
          fs.write(out .. "/series/" .. combo.file .. ".csv", report.series_csv(t.rows, t.events))
          rec.series = "series/" .. combo.file .. ".csv"
        end
        local data = json.encode(rec)
        local at = 1
        while at <= #data do
          local n = sys.write(w, data:sub(at, at + 65535))
          if not n then break end
          at = at + n
        end
        w:close()
      end)
    end
    w:close()
    running[pid] = { combo = combo, r = r, chunks = {}, started = loop.now() }
    count = count + 1
    prog.running = count
  end
  while #queue > 0 or count > 0 do
    while #queue > 0 and count < o.jobs do spawn(table.remove(queue)) end
    prog.show(o.jobs)
    local fds, by_fd = {}, {}
    for pid, job in pairs(running) do fds[#fds + 1] = job.r by_fd[job.r] = pid end
    local ready = loop.poll(fds, loop.now() + 1) or {}
    for _, fd in ipairs(ready) do
      local pid = by_fd[fd]
      local job = running[pid]
      local chunk = sys.read(fd, 65536)
      if chunk and chunk ~= "" then
        job.chunks[#job.chunks + 1] = chunk
      else
        job.r:close()
        local st = sys.wait(pid)
        running[pid] = nil
        count = count - 1
        prog.running = count
        local ok, rec = pcall(json.decode, table.concat(job.chunks))
        if not ok or type(rec) ~= "table" then
          local how = st.signal_name and ("signal " .. st.signal_name) or ("exit " .. tostring(st.code))
          rec = { trial = job.combo.index, label = job.combo.label, key = job.combo.key, params = job.combo.params, values = {},
            status = "error", error = "the trial's worker died (" .. how .. ")", duration = loop.now() - job.started, events = {} }
        end
        on_end(rec)
        prog.ended(rec, o.jobs)
      end
    end
  end
  cleanup.remove(token)
end

--- Runs every combination not yet recorded. opts (the command line's win): jobs (default: the
-- CPUs), out, only (a Lua pattern on the trial's label, "loss=0.1 rep=2"), fresh (rerun all),
-- retry (rerun the trials recorded as errors), quiet, params (name -> values, overriding the
-- grid). Returns {total=, ran=, skipped=, ok=, failed=, out=, records=}.
function Experiment:run(opts)
  if not self.fn then check.fail("experiment " .. self.name, "no trial function (e:trial(function(t, p) ... end))") end
  self.ran = true
  if experiment.test_api then return self:_as_tests(experiment.test_api) end
  local o = merged_options(self, opts)
  local params = effective_params(self, o.params)
  local combos = self:combinations(params)
  local out = o.out
  errors.check({ op = "mkdir" }, sys.mkdir(out, tonumber("755", 8)))
  errors.check({ op = "mkdir" }, sys.mkdir(out .. "/series", tonumber("755", 8)))
  errors.check({ op = "mkdir" }, sys.mkdir(out .. "/logs", tonumber("755", 8)))
  local results_path = out .. "/results.jsonl"
  local current = {}
  for _, c in ipairs(combos) do current[c.key] = c end
  local records = o.fresh and {} or load_records(results_path)
  -- Only this grid's and this file's lines stay (a changed file makes every key new).
  local kept = {}
  for key, rec in pairs(records) do if current[key] and not (o.retry and rec.status ~= "ok") then kept[key] = rec end end
  records = kept
  local lines = {}
  for _, c in ipairs(combos) do if records[c.key] then lines[#lines + 1] = json.encode(records[c.key]) end end
  fs.write_atomic(results_path, #lines > 0 and (table.concat(lines, "\n") .. "\n") or "")
  local pending, skipped = {}, 0
  for _, c in ipairs(combos) do
    if records[c.key] then
      skipped = skipped + 1
    elseif not o.only or c.label:find(o.only) then
      pending[#pending + 1] = c
    end
  end
  local meta = machine_meta(self, o)
  fs.write_atomic(out .. "/meta.json", json.encode(meta, { indent = "  " }) .. "\n")
  local prog = progress(#pending, o.quiet)
  if not o.quiet and skipped > 0 then
    io.stderr:write(string.format("experiment %s: %d of %d trials already recorded in %s (--fresh reruns them)\n", self.name, skipped, #combos, results_path))
  end
  local ok_count, failed = 0, 0
  run_workers(self, pending, o, out, function(rec)
    records[rec.key] = rec
    append_record(results_path, rec)
    if rec.status == "ok" then ok_count = ok_count + 1 else failed = failed + 1 end
  end, prog)
  prog.finish()
  meta.finished = os.date("!%Y-%m-%dT%H:%M:%SZ")
  meta.elapsed = loop.now() - prog.started
  local list = write_outputs(self, out, combos, records, params, meta)
  if not o.quiet then
    io.stderr:write(string.format("experiment %s: %d trials run (%d ok, %d failed), %d skipped; report: %s/report.html\n",
      self.name, #pending, ok_count, failed, skipped, out))
  end
  return { total = #combos, ran = #pending, skipped = skipped, ok = ok_count, failed = failed, out = out, records = list }
end

-- Under `moonbox test`: each combination is a test, run in this process, where expect works.
function Experiment:_as_tests(api)
  local combos = self:combinations(effective_params(self, experiment.cli and experiment.cli.params))
  api.describe(self.name, function()
    for _, c in ipairs(combos) do
      api.it(c.label, function()
        local _, _, err = run_one(self, c)
        if err ~= nil then error(err, 0) end
      end)
    end
  end)
  return { total = #combos, tests = true }
end

--- One trial outside any grid, for a *_test.lua scenario: the same `t`, closed with <close>.
-- o: a name (string) or {name=}.
local scenarios = 0
function experiment.scenario(o)
  local name = type(o) == "table" and o.name or o or "scenario"
  check.name("experiment.scenario", "name", name)
  scenarios = scenarios + 1
  return trial.new({ label = name, prefix = string.format("%s-%d-%d", name:sub(1, 16), sys.getpid(), scenarios), params = {}, index = 1, seed = 1 })
end

-- MARK: the command line

local function parse_value(text)
  if text == "true" then return true end
  if text == "false" then return false end
  return math.tointeger(tonumber(text)) or tonumber(text) or text
end

--- `moonbox experiment FILE.lua [--param NAME=V1,V2]... [--jobs N] [--out DIR] [--only PATTERN]
-- [--resume] [--fresh] [--retry] [--quiet] [-- ARG...]`
function experiment.main(args)
  local cli = require "moonbox.cli"
  local o = cli.parse("experiment", args, {
    usage = "moonbox experiment FILE.lua [--param NAME=V1,V2]... [--jobs N] [--out DIR] [--only PATTERN] [--resume] [--fresh] [--retry]",
    about = "Runs an experiment file's trials (each combination of its parameters) in parallel, records\n"
      .. "each as it ends, skips what is already recorded, and writes the report.",
    positional = { "FILE" },
    command = true,
    options = {
      { "--param", "-p", kind = "list", metavar = "NAME=V1,V2", help = "the values of a parameter (replaces the file's)" },
      { "--jobs", "-j", kind = "integer", min = 1, max = 1024, help = "trials at once (default: the CPUs)" },
      { "--out", "-o", kind = "string", metavar = "DIR", help = "the output folder (default: the file's out)" },
      { "--only", kind = "string", metavar = "PATTERN", help = "only trials whose label (\"loss=0.1 rep=2\") matches (a Lua pattern)" },
      { "--resume", kind = "flag", help = "skip the trials already recorded (the default)" },
      { "--fresh", kind = "flag", help = "rerun every trial" },
      { "--retry", kind = "flag", help = "rerun the trials recorded as errors" },
      { "--quiet", "-q", kind = "flag", help = "no progress output" },
    },
  })
  local summary = {}
  cli.main("experiment", function()
    if o.fresh and o.resume then check.fail("moonbox experiment", "--fresh and --resume contradict each other") end
    local overrides
    for _, p in ipairs(o.param or {}) do
      local name, list = p:match("^([%w_.-]+)=(.*)$")
      if not name or list == "" then check.fail("moonbox experiment", "--param must be NAME=V1,V2,..., got " .. string.format("%q", p)) end
      overrides = overrides or {}
      local values = {}
      for v in (list .. ","):gmatch("([^,]*),") do
        if v == "" then check.fail("moonbox experiment", "--param " .. name .. ": an empty value") end
        values[#values + 1] = parse_value(v)
      end
      overrides[name] = values
    end
    experiment.cli = { params = overrides, jobs = o.jobs, out = o.out, only = o.only, fresh = o.fresh or nil, retry = o.retry or nil, quiet = o.quiet or nil }
    local file = o.args[1]
    local chunk, err = loadfile(file)
    if not chunk then errors.raise(err, { code = 2 }, 0) end
    _G.arg = { [0] = file, table.unpack(o.command or {}) }
    chunk(table.unpack(o.command or {}))
    local any = false
    for _, e in ipairs(made) do
      any = true
      -- an experiment the file defined but did not run, runs now
      if not e.ran and e.fn then summary[#summary + 1] = e:run() end
    end
    if not any then check.fail("moonbox experiment", file .. " defines no experiment (experiment.new{...})") end
  end, 1, 2)
  os.exit(0)
end

return experiment
