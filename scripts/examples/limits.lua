-- Limits at work: a memory hog is OOM-killed, a timeout stops a loop that ignores SIGTERM,
-- and a live container is inspected, paused and resumed.
--   moonbox run scripts/examples/limits.lua
local container = require "moonbox.container"
local rootfs = require "moonbox.rootfs"
local fs = require "moonbox.fs"
local json = require "moonbox.json"

local dir <close> = fs.tempdir()
local root = rootfs.busybox(dir.path .. "/root")

local hog = container.run { rootfs = root, limits = { memory = "32M" },
  command = { "/bin/sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a)" } }
print("memory hog:", hog.status, "oom_killed=" .. tostring(hog.oom_killed))

local stubborn = container.run { rootfs = root, timeout = 0.5,
  command = { "/bin/sh", "-c", "trap '' TERM; while :; do :; done" } }
print(string.format("stubborn loop: %s after %.2fs", stubborn.status, stubborn.wall))

local c <close> = container.new { rootfs = root, command = { "/bin/sleep", "30" }, limits = { pids = 10 } }
c:start()
print("exec inside:", (c:exec({ "hostname" }).stdout:gsub("\n", "")))
c:pause()
print("paused:", json.encode(c:stats()))
c:resume()
