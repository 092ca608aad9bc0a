-- Networks: netlink from Lua, labs with names and IPv6, published ports, link faults through
-- the relay (and netem where the kernel has it), direct links, host networks with NAT, the
-- command line, and every exit path. Every network is built in namespaces the tests make; a
-- "host" side (published ports, host bridges, NAT) is a namespace playing the host.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local json = require "moonbox.json"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local net = require "moonbox.net"
local addr = require "moonbox.net.addr"
local shape = require "moonbox.net.shape"
local ipam = require "moonbox.net.ipam"
local test = require "moonbox.test"
local loop = require "moonbox.loop"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root

local function setup()
  if root then return end
  base = fs.tempdir("net-test")
  assert(sys.chmod(base.path, tonumber("755", 8)))
  root = rootfs.busybox(base.path .. "/rootfs")
  fs.write(root .. "/index.html", "hello from the container\n")
end

-- The host's programs (iperf3, python3) inside a busybox container: /usr and the loader bound
-- read-only. Busybox's own applets stay reachable as `busybox NAME`.
local tools = {
  { type = "bind", source = "/usr", target = "/usr", readonly = true },
  { type = "bind", source = "/usr/lib", target = "/lib", readonly = true },
  { type = "bind", source = "/lib64", target = "/lib64", readonly = true },
}

local function has(program) return sys.stat(program) ~= nil end

-- Round-trip times of a busybox ping, in ms.
local function rtts(text)
  local out = {}
  for t in text:gmatch("time=([%d.]+) ms") do out[#out + 1] = tonumber(t) end
  return out
end

local function median(list)
  local s = { table.unpack(list) }
  table.sort(s)
  return s[(#s + 1) // 2]
end

local function loss_of(text) return tonumber(text:match("(%d+)%% packet loss")) end

describe("netlink (moonbox.sys)", function()
  before_each(function() needs_root() end)

  it("makes bridges, veths into another namespace, addresses and routes, and lists them", function()
    local ns1, ns2 = assert(sys.netns_create()), assert(sys.netns_create())
    local nl1, nl2 = assert(sys.netlink(ns1)), assert(sys.netlink(ns2))
    expect(nl1:link_add({ name = "br0", type = "bridge", up = true })).to_be(true)
    expect(nl1:link_add({ name = "v0", type = "veth", up = true, master = "br0", peer = { name = "eth0", netns = ns2 } })).to_be(true)
    expect(nl2:link_set("eth0", { up = true, mtu = 1400, address = "02:00:00:00:00:07" })).to_be(true)
    expect(nl2:addr_add("eth0", "10.9.0.2/24")).to_be(true)
    expect(nl2:addr_add("eth0", "fd09::2/64", { nodad = true })).to_be(true)
    expect(nl1:addr_add("br0", "10.9.0.1/24")).to_be(true)
    expect(nl2:route_add({ dst = "default", gateway = "10.9.0.1" })).to_be(true)
    local eth0
    for _, l in ipairs(nl2:links()) do if l.name == "eth0" then eth0 = l end end
    expect(eth0.type).to_be("veth")
    expect(eth0.mtu).to_be(1400)
    expect(eth0.address).to_be("02:00:00:00:00:07")
    expect(eth0.stats.rx_bytes).to_be_a("integer")
    local v0
    for _, l in ipairs(nl1:links()) do if l.name == "v0" then v0 = l end end
    expect(v0.master).to_be("br0")
    local addrs = {}
    for _, a in ipairs(nl2:addrs()) do addrs[#addrs + 1] = a.address .. "/" .. a.prefix end
    expect(addrs).to_contain("10.9.0.2/24")
    expect(addrs).to_contain("fd09::2/64")
    local default
    for _, r in ipairs(nl2:routes()) do if r.dst == "default" then default = r.gateway end end
    expect(default).to_be("10.9.0.1")
    -- failures: nil, "op(arg): strerror", "ERRNO"
    local ok, msg, errno = nl1:link_add({ name = "br0", type = "bridge" })
    expect(ok).to_be_nil()
    expect(msg).to_be("link_add(br0): File exists")
    expect(errno).to_be("EEXIST")
    ok, msg, errno = nl1:link_del("nope")
    expect(msg).to_be("link_del(nope): No such device")
    expect(errno).to_be("ENODEV")
    expect(nl1:qdisc_replace("v0", { kind = "tbf", rate = 10e6 })).to_be(true)
    expect(nl1:qdisc_del("v0")).to_be(true)
    expect(nl1:qdisc_replace("v0", { kind = "htb", handle = "1:", default = 1 })).to_be(true)
    expect(nl1:class_replace("v0", { parent = "1:", classid = "1:1", rate = 5e6 })).to_be(true)
    expect(nl1:link_del("v0")).to_be(true)
    nl1:close() nl2:close() ns1:close() ns2:close()
  end)

  it("builds netem requests byte for byte as tc does", function()
    -- Tests/lua/fixtures/tc-netem.hex: what tc sent, captured with strace.
    local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]+$")
    local lines = {}
    for line in io.lines(here .. "/fixtures/tc-netem.hex") do
      if not line:match("^#") then lines[#lines + 1] = line end
    end
    local cases = {
      { delay = 0.02 },
      { delay = 0.05, jitter = 0.005, delay_correlation = 0.25, loss = 0.1, duplicate = 0.01, reorder = 0.25,
        reorder_correlation = 0.5, corrupt = 0.001, rate = 10e6, limit = 1000 },
    }
    local ns = assert(sys.netns_create())
    local nl = assert(sys.netlink(ns))
    for i, q in ipairs(cases) do
      q.kind = "netem"
      local mine = nl:qdisc_replace("v0", q, { dry_run = true })
      local hex = (mine:gsub(".", function(c) return string.format("%02x", c:byte()) end))
      local theirs = lines[2 * i]
      expect(#hex).to_be(#theirs)
      -- the sequence number (bytes 8-11) and the ifindex (20-23) differ by nature
      local function masked(h) return h:sub(1, 16) .. "********" .. h:sub(25, 40) .. "********" .. h:sub(49) end
      expect(masked(hex)).to_be(masked(theirs))
    end
    -- The same options through moonbox.net.shape reach the same bytes.
    local p = shape.parse("test", { delay = "50ms", jitter = "5ms", delay_correlation = "25%", loss = "10%", duplicate = "1%",
      reorder = "25%", reorder_correlation = "50%", corrupt = "0.1%", rate = "10mbit", limit = 1000 }).egress
    local mine = nl:qdisc_replace("v0", shape.qdisc(p), { dry_run = true })
    local hex = (mine:gsub(".", function(c) return string.format("%02x", c:byte()) end))
    expect(hex:sub(49)).to_be(lines[4]:sub(49))
    nl:close()
    ns:close()
  end)

  it("refuses bad arguments with errors that name the method and the argument", function()
    local problems = process.call(function()
      local nl = assert(sys.netlink())
      local junk = { false, 0, -1, 2 ^ 70, 0 / 0, "", "bogus", "\0", {}, { "x" }, { bogus = 1 }, { name = 5 },
        { name = "x", type = "warp" }, { kind = "netem", loss = 7 }, { kind = "nope" }, print }
      local out = {}
      for _, m in ipairs({ "link_add", "link_del", "link_set", "links", "addr_add", "addr_del", "addrs", "route_add",
        "route_del", "routes", "qdisc_replace", "qdisc_del", "class_replace" }) do
        for _, a in ipairs(junk) do
          for _, b in ipairs({ junk[1], junk[9], junk[7] }) do
            local ok, err = pcall(nl[m], nl, a, b, a)
            if not ok and not tostring(err):find(m, 1, true) then out[#out + 1] = m .. ": " .. tostring(err) end
          end
        end
      end
      nl:close()
      local ok, err = pcall(nl.links, nl)
      if ok or not tostring(err):find("closed") then out[#out + 1] = "closed socket: " .. tostring(err) end
      return out
    end, { namespaces = { "net" } })
    expect(problems).to_equal({})
    expect(function() sys.netlink():link_add({ name = "x", type = "veth" }) end).to_fail("a veth needs peer")
    expect(function() sys.netlink():qdisc_replace("lo", { kind = "netem", loss = 2 }) end).to_fail("probability")
  end)
end)

describe("addresses and leases", function()
  it("does subnet arithmetic for IPv4 and IPv6", function()
    local s = assert(addr.subnet("10.89.0.0/24"))
    expect(s:host(1)).to_be("10.89.0.1")
    expect(s:host(254)).to_be("10.89.0.254")
    expect(s:host(255)).to_be_nil()
    expect(s:index("10.89.0.10")).to_be(10)
    expect(s:index("10.90.0.10")).to_be_nil()
    local s6 = assert(addr.subnet("fd89::/64"))
    expect(s6:host(10)).to_be("fd89::a")
    expect(s6:host(65536)).to_be("fd89::1:0")
    expect(s6:index("fd89::a")).to_be(10)
    expect(addr.normalize("FD89:0:0:0:0:0:0:1")).to_be("fd89::1")
    expect(addr.normalize("2001:db8:0:0:1:0:0:1")).to_be("2001:db8::1:0:0:1")
    expect(select(2, addr.subnet("10.89.0.1/24"))).to_match("host bits set")
    expect(select(2, addr.subnet("10.89.0.0"))).to_match("subnet like")
    expect(select(2, addr.subnet("300.1.1.0/24"))).to_match("not an IPv4 or IPv6")
  end)

  it("parses link faults and refuses what is not one", function()
    local p = shape.parse("t", { delay = "50ms", loss = "10%", rate = "10mbit", jitter = 0.005 })
    expect(p.egress).to_equal({ delay = 0.05, loss = 0.1, rate = 1e7, jitter = 0.005 })
    expect(p.ingress).to_equal(p.egress)
    local q = shape.parse("t", { egress = { loss = 0.5 } })
    expect(q.egress).to_equal({ loss = 0.5 })
    expect(q.ingress).to_equal({})
    expect(function() shape.parse("t", { delay = "fast" }) end).to_fail("delay must be a duration")
    expect(function() shape.parse("t", { rate = "10 furlongs" }) end).to_fail("rate must be a rate")
    expect(function() shape.parse("t", { loss = 1.5 }) end).to_fail("loss must be")
    expect(function() shape.parse("t", { lag = 1 }) end).to_fail("unknown link fault 'lag'")
    expect(function() shape.parse("t", { loss = 0.1, egress = {} }) end).to_fail("not both")
    expect(function() shape.validate("t", { reorder = 0.1 }) end).to_fail("reorder needs a delay")
    expect(shape.merge({ delay = 1, loss = 0.1 }, { loss = false, rate = 5 })).to_equal({ delay = 1, rate = 5 })
  end)

  it("never hands out an address twice, even to processes racing for it", function()
    local dir = fs.tempdir("ipam-test")
    local subnets = { inet = assert(addr.subnet("10.1.0.0/28")), inet6 = assert(addr.subnet("fd01::/64")) }
    local pids = {}
    local r, w = assert(sys.pipe())
    for i = 1, 6 do
      pids[i] = assert(sys.fork())
      if pids[i] == 0 then
        process.child(function()
          local got = ipam.allocate(dir.path, subnets, {}, "m" .. i)
          sys.write(w, got.ip .. " " .. got.ip6 .. "\n")
          sys.nanosleep(0.5)  -- alive while the others allocate
        end)
      end
    end
    w:close()
    local text = process.read_all(r)
    r:close()
    for _, pid in ipairs(pids) do sys.wait(pid) end
    local seen, count = {}, 0
    for ip, ip6 in text:gmatch("(%S+) (%S+)\n") do
      expect(seen[ip]).to_be_nil()
      seen[ip] = true
      count = count + 1
      expect(addr.subnet("fd01::/64"):index(ip6)).to_be(addr.subnet("10.1.0.0/28"):index(ip))
    end
    expect(count).to_be(6)
    -- their processes are gone: the leases are stale, and a sweep reclaims them
    expect(#ipam.sweep(dir.path)).to_be(12)
    local got = ipam.allocate(dir.path, subnets, { ip = "10.1.0.9" }, "x")
    expect(got.ip).to_be("10.1.0.9")
    expect(got.ip6).to_be("fd01::9")
    expect(function() ipam.allocate(dir.path, subnets, { ip = "10.1.0.9" }, "y") end).to_fail("in use by x")
    expect(function() ipam.allocate(dir.path, subnets, { ip = "10.1.0.1" }, "y") end).to_fail("not a host address")
    expect(function() ipam.allocate(dir.path, subnets, { ip = "10.2.0.5" }, "y") end).to_fail("not a host address")
    dir:remove()
  end)

  it("checks net.create and the container spec's networks and ports", function()
    expect(function() net.create({ name = "bad name" }) end).to_fail("name must be")
    expect(function() net.create({ name = "x", subnet = "fd00::/64" }) end).to_fail("subnet must be an IPv4")
    expect(function() net.create({ name = "x", masquerade = true }) end).to_fail("masquerade needs host")
    expect(function() net.create({ name = "x", colour = 1 }) end).to_fail("unknown option 'colour'")
    expect(function() container.new({ rootfs = "/", command = { "true" }, network = "host", networks = { "lab" } }) end)
      .to_fail("networks need the container's own")
    expect(function() container.new({ rootfs = "/", command = { "true" }, ports = { "99999:80" } }) end).to_fail("ports%[1%]")
    expect(function() container.new({ rootfs = "/", command = { "true" }, ports = { "8080:80/sctp" } }) end).to_fail("tcp or udp")
    expect(function() container.new({ rootfs = "/", command = { "true" }, networks = { lab = { ip = "fd::1" } } }) end)
      .to_fail("ip must be an IPv4")
    expect(function() container.new({ rootfs = "/", command = { "true" }, networks = { lab = { mac = "x" } } }) end)
      .to_fail("unknown option 'mac'")
    local proxy = require "moonbox.net.proxy"
    expect(proxy.parse("t", "127.0.0.1:18080:80")).to_equal({ host_ip = "127.0.0.1", host_port = 18080, port = 80, proto = "tcp" })
    expect(proxy.parse("t", "5353:53/udp")).to_equal({ host_ip = "0.0.0.0", host_port = 5353, port = 53, proto = "udp" })
    expect(proxy.parse("t", "[::1]:8080:80")).to_equal({ host_ip = "::1", host_port = 8080, port = 80, proto = "tcp" })
    expect(proxy.parse("t", "80")).to_equal({ host_ip = "0.0.0.0", host_port = 0, port = 80, proto = "tcp" })
  end)
end)

describe("a lab network", function()
  before_each(function() needs_root() setup() end)

  it("lets three containers reach each other by name and alias, over IPv4 and IPv6", function()
    local lab <close> = net.create({ name = "t-names", subnet = "10.89.0.0/24", subnet6 = "fd89::/64" })
    local a <close> = container.new({ rootfs = root, name = "t-a", command = { "sleep", "60" },
      networks = { ["t-names"] = { ip = "10.89.0.10", aliases = { "db" } } } })
    local b <close> = container.new({ rootfs = root, name = "t-b", command = { "httpd", "-f", "-p", "80", "-h", "/" }, networks = { "t-names" } })
    local c <close> = container.new({ rootfs = root, name = "t-c", command = { "sleep", "60" }, networks = { lab } })
    a:start() b:start() c:start()
    expect(a:ip("t-names")).to_be("10.89.0.10")
    expect(a:ip6("t-names")).to_be("fd89::a")
    expect(b:ip("t-names")).to_match("^10%.89%.0%.%d+$")
    expect(b:ip()).to_be(b:ip("t-names"))
    for _, pair in ipairs({ { c, "t-a" }, { c, "db" }, { a, "t-c" }, { b, "t-a" } }) do
      local r = pair[1]:exec({ "ping", "-c", "1", "-W", "2", pair[2] })
      expect(r.code).to_be(0)
    end
    local r6 = c:exec({ "ping6", "-c", "1", "-W", "2", "t-a" })
    expect(r6.stdout).to_match("from fd89::a")
    local fetched = a:exec({ "wget", "-qO-", "http://t-b/index.html" })
    expect(fetched.stdout).to_be("hello from the container\n")
    local hosts = c:exec({ "cat", "/etc/hosts" }).stdout
    expect(hosts).to_match("10%.89%.0%.10\tt%-a db")
    expect(hosts).to_match("fd89::a\tt%-a db")
    -- a member that leaves is gone from the others' /etc/hosts
    b:remove()
    expect(c:exec({ "cat", "/etc/hosts" }).stdout).not_to_match("t%-b")
    expect(a:net_stats("t-names").rx_bytes).to_be_at_least(1)
    expect(lab:members_list()["t-a"].ip).to_be("10.89.0.10")
  end)

  it("shapes links through the relay: delay, loss, partition and healing", function()
    local lab <close> = net.create({ name = "t-faults", subnet = "10.89.1.0/24" })
    local a <close> = container.new({ rootfs = root, name = "t-fa", command = { "sleep", "120" }, networks = { "t-faults" } })
    local b <close> = container.new({ rootfs = root, name = "t-fb", command = { "sleep", "120" }, networks = { "t-faults" } })
    a:start() b:start()
    expect(b:exec({ "ping", "-c", "1", "-W", "2", "t-fa" }).code).to_be(0)  -- neighbours known before timing
    -- 50 ms on what a sends: the round trip from b takes 50 ms more
    lab:shape("t-fa", { egress = { delay = "50ms" }, engine = "relay" })
    expect(lab:faults("t-fa").engine).to_be("relay")
    local r = b:exec({ "ping", "-c", "11", "-i", "0.1", "t-fa" })
    local t = rtts(r.stdout)
    expect(#t).to_be(11)
    expect(median(t)).to_be_near(50, 5)
    -- 20% loss on what a sends, over 500 pings (the relay's random numbers seeded)
    lab:shape("t-fa", { egress = { loss = 0.2 }, seed = 7 })
    r = b:exec({ "ping", "-c", "500", "-i", "0.005", "-W", "1", "t-fa" })
    local lost = loss_of(r.stdout)
    expect(lost).to_be_at_least(15)
    expect(lost).to_be_at_most(25)
    -- set changes only what it names
    lab:set("t-fa", { egress = { delay = "10ms" } })
    expect(lab:faults("t-fa").egress).to_equal({ loss = 0.2, delay = 0.01 })
    lab:shape("t-fa", {})
    -- a partition stops everything; healing brings it back
    lab:disconnect("t-fa")
    expect(loss_of(b:exec({ "ping", "-c", "3", "-i", "0.2", "-W", "1", "t-fa" }).stdout)).to_be(100)
    lab:connect("t-fa")
    expect(test.eventually(function() return b:exec({ "ping", "-c", "1", "-W", "1", "t-fa" }).code == 0 end, 10)).to_be(true)
  end)

  -- iperf3's received rate through a link shaped to 10 mbit by `engine`.
  local function rate_through(name, subnet, engine)
    local lab <close> = net.create({ name = name, subnet = subnet })
    local srv <close> = container.new({ rootfs = root, name = name .. "-srv", mounts = tools, networks = { name },
      command = { "/usr/bin/iperf3", "-s" }, stdout = "capture", stderr = "capture" })
    local cli <close> = container.new({ rootfs = root, name = name .. "-cli", mounts = tools, networks = { name }, command = { "sleep", "60" } })
    srv:start() cli:start()
    lab:shape(name .. "-srv", { rate = "10mbit", engine = engine })
    local r
    test.eventually(function()
      r = cli:exec({ "/usr/bin/iperf3", "-c", name .. "-srv", "-t", "4", "-O", "1", "-J" })
      return r.code == 0
    end, 10)
    return json.decode(r.stdout)["end"].sum_received.bits_per_second, lab:faults(name .. "-srv").engine
  end

  it("holds a 10 mbit rate to within 15% (iperf3) through the relay", function()
    if not has("/usr/bin/iperf3") then skip("iperf3 is not installed (scripts/deps installs it)") end
    local bps, engine = rate_through("t-rate", "10.89.2.0/24", "relay")
    expect(engine).to_be("relay")
    expect(bps).to_be_near(10e6, 1.5e6)
  end)

  it("holds a 10 mbit rate to within 15% (iperf3) through the kernel's tbf", function()
    if not has("/usr/bin/iperf3") then skip("iperf3 is not installed (scripts/deps installs it)") end
    local bps, engine = rate_through("t-rate2", "10.89.3.0/24", nil)
    expect(engine).to_be("kernel")
    expect(bps).to_be_near(10e6, 1.5e6)
  end)

  it("uses the kernel's netem where it has one", function()
    if not net.netem_available() then skip("this kernel has no sch_netem: the relay serves (tested above)") end
    local lab <close> = net.create({ name = "t-netem", subnet = "10.89.4.0/24" })
    local a <close> = container.new({ rootfs = root, name = "t-na", command = { "sleep", "60" }, networks = { "t-netem" } })
    local b <close> = container.new({ rootfs = root, name = "t-nb", command = { "sleep", "60" }, networks = { "t-netem" } })
    a:start() b:start()
    lab:shape("t-na", { egress = { delay = "50ms" } })
    expect(lab:faults("t-na").engine).to_be("kernel")
    local t = rtts(b:exec({ "ping", "-c", "6", "-i", "0.1", "t-na" }).stdout)
    expect(median(t)).to_be_near(50, 5)
  end)

  it("filters frames in Lua through the relay", function()
    local lab <close> = net.create({ name = "t-filter", subnet = "10.89.5.0/24" })
    local a <close> = container.new({ rootfs = root, name = "t-xa", command = { "httpd", "-f", "-p", "80", "-h", "/" }, networks = { "t-filter" } })
    local b <close> = container.new({ rootfs = root, name = "t-xb", command = { "sleep", "60" }, networks = { "t-filter" } })
    a:start() b:start()
    -- drop what a sends from port 80, let everything else pass
    lab:shape("t-xa", { filter = function(frame, direction)
      local f = net.parse_frame(frame)
      return not (direction == "egress" and f.proto == "tcp" and f.sport == 80)
    end })
    expect(b:exec({ "ping", "-c", "1", "-W", "2", "t-xa" }).code).to_be(0)
    -- (busybox wget's own -T crashes: timeout ends it instead)
    local r = b:exec({ "timeout", "3", "wget", "-qO-", "http://t-xa/index.html" })
    expect(r.stdout).to_be("")
    expect(r.status == "exited" and r.code == 0).to_be(false)
    lab:shape("t-xa", {})  -- the filter stays with the relay until replaced
    lab:shape("t-xa", { filter = function() return true end })
    expect(b:exec({ "timeout", "3", "wget", "-qO-", "http://t-xa/index.html" }).stdout).to_be("hello from the container\n")
  end)

  it("links two containers directly, with faults that change atomically", function()
    local a <close> = container.new({ rootfs = root, name = "t-la", command = { "sleep", "60" } })
    local b <close> = container.new({ rootfs = root, name = "t-lb", command = { "sleep", "60" } })
    local l <close> = net.link(a, b, { delay = "20ms", ips = { "10.77.0.1/24", "10.77.0.2/24" } })
    a:start() b:start()  -- the link is made once both run
    expect(b:exec({ "ping", "-c", "1", "-W", "2", "10.77.0.1" }).code).to_be(0)
    local t = rtts(b:exec({ "ping", "-c", "6", "-i", "0.1", "10.77.0.1" }).stdout)
    expect(median(t)).to_be_near(40, 5)  -- 20 ms each way
    l:set({ delay = false })
    t = rtts(b:exec({ "ping", "-c", "3", "-i", "0.1", "10.77.0.1" }).stdout)
    expect(median(t)).to_be_at_most(10)
    l:down()
    expect(loss_of(b:exec({ "ping", "-c", "2", "-i", "0.2", "-W", "1", "10.77.0.1" }).stdout)).to_be(100)
    l:up()
    expect(test.eventually(function() return b:exec({ "ping", "-c", "1", "-W", "1", "10.77.0.1" }).code == 0 end, 10)).to_be(true)
    expect(l:stats().rx_packets).to_be_at_least(1)
    -- leased addresses when none are given
    local c <close> = container.new({ rootfs = root, name = "t-lc", command = { "sleep", "60" } })
    c:start()
    local l2 <close> = net.link(a, c)
    local ip_a, ip_c = l2:addresses()
    expect(ip_a).to_match("^10%.254%.")
    expect(c:exec({ "ping", "-c", "1", "-W", "2", ip_a:match("^[^/]+") }).code).to_be(0)
    expect(ip_c).to_match("/30$")
  end)
end)

describe("published ports", function()
  before_each(function() needs_root() setup() end)

  -- Runs fn in a network namespace of its own, playing the host, with its lo up.
  local function as_host(fn)
    return process.call(function()
      assert(sys.netlink():link_set("lo", { up = true }))
      return fn()
    end, { namespaces = { "net" } })
  end

  it("serves busybox httpd to curl over TCP, and a UDP echo, from a lab container", function()
    if not has("/usr/bin/python3") then skip("python3 is not installed") end
    local got = as_host(function()
      local lab <close> = net.create({ name = "t-ports", subnet = "10.89.6.0/24" })
      local web <close> = container.new({ rootfs = root, name = "t-web", networks = { "t-ports" }, mounts = tools,
        ports = { "127.0.0.1:18080:80", "15353:53/udp", "80" },
        command = { "sh", "-c", "busybox httpd -f -p 80 -h / & /usr/bin/python3 -c \"import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 53))\nwhile True:\n  d, a = s.recvfrom(65536)\n  s.sendto(b'echo:' + d, a)\n\" & wait" } })
      web:start()
      local out = {}
      test.eventually(function()
        local r = process.run({ "curl", "-s", "-m", "2", "http://127.0.0.1:18080/index.html" })
        out.tcp = r.stdout
        return r.code == 0
      end, 10)
      local any = web:port(80)
      out.any = any
      local u = assert(sys.socket("inet", "dgram"))
      test.eventually(function()
        assert(sys.sendto(u, "ping", "127.0.0.1", 15353))
        local ready = sys.poll({ u }, 0.5)
        if #ready == 0 then return false end
        out.udp = sys.recvfrom(u)
        return true
      end, 10)
      return out
    end)
    expect(got.tcp).to_be("hello from the container\n")
    expect(got.udp).to_be("echo:ping")
    expect(got.any).to_be(18080)  -- the first publication of port 80 wins the lookup
  end)

  it("publishes a port of a container with no network but its lo", function()
    local got = as_host(function()
      local web <close> = container.new({ rootfs = root, name = "t-lo", ports = { "127.0.0.1:0:80" },
        command = { "httpd", "-f", "-p", "80", "-h", "/" } })
      web:start()
      local port = web:port(80)
      local text
      test.eventually(function()
        local r = process.run({ "curl", "-s", "-m", "2", "http://127.0.0.1:" .. port .. "/index.html" })
        text = r.stdout
        return r.code == 0
      end, 10)
      return { text = text, port = port }
    end)
    expect(got.port).to_be_at_least(1024)
    expect(got.text).to_be("hello from the container\n")
  end)

  it("refuses a host port in use, naming it", function()
    local msg = as_host(function()
      local s = assert(sys.socket("inet", "stream"))
      assert(sys.bind(s, "127.0.0.1", 18090))
      assert(sys.listen(s))
      local c = container.new({ rootfs = root, name = "t-busy", ports = { "127.0.0.1:18090:80" }, command = { "sleep", "5" } })
      local ok, err = pcall(c.start, c)
      return ok and "started" or tostring(err)
    end)
    expect(msg).to_match("cannot publish 127%.0%.0%.1:18090/tcp: bind%(127%.0%.0%.1, 18090%): Address already in use")
  end)
end)

describe("a host network", function()
  before_each(function() needs_root() setup() end)

  it("puts the bridge and the gateway in the host's namespace, with NAT when asked, and takes them away", function()
    if not has("/usr/sbin/iptables") then skip("iptables is not installed") end
    local got = process.call(function()
      assert(sys.netlink():link_set("lo", { up = true }))
      local out = {}
      local lab = net.create({ name = "t-host", subnet = "10.89.7.0/24", host = true, masquerade = true })
      local c <close> = container.new({ rootfs = root, name = "t-h1", networks = { "t-host" }, command = { "sleep", "30" } })
      c:start()
      out.bridge = false
      for _, l in ipairs(sys.netlink():links()) do if l.name == "mb-t-host" then out.bridge = true end end
      out.ping_gateway = c:exec({ "ping", "-c", "1", "-W", "2", "10.89.7.1" }).code
      out.ping_from_host = process.run({ "ping", "-c", "1", "-W", "2", c:ip() }).code
      out.rule = process.run({ "iptables", "-t", "nat", "-S", "POSTROUTING" }).stdout
      c:remove()
      lab:close()
      out.after = process.run({ "iptables", "-t", "nat", "-S", "POSTROUTING" }).stdout
      out.bridge_after = false
      for _, l in ipairs(sys.netlink():links()) do if l.name == "mb-t-host" then out.bridge_after = true end end
      return out
    end, { namespaces = { "net" } })
    expect(got.bridge).to_be(true)
    expect(got.ping_gateway).to_be(0)
    if has("/usr/bin/ping") or has("/bin/ping") then expect(got.ping_from_host).to_be(0) end
    expect(got.rule).to_match("%-s 10%.89%.7%.0/24 ! %-o mb%-t%-host .*MASQUERADE")
    expect(got.after).not_to_match("MASQUERADE")
    expect(got.bridge_after).to_be(false)
  end)
end)

describe("the network command line", function()
  before_each(function() needs_root() setup() end)

  it("creates, lists, uses and removes a network that outlives the command", function()
    local st = fs.tempdir("net-cli-state")
    local env = { MOONBOX_STATE = st.path .. "/s", PATH = "/usr/bin:/bin:/usr/sbin:/sbin" }
    local function mb(args) return process.run({ moonbox, table.unpack(args) }, { env = env }) end
    local server
    finally(function()
      if server then sys.kill(server, "KILL") sys.wait(server) end
      mb({ "network", "rm", "--force", "t-cli" })
      st:remove()
    end)
    local r = mb({ "network", "create", "t-cli", "--subnet", "10.89.8.0/24", "--subnet6", "fd88::/64" })
    expect(r.stderr).to_be("")
    expect(r.code).to_be(0)
    r = mb({ "network", "create", "t-cli" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("^moonbox network create: network t%-cli exists")
    r = mb({ "network", "ls" })
    expect(r.stdout).to_match("t%-cli%s+10%.89%.8%.0/24%s+fd88::/64%s+lab%s+0%s+persistent")
    -- two commands, two processes: a server with a fixed address, a client that finds it by name
    server = assert(sys.fork())
    if server == 0 then
      local null = assert(sys.open("/dev/null", "rdwr"))
      sys.dup2(null, 1) sys.dup2(null, 2)
      process.exec({ moonbox, "box", "--rootfs", root, "--name", "t-cli-web", "--network", "t-cli", "--ip", "10.89.8.50",
        "--network-alias", "www", "--", "httpd", "-f", "-p", "80", "-h", "/" }, env)
      sys._exit(127)
    end
    local fetched
    test.eventually(function()
      r = mb({ "box", "--rootfs", root, "--network", "t-cli", "--", "timeout", "3", "wget", "-qO-", "http://www/index.html" })
      fetched = r.stdout
      return r.code == 0
    end, 15)
    expect(fetched).to_be("hello from the container\n")
    r = mb({ "box", "--rootfs", root, "--network", "t-cli", "--ip", "10.89.8.50", "--", "true" })
    expect(r.code).to_be(125)
    expect(r.stderr).to_match("address 10%.89%.8%.50 is in use by t%-cli%-web")
    r = mb({ "network", "rm", "t-cli" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("has members: t%-cli%-web")
    sys.kill(server, "TERM")
    sys.wait(server)
    server = nil
    r = mb({ "network", "rm", "t-cli" })
    expect(r.stderr).to_be("")
    expect(r.code).to_be(0)
    expect(mb({ "network", "ls", "--json" }).stdout).to_be("[]\n")
    r = mb({ "box", "--rootfs", root, "--network", "t-cli", "--", "true" })
    expect(r.stderr).to_match("no network named t%-cli")
    r = mb({ "network", "frobnicate" })
    expect(r.code).to_be(2)
  end)
end)

describe("network teardown", function()
  before_each(function() needs_root() setup() end)

  -- A script with a lab of two containers, a relay, a direct link and a published port, that
  -- signals when all is up and then waits.
  local SCRIPT = [[
    local container = require "moonbox.container"
    local net = require "moonbox.net"
    local fs = require "moonbox.fs"
    local root, ready = ...
    local lab <close> = net.create{ name = "t-down", subnet = "10.89.9.0/24" }
    local a <close> = container.new{ rootfs = root, name = "t-da", networks = { "t-down" }, ports = { "127.0.0.1:0:80" }, command = { "sleep", "60" } }
    local b <close> = container.new{ rootfs = root, name = "t-db", networks = { "t-down" }, command = { "sleep", "60" } }
    a:start() b:start()
    lab:shape("t-da", { delay = "5ms", engine = "relay" })
    local l <close> = net.link(a, b, { loss = 0.1, engine = "relay" })
    fs.write(ready, "up")
    require("moonbox.loop").sleep(60)
  ]]

  for _, sig in ipairs({ "INT", "TERM", "KILL" }) do
    it("leaves no link, namespace, lease or process after SIG" .. sig .. (sig == "KILL" and " and gc" or ""), function()
      local before = test.host_state()
      local st = fs.tempdir("net-down-state")
      local script = fs.write(st.path .. "/lab.lua", SCRIPT)
      local ready = st.path .. "/ready"
      local env = { MOONBOX_STATE = st.path .. "/s", PATH = "/usr/bin:/bin:/usr/sbin:/sbin" }
      local pid = assert(sys.fork())
      if pid == 0 then
        local null = assert(sys.open("/dev/null", "rdwr"))
        sys.dup2(null, 1) sys.dup2(null, 2)
        process.exec({ moonbox, "run", script, root, ready }, env)
        sys._exit(127)
      end
      expect(test.eventually(function() return sys.stat(ready) ~= nil end, 20)).to_be(true)
      sys.kill(pid, sig)
      sys.wait(pid)
      if sig == "KILL" then
        local r = process.run({ moonbox, "gc" }, { env = env })
        expect(r.code).to_be(0)
      end
      -- helpers die with their owner; give the kernel a moment to end them
      test.eventually(function() return #test.host_state().helpers == #before.helpers end, 5)
      expect(test.host_state()).to_equal(before)
      local left = {}
      for _, n in ipairs(sys.listdir(st.path .. "/s") or {}) do
        if n ~= "cache" and n ~= "boxes" and n ~= "networks" and n ~= "hosts" then left[#left + 1] = n end
      end
      for _, sub in ipairs({ "networks", "hosts" }) do
        for _, n in ipairs(sys.listdir(st.path .. "/s/" .. sub) or {}) do
          if n ~= ".lock" and n ~= ".links" then left[#left + 1] = sub .. "/" .. n end
        end
      end
      for _, n in ipairs(sys.listdir(st.path .. "/s/networks/.links") or {}) do left[#left + 1] = "link lease " .. n end
      expect(left).to_equal({})
      st:remove()
    end)
  end
end)

describe("the network example", function()
  it("runs scripts/examples/lossy_link.lua to the end", function()
    needs_root()
    local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]+$")
    local r = process.run({ moonbox, "run", here .. "/../../scripts/examples/lossy_link.lua" })
    expect(r.stderr).to_be("")
    expect(r.code).to_be(0)
    expect(r.stdout).to_match("^loss   delay   fetch %(s%)  ok\n")
    local rows = 0
    for _ in r.stdout:gmatch("%d+%%%s+10 ms%s+[%d.]+%s+yes\n") do rows = rows + 1 end
    expect(rows).to_be(4)
    expect(r.stdout).to_match("server link: %a+, rx %d+ bytes\n$")
  end)
end)
