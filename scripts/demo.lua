-- The demo: a busybox rootfs, one container run with limits, and its view of the world.
local container = require "moonbox.container"
local rootfs = require "moonbox.rootfs"
local fs = require "moonbox.fs"
local sys = require "moonbox.sys"

local dir <close> = fs.tempdir("moonbox-demo-")
local root = rootfs.busybox(dir.path .. "/rootfs")

print("host: pid " .. sys.getpid() .. ", hostname " .. sys.gethostname())
local result = container.run {
  rootfs = root,
  hostname = "demo",
  command = { "/bin/sh", "-c", [[
    echo "inside: pid $$, hostname $(hostname), user $(id -un)"
    echo "network devices: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')"
    echo "processes:"; ps -o pid,comm
    echo "mounts:"; cut -d' ' -f2,3 /proc/mounts | head -n 8
  ]] },
  limits = { memory = "128M", pids = 64, cpus = 0.5 },
  stdout = "capture",
}
io.write(result.stdout)
print(string.format("result: %s, code %d, wall %.3fs, cpu %.3fs, peak memory %.1f MiB",
  result.status, result.code, result.wall, result.cpu.total, (result.memory_peak or 0) / 2 ^ 20))
