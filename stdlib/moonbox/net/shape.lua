-- moonbox.net.shape: link faults as values. A shape is what one direction of a link does to
-- the frames it carries: delay, jitter, loss, duplicate, reorder, corrupt, rate, limit (and
-- netem's correlations). shape.parse checks what a script wrote; shape.qdisc turns one
-- direction into the qdisc the kernel applies (tbf for a rate alone, netem otherwise).
local check = require "moonbox.check"

local shape = {}

-- Keys of one direction, with their kind.
local KEYS = {
  delay = "duration", jitter = "duration", rate = "rate", limit = "count",
  loss = "probability", duplicate = "probability", reorder = "probability", corrupt = "probability",
  delay_correlation = "probability", loss_correlation = "probability", duplicate_correlation = "probability",
  reorder_correlation = "probability", corrupt_correlation = "probability",
}
shape.KEYS = KEYS
-- Keys only netem has; the relay refuses them rather than ignore them.
shape.NETEM_ONLY = { delay_correlation = true, loss_correlation = true, duplicate_correlation = true,
  reorder_correlation = true, corrupt_correlation = true }

local DURATION_UNITS = { s = 1, ms = 1e-3, us = 1e-6, ["µs"] = 1e-6, ns = 1e-9, m = 60 }
local RATE_UNITS = { bit = 1, kbit = 1e3, mbit = 1e6, gbit = 1e9, tbit = 1e12,
  kibit = 1024, mibit = 1024 ^ 2, gibit = 1024 ^ 3 }

--- Seconds from "50ms", "1.5s", "200us", or a number of seconds.
function shape.duration(where, name, v)
  if type(v) == "number" then return check.number(where, name, v, 0, 3600) end
  if type(v) == "string" then
    local n, unit = v:match("^%s*([%d.]+)%s*(%a*)%s*$")
    local f = DURATION_UNITS[unit and unit:lower() or ""]
    if n and tonumber(n) and f then return check.number(where, name, tonumber(n) * f, 0, 3600) end
  end
  check.fail(where, string.format("%s must be a duration like \"50ms\" or a number of seconds, got %s", name, check.show(v)))
end

--- Bits per second from "10mbit", "1gbit", "512kbit", or a number of bits per second.
function shape.rate(where, name, v)
  if type(v) == "number" then return check.number(where, name, v, 0, 1e13, true) end
  if type(v) == "string" then
    local n, unit = v:match("^%s*([%d.]+)%s*(%a*)%s*$")
    local f = RATE_UNITS[unit and unit:lower() or ""]
    if n and tonumber(n) and f then return check.number(where, name, tonumber(n) * f, 0, 1e13, true) end
  end
  check.fail(where, string.format("%s must be a rate like \"10mbit\", \"1gbit\" or a number of bits per second, got %s",
    name, check.show(v)))
end

--- A probability from 0.1, or "10%".
function shape.probability(where, name, v)
  if type(v) == "string" then
    local n = v:match("^%s*([%d.]+)%s*%%%s*$")
    if n and tonumber(n) then return check.number(where, name, tonumber(n) / 100, 0, 1) end
  end
  if type(v) == "number" then return check.number(where, name, v, 0, 1) end
  check.fail(where, string.format("%s must be a probability from 0 to 1 or a percentage like \"10%%\", got %s", name, check.show(v)))
end

-- One direction's table: every key checked; 0 or false clears a key (for set's "only what is
-- named"), kept as false so a merge removes it.
local function direction(where, t)
  if type(t) ~= "table" then check.fail(where, "a table of link faults expected, got " .. check.show(t)) end
  local out = {}
  for k, v in pairs(t) do
    local kind = KEYS[k]
    if not kind then
      local names = {}
      for n in pairs(KEYS) do names[#names + 1] = n end
      table.sort(names)
      check.fail(where, string.format("unknown link fault '%s' (known: %s)", tostring(k), table.concat(names, ", ")))
    end
    if v == false or v == 0 then
      out[k] = false
    elseif kind == "duration" then
      out[k] = shape.duration(where, k, v)
    elseif kind == "rate" then
      out[k] = shape.rate(where, k, v)
    elseif kind == "probability" then
      out[k] = shape.probability(where, k, v)
    else
      out[k] = check.integer(where, k, v, 1, 1 << 24)
    end
  end
  return out
end

--- Checks a shape as scripts write it: one direction's keys (for both directions), or
-- {egress = {...}, ingress = {...}}, with engine = "auto" | "kernel" | "relay", filter =
-- function(frame, direction), seed = integer (the relay's random numbers). Returns
-- {egress=, ingress=, engine=, filter=, seed=}.
function shape.parse(where, spec)
  if spec == nil then spec = {} end
  if type(spec) ~= "table" then check.fail(where, "link faults must be a table, got " .. check.show(spec)) end
  local out = { engine = spec.engine, filter = spec.filter, seed = spec.seed }
  if out.engine ~= nil then check.one_of(where, "engine", out.engine, { "auto", "kernel", "relay" }) end
  if out.filter ~= nil and type(out.filter) ~= "function" then
    check.fail(where, "filter must be a function(frame, direction), got " .. check.show(out.filter))
  end
  if out.seed ~= nil then check.integer(where, "seed", out.seed) end
  local both = {}
  for k, v in pairs(spec) do
    if k ~= "engine" and k ~= "filter" and k ~= "seed" and k ~= "egress" and k ~= "ingress" then both[k] = v end
  end
  if (spec.egress or spec.ingress) and next(both) then
    check.fail(where, "give link faults for both directions, or egress = {...} and ingress = {...}, not both")
  end
  if spec.egress or spec.ingress then
    out.egress = direction(where .. " egress", spec.egress or {})
    out.ingress = direction(where .. " ingress", spec.ingress or {})
  else
    out.egress = direction(where, both)
    out.ingress = direction(where, both)
  end
  return out
end

--- Checks one direction as it will be applied (after a merge).
function shape.validate(where, p)
  if p.reorder and not p.delay then check.fail(where, "reorder needs a delay (the frames not reordered are the delayed ones)") end
  if p.jitter and not p.delay then check.fail(where, "jitter needs a delay") end
  return p
end

--- `current` with `change` applied: keys in change replace, false removes.
function shape.merge(current, change)
  local out = {}
  for k, v in pairs(current or {}) do out[k] = v end
  for k, v in pairs(change or {}) do
    if v == false then out[k] = nil else out[k] = v end
  end
  return out
end

--- Whether a direction does nothing.
function shape.empty(p) return next(p) == nil end

--- Whether only the kernel's tbf is needed (a rate, perhaps a queue limit).
function shape.rate_only(p)
  for k in pairs(p) do if k ~= "rate" and k ~= "limit" then return false end end
  return p.rate ~= nil
end

--- The qdisc (for moonbox.sys netlink:qdisc_replace) of one direction.
function shape.qdisc(p)
  if shape.rate_only(p) then
    return { kind = "tbf", rate = p.rate, latency = 0.05 }
  end
  local q = { kind = "netem" }
  for k, v in pairs(p) do q[k] = v end
  return q
end

--- Text for reports: "delay 50ms, loss 10%".
function shape.describe(p)
  local parts = {}
  local keys = {}
  for k in pairs(p) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v, kind = p[k], KEYS[k]
    if kind == "duration" then
      parts[#parts + 1] = string.format("%s %gms", k, v * 1000)
    elseif kind == "rate" then
      parts[#parts + 1] = string.format("%s %gmbit", k, v / 1e6)
    elseif kind == "probability" then
      parts[#parts + 1] = string.format("%s %g%%", k, v * 100)
    else
      parts[#parts + 1] = k .. " " .. tostring(v)
    end
  end
  return table.concat(parts, ", ")
end

return shape
