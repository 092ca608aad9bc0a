-- moonbox.gc: removes what runs whose moonbox died (SIGKILL, power loss) left behind, as their
-- records in the state folder name it, and what no record names but moonbox alone makes:
-- container folders and temporary files in the image store, temporary build images.
--
-- gc trusts no record blindly: a cgroup is removed only when its folder has moonbox's form
-- (.../moonbox/c-NAME on a cgroup filesystem), a folder only when it lies below one of
-- moonbox's own roots. Every removal is checked afterwards; what stays is reported, and gc
-- exits 1.
local sys = require "moonbox.sys"
local state = require "moonbox.state"
local cgroup = require "moonbox.cgroup"

local gc = {}

-- The folders below which gc may remove what records name.
local function roots()
  local list = { state.dir() .. "/boxes/", state.dir() .. "/hosts/", state.dir() .. "/networks/" }
  local ok, image = pcall(require, "moonbox.image")
  if ok then
    list[#list + 1] = image.root() .. "/containers/"
    list[#list + 1] = image.root() .. "/tmp/"
  end
  return list
end
gc.roots = roots

local function removable(path)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then return false end
  for part in path:gmatch("[^/]+") do
    if part == "." or part == ".." then return false end
  end
  for _, root in ipairs(roots()) do
    if path:sub(1, #root) == root and #path > #root then return true end
  end
  return false
end
gc.removable = removable

--- Removes what one record names, unless dry_run. Returns {id=, removed={...}, problems={...}}.
function gc.collect_one(rec, options)
  options = options or {}
  local entry = { id = rec.id, removed = {}, problems = {} }
  local function problem(msg) entry.problems[#entry.problems + 1] = msg end
  if rec.broken then
    entry.removed[#entry.removed + 1] = "partial record " .. rec.path
    if not options.dry_run then sys.unlink(rec.path) end
    return entry
  end
  -- cgroups, by the absolute folders the record names (a string is an older record's group name)
  local folders = rec.cgroup
  if type(folders) == "string" then folders = folders:match("^c%-[%w][%w_.-]*$") and sys.cgroup_path(folders) or { folders } end
  if type(folders) == "table" and #folders > 0 then
    local valid = {}
    for _, p in ipairs(folders) do
      if cgroup.is_moonbox_folder(p) then valid[#valid + 1] = p else problem("refused cgroup " .. tostring(p) .. ": not a folder moonbox makes") end
    end
    if #valid > 0 then
      local leaf = valid[1]:match("[^/]+$")
      if not options.dry_run then
        local ok, msg = sys.cgroup_destroy(valid)
        if not ok then problem(msg) end
        for _, p in ipairs(valid) do
          if sys.lstat(p) then problem("cgroup " .. p .. " is still there") end
        end
      end
      entry.removed[#entry.removed + 1] = "cgroup " .. leaf
    end
  end
  -- helper processes (port proxies, relays, keepers) the record names, if they still run
  for _, h in ipairs(type(rec.helpers) == "table" and rec.helpers or {}) do
    if state.alive(h.pid, h.start) then
      if not options.dry_run then sys.kill(h.pid, "KILL") end
      entry.removed[#entry.removed + 1] = "process " .. tostring(h.name or "helper") .. " " .. h.pid
    end
  end
  for i = #(rec.dirs or {}), 1, -1 do
    local d = rec.dirs[i]
    if not removable(d) then
      problem("refused folder " .. tostring(d) .. ": not below moonbox's own folders")
    else
      if not options.dry_run and sys.lstat(d) then
        local ok, msg = sys.remove_tree(d)
        if not ok then problem(msg) elseif sys.lstat(d) then problem("folder " .. d .. " is still there") end
      end
      entry.removed[#entry.removed + 1] = "folder " .. d
    end
  end
  for _, extra in ipairs(gc.collectors) do extra(rec, entry, options) end
  if not options.dry_run and #entry.problems == 0 then sys.unlink(rec.path) end
  return entry
end

--- More kinds of leftovers register here (networks add namespaces, links and leases):
-- function(rec, entry, options) that removes what rec names and adds to entry.
gc.collectors = {}

-- A temporary name's owner: "-PID-START-" in it, as process.owned_name makes them (names
-- without one are from no live moonbox).
local function owner_gone(name)
  local pid, start = name:match("%-(%d+)%-(%d+)%-")
  if not pid then return true end
  return not state.alive(tonumber(pid), tonumber(start))
end

-- What no record names: the image store's container folders without a record, temporary
-- files and folders of dead owners, and temporary build images of dead owners.
local function orphans(live_ids, options)
  local found = {}
  local ok, image = pcall(require, "moonbox.image")
  if not ok then return found end
  local root = image.root()
  local function remove(id, what, p)
    local entry = { id = id, removed = { what .. " " .. p }, problems = {} }
    if not options.dry_run then
      local okr, msg = sys.remove_tree(p)
      if not okr then entry.problems[1] = msg end
    end
    found[#found + 1] = entry
  end
  for _, name in ipairs(sys.listdir(root .. "/containers") or {}) do
    if not live_ids[name] then remove(name, "folder", root .. "/containers/" .. name) end
  end
  for _, name in ipairs(sys.listdir(root .. "/tmp") or {}) do
    if owner_gone(name) then remove("tmp/" .. name, "temporary", root .. "/tmp/" .. name) end
  end
  for _, img in ipairs(image.list()) do
    if img.name:match("^moonbox%-build/") and owner_gone(img.name) then
      local entry = { id = img.name, removed = { "temporary image " .. img.name }, problems = {} }
      if not options.dry_run then
        local okr, msg = pcall(image.remove, img.name)
        if not okr then entry.problems[1] = tostring(msg) end
      end
      found[#found + 1] = entry
    end
  end
  return found
end

--- Collects every record whose owner is gone (dead, a zombie, or a pid reused), then orphans.
-- Returns a list of {id=, removed={...}, problems={...}}.
function gc.collect(options)
  options = options or {}
  local report = {}
  local live = {}
  for _, rec in ipairs(state.list()) do
    if rec.alive then
      live[rec.id] = true
    else
      report[#report + 1] = gc.collect_one(rec, options)
    end
  end
  for _, e in ipairs(orphans(live, options)) do report[#report + 1] = e end
  -- live networks: members and leases of processes that are gone
  local okn, net = pcall(require, "moonbox.net")
  if okn then for _, e in ipairs(net.sweep(options)) do report[#report + 1] = e end end
  return report
end

--- `moonbox gc [--dry-run]`
function gc.main(args)
  local cli = require "moonbox.cli"
  local opts = cli.parse("gc", args, {
    usage = "moonbox gc [--dry-run]",
    about = "Removes what runs killed with SIGKILL left behind: processes, cgroups, folders, records.",
    options = { { "--dry-run", "-n", kind = "flag", help = "show what would be removed" } },
  })
  local options = { dry_run = opts["dry-run"] }
  local report = gc.collect(options)
  local failed = false
  for _, e in ipairs(report) do
    print((options.dry_run and "would remove " or "removed ") .. e.id .. ": " .. table.concat(e.removed, ", "))
    for _, p in ipairs(e.problems) do
      io.stderr:write("moonbox gc: ", e.id, ": ", p, "\n")
      failed = true
    end
  end
  if #report == 0 then print("nothing to collect in " .. state.dir()) end
  os.exit(failed and 1 or 0)
end

return gc
