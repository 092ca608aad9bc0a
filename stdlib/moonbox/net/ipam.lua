-- moonbox.net.ipam: addresses handed out from a network's subnets. A lease is a file named
-- after the address in the network's state folder (leases/), made exclusively (state.claim),
-- so an address is never handed out twice, even by two moonbox processes at once. It names
-- the member and the process that holds it; a lease whose process is gone is stale, and gc
-- (or the next allocation that needs it) reclaims it.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local state = require "moonbox.state"
local errors = require "moonbox.errors"

local ipam = {}

local function lease_path(dir, address) return dir .. "/leases/" .. address end

--- The lease of `address`, or nil: {member=, owner=, owner_start=, alive=}.
function ipam.holder(dir, address)
  local text = fs.read_if_exists(lease_path(dir, address))
  if not text then return nil end
  local ok, data = pcall(json.decode, text)
  if not ok or type(data) ~= "table" then return { broken = true, alive = false } end
  data.alive = state.alive(data.owner, data.owner_start)
  return data
end

-- Claims one address; a stale lease on it is reclaimed once.
local function claim(dir, address, member)
  local pid, start = state.me()
  local data = { member = member, owner = pid, owner_start = start }
  for _ = 1, 2 do
    local ok, msg, errno = state.claim(lease_path(dir, address), data)
    if ok then return true end
    if errno ~= "EEXIST" then return nil, msg end
    local h = ipam.holder(dir, address)
    if h and h.alive then return nil, "in use by " .. tostring(h.member) end
    sys.unlink(lease_path(dir, address))
  end
  return nil, "in use"
end

--- Leases addresses for `member` on a network whose subnets are `subnets` ({inet=, inet6=},
-- moonbox.net.addr subnets). want.ip and want.ip6 ask for given addresses; otherwise the
-- lowest free host from 2 up (1 is the gateway) is taken, with the same host number in both
-- families where it is free. Returns {ip=, ip6=}; raises with the reason otherwise.
function ipam.allocate(dir, subnets, want, member)
  sys.mkdir(dir .. "/leases", tonumber("700", 8))
  local got = {}
  local function undo()
    if got.ip then ipam.release(dir, got.ip) end
    if got.ip6 then ipam.release(dir, got.ip6) end
  end
  for _, f in ipairs({ { "ip", "inet" }, { "ip6", "inet6" } }) do
    local key, family = f[1], f[2]
    local wanted = want[key]
    if wanted then
      local net = subnets[family]
      if not net then undo() errors.raise("network has no " .. family .. " subnet for " .. key .. " " .. wanted, { op = "ipam", code = 125 }) end
      local n = net:index(wanted)
      if not n or n < 2 or not net:host(n) then
        undo()
        errors.raise(string.format("%s %s is not a host address of %s (the first two and the broadcast address are taken)", key, wanted, net.text),
          { op = "ipam", code = 125 })
      end
      local address = net:host(n)
      local ok, why = claim(dir, address, member)
      if not ok then undo() errors.raise("address " .. address .. " is " .. why, { op = "ipam", code = 125 }) end
      got[key] = address
    end
  end
  -- Automatic addresses: one host number for both families where possible.
  local need4 = subnets.inet and not got.ip
  local need6 = subnets.inet6 and not got.ip6
  if need6 and got.ip then
    local a = subnets.inet6:host(subnets.inet:index(got.ip))
    if a and claim(dir, a, member) then got.ip6, need6 = a, false end
  elseif need4 and got.ip6 then
    local n6 = subnets.inet6:index(got.ip6)
    local a = n6 and n6 >= 2 and subnets.inet:host(n6)
    if a and claim(dir, a, member) then got.ip, need4 = a, false end
  end
  local n = 2
  local limit = math.min(math.max(subnets.inet and subnets.inet.size or 0, subnets.inet6 and subnets.inet6.size or 0), 1 << 24)
  while (need4 or need6) and n < limit do
    if need4 then
      local a = subnets.inet:host(n)
      if a and claim(dir, a, member) then got.ip, need4 = a, false end
    end
    if need6 and not need4 then
      local a = subnets.inet6:host(n)
      if a and claim(dir, a, member) then got.ip6, need6 = a, false end
    end
    n = n + 1
    if need4 and not subnets.inet:host(n) then break end
  end
  if need4 or need6 then
    undo()
    errors.raise("no free address left in " .. (need4 and subnets.inet.text or subnets.inet6.text), { op = "ipam", code = 125 })
  end
  return got
end

function ipam.release(dir, address)
  if address then sys.unlink(lease_path(dir, address)) end
end

--- Every lease: {address=, member=, owner=, alive=}.
function ipam.list(dir)
  local out = {}
  for _, name in ipairs(sys.listdir(dir .. "/leases") or {}) do
    if not name:find("%.tmp%d*$") then
      local h = ipam.holder(dir, name) or { alive = false }
      h.address = name
      out[#out + 1] = h
    end
  end
  table.sort(out, function(a, b) return a.address < b.address end)
  return out
end

--- Removes stale leases (their process is gone) and leftover temporary files; returns the
-- addresses reclaimed.
function ipam.sweep(dir, dry_run)
  local gone = {}
  for _, name in ipairs(sys.listdir(dir .. "/leases") or {}) do
    local pid = name:match("%.tmp(%d+)$")
    local stale
    if pid then
      stale = not state.alive(tonumber(pid), state.start_time(tonumber(pid)))
    else
      local h = ipam.holder(dir, name)
      stale = h and not h.alive
    end
    if stale then
      if not dry_run then sys.unlink(lease_path(dir, name)) end
      gone[#gone + 1] = name
    end
  end
  return gone
end

return ipam
