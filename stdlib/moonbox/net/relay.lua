-- moonbox.net.relay: a link in userspace, for kernels without sch_netem (and for faults netem
-- cannot express). A relay process moves frames between two links (packet(7) sockets, with
-- virtio-net headers so offloaded frames pass intact), and on the way applies each direction's
-- delay, jitter, loss, duplication, reordering, corruption, rate and queue limit, and a Lua
-- filter.
--
--   container eth0 ==veth== A  <-- relay -->  B ==veth== the bridge (or the other container)
--
-- Frames read on A go out on B with the "egress" faults (what the member sends); frames read
-- on B go out on A with the "ingress" faults. The parent changes faults at once by a line of
-- JSON on a pipe; the relay ends when that pipe closes (its owner is gone) or on SIGTERM.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local process = require "moonbox.process"
local errors = require "moonbox.errors"

local relay = {}

local VNET = 10  -- sizeof(struct virtio_net_hdr)
local now = function() return sys.clock_gettime("monotonic") end

-- MARK: frames

local function u16be(s, i) return (s:byte(i) << 8) | s:byte(i + 1) end
local function u16le(s, i) return s:byte(i) | (s:byte(i + 1) << 8) end

--- A frame's headers, for filters: {ethertype=, src=, dst=, proto= ("tcp", "udp", "icmp",
-- "icmpv6" or a number), sport=, dport=, payload= (the bytes after the transport header)}.
-- Fields the frame does not have are nil.
function relay.parse(frame)
  local info = {}
  if #frame < 14 then return info end
  local ethertype = u16be(frame, 13)
  local off = 15
  if ethertype == 0x8100 and #frame >= 18 then ethertype, off = u16be(frame, 17), 19 end
  info.ethertype = ethertype
  local proto, l4
  if ethertype == 0x0800 and #frame >= off + 19 then
    local ihl = (frame:byte(off) & 0x0f) * 4
    info.src = string.format("%d.%d.%d.%d", frame:byte(off + 12, off + 15))
    info.dst = string.format("%d.%d.%d.%d", frame:byte(off + 16, off + 19))
    proto, l4 = frame:byte(off + 9), off + ihl
  elseif ethertype == 0x86dd and #frame >= off + 39 then
    local function v6(i)
      local g = {}
      for k = 0, 7 do g[#g + 1] = string.format("%x", u16be(frame, i + 2 * k)) end
      return require("moonbox.net.addr").normalize(table.concat(g, ":"))
    end
    info.src, info.dst = v6(off + 8), v6(off + 24)
    proto, l4 = frame:byte(off + 6), off + 40
  else
    return info
  end
  local names = { [6] = "tcp", [17] = "udp", [1] = "icmp", [58] = "icmpv6" }
  info.proto = names[proto] or proto
  if (proto == 6 or proto == 17) and #frame >= l4 + 3 then
    info.sport, info.dport = u16be(frame, l4), u16be(frame, l4 + 2)
    local hl = proto == 17 and 8 or (#frame >= l4 + 12 and ((frame:byte(l4 + 12) >> 4) * 4) or 20)
    info.payload = frame:sub(l4 + hl)
  elseif #frame >= l4 then
    info.payload = frame:sub(l4)
  end
  return info
end

-- A frame whose transport checksum the kernel would finish on the way out (NEEDS_CSUM) gets
-- it now, so that a corruption after it is one the receiver can detect, as with netem.
local function finish_checksum(f)
  if #f < VNET or f:byte(1) & 1 == 0 or f:byte(2) ~= 0 then return f end
  local s = VNET + 1 + u16le(f, 7)
  local at = s + u16le(f, 9)
  if at + 1 > #f then return f end
  local sum = 0
  for i = s, #f - 1, 2 do sum = sum + u16be(f, i) end
  if (#f - s + 1) % 2 == 1 then sum = sum + (f:byte(#f) << 8) end
  while sum > 0xffff do sum = (sum & 0xffff) + (sum >> 16) end
  local c = (~sum) & 0xffff
  return "\0" .. f:sub(2, at - 1) .. string.char(c >> 8, c & 0xff) .. f:sub(at + 2)
end

local function corrupt(f)
  f = finish_checksum(f)
  local first = VNET + 15  -- past the Ethernet header: a corrupted frame still arrives
  if #f < first then return f end
  local i = math.random(first, #f)
  return f:sub(1, i - 1) .. string.char(f:byte(i) ~ (1 << math.random(0, 7))) .. f:sub(i + 1)
end

-- MARK: the schedule (a binary heap by departure time, then arrival order)

local function less(a, b) return a.t < b.t or (a.t == b.t and a.seq < b.seq) end

local function push(h, e)
  h[#h + 1] = e
  local i = #h
  while i > 1 do
    local p = i // 2
    if less(h[i], h[p]) then h[i], h[p] = h[p], h[i] i = p else break end
  end
end

local function pop(h)
  local top = h[1]
  local last = table.remove(h)
  if #h > 0 then
    h[1] = last
    local i = 1
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= #h and less(h[l], h[m]) then m = l end
      if r <= #h and less(h[r], h[m]) then m = r end
      if m == i then break end
      h[i], h[m] = h[m], h[i]
      i = m
    end
  end
  return top
end

-- MARK: the relay process

local function serve(o, ctl, ready)
  if o.netns then assert(sys.setns(o.netns, "net")) o.netns:close() end
  local socks = {}
  for i, name in ipairs(o.links) do
    local s = assert(sys.socket("packet", "raw", { "nonblock" }))
    assert(sys.setsockopt(s, "packet_vnet_hdr", true))
    assert(sys.setsockopt(s, "packet_ignore_outgoing", true))
    sys.setsockopt(s, "rcvbuf", 4 << 20)
    sys.setsockopt(s, "sndbuf", 4 << 20)
    assert(sys.bind(s, name))
    socks[i] = s
  end
  if o.seed then math.randomseed(o.seed) end
  local params = { o.params.egress or {}, o.params.ingress or {} }
  local filter = o.filter
  local names = { "egress", "ingress" }
  local heap, seq = {}, 0
  local free_at, queued = { 0, 0 }, { 0, 0 }
  local pending = ""
  ready()

  local function arrive(dir, frame, t)
    local p = params[dir]
    if filter then
      local ok, r = pcall(filter, frame:sub(VNET + 1), names[dir])
      if ok and r == false then return end
      if ok and type(r) == "string" then frame = frame:sub(1, VNET) .. r end
    end
    if p.loss and math.random() < p.loss then return end
    local copies = (p.duplicate and math.random() < p.duplicate) and 2 or 1
    for _ = 1, copies do
      if queued[dir] >= (p.limit or 1000) then return end
      local f = frame
      if p.corrupt and math.random() < p.corrupt then f = corrupt(f) end
      local at = t
      if p.delay and not (p.reorder and math.random() < p.reorder) then
        local d = p.delay
        if p.jitter then d = math.max(0, d + (2 * math.random() - 1) * p.jitter) end
        at = t + d
      end
      if p.rate then
        -- The frame is on the wire for its bits at the rate, after the frames before it.
        local start = math.max(at, free_at[dir])
        free_at[dir] = start + (#f - VNET) * 8 / p.rate
        at = free_at[dir]
      end
      seq = seq + 1
      queued[dir] = queued[dir] + 1
      push(heap, { t = at, seq = seq, dir = dir, frame = f })
    end
  end

  local function control(text)
    pending = pending .. text
    while true do
      local line, rest = pending:match("^([^\n]*)\n(.*)$")
      if not line then break end
      pending = rest
      local ok, p = pcall(json.decode, line)
      if ok and type(p) == "table" then params = { p.egress or {}, p.ingress or {} } end
    end
  end

  local watch = { socks[1], socks[2], ctl }
  while true do
    local timeout = heap[1] and math.max(0, heap[1].t - now()) or nil
    local readable = sys.poll(watch, timeout) or {}
    local t = now()
    for _, fd in ipairs(readable) do
      if fd == ctl then
        local text = sys.read(ctl, 65536)
        if not text or text == "" then return end  -- the owner is gone
        control(text)
      else
        local dir = fd == socks[1] and 1 or 2
        for _ = 1, 256 do
          local frame = sys.read(fd, 65536 + VNET)
          if not frame or frame == "" then break end
          arrive(dir, frame, t)
        end
      end
    end
    t = now()
    while heap[1] and heap[1].t <= t do
      local e = pop(heap)
      queued[e.dir] = queued[e.dir] - 1
      sys.write(socks[e.dir == 1 and 2 or 1], e.frame)  -- a full send buffer drops the frame
    end
  end
end

local Relay = { __name = "moonbox.net.relay" }
Relay.__index = Relay
Relay.__tostring = function(r) return string.format("relay(%s <-> %s, pid %s)", r.links[1], r.links[2], tostring(r.pid)) end
Relay.__close = function(r) r:stop() end
Relay.__gc = function(r) if r.owner == sys.getpid() then r:stop() end end

--- Starts a relay between links[1] and links[2] (names in the network namespace `netns`, an
-- fd, or this one) with params = {egress = {...}, ingress = {...}} (moonbox.net.shape
-- directions), filter = function(frame, direction) (false drops the frame, a string replaces
-- it), seed = integer. Returns the relay: r.pid, r:set(params), r:stop().
function relay.start(o)
  local ctl_r, ctl_w = assert(sys.pipe())
  local pid = process.helper("moonbox-relay", function(ready)
    ctl_w:close()
    serve(o, ctl_r, ready)
  end, { keep = { ctl_r, o.netns } })
  ctl_r:close()
  return setmetatable({ pid = pid, start = process.start_time(pid), ctl = ctl_w, links = o.links, owner = sys.getpid() }, Relay)
end

--- Replaces both directions' faults at once.
function Relay:set(params)
  if not self.ctl then errors.raise("relay is stopped", { op = "relay" }, 2) end
  local ok, msg = sys.write(self.ctl, json.encode({ egress = params.egress or {}, ingress = params.ingress or {} }) .. "\n")
  if not ok then errors.raise("relay: " .. tostring(msg), { op = "relay" }, 2) end
end

function Relay:stop()
  if self.ctl then self.ctl:close() self.ctl = nil end
  if self.pid then
    sys.kill(self.pid, "KILL")
    sys.wait(self.pid)
    self.pid = nil
  end
end

return relay
