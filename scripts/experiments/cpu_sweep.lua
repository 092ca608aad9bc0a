-- A CPU and memory sweep: the same job (two CPU-bound workers, then sorting 48 MiB in memory)
-- under cpus from 0.25 to 2 and three memory limits. Records wall time, CPU time and the
-- cgroup's memory peak; a limit below what sort needs shows up as an OOM kill (exit 137).
--
--   moonbox experiment scripts/experiments/cpu_sweep.lua
local experiment = require "moonbox.experiment"
local rootfs = require "moonbox.rootfs"
local sys = require "moonbox.sys"

local root = (os.getenv("TMPDIR") or "/tmp") .. "/moonbox-cpu-sweep-rootfs"
if not sys.lstat(root) then rootfs.busybox(root) end

local e = experiment.new{ name = "cpu-sweep", out = "results/cpu-sweep" }
e:param("cpus", { 0.25, 0.5, 1, 1.5, 2 })
e:param("memory_mib", { 32, 96, 256 })
e:param("rep", { 1, 2 })

local JOB = [[
spin() { i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; }
spin & spin & wait
head -c 50331648 /dev/zero | tr '\0' 'x' | fold -w 100 | sort > /dev/null
]]

e:trial(function(t, p)
  local c = t:container{ rootfs = root, name = "job", command = { "sh", "-c", JOB }, readonly_rootfs = true,
    limits = { cpus = p.cpus, memory = p.memory_mib .. "M", swap = 0 } }
  t:sample(c, { every = 0.1 })
  local r = c:wait()
  t:record{ wall_s = r.wall, cpu_s = r.cpu and r.cpu.total or 0, memory_peak_mib = (r.memory_peak or 0) / 1048576,
    exit_code = r.code or (128 + (r.signal or 0)), oom = (r.oom_killed or r.code == 137) and 1 or 0 }
end)

e:run{ jobs = 1 }
