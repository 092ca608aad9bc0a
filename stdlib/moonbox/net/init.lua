-- moonbox.net: networks for containers, natively over netlink: bridges, veth links, addresses
-- (IPv4 and IPv6), names, published ports and link faults.
--
--   local net = require "moonbox.net"
--   local lab <close> = net.create{ name = "lab", subnet = "10.89.0.0/24", subnet6 = "fd89::/64" }
--   local a = container.new{ ..., networks = { lab = { ip = "10.89.0.10", aliases = {"db"} } } }
--   lab:shape("a", { delay = "50ms", loss = 0.1 })     -- both directions of a's link
--   lab:disconnect("a") ... lab:connect("a")            -- a partition, and healing it
--   local l <close> = net.link(a, b, { delay = "20ms" })  -- a direct link (Mininet's addLink)
--
-- A network is a bridge. It lives in a network namespace of its own (a lab: nothing changes
-- on the host, and it vanishes with its owner), or with host = true in the caller's namespace,
-- with a gateway address there. Persistent networks (moonbox network create) are held by a
-- keeper process until removed. What each network makes is recorded in the state folder
-- before it is made: networks/NAME/ holds its leases (moonbox.net.ipam) and members
-- (moonbox.net.hosts); gc removes what a killed owner left.
--
-- Link faults: the kernel's tbf for a rate alone, netem for the rest; where the kernel has no
-- sch_netem (or engine = "relay"), a relay process in userspace (moonbox.net.relay).
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local fs = require "moonbox.fs"
local check = require "moonbox.check"
local errors = require "moonbox.errors"
local cleanup = require "moonbox.cleanup"
local state = require "moonbox.state"
local process = require "moonbox.process"
local addr = require "moonbox.net.addr"
local ipam = require "moonbox.net.ipam"
local hosts = require "moonbox.net.hosts"
local shape = require "moonbox.net.shape"
local relay = require "moonbox.net.relay"
local events = require "moonbox.events"

local net = {}
net.parse_frame = relay.parse

local open = {}  -- networks this process has open, by name

local function fail(message, fields, level)
  local f = { op = "network", code = 125 }
  for k, v in pairs(fields or {}) do f[k] = v end
  errors.raise(message, f, level and level + 1 or 0)
end

-- A sys call's result, or a raised error naming what was being done.
local function must(what, ok, msg, errno, ...)
  if ok then return ok, msg, errno, ... end
  fail(what .. ": " .. tostring(msg), { errno = errno }, 0)
end

local function record_id(name) return "network-" .. name end
local function dir_of(name) return state.ensure("networks") .. "/" .. name end

local function netns_inode(path)
  local st = sys.stat(path or "/proc/self/ns/net")
  return st and st.ino
end

-- The kernel's netem, probed once in a throwaway namespace (the probe also loads the module
-- where it is one).
local netem_known
function net.netem_available()
  if netem_known == nil then
    local ns = sys.netns_create()
    if not ns then return false end
    local nl = sys.netlink(ns)
    local ok = nl and nl:qdisc_replace("lo", { kind = "netem", delay = 0.001 })
    netem_known = ok == true
    if nl then nl:close() end
    ns:close()
  end
  return netem_known
end

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(n) or tostring(math.random())
  if f then f:close() end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end)):sub(1, 2 * n)
end

-- MARK: the network handle

local Network = { __name = "moonbox.net.network" }
Network.__index = Network
Network.__tostring = function(n)
  return string.format("network(%s, %s%s)", n.name, n.subnets.inet and n.subnets.inet.text or n.subnets.inet6.text,
    n.closed and ", closed" or "")
end
Network.__close = function(n) n:close() end
Network.__gc = function(n) if not n.closed and n.owner == sys.getpid() then pcall(n.close, n) end end

local CREATE_KEYS = { name = true, subnet = true, subnet6 = true, host = true, masquerade = true, mtu = true,
  persistent = true, engine = true }

local function check_create(o)
  local where = "net.create"
  check.options(where, o, CREATE_KEYS)
  check.name(where, "name", o.name)
  if #o.name > 32 then check.fail(where, "name must be at most 32 characters, got " .. check.show(o.name)) end
  local subnets = {}
  if o.subnet == nil and o.subnet6 == nil then o.subnet = "10.89.0.0/24" end
  for _, k in ipairs({ "subnet", "subnet6" }) do
    if o[k] ~= nil then
      local s, why = addr.subnet(o[k])
      if not s then check.fail(where, k .. ": " .. why) end
      if (k == "subnet") ~= (s.family == "inet") then check.fail(where, k .. " must be an " .. (k == "subnet" and "IPv4" or "IPv6") .. " subnet, got " .. o[k]) end
      subnets[s.family] = s
    end
  end
  for _, k in ipairs({ "host", "masquerade", "persistent" }) do
    if o[k] ~= nil then check.boolean(where, k, o[k]) end
  end
  if o.masquerade and not o.host then check.fail(where, "masquerade needs host = true (a lab network has no way out to NAT)") end
  if o.mtu ~= nil then check.integer(where, "mtu", o.mtu, 576, 65535) end
  if o.engine ~= nil then check.one_of(where, "engine", o.engine, { "auto", "kernel", "relay" }) end
  return subnets
end

-- The bridge's name: "br0" in a lab (its namespace is its own); on the host, "mb-" and the
-- network's name (cut, with a hash, to the kernel's 15 characters).
local function bridge_name(name, host)
  if not host then return "br0" end
  if #name <= 12 then return "mb-" .. name end
  local h = 0
  for i = 1, #name do h = (h * 31 + name:byte(i)) & 0xffffff end
  return string.format("mb-%s%06x", name:sub(1, 6), h)
end

local function iptables(args)
  local r = process.run(args, { check = false })
  return r.code == 0, r.stderr
end

local function masquerade_rule(action, subnet, bridge)
  return { "iptables", "-t", "nat", action, "POSTROUTING", "-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE",
    "-m", "comment", "--comment", "moonbox" }
end

-- The keeper of a persistent network: a process that holds the lab namespace until
-- `moonbox network rm`.
local function start_keeper(name)
  return process.helper("moonbox-net-" .. name:sub(1, 3), function(ready)
    assert(sys.unshare({ "net" }))
    assert(assert(sys.netlink()):link_set("lo", { up = true }))
    ready()
    while true do sys.nanosleep(3600) end
  end, { daemon = true, keep = {} })
end

--- Creates a network. opts: name (required), subnet ("10.89.0.0/24" unless subnet6 alone is
-- given), subnet6 ("fd89::/64"), host (the bridge in this namespace, with the gateway
-- address), masquerade (outbound NAT for a host network: an iptables rule), mtu, engine (the
-- default for shape: "auto", "kernel" or "relay"), persistent (held by a keeper process
-- until net.remove: what `moonbox network create` makes). Returns the network handle.
function net.create(o)
  if type(o) ~= "table" then check.fail("net.create", "options must be a table, got " .. check.show(o)) end
  local subnets = check_create(o)
  local name = o.name
  local dir = dir_of(name)
  local bridge = bridge_name(name, o.host)
  local info = { name = name, subnet = subnets.inet and subnets.inet.text, subnet6 = subnets.inet6 and subnets.inet6.text,
    host = o.host or false, masquerade = o.masquerade or false, mtu = o.mtu, bridge = bridge, persistent = o.persistent or false,
    engine = o.engine, netns_inode = o.host and netns_inode() or nil }
  local record
  for _ = 1, 3 do
    record = state.new(record_id(name), { network = info, dirs = { dir } }, "network")
    if record then break end
    local existing = state.find(record_id(name))
    if existing and existing.alive then
      fail("network " .. name .. " exists (moonbox pid " .. tostring(existing.owner) .. "; moonbox network rm " .. name .. " removes a persistent one)", { errno = "EEXIST" }, 2)
    end
    if existing then require("moonbox.gc").collect_one(existing) end
  end
  if not record then fail("network " .. name .. " exists and its record could not be collected (run moonbox gc)", nil, 2) end
  local self = setmetatable({ name = name, dir = dir, record = record, subnets = subnets, bridge = bridge, info = info,
    host = info.host, persistent = info.persistent, owner = sys.getpid(), members = {}, shapes = {}, engine = o.engine or "auto" }, Network)
  local ok, err = pcall(function()
    if sys.lstat(dir) then sys.remove_tree(dir) end  -- a dead owner's leftovers
    must("mkdir " .. dir, sys.mkdir(dir, tonumber("700", 8)))
    must("mkdir", sys.mkdir(dir .. "/leases", tonumber("700", 8)))
    must("mkdir", sys.mkdir(dir .. "/members", tonumber("700", 8)))
    if self.persistent and not self.host then
      self.keeper = start_keeper(name)
      self.keeper_start = process.start_time(self.keeper)
      record:update({ keeper = self.keeper, keeper_start = self.keeper_start, owner = self.keeper, owner_start = self.keeper_start })
      self.ns = must("network namespace", sys.open("/proc/" .. self.keeper .. "/ns/net", "rdonly"))
    elseif not self.host then
      self.ns = must("network namespace", sys.netns_create())
    end
    self.nl = must("netlink", sys.netlink(self.ns))
    must("bridge " .. bridge, self.nl:link_add({ name = bridge, type = "bridge", mtu = o.mtu }))
    if self.host then record:update({ bridge_made = true }) end
    if subnets.inet then must("address", self.nl:addr_add(bridge, subnets.inet:cidr(subnets.inet:host(1)))) end
    if subnets.inet6 then must("address", self.nl:addr_add(bridge, subnets.inet6:cidr(subnets.inet6:host(1)), { nodad = true })) end
    must("bridge up", self.nl:link_set(bridge, { up = true }))
    if not self.host then self.nl:link_set("lo", { up = true }) end
    if o.masquerade then
      local okm, why = iptables(masquerade_rule("-A", subnets.inet and subnets.inet.text or subnets.inet6.text, bridge))
      if not okm then fail("masquerade: iptables: " .. why) end
      record:update({ masquerade_rule = true })
      fs.write("/proc/sys/net/ipv4/ip_forward", "1\n")
    end
  end)
  if not ok then
    self.persistent = false
    pcall(self.close, self)
    error(err, 2)
  end
  if self.persistent then
    -- It outlives this process; this handle only lets go of it.
  else
    self.token = cleanup.add(function() self:close() end, "network " .. name)
  end
  open[name] = self
  return self
end

--- A persistent network by name (moonbox network create), or one this process has open.
function net.open(name)
  if open[name] and not open[name].closed then return open[name] end
  check.name("net.open", "name", name)
  local rec = state.find(record_id(name))
  if not rec or rec.kind ~= "network" then fail("no network named " .. name .. " (moonbox network ls lists them)", { errno = "ENOENT" }, 2) end
  local info = rec.network
  if not rec.alive then fail("network " .. name .. " is gone (its owner died); moonbox gc removes its record", nil, 2) end
  if not info.persistent then
    fail("network " .. name .. " belongs to moonbox pid " .. tostring(rec.owner) .. "; only a persistent network (moonbox network create) is shared", nil, 2)
  end
  local subnets = {}
  if info.subnet then subnets.inet = addr.subnet(info.subnet) end
  if info.subnet6 then subnets.inet6 = addr.subnet(info.subnet6) end
  local self = setmetatable({ name = name, dir = dir_of(name), subnets = subnets, bridge = info.bridge, info = info,
    host = info.host, persistent = true, opened = true, owner = sys.getpid(), members = {}, shapes = {},
    engine = info.engine or "auto", keeper = rec.keeper }, Network)
  if not self.host then
    self.ns = sys.open("/proc/" .. tostring(rec.keeper) .. "/ns/net", "rdonly")
    if not self.ns then fail("network " .. name .. ": its keeper is gone", nil, 2) end
  elseif info.netns_inode ~= netns_inode() then
    fail("network " .. name .. " is a host network of another network namespace", nil, 2)
  end
  self.nl = must("netlink", sys.netlink(self.ns))
  self.token = cleanup.add(function() self:close() end, "network " .. name)
  open[name] = self
  return self
end

-- A network named in a container spec: a handle, or a name.
function net.resolve(n)
  if getmetatable(n) == Network then
    if n.closed then fail("network " .. n.name .. " is closed") end
    return n
  end
  return net.open(n)
end

--- Every network in the state folder: {name=, subnet=, subnet6=, host=, persistent=,
-- owner=, alive=, members=}.
function net.list()
  local out = {}
  for _, rec in ipairs(state.list()) do
    if rec.kind == "network" and rec.network then
      local n = rec.network
      local count = 0
      for _, m in pairs(hosts.members(dir_of(n.name))) do if m.alive then count = count + 1 end end
      out[#out + 1] = { name = n.name, subnet = n.subnet, subnet6 = n.subnet6, host = n.host, persistent = n.persistent,
        owner = rec.owner, alive = rec.alive, members = count, bridge = n.bridge }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- What removal of a network undoes, from its record: the keeper, the host bridge and NAT
-- rule, the state folder. Used by close, net.remove and gc.
local function undo(rec_data, report)
  local info = rec_data.network or {}
  if rec_data.keeper and process.alive(rec_data.keeper, rec_data.keeper_start) then
    sys.kill(rec_data.keeper, "KILL")
    report("keeper " .. rec_data.keeper)
  end
  if info.host and rec_data.bridge_made then
    if info.netns_inode == netns_inode() then
      local nl = sys.netlink()
      if nl then
        local ok, msg, errno = nl:link_del(info.bridge)
        if ok then report("bridge " .. info.bridge) elseif errno ~= "ENODEV" then report(nil, msg) end
        nl:close()
      end
    else
      report(nil, "bridge " .. tostring(info.bridge) .. " is in another network namespace")
    end
  end
  if rec_data.masquerade_rule then
    local ok, why = iptables(masquerade_rule("-D", info.subnet or info.subnet6, info.bridge))
    if ok then report("NAT rule for " .. tostring(info.subnet)) else report(nil, "iptables: " .. tostring(why)) end
  end
end

--- Removes the network: its members' links, relays and leases, its bridge and namespace, its
-- record. A persistent network opened here (net.open) is only let go of; net.remove removes
-- it. Safe to call twice.
function Network:close()
  if self.closed then return end
  self.closed = true
  if open[self.name] == self then open[self.name] = nil end
  for id, s in pairs(self.shapes) do
    if s.relay then s.relay:stop() end
    self.shapes[id] = nil
  end
  for _, m in pairs(self.members) do pcall(net.detach_member, self, m) end
  if self.nl then self.nl:close() end
  if self.ns then self.ns:close() end
  if self.token then cleanup.remove(self.token) end
  if self.opened or (self.persistent and self.owner == sys.getpid() and not self.force_remove) then return end
  local problems = {}
  if self.record then
    undo(self.record.data, function(_, problem) if problem then problems[#problems + 1] = problem end end)
  end
  sys.remove_tree(self.dir)
  if self.record and #problems == 0 then self.record:remove() end
  if #problems > 0 then fail("network " .. self.name .. " close: " .. table.concat(problems, "; "), nil, 2) end
end

--- Removes a persistent network by name (moonbox network rm). Refuses while containers are
-- on it, unless force.
function net.remove(name, force)
  check.name("net.remove", "name", name)
  local rec = state.find(record_id(name))
  if not rec or rec.kind ~= "network" then fail("no network named " .. name, { errno = "ENOENT" }, 2) end
  local members = {}
  for id, m in pairs(hosts.members(dir_of(name))) do if m.alive then members[#members + 1] = id end end
  if #members > 0 and not force then
    table.sort(members)
    fail("network " .. name .. " has members: " .. table.concat(members, ", ") .. " (stop them, or remove with --force)", { errno = "EBUSY" }, 2)
  end
  if rec.alive and not rec.network.persistent then
    fail("network " .. name .. " belongs to the running moonbox pid " .. tostring(rec.owner) .. "; it goes when that ends", { errno = "EBUSY" }, 2)
  end
  local problems = {}
  undo(rec, function(_, problem) if problem then problems[#problems + 1] = problem end end)
  if rec.keeper then sys.wait(rec.keeper) end
  sys.remove_tree(dir_of(name))
  if #problems > 0 then fail("network " .. name .. ": " .. table.concat(problems, "; "), nil, 2) end
  sys.unlink(rec.path)
end

-- MARK: members

-- A container's namespace files, opened (its net namespace; its user namespace when rootless).
local function container_ns(c)
  if not c.pid then fail("container " .. c.id .. " is not running") end
  local ns, msg = sys.open("/proc/" .. c.pid .. "/ns/net", "rdonly")
  if not ns then fail("container " .. c.id .. ": " .. msg) end
  return ns
end

-- The first free ethN in a namespace.
local function free_eth(nl)
  local used = {}
  for _, l in ipairs(nl:links() or {}) do used[l.name] = true end
  for i = 0, 255 do if not used["eth" .. i] then return "eth" .. i end end
  fail("no free ethN name in the container")
end

-- A host-side link name: unique in its namespace (a lab's, by the member's address; the
-- host's, at random).
local function outer_name(self, ip_index)
  if self.host then return "mb" .. random_hex(5) end
  return "vm" .. ip_index
end

--- Attaches a started container's network namespace to the networks its spec names
-- (c.spec.networks: {{network=, ip=, ip6=, aliases=}}): a veth from the bridge to ethN in
-- the container, addresses, a default route through the first network's gateway, a lease
-- and a member file each, and every member's /etc/hosts rewritten. Called between clone and
-- the container's go-ahead.
function net.attach(c)
  local list = c.spec.networks
  if not list or #list == 0 then return end
  c.net_attachments = c.net_attachments or {}
  local cns = container_ns(c)
  local cnl = must("netlink in container " .. c.id, sys.netlink(cns))
  local dirs = {}
  local ok, err = pcall(function()
    must("lo up", cnl:link_set("lo", { up = true }))
    local routed = {}
    for _, want in ipairs(list) do
      local n = net.resolve(want.network)
      local pid, start = state.me()
      local leased = ipam.allocate(n.dir, n.subnets, { ip = want.ip, ip6 = want.ip6 }, c.id)
      local index = n.subnets.inet and leased.ip and n.subnets.inet:index(leased.ip) or n.subnets.inet6:index(leased.ip6)
      local att = { network = n, ip = leased.ip, ip6 = leased.ip6, id = c.id, pid = c.pid }
      c.net_attachments[#c.net_attachments + 1] = att
      att.ifname = free_eth(cnl)
      for _ = 1, 5 do
        att.outer = outer_name(n, index)
        local okl, msg, errno = n.nl:link_add({ name = att.outer, type = "veth", up = true, master = n.bridge, mtu = n.info.mtu,
          peer = { name = att.ifname, netns = cns, mtu = n.info.mtu } })
        if okl then break end
        if errno ~= "EEXIST" then must("veth " .. att.outer, okl, msg, errno) end
        -- A lab's name is taken by the link of a member whose namespace outlived it: it goes.
        -- A host's random name is taken: another one.
        if not n.host then n.nl:link_del(att.outer) end
        att.outer = nil
      end
      if not att.outer then fail("cannot make a veth for " .. c.id .. " on " .. n.name) end
      must("link up", cnl:link_set(att.ifname, { up = true }))
      if att.ip then must("address " .. att.ip, cnl:addr_add(att.ifname, n.subnets.inet:cidr(att.ip))) end
      if att.ip6 then must("address " .. att.ip6, cnl:addr_add(att.ifname, n.subnets.inet6:cidr(att.ip6), { nodad = true })) end
      for family, s in pairs(n.subnets) do
        if not routed[family] and att[family == "inet" and "ip" or "ip6"] then
          routed[family] = true
          must("default route", cnl:route_add({ dst = family == "inet" and "default" or "::/0", gateway = s:host(1) }))
        end
      end
      local member = { id = c.id, name = c.id, hostname = c.spec.hostname, aliases = want.aliases, ip = att.ip, ip6 = att.ip6,
        hosts = c.spec.hosts_file, owner = pid, owner_start = start, outer = att.outer, ifname = att.ifname, pid = c.pid }
      hosts.join(n.dir, member)
      n.members[c.id] = att
      dirs[#dirs + 1] = n.dir
    end
  end)
  cnl:close()
  cns:close()
  if not ok then
    pcall(net.detach, c)
    error(err, 0)
  end
  hosts.locked(function() hosts.refresh(dirs) end)
end

--- Takes one member off its network: relay, link, lease, member file. The caller refreshes
-- the hosts files.
function net.detach_member(n, att)
  local s = n.shapes[att.id]
  if s and s.relay then s.relay:stop() end
  n.shapes[att.id] = nil
  if att.outer and n.nl and not n.closed_links then
    n.nl:link_del(att.outer)
    if s and s.split then n.nl:link_del(s.split[1]) end
  end
  ipam.release(n.dir, att.ip)
  ipam.release(n.dir, att.ip6)
  hosts.leave(n.dir, att.id)
  n.members[att.id] = nil
end

--- Undoes net.attach (the container's own ends go with its namespace).
function net.detach(c)
  local dirs = {}
  for _, att in ipairs(c.net_attachments or {}) do
    if not att.network.closed then
      net.detach_member(att.network, att)
      dirs[#dirs + 1] = att.network.dir
    end
  end
  c.net_attachments = nil
  if #dirs > 0 then pcall(hosts.locked, function() hosts.refresh(dirs) end) end
end

-- Containers of this process made (container.new) with networks but not started yet: what a
-- script does to their links before start (shape, disconnect, net.link) happens at start.
local waiting = setmetatable({}, { __mode = "k" })  -- container -> {ops = {fn...}}

--- Called by container.new for a container with networks.
function net.register(c)
  waiting[c] = { ops = {} }
end

local function waiting_by_id(id)
  for c, w in pairs(waiting) do
    if c.id == id and c.state == "created" then return c, w end
  end
end

-- A member's id: a container handle's, or a name (an experiment's trial maps its short names,
-- "srv", to the ids it gave, through network.names).
function Network:_id(who)
  if type(who) == "table" then return who.id end
  return self.names and self.names[who] or who
end

-- What a fault announces (moonbox.events): "disconnect srv".
local function announce(what, who, extra)
  events.emit("fault", what .. " " .. (type(who) == "table" and tostring(who.id) or tostring(who)) .. (extra or ""))
end

local function describe_shape(spec)
  if type(spec) ~= "table" then return "" end
  local parts = {}
  for k, v in pairs(spec) do
    if type(v) == "table" then
      for k2, v2 in pairs(v) do if type(v2) ~= "function" then parts[#parts + 1] = k .. "." .. tostring(k2) .. "=" .. tostring(v2) end end
    elseif type(v) ~= "function" then
      parts[#parts + 1] = tostring(k) .. "=" .. tostring(v)
    end
  end
  table.sort(parts)
  return #parts > 0 and (" " .. table.concat(parts, " ")) or " (none)"
end

-- Runs fn(att) now for a member on the network, or at its start for a container still waiting.
function Network:_when_member(who, where, fn)
  local id = self:_id(who)
  if type(id) == "string" and not self.members[id] then
    local c, w = waiting_by_id(id)
    if c then
      local named = false
      for _, e in ipairs(c.spec.networks or {}) do
        if e.network == self or e.network == self.name then named = true end
      end
      if named then
        w.ops[#w.ops + 1] = function() fn(self:_member(id, where)) end
        return self
      end
    end
  end
  fn(self:_member(who, where))
  return self
end

--- Called by the container module once a container runs (its network attached): what waited
-- for it happens now (link faults, partitions, direct links).
function net.started(c)
  local w = waiting[c]
  waiting[c] = nil
  if w then for _, op in ipairs(w.ops) do op() end end
  for l in pairs(net.pending_links) do
    if l.a.pid and l.b.pid and l.a.state == "running" and l.b.state == "running" then
      net.pending_links[l] = nil
      l:_make()
    end
  end
end

-- The member called `who` (a container handle, or its name) on this network.
function Network:_member(who, where)
  local id = self:_id(who)
  if type(id) ~= "string" then check.fail(where, "a container or its name expected, got " .. check.show(who)) end
  local att = self.members[id]
  if att then return att end
  -- a member of another moonbox process (a persistent network)
  local m = hosts.members(self.dir)[id]
  if not m or not m.alive then fail(where .. ": " .. id .. " is not on network " .. self.name, nil, 3) end
  return { network = self, id = id, outer = m.outer, ifname = m.ifname, ip = m.ip, ip6 = m.ip6, pid = m.pid, foreign = true }
end

-- A netlink socket in a member's own namespace (for its egress qdisc).
local function member_netlink(att)
  local pid = att.pid or (att.container and att.container.pid)
  local ns = pid and sys.open("/proc/" .. pid .. "/ns/net", "rdonly")
  if not ns then fail("the member's network namespace is gone") end
  local nl = must("netlink", sys.netlink(ns))
  ns:close()
  return nl
end

-- Applies one direction as a qdisc on a link (nothing: the qdisc goes).
local function apply_qdisc(nl, link, p)
  if shape.empty(p) then
    nl:qdisc_del(link)
    return
  end
  must("link faults on " .. link, nl:qdisc_replace(link, shape.qdisc(p)))
end

-- Which engine a shape takes: the relay once one is in place, or when asked, or when netem
-- is needed and missing; the kernel otherwise.
local function pick_engine(wanted, current, params)
  if current == "relay" then return "relay" end
  if wanted == "relay" then return "relay" end
  local needs_netem = not ((shape.empty(params.egress) or shape.rate_only(params.egress))
    and (shape.empty(params.ingress) or shape.rate_only(params.ingress)))
  for _, p in ipairs({ params.egress, params.ingress }) do
    for k in pairs(p) do if shape.NETEM_ONLY[k] then needs_netem = true end end
  end
  if params.filter then return "relay" end
  if needs_netem and not net.netem_available() then
    if wanted == "kernel" then fail("link faults: this kernel has no sch_netem (use engine = \"relay\")", { errno = "ENOENT" }, 3) end
    return "relay"
  end
  return "kernel"
end

-- Puts a relay between a member's link and the bridge: the member's end leaves the bridge, a
-- new veth pair joins it, and the relay moves frames between the two.
local function split_for_relay(n, att, params, s)
  local base = att.outer:sub(3)
  local a_end, b_end = (n.host and "mr" or "rm") .. base, (n.host and "ms" or "sm") .. base
  must("relay link", n.nl:link_add({ name = a_end, type = "veth", up = true, mtu = n.info.mtu,
    peer = { name = b_end, mtu = n.info.mtu } }))
  must("relay link", n.nl:link_set(att.outer, { master = false }))
  -- The relay sees frames one MTU at a time (a loss is one packet's, as on a wire): what is
  -- sent into it is segmented first, by the member's end and by the bridge's.
  must("relay link", n.nl:link_set(b_end, { master = n.bridge, up = true, gso_max_segs = 1 }))
  local mnl = member_netlink(att)
  local okg, msg, errno = mnl:link_set(att.ifname, { gso_max_segs = 1 })
  mnl:close()
  must("relay link", okg, msg, errno)
  s.split = { a_end, b_end }
  for _, p in pairs(params) do
    for k in pairs(p) do
      if shape.NETEM_ONLY[k] then fail("link faults: " .. k .. " needs the kernel's netem; the relay has no correlations", nil, 4) end
    end
  end
  s.relay = relay.start({ netns = n.ns, links = { att.outer, a_end }, params = params, filter = s.filter, seed = s.seed })
end

--- Sets the faults of a member's link: both directions ({delay=, jitter=, loss=, duplicate=,
-- reorder=, corrupt=, rate=, limit=}), or {egress = {...}, ingress = {...}} (egress: what the
-- member sends). Replaces what was set before; {} clears it. engine = "auto" | "kernel" |
-- "relay"; filter = function(frame, direction) and seed = integer (relay only).
function Network:shape(who, spec)
  return self:_shape(who, spec, false)
end

--- Changes only the named faults of a member's link (false or 0 clears one).
function Network:set(who, spec)
  return self:_shape(who, spec, true)
end

function Network:_shape(who, spec, merge)
  local where = "network " .. self.name .. ":shape"
  if self.closed then fail(where .. ": the network is closed", nil, 3) end
  local parsed = shape.parse(where, spec)
  return self:_when_member(who, where, function(att)
    self:_apply_shape(att, parsed, merge, where)
    announce(merge and "set" or "shape", who, describe_shape(spec))
  end)
end

function Network:_apply_shape(att, parsed, merge, where)
  local s = self.shapes[att.id] or { params = { egress = {}, ingress = {} } }
  local params = {
    egress = shape.validate(where, shape.merge(merge and s.params.egress or {}, parsed.egress)),
    ingress = shape.validate(where, shape.merge(merge and s.params.ingress or {}, parsed.ingress)),
  }
  if parsed.filter ~= nil then s.filter = parsed.filter end
  if parsed.seed ~= nil then s.seed = parsed.seed end
  local engine = pick_engine(parsed.engine or self.engine, s.engine, { egress = params.egress, ingress = params.ingress, filter = s.filter })
  if engine == "relay" then
    if s.engine == "kernel" then
      self.nl:qdisc_del(att.outer)
      local mnl = member_netlink(att)
      mnl:qdisc_del(att.ifname)
      mnl:close()
    end
    if s.relay and parsed.filter ~= nil then
      -- a function cannot cross to the running relay: a new one takes over
      s.relay:stop()
      s.relay = relay.start({ netns = self.ns, links = { att.outer, s.split[1] }, params = params, filter = s.filter, seed = s.seed })
    elseif s.relay then
      s.relay:set(params)
    else
      split_for_relay(self, att, params, s)
    end
  else
    local mnl = member_netlink(att)
    local ok, err = pcall(function()
      apply_qdisc(mnl, att.ifname, params.egress)
      apply_qdisc(self.nl, att.outer, params.ingress)
    end)
    mnl:close()
    if not ok then error(err, 0) end
  end
  s.engine, s.params = engine, params
  self.shapes[att.id] = s
  return self
end

--- The faults set on a member's link: {egress=, ingress=, engine=}.
function Network:faults(who)
  local att = self:_member(who, "network:faults")
  local s = self.shapes[att.id]
  if not s then return { egress = {}, ingress = {}, engine = nil } end
  return { egress = s.params.egress, ingress = s.params.ingress, engine = s.engine }
end

--- A partition: the member's link goes down (its carrier too), until connect.
function Network:disconnect(who)
  return self:_when_member(who, "network:disconnect", function(att)
    must("disconnect " .. att.id, self.nl:link_set(att.outer, { up = false }))
    announce("disconnect", who)
  end)
end

function Network:connect(who)
  return self:_when_member(who, "network:connect", function(att)
    must("connect " .. att.id, self.nl:link_set(att.outer, { up = true }))
    announce("connect", who)
  end)
end

--- The members: {name = {ip=, ip6=, aliases=}}.
function Network:members_list()
  local out = {}
  for id, m in pairs(hosts.members(self.dir)) do
    if m.alive then out[id] = { ip = m.ip, ip6 = m.ip6, aliases = m.aliases or {} } end
  end
  return out
end

--- The gateway's addresses on this network (the bridge's).
function Network:gateway()
  return self.subnets.inet and self.subnets.inet:host(1), self.subnets.inet6 and self.subnets.inet6:host(1)
end

--- The network namespace's fd (nil for a host network): for sys.setns or sys.netlink.
function Network:netns() return self.ns end

-- MARK: direct links (Mininet's addLink)

local Link = { __name = "moonbox.net.link" }
Link.__index = Link
Link.__tostring = function(l) return string.format("link(%s:%s <-> %s:%s%s)", l.a.id, l.ifnames[1], l.b.id, l.ifnames[2], l.closed and ", closed" or "") end
Link.__close = function(l) l:close() end
Link.__gc = function(l) if not l.closed and l.owner == sys.getpid() then pcall(l.close, l) end end

local LINK_KEYS = { ips = true, engine = true, filter = true, seed = true, egress = true, ingress = true, mtu = true }
for k in pairs(shape.KEYS) do LINK_KEYS[k] = true end

--- A veth between two started containers, with faults (both directions, or egress from a /
-- ingress to a). opts.ips = {"10.0.1.1/24", "10.0.1.2/24"} (default: a /30 from 10.254.0.0/16,
-- leased); engine, filter, seed as for shape; mtu. Returns the link: l:set{...}, l:down(),
-- l:up(), l:stats(), l:close().
function net.link(a, b, opts)
  local where = "net.link"
  opts = opts or {}
  check.options(where, opts, LINK_KEYS)
  for _, c in ipairs({ a, b }) do
    if type(c) ~= "table" or not c.id or not c.spec or (c.state ~= "running" and c.state ~= "created") then
      check.fail(where, "two containers (running, or made and not started yet) expected, got " .. check.show(c))
    end
  end
  if a == b then check.fail(where, "a link joins two different containers") end
  local spec = {}
  for k, v in pairs(opts) do if k ~= "ips" and k ~= "mtu" then spec[k] = v end end
  local parsed = shape.parse(where, spec)
  local params = { egress = shape.validate(where, shape.merge({}, parsed.egress)), ingress = shape.validate(where, shape.merge({}, parsed.ingress)) }
  local self = setmetatable({ a = a, b = b, owner = sys.getpid(), filter = parsed.filter, seed = parsed.seed, mtu = opts.mtu }, Link)
  if opts.ips ~= nil then
    if type(opts.ips) ~= "table" or #opts.ips ~= 2 then check.fail(where, "ips must be two addresses like {\"10.0.1.1/24\", \"10.0.1.2/24\"}") end
    for i = 1, 2 do
      local ip, bits = tostring(opts.ips[i]):match("^([^/]+)/(%d+)$")
      if not ip or not addr.family(ip) then check.fail(where, "ips[" .. i .. "] must be an address with a prefix, like 10.0.1.1/24, got " .. check.show(opts.ips[i])) end
    end
    self.ips = { opts.ips[1], opts.ips[2] }
  end
  self.engine = pick_engine(parsed.engine, nil, { egress = params.egress, ingress = params.ingress, filter = parsed.filter })
  self.params = params
  self.token = cleanup.add(function() self:close() end, "link " .. a.id .. "-" .. b.id)
  if a.state == "running" and b.state == "running" then
    self:_make()
  else
    net.pending_links[self] = true  -- made when both run (net.started)
  end
  return self
end

net.pending_links = setmetatable({}, { __mode = "k" })

function Link:_make()
  local a, b, opts = self.a, self.b, { mtu = self.mtu }
  local ok, err = pcall(function()
    if not self.ips then
      -- a /30 of 10.254.0.0/16, leased like a network's addresses
      local pool = dir_of(".links")
      sys.mkdir(pool, tonumber("700", 8))
      local subnet = addr.subnet("10.254.0.0/16")
      for n = 0, (1 << 14) - 1 do
        local base = subnet:host(4 * n)
        local okc = state.claim(pool .. "/" .. base, { member = a.id .. "-" .. b.id, owner = sys.getpid(), owner_start = select(2, state.me()) })
        if okc then
          self.pool_lease = pool .. "/" .. base
          self.ips = { subnet:host(4 * n + 1) .. "/30", subnet:host(4 * n + 2) .. "/30" }
          break
        end
        local ok2, data = pcall(json.decode, fs.read_if_exists(pool .. "/" .. base) or "")
        if ok2 and type(data) == "table" and not state.alive(data.owner, data.owner_start) then
          sys.unlink(pool .. "/" .. base)  -- a dead owner's: free for the next link
        end
      end
      if not self.ips then fail("no free /30 left in 10.254.0.0/16 for a link") end
    end
    self.ans, self.bns = container_ns(a), container_ns(b)
    local anl, bnl = must("netlink", sys.netlink(self.ans)), must("netlink", sys.netlink(self.bns))
    self.anl, self.bnl = anl, bnl
    self.ifnames = { free_eth(anl), free_eth(bnl) }
    local here = must("netlink", sys.netlink())
    local okl, msg, errno
    if self.engine == "relay" then
      self.holder = must("network namespace", sys.netns_create())
      self.hnl = must("netlink", sys.netlink(self.holder))
      okl, msg, errno = self.hnl:link_add({ name = "la", type = "veth", up = true, mtu = opts.mtu, peer = { name = self.ifnames[1], netns = self.ans, mtu = opts.mtu } })
      if okl then
        okl, msg, errno = self.hnl:link_add({ name = "lb", type = "veth", up = true, mtu = opts.mtu, peer = { name = self.ifnames[2], netns = self.bns, mtu = opts.mtu } })
      end
    else
      okl, msg, errno = here:link_add({ name = self.ifnames[1], type = "veth", netns = self.ans, mtu = opts.mtu,
        peer = { name = self.ifnames[2], netns = self.bns, mtu = opts.mtu } })
    end
    here:close()
    must("link " .. a.id .. " - " .. b.id, okl, msg, errno)
    for i, nl in ipairs({ anl, bnl }) do
      -- into a relay, one MTU at a time (see split_for_relay)
      must("link up", nl:link_set(self.ifnames[i], { up = true, gso_max_segs = self.engine == "relay" and 1 or nil }))
      local fam = addr.family(self.ips[i]:match("^[^/]+"))
      must("address", nl:addr_add(self.ifnames[i], self.ips[i], fam == "inet6" and { nodad = true } or nil))
    end
    self.made = true
    self:_apply(self.params)
    if self.down_wanted then self:down() end
  end)
  if not ok then
    pcall(self.close, self)
    error(err, 2)
  end
end

function Link:_apply(params)
  if not self.made then self.params = params return end
  if self.engine == "relay" then
    if self.relay then
      self.relay:set(params)
    else
      self.relay = relay.start({ netns = self.holder, links = { "la", "lb" }, params = params, filter = self.filter, seed = self.seed })
    end
  else
    apply_qdisc(self.anl, self.ifnames[1], params.egress)
    apply_qdisc(self.bnl, self.ifnames[2], params.ingress)
  end
  self.params = params
end

--- Changes only the named faults (false or 0 clears one); atomic per direction.
function Link:set(spec)
  if self.closed then fail("link is closed", nil, 2) end
  local where = "link:set"
  local parsed = shape.parse(where, spec)
  if parsed.engine and parsed.engine ~= self.engine then check.fail(where, "the engine of a link is chosen when it is made") end
  local params = { egress = shape.validate(where, shape.merge(self.params.egress, parsed.egress)),
    ingress = shape.validate(where, shape.merge(self.params.ingress, parsed.ingress)) }
  if parsed.filter ~= nil then
    if self.engine ~= "relay" then check.fail(where, "a filter needs a link made with engine = \"relay\"") end
    self.filter = parsed.filter
    if self.relay then self.relay:stop() self.relay = nil end
  end
  if self.engine == "kernel" then pick_engine("kernel", "kernel", params) end
  self:_apply(params)
  return self
end

function Link:down()
  self.down_wanted = true
  if not self.made then return self end
  must("link down", (self.hnl or self.anl):link_set(self.hnl and "la" or self.ifnames[1], { up = false }))
  return self
end

function Link:up()
  self.down_wanted = nil
  if not self.made then return self end
  must("link up", (self.hnl or self.anl):link_set(self.hnl and "la" or self.ifnames[1], { up = true }))
  return self
end

--- Counters of a's end: {rx_bytes=, tx_bytes=, rx_packets=, tx_packets=, ...} (nil before
-- the link is made).
function Link:stats()
  if not self.made then return nil end
  for _, l in ipairs(self.anl:links() or {}) do
    if l.name == self.ifnames[1] then return l.stats end
  end
  return nil
end

--- The addresses of the two ends, as given or leased ("10.254.0.1/30").
function Link:addresses() return self.ips[1], self.ips[2] end

function Link:close()
  if self.closed then return end
  self.closed = true
  net.pending_links[self] = nil
  if self.relay then self.relay:stop() end
  if self.anl and self.ifnames then self.anl:link_del(self.ifnames[1]) end
  for _, k in ipairs({ "anl", "bnl", "hnl", "ans", "bns", "holder" }) do
    if self[k] then self[k]:close() self[k] = nil end
  end
  if self.pool_lease then sys.unlink(self.pool_lease) end
  if self.token then cleanup.remove(self.token) end
end

-- MARK: what the container module asks

local NETWORK_ENTRY_KEYS = { ip = true, ip6 = true, aliases = true }

--- Checks a spec's networks: a list of names or handles, or a map name -> {ip=, ip6=,
-- aliases=}. Returns {{network = name or handle, ip=, ip6=, aliases=}} in a stable order.
function net.check_networks(where, v)
  if type(v) ~= "table" then check.fail(where, "networks must be a list of network names or a table name = {ip = ...}, got " .. check.show(v)) end
  local out, seen = {}, {}
  local function add(key, n, o)
    local label = getmetatable(n) == Network and n.name or n
    if type(label) ~= "string" then check.fail(where, "networks: a network name or handle expected, got " .. check.show(n)) end
    if seen[label] then check.fail(where, "networks: " .. label .. " is named twice") end
    seen[label] = true
    local e = { network = n }
    if o ~= nil then
      if type(o) ~= "table" then check.fail(where, "networks." .. label .. " must be a table {ip=, ip6=, aliases=}, got " .. check.show(o)) end
      check.options(where .. " networks." .. label, o, NETWORK_ENTRY_KEYS)
      if o.ip ~= nil and addr.family(o.ip) ~= "inet" then check.fail(where, "networks." .. label .. ".ip must be an IPv4 address, got " .. check.show(o.ip)) end
      if o.ip6 ~= nil and addr.family(o.ip6) ~= "inet6" then check.fail(where, "networks." .. label .. ".ip6 must be an IPv6 address, got " .. check.show(o.ip6)) end
      e.ip, e.ip6 = o.ip and addr.normalize(o.ip), o.ip6 and addr.normalize(o.ip6)
      if o.aliases ~= nil then
        if type(o.aliases) ~= "table" then check.fail(where, "networks." .. label .. ".aliases must be a list of names") end
        for _, al in ipairs(o.aliases) do check.name(where, "networks." .. label .. ".aliases", al) end
        e.aliases = o.aliases
      end
    end
    out[#out + 1] = e
  end
  for i, n in ipairs(v) do add(i, n) end
  local names = {}
  for k in pairs(v) do
    if math.type(k) ~= "integer" then
      if type(k) ~= "string" then check.fail(where, "networks: keys must be network names") end
      names[#names + 1] = k
    elseif k < 1 or k > #v then
      check.fail(where, "networks: a list has no key " .. k)
    end
  end
  table.sort(names)
  for _, k in ipairs(names) do add(k, k, v[k]) end
  return out
end

-- MARK: gc

-- A network whose owner is gone: its keeper, host bridge and NAT rule (lab namespaces went
-- with their owners). Its folder is in the record's dirs.
require("moonbox.gc").collectors[#require("moonbox.gc").collectors + 1] = function(rec, entry, options)
  if rec.kind ~= "network" then return end
  if options.dry_run then
    entry.removed[#entry.removed + 1] = "network " .. tostring(rec.network and rec.network.name)
    return
  end
  undo(rec, function(what, problem)
    if what then entry.removed[#entry.removed + 1] = what end
    if problem then entry.problems[#entry.problems + 1] = problem end
  end)
end

--- gc's sweep of live networks: members and leases whose process is gone (SIGKILL), their
-- links, and the hosts files of the members left. Returns entries as gc.collect does.
function net.sweep(options)
  options = options or {}
  local report = {}
  local root = state.dir() .. "/networks"
  for _, name in ipairs(sys.listdir(root) or {}) do
    local dir = root .. "/" .. name
    local entry = { id = "network " .. name, removed = {}, problems = {} }
    local stale = {}
    for id, m in pairs(hosts.members(dir)) do if not m.alive then stale[id] = m end end
    if next(stale) and not options.dry_run then
      local rec = state.find(record_id(name))
      local nl
      if rec and rec.alive and rec.network and not rec.network.host and rec.keeper then
        local ns = sys.open("/proc/" .. rec.keeper .. "/ns/net", "rdonly")
        if ns then nl = sys.netlink(ns) ns:close() end
      elseif rec and rec.alive and rec.network and rec.network.host and rec.network.netns_inode == netns_inode() then
        nl = sys.netlink()
      end
      for id, m in pairs(stale) do
        if nl and m.outer then nl:link_del(m.outer) end
        hosts.leave(dir, id)
      end
      if nl then nl:close() end
    end
    for id in pairs(stale) do entry.removed[#entry.removed + 1] = "member " .. id end
    for _, a in ipairs(ipam.sweep(dir, options.dry_run)) do entry.removed[#entry.removed + 1] = "lease " .. a end
    if #entry.removed > 0 then
      report[#report + 1] = entry
      if not options.dry_run then pcall(hosts.locked, function() hosts.refresh({ dir }) end) end
    end
  end
  -- leases of direct links
  for _, base in ipairs(sys.listdir(root .. "/.links") or {}) do
    local ok, data = pcall(json.decode, fs.read_if_exists(root .. "/.links/" .. base) or "")
    if not (ok and type(data) == "table" and state.alive(data.owner, data.owner_start)) then
      if not options.dry_run then sys.unlink(root .. "/.links/" .. base) end
      report[#report + 1] = { id = "link", removed = { "lease " .. base }, problems = {} }
    end
  end
  return report
end

return net
