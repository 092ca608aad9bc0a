-- The benchmark harness: moonbox against runc, crun, bubblewrap, unshare+chroot and the
-- syscall floor (bench/floor.c), measured side by side as whole processes, alternating the
-- runtimes (A B C A B C ...) after warm-up runs. Run it through scripts/bench.
--   moonbox run bench/bench.lua --moonbox PATH --floor PATH [--runs N] [--out FILE.json] [--md FILE.md]
local sys = require "moonbox.sys"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local fs = require "moonbox.fs"
local json = require "moonbox.json"

local opts = { runs = 30, warmup = 3, batch_rounds = 5 }
do
  local i = 1
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    if a == "--runs" then opts.runs = tonumber(v) i = i + 1
    elseif a == "--moonbox" then opts.moonbox = v i = i + 1
    elseif a == "--floor" then opts.floor = v i = i + 1
    elseif a == "--out" then opts.out = v i = i + 1
    elseif a == "--md" then opts.md = v i = i + 1
    else error("bench: unknown argument " .. a, 0) end
    i = i + 1
  end
end
assert(opts.moonbox and opts.floor, "bench: --moonbox and --floor are required")

local function have(tool) return process.run({ "sh", "-c", "command -v " .. tool }).code == 0 end

-- crun refuses hybrid hosts while the v2 mount holds a controller: run everything in a
-- private mount namespace without /sys/fs/cgroup/unified (runc and moonbox do not mind).
assert(sys.unshare({ "mount" }))
assert(sys.mount(nil, "/", nil, { "rprivate" }))
sys.umount("/sys/fs/cgroup/unified", { "detach" })

local work <close> = fs.tempdir("moonbox-bench-")
assert(sys.chmod(work.path, tonumber("755", 8)))
local R = rootfs.busybox(work.path .. "/rootfs")

-- An OCI bundle of the same rootfs, its config from `runc spec`.
local bundle = work.path .. "/bundle"
local oci = have("runc")
if oci then
  assert(sys.mkdir(bundle))
  process.run({ "cp", "-a", R, bundle .. "/rootfs" }, { check = true })
  process.run({ "runc", "spec" }, { cwd = bundle, check = true })
  local config = json.decode(assert(fs.read(bundle .. "/config.json")))
  config.process.args = { "/bin/true" }
  config.process.terminal = false
  -- Relative: below the benchmark's own cgroup, never at the hierarchy's root.
  config.linux.cgroupsPath = "moonbox-bench-oci"
  fs.write(bundle .. "/config.json", json.encode(config, { indent = "  " }))
end

-- A moonbox script that runs N containers one after another: one process, one start-up.
local batch_script = fs.write(work.path .. "/batch.lua", [[
  local container = require "moonbox.container"
  local limits = arg[3] ~= "nolimits" and { memory = "256M" } or nil
  for i = 1, tonumber(arg[2]) do
    local r = container.run({ rootfs = arg[1], command = { "/bin/true" }, limits = limits })
    if r.code ~= 0 then error("run " .. i .. " failed") end
  end
]])

local devnull = assert(sys.open("/dev/null", "rdwr"))
local seq = 0

--- Runs argv once, its output to /dev/null; returns wall seconds and peak RSS (KiB).
local function measure(argv, env)
  if type(argv) == "function" then argv = argv() end
  local t0 = sys.clock_gettime("monotonic")
  local pid = assert(sys.fork())
  if pid == 0 then
    sys.dup2(devnull, 0)
    sys.dup2(devnull, 1)
    sys.dup2(devnull, 2)
    sys.exec(argv, env)
    sys._exit(127)
  end
  local st = assert(sys.wait(pid))
  local wall = sys.clock_gettime("monotonic") - t0
  if st.code ~= 0 then error("bench: " .. table.concat(argv, " ") .. " failed: " .. tostring(st.code or st.signal_name), 0) end
  return wall, st.rusage.maxrss_kb
end

local function oci_run(tool)
  return function()
    seq = seq + 1
    return { tool, "run", "--bundle", bundle, string.format("mbbench-%d-%d", sys.getpid(), seq) }
  end
end

local function stats(samples)
  local s = {}
  for i, v in ipairs(samples) do s[i] = v end
  table.sort(s)
  local function q(p) return s[math.max(1, math.min(#s, math.floor(p * (#s - 1) + 1.5)))] end
  return { median = q(0.5), p10 = q(0.1), p90 = q(0.9), min = s[1], max = s[#s], n = #s }
end

--- Measures every runtime `rounds` times, alternating them, after `warmup` unmeasured rounds.
-- `gap` seconds of idle before each run (not timed) make each one a real one-shot start: the
-- kernel's batching of cgroup migrations back to back no longer helps anyone.
local function alternate(runtimes, rounds, warmup, gap)
  local results = {}
  for _, r in ipairs(runtimes) do results[r.name] = { wall = {}, rss = {} } end
  for round = 1, warmup + rounds do
    for _, r in ipairs(runtimes) do
      if gap then sys.nanosleep(gap) end
      if r.before then r.before() end
      local wall, rss = measure(r.argv, r.env)
      if round > warmup then
        table.insert(results[r.name].wall, wall)
        table.insert(results[r.name].rss, rss)
      end
    end
  end
  local out = {}
  for _, r in ipairs(runtimes) do
    out[#out + 1] = { name = r.name, wall = stats(results[r.name].wall), rss_kb = stats(results[r.name].rss) }
  end
  return out
end

local function with_ratios(rows, base)
  local ref
  for _, r in ipairs(rows) do if r.name == base then ref = r.wall.median end end
  for _, r in ipairs(rows) do r.ratio = ref and r.wall.median / ref or nil end
  return rows
end

local mb = opts.moonbox
local report = { machine = {}, cases = {} }
report.machine.kernel = process.run({ "uname", "-r" }).stdout:gsub("\n", "")
report.machine.cpus = tonumber(process.run({ "nproc" }).stdout)
report.machine.cgroup = "v" .. sys.cgroup_version()
report.machine.date = os.date("!%Y-%m-%d %H:%M UTC")
report.method = string.format("%d measured rounds after %d warm-up rounds, runtimes alternating within each round; "
  .. "whole processes timed from fork to wait on the monotonic clock; median and p10-p90 spread", opts.runs, opts.warmup)

-- Case 1: one container, start to exit.
local single = {
  { name = "moonbox box", argv = { mb, "box", "--rootfs", R, "--memory", "256M", "--", "/bin/true" } },
  { name = "floor", argv = { opts.floor, R } },
  { name = "floor --cgroup", argv = { opts.floor, "--cgroup", R } },
}
if oci then
  table.insert(single, { name = "runc run", argv = oci_run("runc") })
  if have("crun") then table.insert(single, { name = "crun run", argv = oci_run("crun") }) end
end
if have("bwrap") then
  table.insert(single, { name = "bwrap", argv = { "bwrap", "--unshare-all", "--die-with-parent", "--bind", R, "/",
    "--proc", "/proc", "--dev", "/dev", "/bin/true" } })
end
table.insert(single, { name = "unshare+chroot", argv = { "unshare", "-muinpf", "chroot", R, "/bin/true" } })
io.stderr:write("case 1: one container\n")
report.cases.single = with_ratios(alternate(single, opts.runs, opts.warmup), "moonbox box")

io.stderr:write("case 1c: one-shot, after 150 ms idle\n")
local one_shot = {}
for _, r in ipairs(single) do
  if r.name ~= "bwrap" and r.name ~= "unshare+chroot" and r.name ~= "floor" then one_shot[#one_shot + 1] = r end
end
report.cases.single_idle = with_ratios(alternate(one_shot, opts.runs, opts.warmup, 0.15), "moonbox box")

io.stderr:write("case 1b: without a net namespace\n")
report.cases.single_no_net = with_ratios(alternate({
  { name = "moonbox box --net host", argv = { mb, "box", "--rootfs", R, "--net", "host", "--memory", "256M", "--", "/bin/true" } },
  { name = "floor --no-net", argv = { opts.floor, "--no-net", R } },
}, opts.runs, opts.warmup), "moonbox box --net host")

-- Case 2: 100 containers in a row.
io.stderr:write("case 2: 100 containers in a row\n")
local function loop(argv, n)
  return function()
    return { "sh", "-c", string.format('for i in $(seq %d); do %s || exit 1; done', n, argv) }
  end
end
local batch = {
  { name = "moonbox script (1 process)", argv = { mb, "run", batch_script, R, "100" } },
  { name = "floor x100 (1 process)", argv = { opts.floor, R, "100" } },
  { name = "floor --cgroup x100 (1 process)", argv = { opts.floor, "--cgroup", R, "100" } },
  { name = "moonbox script, no limits (1 process)", argv = { mb, "run", batch_script, R, "100", "nolimits" } },
  { name = "moonbox box x100", argv = loop(string.format("%s box --rootfs %s --memory 256M -- /bin/true", mb, R), 100) },
}
if oci then
  table.insert(batch, { name = "runc run x100", argv = loop(string.format(
    "runc run --bundle %s mbbatch-$$-$i >/dev/null", bundle), 100) })
  if have("crun") then
    table.insert(batch, { name = "crun run x100", argv = loop(string.format(
      "crun run --bundle %s mbbatch-$$-$i >/dev/null", bundle), 100) })
  end
end
report.cases.batch100 = with_ratios(alternate(batch, opts.batch_rounds, 1), "moonbox script (1 process)")

-- Case 3: start-up of the binary itself.
io.stderr:write("case 3: start-up\n")
local startup = { { name = "moonbox run -e ''", argv = { mb, "run", "-e", "" } } }
if have("lua5.4") then table.insert(startup, { name = "lua5.4 -e ''", argv = { "lua5.4", "-e", "" } }) end
report.cases.startup = with_ratios(alternate(startup, opts.runs * 2, opts.warmup), "moonbox run -e ''")

-- Case 4: peak RSS of the runtime process during a container run comes from case 1's rusage.

-- Case 5: image work. A 200 MB layer (incompressible data in 400 files), unpacked plain and
-- gzipped by moonbox and by GNU tar into a fresh folder each time; a 100-layer image mounted;
-- a 10-step recipe rebuilt with every step cached.
io.stderr:write("case 5: image work\n")
local store = work.path .. "/store"
local env = { PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", MOONBOX_ROOT = store }
local data = work.path .. "/layerdata"
assert(sys.mkdir(data))
local random = assert(io.open("/dev/urandom", "rb"))
for i = 1, 400 do fs.write(string.format("%s/f%03d", data, i), random:read(512 * 1024)) end
random:close()
local plain, gz = work.path .. "/layer.tar", work.path .. "/layer.tar.gz"
assert(sys.archive_create(data, plain))
assert(sys.archive_create(data, gz, { compression = "gzip" }))
local target = work.path .. "/unpacked"
local function fresh() sys.remove_tree(target) assert(sys.mkdir(target)) end
local unpack_code = "assert(require('moonbox.sys').archive_extract(arg[1], arg[2]))"
report.cases.unpack = with_ratios(alternate({
  { name = "moonbox unpack (tar)", before = fresh, argv = { mb, "run", "-e", unpack_code, plain, target } },
  { name = "GNU tar -x (tar)", before = fresh, argv = { "tar", "-xf", plain, "-C", target } },
  { name = "moonbox unpack (tar.gz)", before = fresh, argv = { mb, "run", "-e", unpack_code, gz, target } },
  { name = "GNU tar -xz (tar.gz)", before = fresh, argv = { "tar", "-xzf", gz, "-C", target } },
}, math.max(5, opts.runs // 4), 1), "moonbox unpack (tar)")
sys.remove_tree(target)

local deep_script = fs.write(work.path .. "/deep.lua", [[
  local sys = require "moonbox.sys"
  local image = require "moonbox.image"
  local fs = require "moonbox.fs"
  image.import_dir(arg[1], "base:1")
  local base = assert(image.resolve("base:1"))
  local layers, added = { base.manifest.layers[1] }, {}
  local dir <close> = fs.tempdir()
  for i = 1, 99 do
    assert(sys.mkdir(dir.path .. "/" .. i))
    fs.write(dir.path .. "/" .. i .. "/f" .. i, tostring(i))
    local l = image.layer_from_dir(dir.path .. "/" .. i)
    layers[#layers + 1], added[#added + 1] = l, l
  end
  image.store("deep:1", image.new_config(added, base.config), layers)
]])
process.run({ mb, "run", deep_script, R }, { env = env, check = true })
local run_image = "local r = require('moonbox.container').run{image = arg[1], command = {'/bin/true'}}; assert(r.code == 0)"
report.cases.layers = with_ratios(alternate({
  { name = "container on a 1-layer image", env = env, argv = { mb, "run", "-e", run_image, "base:1" } },
  { name = "container on a 100-layer image", env = env, argv = { mb, "run", "-e", run_image, "deep:1" } },
}, opts.runs, opts.warmup), "container on a 1-layer image")

local steps = { 'from "base:1"' }
for i = 1, 9 do steps[#steps + 1] = string.format('run "echo %d > /step%d"', i, i) end
local recipe_file = fs.write(work.path .. "/recipe.lua", "return recipe \"ten:1\" {\n  " .. table.concat(steps, ",\n  ") .. ",\n}\n")
process.run({ mb, "build", recipe_file }, { env = env, check = true })
report.cases.rebuild = with_ratios(alternate({
  { name = "moonbox build, 10 steps, all cached", env = env, argv = { mb, "build", recipe_file } },
}, opts.runs, 1), "moonbox build, 10 steps, all cached")

-- Case 6: the cost of the secure defaults and of the sandbox, per run in one process.
io.stderr:write("case 6: secure defaults and sandbox\n")
local secure = process.run({ mb, "run", (os.getenv("MOONBOX_SOURCE") or ".") .. "/bench/secure.lua", R, "50" })
report.cases.secure = secure.code == 0 and json.decode(secure.stdout) or { error = secure.stderr }

-- Case 7: networks (bench/net.lua), and Mininet's pingall on the same star where it is installed.
io.stderr:write("case 7: networks\n")
local net_script = (os.getenv("MOONBOX_SOURCE") or ".") .. "/bench/net.lua"
report.cases.net = {}
for _, mode in ipairs({ { "link", "20" }, { "netlink", "200" }, { "star", "20" }, { "relay" } }) do
  local r = process.run({ mb, "run", net_script, table.unpack(mode) })
  report.cases.net[mode[1]] = r.code == 0 and json.decode(r.stdout) or { error = r.stderr }
end
if have("mn") then
  local t0 = sys.clock_gettime("monotonic")
  local r = process.run({ "unshare", "-n", "sh", "-c",
    "ip link set lo up; mn --topo single,20 --switch lxbr --controller none --test pingall 2>&1" })
  report.cases.net.mininet_star = { hosts = 20, total = sys.clock_gettime("monotonic") - t0,
    result = r.stdout:match("Results: ([^\n]*)") }
end

-- Case 8: podman run --rm of /bin/true with moonbox, crun and runc as its runtime (paired).
if have("podman") and oci then
  io.stderr:write("case 8: podman run --rm\n")
  local pdir = work.path .. "/podman"
  assert(sys.mkdir(pdir))
  assert(sys.symlink(mb, pdir .. "/moonbox-runc"))
  local base = { "podman", "--root", pdir .. "/storage", "--runroot", pdir .. "/run", "--storage-driver", "vfs",
    "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", pdir .. "/libpod" }
  local archive = pdir .. "/busybox.tar"
  process.run({ mb, "image", "import", R, "localhost/bench-busybox:1" }, { env = env, check = true })
  process.run({ mb, "image", "export", "localhost/bench-busybox:1", archive }, { env = env, check = true })
  local load = { table.unpack(base) }
  for _, a in ipairs({ "load", "-i", archive }) do load[#load + 1] = a end
  process.run(load, { env = { HOME = pdir, PATH = os.getenv("PATH") }, check = true })
  local function podman_run(runtime)
    local argv = { table.unpack(base) }
    for _, a in ipairs({ "--runtime", runtime, "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
      "--ulimit", "nproc=1024:1024", "localhost/bench-busybox:1", "/bin/true" }) do argv[#argv + 1] = a end
    return argv
  end
  local penv = { HOME = pdir, PATH = os.getenv("PATH") }
  report.cases.podman = with_ratios(alternate({
    { name = "podman run --rm, moonbox", argv = podman_run(pdir .. "/moonbox-runc"), env = penv },
    { name = "podman run --rm, crun", argv = podman_run(process.run({ "sh", "-c", "command -v crun" }).stdout:gsub("\n", "")), env = penv },
    { name = "podman run --rm, runc", argv = podman_run(process.run({ "sh", "-c", "command -v runc" }).stdout:gsub("\n", "")), env = penv },
  }, math.max(5, opts.runs // 2), 1), "podman run --rm, moonbox")
  for _, c in ipairs({ "cpu", "cpuacct", "memory", "pids", "freezer", "devices", "blkio", "cpuset", "systemd" }) do
    sys.rmdir("/sys/fs/cgroup/" .. c .. "/libpod_parent/conmon")
    sys.rmdir("/sys/fs/cgroup/" .. c .. "/libpod_parent")
  end
end

if opts.out then fs.write(opts.out, json.encode(report, { indent = "  " }) .. "\n") end

-- The Markdown tables.
local md = {}
local function table_for(title, rows, rss)
  md[#md + 1] = "### " .. title .. "\n"
  md[#md + 1] = "| runtime | median | p10 – p90 | × moonbox |" .. (rss and " peak RSS |" or "")
  md[#md + 1] = "|---|---:|---:|---:|" .. (rss and "---:|" or "")
  for _, r in ipairs(rows) do
    md[#md + 1] = string.format("| %s | %.2f ms | %.2f – %.2f ms | %s |%s", r.name, r.wall.median * 1e3,
      r.wall.p10 * 1e3, r.wall.p90 * 1e3, r.ratio and string.format("%.2f", r.ratio) or "-",
      rss and string.format(" %.1f MiB |", r.rss_kb.median / 1024) or "")
  end
  md[#md + 1] = ""
end
md[#md + 1] = string.format("Machine: Linux %s, %d CPUs, cgroup %s; %s.\n", report.machine.kernel,
  report.machine.cpus or 0, report.machine.cgroup, report.machine.date)
md[#md + 1] = "Method: " .. report.method .. ".\n"
table_for("Case 1: one container, /bin/true, start to exit", report.cases.single, true)
table_for("Case 1c: the same, each run after 150 ms idle (a real one-shot start)", report.cases.single_idle, true)
table_for("Case 1b: the same without a net namespace", report.cases.single_no_net, true)
table_for("Case 2: 100 containers in a row (total)", report.cases.batch100, false)
table_for("Case 3: start-up of the binary", report.cases.startup, true)
table_for("Case 5a: unpacking a 200 MB layer", report.cases.unpack, false)
table_for("Case 5b: a container on a deep image", report.cases.layers, false)
table_for("Case 5c: rebuilding a 10-step recipe, every step cached", report.cases.rebuild, false)
if report.cases.secure[1] then
  md[#md + 1] = "### Case 6: secure defaults and the sandbox (per run, in one process)\n"
  md[#md + 1] = "| run | mean per run | × secure container |"
  md[#md + 1] = "|---|---:|---:|"
  local ref = report.cases.secure[2].ms
  for _, r in ipairs(report.cases.secure) do
    md[#md + 1] = string.format("| %s | %.2f ms | %.2f |", r.name, r.ms, r.ms / ref)
  end
  md[#md + 1] = ""
end
if report.cases.net then
  local n = report.cases.net
  md[#md + 1] = "### Case 7: networks\n"
  if n.link and n.link.join then
    md[#md + 1] = string.format("- A container joining a network (veth, addresses, lease, /etc/hosts): %.2f ms; a direct link between two running containers: %.2f ms (medians of %d).",
      n.link.join * 1e3, n.link.link * 1e3, n.link.rounds)
  end
  if n.netlink and n.netlink.netlink then
    md[#md + 1] = string.format("- netlink from Lua against `ip`, per operation (veth add, address, up, delete): %.2f ms; `ip` %.2f ms a process; `ip -batch` %.2f ms.",
      n.netlink.netlink * 1e3, n.netlink.ip * 1e3, n.netlink.ip_batch * 1e3)
  end
  if n.star and n.star.total then
    md[#md + 1] = string.format("- A star of %d containers, pinged all-to-all (%d of %d answered): start %.2f s, ping %.2f s, teardown %.2f s, total %.2f s.",
      n.star.hosts, n.star.received, n.star.sent, n.star.start, n.star.ping, n.star.teardown, n.star.total)
  end
  if n.mininet_star then
    md[#md + 1] = string.format("- Mininet, the same star with `--switch lxbr --test pingall`: %.2f s (%s).", n.mininet_star.total, tostring(n.mininet_star.result))
  end
  if n.relay and n.relay.bridge then
    md[#md + 1] = string.format("- The relay: iperf3 %.0f Mbit/s through the bridge alone, %.0f / %.0f Mbit/s through the relay (in / out).",
      n.relay.bridge / 1e6, n.relay.relay_in / 1e6, n.relay.relay_out / 1e6)
    for _, d in ipairs(n.relay.delay or {}) do
      md[#md + 1] = string.format("  - delay %g ms: median RTT %.2f ms over an unshaped %.2f ms (error %.2f ms, worst %.2f ms)",
        d.delay * 1e3, d.median_rtt * 1e3, d.unshaped_rtt * 1e3, d.error * 1e3, d.max * 1e3)
    end
  end
  md[#md + 1] = ""
end
if report.cases.podman then table_for("Case 8: podman run --rm /bin/true, by runtime", report.cases.podman, false) end
local text = table.concat(md, "\n")
if opts.md then fs.write(opts.md, text) end
io.write(text)
