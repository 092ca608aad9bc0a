-- moonbox.cgroup: a container's cgroup, the one owner of the policy that maps limits to
-- cgroup keys, of device rules, of accounting, freezing and killing.
--
--   local g = cgroup.new("c-web")                  -- nothing is made yet
--   g:apply{ memory = "512M", pids = 64, cpus = 0.5 }; g:restrict_devices(security.allowed_devices)
--   g:attach(pid); g:stats(); g:freeze(); g:thaw(); g:kill(); g:destroy()
--
-- Keys are cgroup v2 names; moonbox.sys translates them on a v1 host. apply makes the group
-- once and writes every key in one call (sys.cgroup_apply). destroy is the one kill-and-remove
-- loop, also used by gc on the absolute folders a record names (cgroup.at).
local sys = require "moonbox.sys"
local errors = require "moonbox.errors"

local cgroup = {}

local Group = { __name = "moonbox.cgroup" }
Group.__index = Group
Group.__tostring = function(g) return "cgroup(" .. (g.name or table.concat(g.paths, ",")) .. ")" end

--- The group named `name` below moonbox's parent cgroup; made by the first apply or attach.
function cgroup.new(name)
  local paths, err = sys.cgroup_path(name)
  if not paths then errors.raise("cgroup " .. name .. ": " .. tostring(err), { op = "cgroup" }, 2) end
  return setmetatable({ name = name, paths = paths }, Group)
end

--- A group known only by its folders (from a state record), for killing and removing it.
function cgroup.at(paths)
  return setmetatable({ paths = paths }, Group)
end

--- The group name of a container.
function cgroup.container_group(id) return "c-" .. id end

--- True when `path` has the form of a folder moonbox made for a container: an absolute path
-- with no "." or ".." parts whose last two parts are "moonbox" and "c-NAME", or below
-- "moonbox/oci/" (an OCI container's).
function cgroup.is_moonbox_folder(path)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then return false end
  for part in path:gmatch("[^/]+") do
    if part == "." or part == ".." then return false end
  end
  local parent, leaf = path:match("/([^/]+)/([^/]+)$")
  if parent == "moonbox" and leaf ~= nil and leaf:match("^c%-[%w][%w_.-]*$") ~= nil then return true end
  -- an OCI container's group without a cgroupsPath of its own: moonbox/oci/ID (or a relative path)
  return path:match("/moonbox/oci/[%w_.-][%w_./-]*$") ~= nil
end

--- The cgroup keys for container limits (memory, swap, pids, cpus, cpu_weight, io_weight).
local function limit_keys(l)
  local keys = { ["pids.max"] = l.pids or "max" }  -- always a group: accounting and killing need it
  if l.memory then keys["memory.max"] = l.memory end
  if l.swap then keys["memory.swap.max"] = l.swap end
  if l.cpus then
    local period = 100000
    keys["cpu.max"] = string.format("%d %d", math.max(1000, math.floor(l.cpus * period + 0.5)), period)
  end
  if l.cpu_weight then keys["cpu.weight"] = l.cpu_weight end
  if l.io_weight then keys["io.weight"] = l.io_weight end
  return keys
end
cgroup.limit_keys = limit_keys

--- Makes the group (once) and sets the limits, all keys in one call. Returns true, or nil,
-- msg, errno (the group could not be made or a key not written).
function Group:apply(limits)
  limits = limits or {}
  local ok, msg, errno = sys.cgroup_apply(self.name, limit_keys(limits))
  if not ok then return nil, msg, errno end
  if limits.memory and not limits.swap then
    -- No swap unless asked, where swap is accounted (v1 without memsw has nothing to set).
    sys.cgroup_set(self.name, "memory.swap.max", 0)
  end
  return true
end

--- Allows only the devices `rules` name ("c 1:3 rwm", ...): through the devices controller on
-- v1, an eBPF program on v2. Returns true, or nil, msg, errno.
function Group:restrict_devices(rules)
  if sys.cgroup_version() == 1 then
    return sys.cgroup_apply(self.name, { ["devices.deny"] = "a", ["devices.allow"] = rules })
  end
  return sys.bpf_device_filter(self.paths[1], rules)
end

function Group:attach(pid)
  return sys.cgroup_attach(self.name, pid)
end

local function number(text, key)
  if not text then return nil end
  return tonumber(text:match(key .. " (%d+)"))
end

--- What the group used: memory and pids now and at peak, CPU time (user, sys, total, in
-- seconds), and the count of OOM kills.
function Group:stats()
  local function get(key) return (sys.cgroup_get(self.name, key)) end
  local cpu = get("cpu.stat")
  local user, system = number(cpu, "user_usec") or 0, number(cpu, "system_usec") or 0
  return {
    memory = tonumber(get("memory.current") or ""),
    memory_peak = tonumber(get("memory.peak") or ""),
    pids = tonumber(get("pids.current") or ""),
    pids_peak = tonumber(get("pids.peak") or ""),
    cpu = { user = user / 1e6, sys = system / 1e6, total = (user + system) / 1e6, usage = (number(cpu, "usage_usec") or 0) / 1e6 },
    oom_kills = number(get("memory.events"), "oom_kill") or 0,
  }
end

--- CPU time used so far, in seconds (all processes together).
function Group:cpu_seconds()
  return (number(sys.cgroup_get(self.name, "cpu.stat"), "usage_usec") or 0) / 1e6
end

local function settle(self, want)
  for _ = 1, 500 do
    if sys.cgroup_get(self.name, "cgroup.freeze") == want then return true end
    sys.nanosleep(0.002)
  end
  errors.raise("cgroup " .. self.name .. ": the freezer did not settle", { op = "freeze" }, 3)
end

function Group:freeze()
  errors.check({ op = "freeze" }, sys.cgroup_set(self.name, "cgroup.freeze", 1))
  settle(self, "1")
end

function Group:thaw()
  errors.check({ op = "thaw" }, sys.cgroup_set(self.name, "cgroup.freeze", 0))
  settle(self, "0")
end

function Group:frozen() return sys.cgroup_get(self.name, "cgroup.freeze") == "1" end

--- SIGKILL to every process in the group (freezing first on v1, so nothing forks meanwhile).
function Group:kill()
  return sys.cgroup_set(self.name, "cgroup.kill", 1)
end

function Group:procs()
  return sys.cgroup_procs(self.name) or {}
end

--- Kills what is left and removes the group's folders (and moonbox's parent once empty),
-- waiting while the kernel reaps. Returns true, or nil, msg, errno.
function Group:destroy()
  -- By name when there is one, so this process knows to make the group again if asked.
  return sys.cgroup_destroy(self.name or self.paths)
end

return cgroup
