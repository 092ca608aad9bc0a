-- moonbox.gc: removes what runs whose moonbox died (SIGKILL, power loss) left behind:
-- processes and cgroups, and folders, as recorded in the state folder.
local sys = require "moonbox.sys"
local state = require "moonbox.state"

local gc = {}

--- Collects every record whose owner is gone. Returns a list of {id=, removed={...}, problems={...}}.
function gc.collect(options)
  options = options or {}
  local report = {}
  for _, rec in ipairs(state.list()) do
    if not rec.alive then
      local entry = { id = rec.id, removed = {}, problems = {} }
      if rec.cgroup then
        if not options.dry_run then
          sys.cgroup_set(rec.cgroup, "cgroup.kill", 1)
          for _ = 1, 200 do
            local ok, msg, errno = sys.cgroup_remove(rec.cgroup)
            if ok or errno == "ENOENT" then break end
            if errno ~= "EBUSY" then entry.problems[#entry.problems + 1] = msg break end
            sys.nanosleep(0.005)
          end
        end
        entry.removed[#entry.removed + 1] = "cgroup " .. rec.cgroup
      end
      for i = #(rec.dirs or {}), 1, -1 do
        local d = rec.dirs[i]
        if not options.dry_run then
          local ok, msg = sys.remove_tree(d)
          if not ok then entry.problems[#entry.problems + 1] = msg end
        end
        entry.removed[#entry.removed + 1] = "folder " .. d
      end
      if not options.dry_run and #entry.problems == 0 then sys.unlink(rec.path) end
      report[#report + 1] = entry
    end
  end
  return report
end

--- `moonbox gc [--dry-run]`
function gc.main(args)
  local options = {}
  for _, a in ipairs(args) do
    if a == "--dry-run" or a == "-n" then options.dry_run = true
    else error("moonbox gc: unknown argument " .. a .. " (known: --dry-run)", 0) end
  end
  local report = gc.collect(options)
  local failed = false
  for _, e in ipairs(report) do
    print((options.dry_run and "would remove " or "removed ") .. e.id .. ": " .. table.concat(e.removed, ", "))
    for _, p in ipairs(e.problems) do print("  problem: " .. p) failed = true end
  end
  if #report == 0 then print("nothing to collect in " .. state.dir()) end
  os.exit(failed and 1 or 0)
end

return gc
