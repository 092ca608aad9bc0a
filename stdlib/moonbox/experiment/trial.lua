-- moonbox.experiment.trial: one run of one combination of parameters (the `t` a trial function
-- gets, and what experiment.scenario returns). It owns what it makes: networks, containers,
-- samplers and timed faults all go when it closes, whatever ended it.
--
-- Names are the trial's own: t:container{name = "srv"} runs as PREFIX-srv, with hostname srv
-- and the alias srv on the trial's networks, and lab:shape("srv") finds it. Parallel trials
-- with the same names never meet: each network is a namespace of its own, and each id carries
-- the trial's prefix.
local sys = require "moonbox.sys"
local check = require "moonbox.check"
local errors = require "moonbox.errors"
local loop = require "moonbox.loop"
local events = require "moonbox.events"
local container = require "moonbox.container"

local Trial = { __name = "moonbox.trial" }
Trial.__index = Trial
Trial.__tostring = function(t) return string.format("trial(%s%s)", t.label, t.closed and ", closed" or "") end
Trial.__close = function(t, err) t:close() end
Trial.__gc = function(t) if not t.closed and t.owner == sys.getpid() then pcall(t.close, t) end end

local trial = {}

--- A trial: o = {label=, prefix= (for ids), params=, index=, seed=, log_dir= (where its
-- containers' output goes; without it, they inherit moonbox's)}.
function trial.new(o)
  local self = setmetatable({
    label = o.label, prefix = o.prefix, params = o.params or {}, index = o.index or 1, seed = o.seed, log_dir = o.log_dir,
    values = {}, events = {}, rows = {}, timers = {}, owned = {}, names = {}, networks = {},
    counter = 0, owner = sys.getpid(), t0 = loop.now(), started = os.time(),
  }, Trial)
  self.token = events.subscribe(function(kind, text) self:mark(text, kind) end)
  return self
end

--- Seconds since the trial began (its clock: t:at and the series use it).
function Trial:now() return loop.now() - self.t0 end

--- Puts a marker on the trial's timeline (faults mark themselves).
function Trial:mark(label, kind)
  self.events[#self.events + 1] = { t = self:now(), label = tostring(label), kind = kind or "mark" }
end

--- Records values (numbers, strings, booleans) for this trial's line in the results.
function Trial:record(values)
  if type(values) ~= "table" then check.fail("trial:record", "a table of values expected, got " .. check.show(values)) end
  for k, v in pairs(values) do
    if type(k) ~= "string" then check.fail("trial:record", "keys must be names, got " .. check.show(k)) end
    local kind = type(v)
    if kind ~= "number" and kind ~= "string" and kind ~= "boolean" then
      check.fail("trial:record", k .. " must be a number, string or boolean, got " .. check.show(v))
    end
    if kind == "number" and (v ~= v or v == math.huge or v == -math.huge) then
      check.fail("trial:record", k .. " must be finite, got " .. tostring(v))
    end
    self.values[k] = v
  end
  return self
end

local function own(self, obj)
  self.owned[#self.owned + 1] = obj
  return obj
end

local function full_name(self, short)
  return self.prefix .. "-" .. short
end

--- A network of the trial's own (net.create's options; name defaults to net1, net2...). Its
-- handle's name is the full one; members are found by their short names.
function Trial:network(o)
  o = o or {}
  if type(o) ~= "table" then check.fail("trial:network", "options must be a table, got " .. check.show(o)) end
  local net = require "moonbox.net"
  self.counter = self.counter + 1
  local short = o.name or ("net" .. self.counter)
  check.name("trial:network", "name", short)
  local copy = {}
  for k, v in pairs(o) do copy[k] = v end
  copy.name = full_name(self, short)
  local n = net.create(copy)
  n.names = self.names
  n.short_name = short
  self.networks[short] = n
  return own(self, n)
end

-- A spec with the trial's names: PREFIX-name as the id, the short name as hostname and as an
-- alias on every network it joins.
local function trial_spec(self, s, where)
  if type(s) ~= "table" then check.fail(where, "a container spec table expected, got " .. check.show(s)) end
  local copy = {}
  for k, v in pairs(s) do copy[k] = v end
  self.counter = self.counter + 1
  local short = s.name or ("c" .. self.counter)
  check.name(where, "name", short)
  copy.name = full_name(self, short)
  copy.hostname = s.hostname or short
  if self.log_dir then
    -- an experiment keeps each container's output: logs/TRIAL/NAME.out and .err
    if s.stdout == nil then copy.stdout = self.log_dir .. "/" .. short .. ".out" end
    if s.stderr == nil then copy.stderr = self.log_dir .. "/" .. short .. ".err" end
  end
  if s.networks ~= nil then
    local net = require "moonbox.net"
    local entries = net.check_networks(where, s.networks)
    local map = {}
    for _, e in ipairs(entries) do
      local n = e.network
      if type(n) == "string" and self.networks[n] then n = self.networks[n] end
      local name = type(n) == "table" and n.name or n
      local aliases = { short }
      for _, a in ipairs(e.aliases or {}) do if a ~= short then aliases[#aliases + 1] = a end end
      map[name] = { ip = e.ip, ip6 = e.ip6, aliases = aliases }
    end
    copy.networks = map
  end
  self.names[short] = copy.name
  return copy, short
end

local function start_own(self, s, where)
  local spec, short = trial_spec(self, s, where)
  local c = container.new(spec)
  c.short_name = short
  own(self, c)
  c:start()
  return c
end

--- A container of the trial's own, started (container.new's spec; name is the short name).
function Trial:container(s)
  return start_own(self, s, "trial:container")
end

--- Runs a container of the trial's own to its end (container.run's spec); timed faults and
-- samplers keep firing while it runs. Returns its result.
function Trial:run(s)
  local c = start_own(self, s, "trial:run")
  local r = c:wait()
  c:remove()
  return r
end

local function sum_io(group)
  if not group then return nil end
  local text = sys.cgroup_get(group.name, "io.stat")
  if not text then return nil end
  local rd, wr = 0, 0
  for r in text:gmatch("rbytes=(%d+)") do rd = rd + tonumber(r) end
  for w in text:gmatch("wbytes=(%d+)") do wr = wr + tonumber(w) end
  return rd, wr
end

-- One row of a container's metrics now.
local function sample_row(self, c, last)
  local row = { t = self:now(), container = c.short_name or c.id }
  local st = c:stats()
  row.cpu_seconds = (st.cpu.user or 0) + (st.cpu.sys or 0)
  row.memory_bytes = st.memory
  row.pids = st.pids
  row.io_read_bytes, row.io_write_bytes = sum_io(c.group)
  if last and row.t > last.t then row.cpu_cores = math.max(0, (row.cpu_seconds - last.cpu_seconds) / (row.t - last.t)) end
  local rx, tx, rxp, txp
  for _, att in ipairs(c.net_attachments or {}) do
    local ok, ns = pcall(c.net_stats, c, att.network)
    if ok and ns then
      rx, tx = (rx or 0) + ns.rx_bytes, (tx or 0) + ns.tx_bytes
      rxp, txp = (rxp or 0) + ns.rx_packets, (txp or 0) + ns.tx_packets
    end
  end
  row.rx_bytes, row.tx_bytes, row.rx_packets, row.tx_packets = rx, tx, rxp, txp
  return row
end

--- Samples a container's cpu, memory, pids, io and network counters every opts.every seconds
-- (default 0.5) into the trial's series, from now until it ends or the trial closes.
function Trial:sample(c, opts)
  opts = check.options("trial:sample", opts or {}, { every = true })
  local every = opts.every or 0.5
  check.number("trial:sample", "every", every, 0.001)
  if type(c) ~= "table" or not c.stats then check.fail("trial:sample", "a container expected, got " .. check.show(c)) end
  local last
  local function take()
    if c.state ~= "running" then return false end
    local ok, row = pcall(sample_row, self, c, last)
    if ok then
      self.rows[#self.rows + 1] = row
      last = row
    end
    return true
  end
  take()
  local timer = loop.every(every, take)
  self.timers[#self.timers + 1] = timer
  return timer
end

--- Runs fn at `seconds` on the trial's clock (a fault, usually), while the trial waits for
-- anything. Its label (default: what the fault announces, or "at N s") marks the series; an
-- error in fn fails the trial.
function Trial:at(seconds, fn, label)
  check.number("trial:at", "seconds", seconds, 0)
  if type(fn) ~= "function" then check.fail("trial:at", "a function expected, got " .. check.show(fn)) end
  if label ~= nil then check.string("trial:at", "label", label) end
  local timer = loop.at(self.t0 + seconds, function()
    local before = #self.events
    local at = self:now()
    fn()
    if label or #self.events == before then
      self.events[#self.events + 1] = { t = at, label = label or string.format("at %g s", seconds), kind = "fault", planned = seconds }
    end
    for i = before + 1, #self.events do self.events[i].planned = seconds end
  end)
  self.timers[#self.timers + 1] = timer
  return timer
end

--- Lets the trial's clock run until `seconds` on it (timed faults and samplers fire meanwhile).
function Trial:sleep_until(seconds)
  check.number("trial:sleep_until", "seconds", seconds, 0)
  local left = seconds - self:now()
  if left > 0 then loop.sleep(left) end
end

--- Sleeps `seconds` with the timeline running.
function Trial:sleep(seconds)
  check.number("trial:sleep", "seconds", seconds, 0)
  loop.sleep(seconds)
end

--- Ends the trial: timers stop, containers and networks go (newest first). Errors in the
-- cleanup are raised after everything was tried.
function Trial:close()
  if self.closed then return end
  self.closed = true
  events.unsubscribe(self.token)
  for _, timer in ipairs(self.timers) do timer:cancel() end
  local problems = {}
  for i = #self.owned, 1, -1 do
    local obj = self.owned[i]
    local ok, err = pcall(function()
      if obj.remove and obj.spec then obj:remove() elseif obj.close then obj:close() end
    end)
    if not ok then problems[#problems + 1] = tostring(err) end
  end
  self.owned = {}
  self.duration = self:now()
  if #problems > 0 then errors.raise("trial " .. self.label .. ": cleanup: " .. table.concat(problems, "; "), { op = "trial" }, 2) end
end

trial.Trial = Trial
return trial
