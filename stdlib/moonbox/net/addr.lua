-- moonbox.net.addr: IPv4 and IPv6 addresses and subnets as values: parsing, the n-th host of
-- a subnet, membership, text. Pure Lua, no system calls.
local addr = {}

local function parse4(s)
  if type(s) ~= "string" then return nil end
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local n = 0
  for _, part in ipairs({ a, b, c, d }) do
    local v = tonumber(part)
    if v > 255 or (#part > 1 and part:sub(1, 1) == "0") then return nil end
    n = n * 256 + v
  end
  return n
end

local function format4(n)
  return string.format("%d.%d.%d.%d", (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)
end

-- IPv6 as 8 groups of 16 bits.
local function parse6(s)
  if type(s) ~= "string" or s:find("[^%x:.]") then return nil end
  local head, tail = s:match("^(.-)::(.*)$")
  local function groups(part)
    local out = {}
    if part == "" then return out end
    for g in (part .. ":"):gmatch("([^:]*):") do
      if g:find("%.") then  -- an IPv4 tail: ::ffff:10.0.0.1
        local v4 = parse4(g)
        if not v4 then return nil end
        out[#out + 1] = v4 >> 16
        out[#out + 1] = v4 & 0xffff
      else
        if #g == 0 or #g > 4 then return nil end
        out[#out + 1] = tonumber(g, 16)
      end
    end
    return out
  end
  local g
  if head then
    local h, t = groups(head), groups(tail)
    if not h or not t or #h + #t > 7 then return nil end
    g = {}
    for _, v in ipairs(h) do g[#g + 1] = v end
    for _ = 1, 8 - #h - #t do g[#g + 1] = 0 end
    for _, v in ipairs(t) do g[#g + 1] = v end
  else
    g = groups(s)
    if not g or #g ~= 8 then return nil end
  end
  return g
end

-- RFC 5952 text: lower case, the longest run of zero groups (two or more) as "::".
local function format6(g)
  local best, best_len, i = nil, 1, 1
  while i <= 8 do
    if g[i] == 0 then
      local j = i
      while j <= 8 and g[j] == 0 do j = j + 1 end
      if j - i > best_len then best, best_len = i, j - i end
      i = j
    else
      i = i + 1
    end
  end
  local parts = {}
  for k = 1, 8 do parts[k] = string.format("%x", g[k]) end
  if not best then return table.concat(parts, ":") end
  local left = table.concat(parts, ":", 1, best - 1)
  local right = best + best_len <= 8 and table.concat(parts, ":", best + best_len, 8) or ""
  return left .. "::" .. right
end

--- The family ("inet" or "inet6") of an address text, or nil when it is none.
function addr.family(s)
  if parse4(s) then return "inet" end
  if parse6(s) then return "inet6" end
  return nil
end

--- The canonical text of an address, or nil.
function addr.normalize(s)
  local v4 = parse4(s)
  if v4 then return format4(v4) end
  local g = parse6(s)
  return g and format6(g) or nil
end

local Subnet = { __name = "moonbox.net.subnet" }
Subnet.__index = Subnet
Subnet.__tostring = function(n) return n.text end

--- A subnet from "10.89.0.0/24" or "fd89::/64"; nil and why when it is not one. Host bits
-- set in the text are refused (10.89.0.1/24 is an address, not a subnet).
function addr.subnet(text)
  if type(text) ~= "string" then return nil, "a subnet like 10.89.0.0/24 expected, got " .. type(text) end
  local base, bits = text:match("^([^/]+)/(%d+)$")
  if not base then return nil, "a subnet like 10.89.0.0/24 or fd89::/64 expected, got " .. text end
  bits = tonumber(bits)
  local v4 = parse4(base)
  if v4 then
    if bits < 8 or bits > 30 then return nil, "subnet " .. text .. ": the prefix must be /8 to /30" end
    local mask = (0xffffffff << (32 - bits)) & 0xffffffff
    if v4 & mask ~= v4 then return nil, "subnet " .. text .. " has host bits set (did you mean " .. format4(v4 & mask) .. "/" .. bits .. "?)" end
    return setmetatable({ family = "inet", base = v4, bits = bits, size = 1 << (32 - bits), text = format4(v4) .. "/" .. bits }, Subnet)
  end
  local g = parse6(base)
  if g then
    if bits < 16 or bits > 120 then return nil, "subnet " .. text .. ": the prefix must be /16 to /120" end
    for k = 1, 8 do
      local keep = math.max(0, math.min(16, bits - (k - 1) * 16))
      local m = keep == 0 and 0 or ((0xffff << (16 - keep)) & 0xffff)
      if g[k] & m ~= g[k] then return nil, "subnet " .. text .. " has host bits set" end
    end
    local host_bits = 128 - bits
    return setmetatable({ family = "inet6", groups = g, bits = bits, size = host_bits >= 62 and (1 << 62) or (1 << host_bits),
      text = format6(g) .. "/" .. bits }, Subnet)
  end
  return nil, "subnet " .. text .. ": not an IPv4 or IPv6 address"
end

--- The n-th address of the subnet (0 is the subnet itself; 1 the gateway by convention), or
-- nil when n is outside it (the IPv4 broadcast address included).
function Subnet:host(n)
  if math.type(n) ~= "integer" or n < 0 or n >= self.size - (self.family == "inet" and 1 or 0) then return nil end
  if self.family == "inet" then return format4(self.base + n) end
  local g = {}
  for k = 1, 8 do g[k] = self.groups[k] end
  local k, carry = 8, n
  while carry > 0 and k >= 1 do
    local v = g[k] + (carry & 0xffff)
    carry = (carry >> 16) + (v >> 16)
    g[k] = v & 0xffff
    k = k - 1
  end
  return format6(g)
end

--- The index of `address` in the subnet (the n of host(n)), or nil when it lies outside.
function Subnet:index(address)
  if self.family == "inet" then
    local v = parse4(address)
    if not v or v < self.base or v >= self.base + self.size then return nil end
    return v - self.base
  end
  local g = parse6(address)
  if not g then return nil end
  local n = 0
  for k = 1, 8 do
    local keep = math.max(0, math.min(16, self.bits - (k - 1) * 16))
    local m = keep == 0 and 0 or ((0xffff << (16 - keep)) & 0xffff)
    if g[k] & m ~= self.groups[k] then return nil end
    if k >= 5 then n = (n << 16) | (g[k] & ~m & 0xffff) end
  end
  return n
end

--- "ADDRESS/BITS" for an address of this subnet.
function Subnet:cidr(address) return address .. "/" .. self.bits end

return addr
