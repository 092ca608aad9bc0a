-- moonbox.json: JSON encode and decode for results, OCI configs and seccomp profiles.
-- Objects are Lua tables with string keys; arrays are sequences. json.null stands for null.
local json = {}

json.null = setmetatable({}, { __tostring = function() return "null" end, __name = "json.null" })

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true, n
end

local function encode(value, indent, depth, seen, out)
  local kind = type(value)
  if value == nil or value == json.null then
    out[#out + 1] = "null"
  elseif kind == "boolean" then
    out[#out + 1] = tostring(value)
  elseif kind == "number" then
    if value ~= value or value == math.huge or value == -math.huge then
      error("json.encode: cannot encode " .. tostring(value), 0)
    end
    out[#out + 1] = math.type(value) == "integer" and tostring(value) or string.format("%.17g", value)
  elseif kind == "string" then
    out[#out + 1] = encode_string(value)
  elseif kind == "table" then
    if seen[value] then error("json.encode: a table contains itself", 0) end
    seen[value] = true
    local pad = indent and ("\n" .. string.rep(indent, depth + 1)) or ""
    local close = indent and ("\n" .. string.rep(indent, depth)) or ""
    local colon = indent and ": " or ":"
    local array, n = is_array(value)
    if array and (n > 0 or getmetatable(value) ~= json.object_mt) then
      if n == 0 then
        out[#out + 1] = "[]"
      else
        out[#out + 1] = "["
        for i = 1, n do
          out[#out + 1] = (i > 1 and "," or "") .. pad
          encode(value[i], indent, depth + 1, seen, out)
        end
        out[#out + 1] = close .. "]"
      end
    else
      local keys = {}
      for k in pairs(value) do
        if type(k) ~= "string" then
          error("json.encode: object keys must be strings, got " .. type(k), 0)
        end
        keys[#keys + 1] = k
      end
      table.sort(keys)
      if #keys == 0 then
        out[#out + 1] = "{}"
      else
        out[#out + 1] = "{"
        for i, k in ipairs(keys) do
          out[#out + 1] = (i > 1 and "," or "") .. pad .. encode_string(k) .. colon
          encode(value[k], indent, depth + 1, seen, out)
        end
        out[#out + 1] = close .. "}"
      end
    end
    seen[value] = nil
  else
    error("json.encode: cannot encode a " .. kind, 0)
  end
end

-- Tables with this metatable encode as objects even when empty.
json.object_mt = { __name = "json.object" }
function json.object(t) return setmetatable(t or {}, json.object_mt) end

--- json.encode(value [, {indent = "  "}]) -> string. Keys are sorted, so output is stable.
function json.encode(value, options)
  local out = {}
  encode(value, options and options.indent, 0, {}, out)
  return table.concat(out)
end

local function decode_error(s, pos, what)
  local line = select(2, s:sub(1, pos):gsub("\n", "")) + 1
  error(string.format("json.decode: %s at line %d (byte %d)", what, line, pos), 0)
end

local function skip(s, pos)
  return s:find("[^ \t\r\n]", pos) or #s + 1
end

local decode_value

local function decode_string(s, pos)
  local parts = {}
  local i = pos + 1
  while true do
    local j = s:find('["\\%c]', i)
    if not j then decode_error(s, pos, "unterminated string") end
    parts[#parts + 1] = s:sub(i, j - 1)
    local c = s:sub(j, j)
    if c == '"' then return table.concat(parts), j + 1 end
    if c ~= "\\" then decode_error(s, j, "control character in string") end
    local e = s:sub(j + 1, j + 1)
    local simple = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
    if simple[e] then
      parts[#parts + 1] = simple[e]
      i = j + 2
    elseif e == "u" then
      local hex = s:match("^%x%x%x%x", j + 2)
      if not hex then decode_error(s, j, "bad \\u escape") end
      local code = tonumber(hex, 16)
      i = j + 6
      if code >= 0xD800 and code <= 0xDBFF then
        local low = s:match("^\\u(%x%x%x%x)", i)
        if low then
          code = 0x10000 + (code - 0xD800) * 0x400 + (tonumber(low, 16) - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8.char(code)
    else
      decode_error(s, j, "bad escape \\" .. e)
    end
  end
end

function decode_value(s, pos, depth)
  if depth > 512 then decode_error(s, pos, "nesting too deep") end
  pos = skip(s, pos)
  local c = s:sub(pos, pos)
  if c == "{" then
    local obj = json.object({})
    pos = skip(s, pos + 1)
    if s:sub(pos, pos) == "}" then return obj, pos + 1 end
    while true do
      pos = skip(s, pos)
      if s:sub(pos, pos) ~= '"' then decode_error(s, pos, "expected a string key") end
      local key
      key, pos = decode_string(s, pos)
      pos = skip(s, pos)
      if s:sub(pos, pos) ~= ":" then decode_error(s, pos, "expected ':'") end
      obj[key], pos = decode_value(s, pos + 1, depth + 1)
      pos = skip(s, pos)
      local d = s:sub(pos, pos)
      if d == "}" then return obj, pos + 1 end
      if d ~= "," then decode_error(s, pos, "expected ',' or '}'") end
      pos = pos + 1
    end
  elseif c == "[" then
    local arr = {}
    pos = skip(s, pos + 1)
    if s:sub(pos, pos) == "]" then return arr, pos + 1 end
    while true do
      arr[#arr + 1], pos = decode_value(s, pos, depth + 1)
      pos = skip(s, pos)
      local d = s:sub(pos, pos)
      if d == "]" then return arr, pos + 1 end
      if d ~= "," then decode_error(s, pos, "expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == '"' then
    return decode_string(s, pos)
  elseif s:find("^true", pos) then
    return true, pos + 4
  elseif s:find("^false", pos) then
    return false, pos + 5
  elseif s:find("^null", pos) then
    return json.null, pos + 4
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not num or num == "" or num == "-" then decode_error(s, pos, "unexpected character '" .. c .. "'") end
    local n = math.tointeger(tonumber(num)) or tonumber(num)
    if not n then decode_error(s, pos, "bad number '" .. num .. "'") end
    return n, pos + #num
  end
end

--- json.decode(text) -> value. Errors name the line and byte.
function json.decode(text)
  if type(text) ~= "string" then error("json.decode: string expected, got " .. type(text), 2) end
  local value, pos = decode_value(text, 1, 0)
  pos = skip(text, pos)
  if pos <= #text then decode_error(text, pos, "trailing characters") end
  return value
end

return json
