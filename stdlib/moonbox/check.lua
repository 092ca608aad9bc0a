-- moonbox.check: every input the stdlib takes is checked here, with one message shape:
--   "<where>: <name> must be <what>, got <value>"
-- where is the API ("container spec", "sandbox.open", "moonbox box") and name the field or
-- option. Each function returns the value, normalized, or raises a moonbox.error with code 125
-- (a bad input to the runtime).
local sys = require "moonbox.sys"
local errors = require "moonbox.errors"

local check = {}

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" then
    if v ~= v then return "nan" end
    if v == math.huge or v == -math.huge then return v > 0 and "inf" or "-inf" end
  end
  return tostring(v)
end
check.show = show

local function fail(where, name, what, v, extra)
  errors.raise(string.format("%s: %s must be %s, got %s%s", where, name, what, show(v), extra or ""),
    { code = 125, op = "check", field = name }, 3)
end
check.fail = function(where, message)
  errors.raise(where .. ": " .. message, { code = 125, op = "check" }, 2)
end

--- Unknown keys in an options table are refused, naming the known ones.
function check.options(where, opts, allowed)
  if type(opts) ~= "table" then
    errors.raise(string.format("%s: options must be a table, got %s", where, type(opts)), { code = 125, op = "check" }, 2)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      errors.raise(string.format("%s: unknown option '%s' (known: %s)", where, tostring(k), table.concat(names, ", ")),
        { code = 125, op = "check", field = tostring(k) }, 2)
    end
  end
  return opts
end

--- An integer between min and max (inclusive); floats with an integer value are taken.
function check.integer(where, name, v, min, max)
  local n = math.tointeger(v)
  if n == nil or (min and n < min) or (max and n > max) then
    local range = min and max and string.format("from %d to %d", min, max) or min and (">= " .. min) or max and ("<= " .. max) or ""
    fail(where, name, "a whole number " .. range, v)
  end
  return n
end

--- A finite number between min and max; exclusive_min makes min itself refused.
function check.number(where, name, v, min, max, exclusive_min)
  local ok = type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
  if ok and min then ok = exclusive_min and v > min or (not exclusive_min and v >= min) end
  if ok and max then ok = v <= max end
  if not ok then
    local range = (min and ((exclusive_min and "> " or ">= ") .. min) or "") .. (min and max and " and " or "") .. (max and ("<= " .. max) or "")
    fail(where, name, "a finite number " .. range, v)
  end
  return v
end

--- Seconds: a finite number > 0 (at most about 31 years).
function check.seconds(where, name, v)
  return check.number(where, name, v, 0, 1e9, true)
end

--- A size: bytes (a whole number) or a size string ("512M", "1.5G", "64MiB").
function check.size(where, name, v, allow_max)
  if type(v) ~= "string" and math.type(v) ~= "integer" and not (type(v) == "number" and math.tointeger(v)) then
    fail(where, name, "a size like \"512M\" or a number of bytes", v)
  end
  local n, why = sys.parse_size(type(v) == "number" and math.tointeger(v) or v)
  if not n then fail(where, name, "a size like \"512M\" or a number of bytes", v, " (" .. why .. ")") end
  if n < 0 and not allow_max then fail(where, name, "a size (\"max\" is not allowed here)", v) end
  return n
end

function check.boolean(where, name, v)
  if type(v) ~= "boolean" then fail(where, name, "true or false", v) end
  return v
end

--- A string; nonempty unless allowed, never with a NUL byte.
function check.string(where, name, v, allow_empty)
  if type(v) ~= "string" then fail(where, name, "a string", v) end
  if v:find("\0", 1, true) then fail(where, name, "a string without NUL bytes", v) end
  if v == "" and not allow_empty then fail(where, name, "a non-empty string", v) end
  return v
end

--- A non-empty list of strings (argv), none with a NUL byte.
function check.strings(where, name, v, allow_empty)
  if type(v) ~= "table" or (#v == 0 and not allow_empty) then fail(where, name, allow_empty and "a list of strings" or "a non-empty list of strings", v) end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then fail(where, string.format("%s[%d]", name, i), "a string", s) end
    if s:find("\0", 1, true) then fail(where, string.format("%s[%d]", name, i), "a string without NUL bytes", s) end
  end
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then fail(where, name, "a list (no named keys)", k) end
  end
  return v
end

--- One of a set of words.
function check.one_of(where, name, v, words)
  for _, w in ipairs(words) do if v == w then return v end end
  local quoted = {}
  for i, w in ipairs(words) do quoted[i] = string.format("%q", w) end
  fail(where, name, "one of " .. table.concat(quoted, ", "), v)
end

--- An absolute path inside a container or image.
function check.absolute(where, name, v)
  check.string(where, name, v)
  if v:sub(1, 1) ~= "/" then fail(where, name, "an absolute path", v) end
  return v
end

--- A name for a container, box or network: docker's grammar, [a-zA-Z0-9][a-zA-Z0-9_.-]*, at
-- most 128 characters. Such a name is also safe as one path component: never "." or "..".
function check.name(where, name, v)
  if type(v) ~= "string" or #v > 128 or not v:match("^[%w][%w_.-]*$") then
    fail(where, name, "a name of letters, digits, '_', '.' and '-' that starts with a letter or digit (at most 128)", v)
  end
  return v
end

return check
