-- moonbox.net.proxy: published ports without firewall rules. The listening sockets are made
-- here, in the caller's network namespace (the host's); a proxy process then steps into the
-- container's namespaces (its user namespace first when it has one, as a rootless container
-- does) and, for each TCP connection or UDP client, opens a socket there and moves the bytes.
-- So it works for a container with no network but its own `lo`, and rootless.
--
-- What is lost: the server sees connections from the container's own address, not the
-- client's (the kernel cannot forge a source across namespaces without rules).
local sys = require "moonbox.sys"
local process = require "moonbox.process"
local errors = require "moonbox.errors"
local check = require "moonbox.check"

local proxy = {}

local UDP_IDLE = 60  -- seconds a UDP client's session lives without traffic

--- Parses a port publication as docker's -p takes it: "8080:80", "127.0.0.1:8080:80",
-- "[::1]:8080:80", "5353:53/udp", "80" (a free host port), or a table {host_ip=, host_port=,
-- port=, proto=}. Returns {host_ip=, host_port=, port=, proto=}.
function proxy.parse(where, spec)
  if type(spec) == "table" then
    check.options(where, spec, { host_ip = true, host_port = true, port = true, proto = true })
    local p = { host_ip = spec.host_ip or "0.0.0.0", host_port = spec.host_port or 0, port = spec.port, proto = spec.proto or "tcp" }
    check.integer(where, "port", p.port, 1, 65535)
    check.integer(where, "host_port", p.host_port, 0, 65535)
    check.one_of(where, "proto", p.proto, { "tcp", "udp" })
    if not require("moonbox.net.addr").family(p.host_ip) then check.fail(where, "host_ip " .. check.show(p.host_ip) .. " is not an IP address") end
    return p
  end
  if type(spec) ~= "string" then check.fail(where, "a port like \"8080:80\" or \"127.0.0.1:8080:80/udp\" expected, got " .. check.show(spec)) end
  local body, proto = spec:match("^(.-)/(%a+)$")
  body, proto = body or spec, proto or "tcp"
  if proto ~= "tcp" and proto ~= "udp" then check.fail(where, "port " .. spec .. ": the protocol must be tcp or udp") end
  local ip, rest = body:match("^%[([%x:.]+)%]:(.+)$")
  if not ip then
    local a, b, c = body:match("^([%d.]+):(%d*):(%d+)$")
    if a then ip, rest = a, b .. ":" .. c else rest = body end
  end
  local host, port = rest:match("^(%d*):(%d+)$")
  if not host then host, port = "", rest:match("^(%d+)$") end
  local hp, cp = tonumber(host ~= "" and host or "0"), tonumber(port)
  if not cp or cp < 1 or cp > 65535 or not hp or hp > 65535 then
    check.fail(where, "port " .. check.show(spec) .. " must be like \"8080:80\", \"127.0.0.1:8080:80\", \"[::1]:8080:80\" or \"5353:53/udp\"")
  end
  if ip and not require("moonbox.net.addr").family(ip) then check.fail(where, "port " .. spec .. ": " .. ip .. " is not an IP address") end
  return { host_ip = ip or "0.0.0.0", host_port = hp, port = cp, proto = proto }
end

-- MARK: the proxy process

-- One TCP connection: bytes each way through a buffer. A side is read only while the bytes
-- read before have been written on (backpressure); an end of input becomes a shutdown of
-- writing on the other side. Sockets are non-blocking: pump tries what is due and moves on.
local function pump(c)
  if c.connecting then
    if not sys.getsockopt(c.target, "error") then return false end
    c.connecting = false
  end
  for _, way in ipairs({ { "up", c.client, c.target }, { "down", c.target, c.client } }) do
    local key, from, to = way[1], way[2], way[3]
    if c[key] == "" and not c["eof_" .. key] then
      local data, _, errno = sys.read(from, 65536)
      if data == "" then c["eof_" .. key] = true
      elseif data then c[key] = data
      elseif errno ~= "EAGAIN" then return false end
    end
    if c[key] ~= "" then
      local n, _, errno = sys.write(to, c[key])
      if n then c[key] = c[key]:sub(n + 1) elseif errno ~= "EAGAIN" then return false end
    end
    if c["eof_" .. key] and c[key] == "" and not c["shut_" .. key] then
      sys.shutdown(to, "write")
      c["shut_" .. key] = true
    end
  end
  return not (c.shut_up and c.shut_down)
end

-- The poll entries a connection waits on now.
local function wants(c, add)
  if c.connecting then add({ c.target, "out" }, c) return end
  local function mode(r, w) return r and w and "inout" or r and "in" or w and "out" or nil end
  local cm = mode(c.up == "" and not c.eof_up, c.down ~= "")
  local tm = mode(c.down == "" and not c.eof_down, c.up ~= "")
  if cm then add({ c.client, cm }, c) end
  if tm then add({ c.target, tm }, c) end
end

local function serve(o, listeners, ready)
  if o.userns then assert(sys.setns(o.userns, "user")) end
  assert(sys.setns(o.netns, "net"))
  sys.signal("PIPE", "ignore")  -- a client gone mid-write is an error return, not a death
  ready()
  local addr = require "moonbox.net.addr"
  local conns, sessions = {}, {}
  local function close_conn(c)
    conns[c] = nil
    c.client:close()
    c.target:close()
  end
  while true do
    local watch, owner = {}, {}
    local function add(entry, who) watch[#watch + 1] = entry owner[entry] = who end
    for _, l in ipairs(listeners) do add(l.sock, l) end
    for _, s in pairs(sessions) do add(s.sock, s) end
    for c in pairs(conns) do wants(c, add) end
    local ready_list = sys.poll(watch, 5) or {}
    local t = sys.clock_gettime("monotonic")
    for _, entry in ipairs(ready_list) do
      local who = owner[entry]
      if who.client then
        if conns[who] and not pump(who) then close_conn(who) end
      elseif who.session then
        local reply = sys.read(who.sock, 65536)
        if reply then sys.sendto(who.listener, reply, who.addr, who.port) who.last = t end
      elseif who.spec.proto == "tcp" then
        local client = sys.accept(who.sock, { "nonblock" })
        local target = client and sys.socket(addr.family(who.spec.target_ip), "stream", { "nonblock" })
        if target then
          local ok, _, errno = sys.connect(target, who.spec.target_ip, who.spec.port)
          if ok or errno == "EINPROGRESS" then
            conns[{ client = client, target = target, up = "", down = "", connecting = not ok }] = true
          else
            client:close()
            target:close()
          end
        elseif client then
          client:close()
        end
      else
        local data, from, port = sys.recvfrom(who.sock, 65536)
        if data then
          local key = from .. "|" .. port
          local s = sessions[key]
          if not s then
            local sock = sys.socket(addr.family(who.spec.target_ip), "dgram", { "nonblock" })
            if sock and sys.connect(sock, who.spec.target_ip, who.spec.port) then
              s = { session = true, sock = sock, listener = who.sock, addr = from, port = port }
              sessions[key] = s
            elseif sock then
              sock:close()
            end
          end
          if s then
            s.last = t
            sys.write(s.sock, data)
          end
        end
      end
    end
    for key, s in pairs(sessions) do
      if t - s.last > UDP_IDLE then s.sock:close() sessions[key] = nil end
    end
  end
end

local Proxy = { __name = "moonbox.net.proxy" }
Proxy.__index = Proxy
Proxy.__tostring = function(p) return string.format("proxy(%d ports, pid %s)", #p.ports, tostring(p.pid)) end
Proxy.__close = function(p) p:stop() end
Proxy.__gc = function(p) if p.owner == sys.getpid() then p:stop() end end

--- Publishes `ports` (proxy.parse results, each with target_ip: where in the container to
-- connect) from this namespace into the one `netns` (an fd) names; `userns` (an fd) is
-- entered first when given. The listening sockets are bound here, so a port in use fails
-- here. Returns the proxy: p.pid, p.ports (host_port filled in where 0 asked for any), p:stop().
function proxy.start(o)
  local listeners, keep = {}, { o.netns, o.userns }
  local function close_all() for _, l in ipairs(listeners) do l.sock:close() end end
  for _, p in ipairs(o.ports) do
    local family = require("moonbox.net.addr").family(p.host_ip)
    local sock = assert(sys.socket(family, p.proto == "tcp" and "stream" or "dgram", { "nonblock" }))
    sys.setsockopt(sock, "reuseaddr", true)
    if family == "inet6" then sys.setsockopt(sock, "v6only", true) end
    local ok, msg, errno = sys.bind(sock, p.host_ip, p.host_port)
    if ok and p.proto == "tcp" then ok, msg, errno = sys.listen(sock, 512) end
    if not ok then
      sock:close()
      close_all()
      errors.raise(string.format("cannot publish %s:%d/%s: %s", p.host_ip, p.host_port, p.proto, msg), { op = "ports", errno = errno, code = 125 })
    end
    local _, bound = sys.getsockname(sock)
    p.host_port = bound
    listeners[#listeners + 1] = { sock = sock, spec = p }
    keep[#keep + 1] = sock
  end
  local okh, pid = pcall(process.helper, "moonbox-proxy", function(ready) serve(o, listeners, ready) end, { keep = keep })
  close_all()
  if not okh then error(pid, 0) end
  return setmetatable({ pid = pid, start = process.start_time(pid), ports = o.ports, owner = sys.getpid() }, Proxy)
end

function Proxy:stop()
  if self.pid then
    sys.kill(self.pid, "KILL")
    sys.wait(self.pid)
    self.pid = nil
  end
end

return proxy
