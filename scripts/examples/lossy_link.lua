-- A client/server experiment under loss: a web server, a client that fetches from it by name,
-- and the server's link made worse step by step. No ip, tc, nsenter or iptables.
--   moonbox run scripts/examples/lossy_link.lua
local container = require "moonbox.container"
local rootfs = require "moonbox.rootfs"
local net = require "moonbox.net"
local fs = require "moonbox.fs"
local loop = require "moonbox.loop"

local dir <close> = fs.tempdir()
local root = rootfs.busybox(dir.path .. "/root")
fs.write(root .. "/page", string.rep("x", 200000))

local lab <close> = net.create { name = "lossy", subnet = "10.89.0.0/24", subnet6 = "fd89::/64" }
local server <close> = container.new { rootfs = root, name = "server", networks = { "lossy" }, command = { "httpd", "-f", "-h", "/" } }
local client <close> = container.new { rootfs = root, name = "client", networks = { "lossy" }, command = { "sleep", "600" } }
server:start() client:start()

print("loss   delay   fetch (s)  ok")
for _, loss in ipairs({ 0, 0.02, 0.05, 0.10 }) do
  lab:shape("server", { delay = "10ms", loss = loss, seed = 1 })
  local t0 = loop.now()
  local r = client:exec { "timeout", "30", "wget", "-qO", "/dev/null", "http://server/page" }
  print(string.format("%4.0f%%   10 ms   %8.2f   %s", loss * 100, loop.now() - t0, r.code == 0 and "yes" or "no"))
end
print("server link: " .. lab:faults("server").engine .. ", rx " .. server:net_stats("lossy").rx_bytes .. " bytes")
