-- moonbox.state: what each run created, recorded in the state folder ($MOONBOX_STATE,
-- /run/moonbox by default), so `moonbox gc` can remove it after moonbox was SIGKILLed.
-- A record names its owner (pid and start time) and what to remove: a cgroup and folders.
local sys = require "moonbox.sys"
local json = require "moonbox.json"

local state = {}

function state.dir()
  local dir = os.getenv("MOONBOX_STATE")
  if dir then return dir end
  if sys.geteuid() == 0 then return "/run/moonbox" end
  -- A plain user keeps its records where it may write.
  local runtime = os.getenv("XDG_RUNTIME_DIR")
  return runtime and (runtime .. "/moonbox") or ("/tmp/moonbox-" .. sys.geteuid())
end

--- The start time of a process (clock ticks since boot), to tell it from a reused pid.
function state.start_time(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  -- Field 22, counted after the command name, which may hold spaces.
  local rest = text:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[20])
end

local my_start

local Record = { __name = "moonbox.state.record" }
Record.__index = Record

local function write_atomic(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then error("state: cannot write " .. tmp .. ": " .. err, 3) end
  f:write(text)
  f:close()
  assert(sys.rename(tmp, path))
end

--- Records `fields` (cgroup = name, dirs = {...}) for the object `id`.
function state.new(id, fields)
  local dir = state.dir()
  local ok, msg = sys.mkdir(dir, tonumber("700", 8))
  if not ok then error("state: " .. msg, 2) end
  my_start = my_start or state.start_time(sys.getpid())
  local data = { id = id, owner = sys.getpid(), owner_start = my_start, created = os.time(), dirs = {} }
  for k, v in pairs(fields or {}) do data[k] = v end
  local r = setmetatable({ path = dir .. "/" .. id .. ".json", data = data }, Record)
  write_atomic(r.path, json.encode(data))
  return r
end

function Record:update(fields)
  for k, v in pairs(fields) do self.data[k] = v end
  write_atomic(self.path, json.encode(self.data))
end

--- Adds a folder to remove when the owner is gone.
function Record:add_dir(path)
  table.insert(self.data.dirs, path)
  self:update({})
end

function Record:remove()
  sys.unlink(self.path)
end

--- Every record in the state folder, with `alive` telling whether its owner still runs.
function state.list()
  local out = {}
  local dir = state.dir()
  for _, name in ipairs(sys.listdir(dir) or {}) do
    if name:match("%.json$") then
      local f = io.open(dir .. "/" .. name)
      local ok, data = pcall(json.decode, f and f:read("a") or "")
      if f then f:close() end
      if ok and type(data) == "table" then
        data.path = dir .. "/" .. name
        data.alive = data.owner ~= nil and state.start_time(data.owner) == data.owner_start
        out[#out + 1] = data
      end
    end
  end
  return out
end

return state
