-- A setup function runs in the container's namespaces, after its root is ready and before
-- the command: Lua configuring the container in-process, with the full moonbox.sys at hand.
--   moonbox run scripts/examples/setup_hook.lua
local container = require "moonbox.container"
local rootfs = require "moonbox.rootfs"
local fs = require "moonbox.fs"

local dir <close> = fs.tempdir()
local r = container.run {
  rootfs = rootfs.busybox(dir.path .. "/root"),
  command = { "/bin/sh", "-c", "cat /etc/motd; ls /data" },
  stdout = "capture",
  setup = function(sys)
    local f = assert(io.open("/etc/motd", "w"))
    f:write("configured by setup() as pid ", sys.getpid(), "\n")
    f:close()
    assert(sys.mkdir("/data"))
    assert(sys.mount("tmpfs", "/data", "tmpfs", { "nosuid" }, "size=1m"))
    for i = 1, 3 do io.open("/data/file" .. i, "w"):close() end
  end,
}
io.write(r.stdout)
