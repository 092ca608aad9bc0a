-- moonbox.container.users: user and group names resolved in the container's own /etc/passwd
-- and /etc/group, as runc does: run in the child after pivot_root, so the files read are the
-- container's, reached only inside its root.
local users = {}

local function entries(path)
  local f = io.open(path)
  if not f then return {} end
  local list = {}
  for line in f:lines() do
    if not line:match("^%s*#") then
      local fields = {}
      for field in (line .. ":"):gmatch("([^:]*):") do fields[#fields + 1] = field end
      list[#list + 1] = fields
    end
  end
  f:close()
  return list
end

--- Resolves a parsed user ({uid=, gid=} or {user=, group=}) to {uid=, gid=, groups=, home=}.
-- A name that is not there is an error, never root. A numeric uid with no passwd entry keeps
-- its gid (the given one, or the uid) and gets no supplementary groups.
function users.resolve(u, passwd, group)
  passwd = passwd or "/etc/passwd"
  group = group or "/etc/group"
  local out = { uid = u.uid, gid = u.gid, groups = {} }
  local name
  for _, e in ipairs(entries(passwd)) do
    local uid, gid = math.tointeger(tonumber(e[3] or "")), math.tointeger(tonumber(e[4] or ""))
    if (u.user and e[1] == u.user) or (not u.user and uid == u.uid) then
      name, out.uid, out.home = e[1], uid, e[6]
      if not u.group and not (u.gid and not u.user) then out.gid = gid end
      break
    end
  end
  if u.user and not name then
    if u.uid then
      out.uid = u.uid  -- "1000:staff": a number needs no entry
    else
      return nil, "user " .. u.user .. " is not in the container's " .. passwd
    end
  end
  out.gid = out.gid or u.gid or out.uid
  local groups = entries(group)
  if u.group then
    local found
    for _, e in ipairs(groups) do
      if e[1] == u.group then found = math.tointeger(tonumber(e[3] or "")) break end
    end
    if found == nil and not u.gid then return nil, "group " .. u.group .. " is not in the container's " .. group end
    out.gid = found or u.gid
  end
  -- Supplementary groups: those that list the user by name, as login would give them.
  if name then
    for _, e in ipairs(groups) do
      local gid = math.tointeger(tonumber(e[3] or ""))
      for member in (e[4] or ""):gmatch("[^,]+") do
        if member == name and gid and gid ~= out.gid then out.groups[#out.groups + 1] = gid end
      end
    end
  end
  return out
end

return users
