-- moonbox.container.io: a container's standard streams on the parent's side (capture into
-- buffers, files, the terminal), and the loop that waits for containers to end while it pumps
-- their output, enforces wall and CPU time, and lets timers fire (moonbox.loop).
local sys = require "moonbox.sys"
local errors = require "moonbox.errors"
local process = require "moonbox.process"
local loop = require "moonbox.loop"

local cio = {}

--- Opens the child's ends of stdin, stdout and stderr as the spec asks. Returns the child's
-- fds ({stdin=, stdout=, stderr=, console=}), the parent's capture table, the parent's stdin
-- pipe end (or nil) and the console socket's parent end (or nil).
function cio.open(c)
  local fds, capture = {}, {}
  local stdin_w, console
  if c.tty and c.console_socket then
    -- the pty's master goes to the caller's socket (an OCI --console-socket), not to moonbox
    local sock = assert(sys.socket("unix", "stream"))
    local ok, msg, errno = sys.connect(sock, c.console_socket)
    if not ok then sock:close() errors.raise("container setup failed: console socket: " .. msg, { step = "tty", errno = errno, code = 125 }, 0) end
    fds.console = sock
    return fds, capture, nil, nil
  end
  if c.tty then
    console, fds.console = assert(sys.socketpair())
    return fds, capture, nil, console
  end
  if c.stdin == "null" then
    fds.stdin = assert(sys.open("/dev/null", "rdonly"))
  elseif c.stdin ~= "inherit" then
    local r, w = assert(sys.pipe())
    fds.stdin, stdin_w = r, w
  end
  for _, which in ipairs({ "stdout", "stderr" }) do
    local v = c[which]
    if v == "capture" or type(v) == "function" then
      -- A function gets the output as it comes (a build's live log); nothing is kept.
      local r, w = assert(sys.pipe())
      capture[which] = { fd = r, buf = sys.buffer(type(v) == "function" and 0 or c.capture_limit), fn = type(v) == "function" and v or nil }
      fds[which] = w
    elseif v == "null" then
      fds[which] = assert(sys.open("/dev/null", "wronly"))
    elseif v ~= "inherit" then
      local f, msg, errno = sys.open(v, { "wronly", "creat", "trunc" }, tonumber("644", 8))
      if not f then errors.raise("container setup failed: " .. msg, { step = "stdio", errno = errno, code = 125 }, 0) end
      fds[which] = f
    end
  end
  return fds, capture, stdin_w, console
end

--- Reads what is ready on the capture pipes (all of them when `ready` is nil).
function cio.pump(self, ready)
  for _, cap in pairs(self.capture) do
    if cap.fd and (ready == nil or ready[cap.fd]) then
      local chunk, n
      if cap.fn then
        chunk = sys.read(cap.fd, 65536)
        n = chunk and #chunk
        if n and n > 0 then cap.buf:append(chunk) cap.fn(chunk) end
      else
        n = cap.buf:read(cap.fd)
      end
      if not n or n == 0 then
        cap.fd:close()
        cap.fd = nil
      elseif cap.buf:total() > self.spec.capture_limit and self.spec.kill_on_output_limit and not self.output_exceeded then
        self.output_exceeded = true
        if self.group then self.group:kill() end
      end
    end
  end
end

-- The tty's master is the container's terminal: our stdin goes into it, and it to our stdout.
local function pump_tty(self, ready)
  local m = self.tty_master
  if not m or self.capture.stdout then return end
  if ready[0] then
    local data = sys.read(0, 4096)
    if data and data ~= "" then
      sys.write(m, data)
    else
      self.stdin_closed = true  -- our stdin ended: stop watching it
    end
  end
  if ready[m] then
    local data = sys.read(m, 65536)
    if data and data ~= "" then io.stdout:write(data) io.stdout:flush() end
  end
end

--- Drains the capture pipes to their ends once the container is gone.
function cio.drain(self)
  while true do
    local fds = {}
    for _, cap in pairs(self.capture) do if cap.fd then fds[#fds + 1] = cap.fd end end
    if #fds == 0 then return end
    sys.poll(fds, 1)
    cio.pump(self, nil)
  end
end

--- Waits for any of `list` (started containers) to end, or until `deadline` (monotonic).
-- Returns the one that ended (it has been finished with finish(c, status)), or nil.
function cio.wait_some(list, deadline, finish)
  while true do
    local fds, index = {}, {}
    local next_deadline = deadline
    local now = loop.now()
    for _, c in ipairs(list) do
      if c.state == "exited" then return c end
      fds[#fds + 1] = c.pidfd
      index[c.pidfd] = c
      for _, cap in pairs(c.capture) do if cap.fd then fds[#fds + 1] = cap.fd end end
      if c.tty_master and not c.capture.stdout then
        fds[#fds + 1] = c.tty_master
        if not c.stdin_closed and c.spec.stdin == "inherit" then fds[#fds + 1] = 0 end
      end
      if c.spec.timeout and not c.timed_out then
        local t = c.started + c.spec.timeout
        if not next_deadline or t < next_deadline then next_deadline = t end
      end
      if c.spec.cpu_time and not c.cpu_time_exceeded then
        -- CPU time is the group's, all processes together: look at it every 20 ms.
        local t = now + 0.02
        if not next_deadline or t < next_deadline then next_deadline = t end
      end
    end
    local ready = loop.poll(fds, next_deadline)
    local set = {}
    for _, fd in ipairs(ready or {}) do set[fd] = true end
    now = loop.now()
    for _, c in ipairs(list) do
      cio.pump(c, set)
      pump_tty(c, set)
      if c.spec.timeout and not c.timed_out and now >= c.started + c.spec.timeout then
        c.timed_out = true
        c:_kill_all()
      end
      if c.spec.cpu_time and not c.cpu_time_exceeded and c.state == "running" and c.group then
        if c.group:cpu_seconds() >= c.spec.cpu_time then
          c.cpu_time_exceeded = true
          c:_kill_all()
        end
      end
      if set[c.pidfd] then
        local st = sys.wait(c.pid, { nohang = true })
        if st then
          finish(c, st)
          return c
        end
      end
    end
    if deadline and now >= deadline then return nil end
  end
end

--- Feeds a string to the container's stdin pipe (a helper process does it for big inputs).
function cio.feed(w, data) return process.feed(w, data) end

return cio
