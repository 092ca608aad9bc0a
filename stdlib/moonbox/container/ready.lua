-- moonbox.container.ready: a running container's readiness (a port that listens, a log line, a
-- file, a command that succeeds) and the faults an experiment puts into its filesystem (a
-- read-only remount, a full tmpfs). The methods join the container handle.
--
-- Every wait goes through the container's own wait step, so timers (samplers, faults on a
-- timeline) fire meanwhile and captured output keeps flowing: a chatty server never blocks on a
-- full pipe while the script waits for its port. A container that ends while waited for is an
-- error that says so, as is a timeout.
local sys = require "moonbox.sys"
local check = require "moonbox.check"
local errors = require "moonbox.errors"
local loop = require "moonbox.loop"
local process = require "moonbox.process"
local events = require "moonbox.events"

local ready = {}

local WAIT_KEYS = { timeout = true, every = true }

local function must_run(self, where)
  if self.state ~= "running" then errors.raise(where .. ": container " .. self.id .. " is " .. self.state .. ", not running", { op = "wait" }, 3) end
end

-- Calls probe() until it returns a value, the container ends, or opts.timeout (default 30 s)
-- passes. `what` says what was awaited, for the errors.
local function poll_until(self, where, what, opts, probe)
  local timeout = opts.timeout or 30
  check.number(where, "timeout", timeout, 0)
  local every = opts.every or 0.02
  check.number(where, "every", every, 0.001)
  local deadline = loop.now() + timeout
  while true do
    local v = probe()
    if v ~= nil and v ~= false then return v end
    if self.state ~= "running" then
      local r = self.result or {}
      errors.raise(string.format("%s: container %s ended (%s%s) before %s", where, self.id, tostring(r.status),
        r.code and (" " .. r.code) or r.signal_name and (" " .. r.signal_name) or "", what), { op = "wait", code = 1 }, 3)
    end
    local left = deadline - loop.now()
    if left <= 0 then
      errors.raise(string.format("%s: container %s: %s after %g s", where, self.id, "no " .. what, timeout), { op = "wait", code = 1, errno = "ETIMEDOUT" }, 3)
    end
    self:_wait_step(math.min(every, left))
  end
end

-- Ports in the LISTEN state (tcp) or bound (udp) in the container's network namespace, read
-- from its /proc/PID/net tables: nothing runs inside the container to look.
local function listening(pid, port, proto)
  local files = proto == "udp" and { "udp", "udp6" } or { "tcp", "tcp6" }
  local want_state = proto == "udp" and "07" or "0A"
  for _, f in ipairs(files) do
    local fd = sys.open("/proc/" .. pid .. "/net/" .. f, "rdonly")
    if fd then
      local text = process.read_all(fd)
      fd:close()
      for hexport, st in text:gmatch("\n%s*%d+: %x+:(%x+) %x+:%x+ (%x%x)") do
        if st == want_state and tonumber(hexport, 16) == port then return true end
      end
    end
  end
  return false
end

--- Waits until the container listens on `port` (opts.proto "tcp", the default, or "udp").
-- opts: timeout (seconds, default 30), every (the poll period, default 0.02).
function ready.wait_port(self, port, opts)
  local where = "container:wait_port"
  must_run(self, where)
  check.integer(where, "port", port, 1, 65535)
  opts = check.options(where, opts or {}, { timeout = true, every = true, proto = true })
  local proto = opts.proto or "tcp"
  if proto ~= "tcp" and proto ~= "udp" then check.fail(where, "proto must be \"tcp\" or \"udp\", got " .. check.show(proto)) end
  return poll_until(self, where, "listener on port " .. port .. "/" .. proto, opts, function()
    return listening(self.pid, port, proto)
  end)
end

--- Waits until the container's captured output (stdout, stderr, or "both") has a line matching
-- `pattern` (a Lua pattern; opts.plain for a plain string). The output stays in the result.
-- Returns the match's captures (or the match).
function ready.wait_log(self, pattern, opts)
  local where = "container:wait_log"
  must_run(self, where)
  check.string(where, "pattern", pattern)
  opts = check.options(where, opts or {}, { timeout = true, every = true, stream = true, plain = true })
  local streams = opts.stream == "both" and { "stdout", "stderr" } or { opts.stream or "stdout" }
  for _, s in ipairs(streams) do
    if s ~= "stdout" and s ~= "stderr" then check.fail(where, "stream must be \"stdout\", \"stderr\" or \"both\", got " .. check.show(opts.stream)) end
    local cap = self.capture[s]
    if not cap or cap.fn then
      check.fail(where, "container " .. self.id .. ": its " .. s .. " is not captured (start it with " .. s .. " = \"capture\")")
    end
  end
  -- The first match in the streams' texts, as a packed list of its captures (or the match).
  local function find(text_of)
    for _, s in ipairs(streams) do
      local text = text_of(s) or ""
      local r = table.pack(text:find(pattern, 1, opts.plain and true or false))
      if r[1] then return r.n > 2 and table.pack(table.unpack(r, 3, r.n)) or table.pack(text:sub(r[1], r[2])) end
    end
    return nil
  end
  local ok, found = pcall(poll_until, self, where, "output matching " .. string.format("%q", pattern), opts, function()
    return find(function(s) return self.capture[s].buf:peek() end)
  end)
  if not ok then
    -- It may have printed the line and ended at once: its drained output counts.
    local late = self.result and find(function(s) return self.result[s] end)
    if not late then error(found, 0) end
    found = late
  end
  return table.unpack(found, 1, found.n)
end

-- The container's root, as a folder fd: paths inside it resolve in its own mount namespace,
-- never on the host (RESOLVE_IN_ROOT).
local function root_fd(self, where)
  local fd, msg, errno = sys.open("/proc/" .. self.pid .. "/root", { "path", "directory" })
  if not fd then errors.raise(where .. ": " .. msg, { op = "root", errno = errno }, 3) end
  return fd
end

--- Waits until `path` exists inside the container.
function ready.wait_file(self, path, opts)
  local where = "container:wait_file"
  must_run(self, where)
  check.string(where, "path", path)
  opts = check.options(where, opts or {}, WAIT_KEYS)
  return poll_until(self, where, "file " .. path, opts, function()
    local root = sys.open("/proc/" .. self.pid .. "/root", { "path", "directory" })
    if not root then return nil end
    local fd = sys.open_in_root(root, path)
    root:close()
    if fd then fd:close() return true end
    return nil
  end)
end

--- Waits until `argv`, run inside the container, exits 0 (every opts.every seconds, default
-- 0.2). Returns its result.
function ready.wait_exec(self, argv, opts)
  local where = "container:wait_exec"
  must_run(self, where)
  check.strings(where, "argv", argv)
  opts = check.options(where, opts or {}, WAIT_KEYS)
  local last
  local okp, r = pcall(poll_until, self, where, "success of " .. table.concat(argv, " "), { timeout = opts.timeout, every = opts.every or 0.2 }, function()
    local ok, res = pcall(self.exec, self, argv)
    if ok then
      last = res
      if res.code == 0 then return res end
    elseif errors.is(res) and (res.code == 126 or res.code == 127) then
      error(res, 0)  -- a command that cannot run never will
    end
    return nil
  end)
  if okp then return r end
  if last and errors.is(r) and r.errno == "ETIMEDOUT" then
    local tail = ((last.stderr or "") ~= "" and last.stderr or last.stdout or ""):gsub("%s+$", ""):sub(-200)
    errors.raise(tostring(r) .. " (last exit " .. tostring(last.code) .. (tail ~= "" and (": " .. tail) or "") .. ")", { op = "wait", code = 1, errno = "ETIMEDOUT" }, 2)
  end
  error(r, 0)
end

-- Runs fn in a child inside the container's user (when it has one) and mount namespaces.
local function in_mount_namespace(self, where, fn)
  local kinds = {}
  if self.spec.namespaces.user then kinds[#kinds + 1] = { "user", "user" } end
  kinds[#kinds + 1] = { "mnt", "mount" }
  local ok, why = process.in_namespaces(self.pid, kinds, fn)
  if not ok then errors.raise(where .. ": " .. why, { op = "mount" }, 3) end
end

--- A fault: remounts the mount at `path` inside the container read-only (opts.readonly =
-- false makes it writable again). Its processes keep running; their writes fail with EROFS.
function ready.remount(self, path, opts)
  local where = "container:remount"
  must_run(self, where)
  check.string(where, "path", path)
  opts = check.options(where, opts or {}, { readonly = true })
  local ro = opts.readonly ~= false
  in_mount_namespace(self, where, function()
    local ok, msg = sys.mount(nil, path, nil, { "remount", "bind", ro and "ro" or "rw" })
    if not ok then error(msg, 0) end
  end)
  events.emit("fault", "remount " .. self:_label() .. " " .. path .. (ro and " ro" or " rw"))
  return self
end

--- A fault: fills the filesystem at `path` inside the container (a tmpfs, a volume) with one
-- file, until it is full or only opts.leave bytes are left. Returns {file=, bytes=}: removing
-- the file (container:exec{"rm", file}) frees the space again.
function ready.fill(self, path, opts)
  local where = "container:fill"
  must_run(self, where)
  check.string(where, "path", path)
  opts = check.options(where, opts or {}, { leave = true, name = true })
  local leave = opts.leave and check.integer(where, "leave", opts.leave, 0) or 0
  local file = (path:gsub("/+$", "")) .. "/" .. (opts.name or ".moonbox-fill")
  local root = root_fd(self, where)
  local fd, msg, errno = sys.open_in_root(root, file, { create = "file", flags = { "wronly", "creat", "trunc" }, mode = tonumber("600", 8) })
  if not fd then root:close() errors.raise(where .. ": " .. msg, { op = "fill", errno = errno }, 2) end
  local st = sys.statvfs(fd)
  local chunk = string.rep("\0", 1 << 20)
  local written = 0
  local budget = st and (st.blocks_free * st.block_size - leave) or math.huge
  while written < budget do
    local want = math.min(#chunk, budget - written)
    local n = sys.write(fd, want == #chunk and chunk or chunk:sub(1, want))
    if not n or n == 0 then break end  -- ENOSPC: full
    written = written + n
  end
  fd:close()
  root:close()
  events.emit("fault", string.format("fill %s %s (%d bytes)", self:_label(), path, written))
  return { file = file, bytes = written }
end

return ready
