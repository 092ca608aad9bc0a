-- moonbox.state: what each run creates, recorded in the state folder ($MOONBOX_STATE,
-- /run/moonbox for root, $XDG_RUNTIME_DIR/moonbox or /tmp/moonbox-UID for a plain user), so
-- that `moonbox gc` can remove it after moonbox was SIGKILLed.
--
-- A record is written, and made durable, before anything it names is created; if it cannot
-- be written, nothing is created. It names its owner (pid and start time) and what to remove:
-- cgroup folders by absolute path, folders, address leases, network namespaces.
--
-- The folder is a trust boundary: it must be the user's own and writable by nobody else
-- (created 0700), or moonbox refuses it, since gc removes what records name and compiled
-- seccomp filters are cached there.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local errors = require "moonbox.errors"
local fs = require "moonbox.fs"
local process = require "moonbox.process"

local state = {}

function state.dir()
  local dir = os.getenv("MOONBOX_STATE")
  if dir and dir ~= "" then return dir end
  if sys.geteuid() == 0 then return "/run/moonbox" end
  -- A plain user keeps its records where it may write.
  local runtime = os.getenv("XDG_RUNTIME_DIR")
  return (runtime and runtime ~= "") and (runtime .. "/moonbox") or ("/tmp/moonbox-" .. sys.geteuid())
end

--- Checks that `dir` is a folder (not a symlink) owned by this user and that nobody else may
-- write into it. Returns true, or nil and why.
function state.trusted(dir)
  local st = sys.lstat(dir)
  if not st then return nil, dir .. " does not exist" end
  if st.type ~= "dir" then return nil, dir .. " is a " .. st.type .. ", not a folder" end
  if st.uid ~= sys.geteuid() then
    return nil, string.format("%s belongs to uid %d, not to this user (uid %d)", dir, st.uid, sys.geteuid())
  end
  if st.mode & tonumber("022", 8) ~= 0 then
    return nil, string.format("%s is writable by others (mode %o)", dir, st.mode)
  end
  return true
end

local ensured

--- The state folder, made (mode 0700) when missing and checked. Raises when it cannot be trusted.
function state.ensure(sub)
  local dir = state.dir()
  if ensured ~= dir then
    if not sys.lstat(dir) then
      local ok, msg = sys.mkdir(dir, tonumber("700", 8))
      if not ok and not sys.lstat(dir) then errors.raise("state folder: " .. msg, { op = "mkdir", code = 125 }, 2) end
    end
    local ok, why = state.trusted(dir)
    if not ok then
      errors.raise("state folder refused: " .. why .. " (set MOONBOX_STATE to a folder of your own)", { op = "state", code = 125 }, 2)
    end
    ensured = dir
  end
  if sub then
    local path = dir .. "/" .. sub
    if not sys.lstat(path) then sys.mkdir(path, tonumber("700", 8)) end
    local ok, why = state.trusted(path)
    if not ok then errors.raise("state folder refused: " .. why, { op = "state", code = 125 }, 2) end
    return path
  end
  return dir
end

state.start_time = process.start_time
state.alive = process.alive

state.me = process.me

local Record = { __name = "moonbox.state.record" }
Record.__index = Record
Record.__tostring = function(r) return "record(" .. r.path .. ")" end

--- Records `fields` (cgroup = {folders...}, dirs = {...}, ...) for the object `id`, durably.
-- kind names what it is ("container", "box", "network", ...). The record is made exclusively:
-- when one for `id` exists already, nil, "EEXIST" comes back (two processes racing for one name
-- cannot both win). Other failures raise.
function state.new(id, fields, kind)
  local dir = state.ensure()
  local pid, start = state.me()
  local data = { id = id, kind = kind or "container", owner = pid, owner_start = start,
    created = os.time(), dirs = {} }
  for k, v in pairs(fields or {}) do data[k] = v end
  local r = setmetatable({ path = dir .. "/" .. id .. ".json", data = data }, Record)
  local ok, err, errno = state.claim(r.path, data)
  if not ok then
    if errno == "EEXIST" then return nil, "EEXIST" end
    errors.raise("cannot record " .. id .. " in the state folder: " .. err, { op = "state", code = 125 }, 2)
  end
  return r
end

--- Writes `data` as JSON at `path` exclusively and durably: the file appears whole, and only
-- once (link(2) fails when the name exists: two processes racing for it cannot both win).
-- Returns true, or nil, msg, errno ("EEXIST" when it is taken).
function state.claim(path, data)
  local tmp = path .. ".tmp" .. sys.getpid()
  local ok, err = pcall(fs.write_atomic, tmp, json.encode(data), true, tonumber("600", 8))
  if not ok then sys.unlink(tmp) return nil, tostring(err), "EIO" end
  local linked, msg, errno = sys.link(tmp, path)
  sys.unlink(tmp)
  if not linked then return nil, msg, errno end
  local d = sys.open(path:match("^(.*)/[^/]*$") or ".", { "rdonly", "directory" })
  if d then sys.fsync(d) d:close() end
  return true
end

function Record:update(fields)
  for k, v in pairs(fields) do self.data[k] = v end
  fs.write_atomic(self.path, json.encode(self.data), true, tonumber("600", 8))
end

--- Adds a folder to remove when the owner is gone.
function Record:add_dir(path)
  table.insert(self.data.dirs, path)
  self:update({})
end

function Record:remove()
  sys.unlink(self.path)
end

--- The record of `id` as an object (to update or remove), or nil when there is none.
function state.open(id)
  local path = state.dir() .. "/" .. id .. ".json"
  local text = fs.read_if_exists(path)
  if not text then return nil end
  local ok, data = pcall(json.decode, text)
  if not ok or type(data) ~= "table" then return nil end
  return setmetatable({ path = path, data = data }, Record)
end

--- The record of `id`, or nil.
function state.find(id)
  for _, rec in ipairs(state.list()) do if rec.id == id then return rec end end
  return nil
end

--- Every record in the state folder, with `alive` telling whether its owner still runs. A
-- record that cannot be read (0 bytes after a full disk, a torn write) comes back with
-- broken = true; leftover temporary files too.
function state.list()
  local out = {}
  local dir = state.dir()
  for _, name in ipairs(sys.listdir(dir) or {}) do
    local path = dir .. "/" .. name
    if name:match("%.json$") then
      local text = fs.read_if_exists(path) or ""
      local ok, data = pcall(json.decode, text)
      if ok and type(data) == "table" and type(data.id) == "string" then
        data.path = path
        data.alive = state.alive(data.owner, data.owner_start)
        out[#out + 1] = data
      else
        out[#out + 1] = { id = name:gsub("%.json$", ""), path = path, broken = true, alive = false }
      end
    elseif name:match("%.json%.tmp%d*$") then
      local pid = tonumber(name:match("%.tmp(%d+)$"))
      out[#out + 1] = { id = name, path = path, broken = true, alive = pid ~= nil and state.alive(pid, state.start_time(pid)) }
    end
  end
  return out
end

return state
