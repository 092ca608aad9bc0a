-- Network benchmarks (run by bench/bench.lua, or alone as root):
--   moonbox run bench/net.lua star N [--parallel P]   a star of N containers on one network,
--                                                      pinged all-to-all, torn down; prints JSON
--   moonbox run bench/net.lua link                    the time to add one link, per way
--   moonbox run bench/net.lua netlink                 netlink ops against `ip`, per operation
--   moonbox run bench/net.lua relay                   the relay: unshaped throughput, delay error
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local json = require "moonbox.json"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local net = require "moonbox.net"
local loop = require "moonbox.loop"

local mode = arg[1]
local now = loop.now

local function busybox_root()
  local dir = fs.tempdir("bench-net")
  assert(sys.chmod(dir.path, tonumber("755", 8)))
  return dir, rootfs.busybox(dir.path .. "/rootfs")
end

local function median(list)
  local s = { table.unpack(list) }
  table.sort(s)
  return s[(#s + 1) // 2]
end

-- A star of n hosts: start, ping every other host once from each (busybox ping, as Mininet's
-- pingall runs ping once per pair), tear down. `parallel` sources ping at once (forked
-- workers, each exec'ing into its hosts); 1 is Mininet's serial order.
local function star(n, parallel)
  local dir, root = busybox_root()
  local t0 = now()
  local lab = net.create({ name = "bench-star", subnet = "10.88.0.0/16" })
  local hosts = {}
  for i = 1, n do
    hosts[i] = container.new({ rootfs = root, name = "h" .. i, networks = { lab }, command = { "sleep", "3600" },
      limits = {}, namespaces = { "mount", "uts", "ipc", "net", "pid" } })
    hosts[i]:start()
  end
  local t_started = now()
  local ips = {}
  for i, h in ipairs(hosts) do ips[i] = h:ip() end
  local function ping_from(i)
    local others = {}
    for j, ip in ipairs(ips) do if j ~= i then others[#others + 1] = ip end end
    local r = hosts[i]:exec({ "sh", "-c", "ok=0; for ip in " .. table.concat(others, " ")
      .. "; do ping -c 1 -W 1 $ip >/dev/null && ok=$((ok+1)); done; echo $ok" })
    return tonumber(r.stdout) or 0
  end
  local received = 0
  if parallel <= 1 then
    for i = 1, n do received = received + ping_from(i) end
  else
    local workers = {}
    for w = 1, parallel do
      local r, wfd = assert(sys.pipe())
      local pid = assert(sys.fork())
      if pid == 0 then
        process.child(function()
          r:close()
          local sum = 0
          for i = w, n, parallel do sum = sum + ping_from(i) end
          sys.write(wfd, tostring(sum))
        end)
      end
      wfd:close()
      workers[#workers + 1] = { pid = pid, r = r }
    end
    for _, wk in ipairs(workers) do
      received = received + (tonumber(process.read_all(wk.r)) or 0)
      wk.r:close()
      sys.wait(wk.pid)
    end
  end
  local t_pinged = now()
  for _, h in ipairs(hosts) do h:remove() end
  lab:close()
  local t_done = now()
  dir:remove()
  return { hosts = n, sent = n * (n - 1), received = received, start = t_started - t0, ping = t_pinged - t_started,
    teardown = t_done - t_pinged, total = t_done - t0 }
end

-- The time to add one link: a container joining a network (veth, addresses, lease, hosts),
-- and a direct veth between two running containers (net.link).
local function add_link(rounds)
  local dir, root = busybox_root()
  local lab = net.create({ name = "bench-link", subnet = "10.87.0.0/16" })
  local a = container.new({ rootfs = root, name = "la", command = { "sleep", "3600" } })
  local b = container.new({ rootfs = root, name = "lb", command = { "sleep", "3600" } })
  a:start() b:start()
  local joins, links = {}, {}
  for i = 1, rounds do
    local c = container.new({ rootfs = root, name = "j" .. i, command = { "sleep", "3600" } })
    c:start()
    c.spec.networks = net.check_networks("bench", { lab })
    local t = now()
    net.attach(c)
    joins[#joins + 1] = now() - t
    c:remove()
    t = now()
    local l = net.link(a, b, { ips = { "10.99.0.1/30", "10.99.0.2/30" } })
    links[#links + 1] = now() - t
    l:close()
  end
  a:remove() b:remove() lab:close()
  dir:remove()
  return { join = median(joins), link = median(links), rounds = rounds }
end

-- netlink against `ip`, per operation, in a namespace of its own.
local function netlink_vs_ip(rounds)
  local ns = assert(sys.netns_create())
  local nl = assert(sys.netlink(ns))
  local out = {}
  local t = now()
  for i = 1, rounds do
    assert(nl:link_add({ name = "v" .. i, type = "veth", peer = { name = "p" .. i } }))
    assert(nl:addr_add("v" .. i, "10.66." .. (i // 250) .. "." .. (i % 250 + 1) .. "/32"))
    assert(nl:link_set("v" .. i, { up = true }))
    assert(nl:link_del("v" .. i))
  end
  out.netlink = (now() - t) / rounds / 4
  local path = "/proc/" .. sys.getpid() .. "/fd/" .. ns:fileno()
  local script = {}
  for i = 1, rounds do
    script[#script + 1] = string.format("ip link add v%d type veth peer name p%d", i, i)
    script[#script + 1] = string.format("ip addr add 10.66.%d.%d/32 dev v%d", i // 250, i % 250 + 1, i)
    script[#script + 1] = string.format("ip link set v%d up", i)
    script[#script + 1] = string.format("ip link del v%d", i)
  end
  local file = fs.write(os.tmpname(), table.concat(script, "\n") .. "\n")
  t = now()
  local r = process.run({ "nsenter", "--net=" .. path, "sh", file })
  out.ip = (now() - t) / rounds / 4
  -- `ip -batch`: one process for every operation, the best case for iproute2
  local batch = {}
  for _, line in ipairs(script) do batch[#batch + 1] = line:gsub("^ip ", "") end
  fs.write(file, table.concat(batch, "\n") .. "\n")
  t = now()
  local rb = process.run({ "nsenter", "--net=" .. path, "ip", "-batch", file })
  out.ip_batch = (now() - t) / rounds / 4
  os.remove(file)
  assert(r.code == 0 and rb.code == 0, r.stderr .. rb.stderr)
  nl:close()
  ns:close()
  out.rounds = rounds
  return out
end

-- The relay: iperf3 through it unshaped, and the error of a 20 ms delay (ping RTTs).
local function relay_case()
  local dir, root = busybox_root()
  local tools = {
    { type = "bind", source = "/usr", target = "/usr", readonly = true },
    { type = "bind", source = "/usr/lib", target = "/lib", readonly = true },
    { type = "bind", source = "/lib64", target = "/lib64", readonly = true },
  }
  local lab = net.create({ name = "bench-relay", subnet = "10.86.0.0/24" })
  local srv = container.new({ rootfs = root, name = "rs", mounts = tools, networks = { lab }, command = { "/usr/bin/iperf3", "-s" },
    stdout = "capture", stderr = "capture" })
  local cli = container.new({ rootfs = root, name = "rc", mounts = tools, networks = { lab }, command = { "sleep", "600" } })
  srv:start() cli:start()
  local function iperf(reverse)
    local r
    for _ = 1, 20 do
      r = cli:exec({ "/usr/bin/iperf3", "-c", "rs", "-t", "5", "-O", "1", "-J", reverse and "-R" or nil })
      if r.code == 0 then break end
      loop.sleep(0.2)
    end
    return json.decode(r.stdout)["end"].sum_received.bits_per_second
  end
  local out = { bridge = iperf(false) }
  lab:shape("rs", { engine = "relay" })
  out.relay_in, out.relay_out = iperf(false), iperf(true)
  cli:exec({ "ping", "-c", "2", "rs" })
  local errors = {}
  for _, d in ipairs({ 0.001, 0.020, 0.100 }) do
    lab:shape("rs", { egress = { delay = d } })
    local r = cli:exec({ "ping", "-c", "21", "-i", "0.05", "rs" })
    local rtts = {}
    for t in r.stdout:gmatch("time=([%d.]+) ms") do rtts[#rtts + 1] = tonumber(t) / 1000 end
    table.remove(rtts, 1)
    lab:shape("rs", {})
    local base = cli:exec({ "ping", "-c", "21", "-i", "0.05", "rs" })
    local plain = {}
    for t in base.stdout:gmatch("time=([%d.]+) ms") do plain[#plain + 1] = tonumber(t) / 1000 end
    errors[#errors + 1] = { delay = d, median_rtt = median(rtts), unshaped_rtt = median(plain),
      error = median(rtts) - median(plain) - d, max = math.max(table.unpack(rtts)) - median(plain) - d }
  end
  out.delay = errors
  srv:remove() cli:remove() lab:close()
  dir:remove()
  return out
end

local result
if mode == "star" then
  local parallel = 1
  if arg[3] == "--parallel" then parallel = tonumber(arg[4]) end
  result = star(tonumber(arg[2]) or 20, parallel)
elseif mode == "link" then
  result = add_link(tonumber(arg[2]) or 20)
elseif mode == "netlink" then
  result = netlink_vs_ip(tonumber(arg[2]) or 200)
elseif mode == "relay" then
  result = relay_case()
else
  io.stderr:write("usage: moonbox run bench/net.lua star N [--parallel P] | link | netlink | relay\n")
  os.exit(2)
end
print(json.encode(result))
