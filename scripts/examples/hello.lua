-- The smallest container: a busybox rootfs and one command.
--   moonbox run scripts/examples/hello.lua
local container = require "moonbox.container"
local rootfs = require "moonbox.rootfs"
local fs = require "moonbox.fs"

local dir <close> = fs.tempdir()
local r = container.run { rootfs = rootfs.busybox(dir.path .. "/root"), command = { "echo", "hello from a container" } }
print("exit code", r.code)
