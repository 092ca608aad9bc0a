-- moonbox.net.hosts: names on networks. Every member of a network has a member file in the
-- network's state folder (members/ID.json: its names, addresses and /etc/hosts file); every
-- container on a network has its own hosts file, bound over /etc/hosts, listing itself and
-- every member of every network it is on. When a member joins or leaves, the hosts files of
-- the members concerned are rewritten in place (the bind mount pins the inode), under one lock
-- for all networks, so that two moonbox processes never leave a stale file.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local state = require "moonbox.state"

local hosts = {}

local function root() return state.ensure("networks") end

--- Runs fn() holding the networks' lock; returns what fn returns, raising its error.
function hosts.locked(fn)
  local lock = assert(sys.open(root() .. "/.lock", { "rdwr", "creat" }, tonumber("600", 8)))
  assert(sys.flock(lock, "ex"))
  local ok, a, b = pcall(fn)
  lock:close()
  if not ok then error(a, 0) end
  return a, b
end

--- Members of one network (a folder), by container id.
function hosts.members(dir)
  local out = {}
  for _, name in ipairs(sys.listdir(dir .. "/members") or {}) do
    local id = name:match("^(.+)%.json$")
    if id then
      local ok, m = pcall(json.decode, fs.read_if_exists(dir .. "/members/" .. name) or "")
      if ok and type(m) == "table" then
        m.alive = state.alive(m.owner, m.owner_start)
        out[id] = m
      end
    end
  end
  return out
end

function hosts.join(dir, member)
  sys.mkdir(dir .. "/members", tonumber("700", 8))
  fs.write_atomic(dir .. "/members/" .. member.id .. ".json", json.encode(member), true, tonumber("600", 8))
end

function hosts.leave(dir, id)
  sys.unlink(dir .. "/members/" .. id .. ".json")
end

local HEADER = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

--- The text of a hosts file for a container called `names[1]` (then its other names) that
-- sees `entries` ({address, names} pairs).
function hosts.render(entries)
  local lines, seen = { HEADER }, {}
  for _, e in ipairs(entries) do
    local line = e[1] .. "\t" .. table.concat(e[2], " ")
    if not seen[line] then
      seen[line] = true
      lines[#lines + 1] = line .. "\n"
    end
  end
  return table.concat(lines)
end

local function names_of(m)
  local list = { m.name }
  if m.hostname and m.hostname ~= m.name then list[#list + 1] = m.hostname end
  for _, a in ipairs(m.aliases or {}) do list[#list + 1] = a end
  return list
end

--- Rewrites (in place) the hosts file of every live member of the networks in `dirs`.
-- Call with the lock held.
function hosts.refresh(dirs)
  -- Every network's members, and for each container, the networks it is on.
  local networks, on = {}, {}
  for _, name in ipairs(sys.listdir(root()) or {}) do
    local dir = root() .. "/" .. name
    if not name:find("^%.") then
      networks[dir] = hosts.members(dir)
      for id, m in pairs(networks[dir]) do
        if m.alive then on[id] = on[id] or {} table.insert(on[id], dir) end
      end
    end
  end
  local todo = {}
  for _, dir in ipairs(dirs) do
    for id, m in pairs(networks[dir] or {}) do if m.alive and m.hosts then todo[id] = m end end
  end
  for id, me in pairs(todo) do
    local entries = {}
    -- itself first, then the others by address
    for _, dir in ipairs(on[id] or {}) do
      local m = networks[dir][id]
      if m.ip then entries[#entries + 1] = { m.ip, names_of(m) } end
      if m.ip6 then entries[#entries + 1] = { m.ip6, names_of(m) } end
    end
    local others = {}
    for _, dir in ipairs(on[id] or {}) do
      for oid, m in pairs(networks[dir]) do
        if oid ~= id and m.alive then
          if m.ip then others[#others + 1] = { m.ip, names_of(m) } end
          if m.ip6 then others[#others + 1] = { m.ip6, names_of(m) } end
        end
      end
    end
    table.sort(others, function(a, b) return a[1] < b[1] end)
    for _, e in ipairs(others) do entries[#entries + 1] = e end
    hosts.write(me.hosts, hosts.render(entries))
  end
end

--- Makes a new hosts file (readable by the container's users) listing `entries`.
function hosts.write_new(path, entries)
  fs.write(path, hosts.render(entries), tonumber("644", 8))
end

--- Writes a hosts file in place (a bind mount of it shows the new text). A file that is gone
-- (its container was removed meanwhile) is left so.
function hosts.write(path, text)
  local f = sys.open(path, { "wronly", "trunc", "nofollow" })
  if not f then return end
  sys.write(f, text)
  f:close()
end

return hosts
