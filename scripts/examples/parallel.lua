-- Several containers at once, without threads: start them, then take them as they end.
--   moonbox run scripts/examples/parallel.lua
local container = require "moonbox.container"
local rootfs = require "moonbox.rootfs"
local fs = require "moonbox.fs"

local dir <close> = fs.tempdir()
local root = rootfs.busybox(dir.path .. "/root")
local running = {}
for i = 1, 5 do
  local c = container.new { rootfs = root, hostname = "worker" .. i, stdout = "capture",
    command = { "/bin/sh", "-c", "sleep 0.$((RANDOM % 5)); echo $(hostname) done" } }
  c:start()
  running[#running + 1] = c
end
while #running > 0 do
  local c, result = container.wait_any(running)
  io.write(result.stdout)
  for i, x in ipairs(running) do if x == c then table.remove(running, i) end end
  c:remove()
end
