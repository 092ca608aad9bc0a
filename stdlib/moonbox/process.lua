-- moonbox.process: host processes from Lua, built on moonbox.sys.
--   process.run(argv, opts)      runs a command and waits: {code=, signal=, stdout=, stderr=}
--   process.call(fn, opts)       runs a Lua function in a forked child (optionally in new
--                                namespaces) and returns what it returned, or raises its error
--   process.child(fn, report)    the body of every forked child: never returns to the caller
--   process.exec(argv, env)      exec with signal dispositions and the mask back to default
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local errors = require "moonbox.errors"
local check = require "moonbox.check"

local process = {}

--- The start time of a process (clock ticks since boot), to tell it from a reused pid, and its
-- state letter (R, S, Z, ...). nil when there is no such process.
function process.start_time(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  -- Fields after the command name, which may hold spaces and parentheses.
  local rest = text:match("^.*%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[20]), fields[1]
end

--- True when the process `pid` that started at `start` still runs; a zombie does not.
function process.alive(pid, start)
  if math.type(pid) ~= "integer" then return false end
  local t, letter = process.start_time(pid)
  return t ~= nil and t == start and letter ~= "Z" and letter ~= "X"
end

local my_pid, my_start

--- This process as records name an owner: its pid and start time (a forked child is itself).
function process.me()
  local pid = sys.getpid()
  if pid ~= my_pid then my_pid, my_start = pid, process.start_time(pid) end
  return pid, my_start
end

--- "PREFIX-PID-START-": a name that says which process made it, so gc can tell whether its
-- maker still runs.
function process.owned_name(prefix)
  local pid, start = process.me()
  return string.format("%s-%d-%d-", prefix, pid, start or 0)
end

--- Kept for callers of the old name: unknown option keys are refused.
function process.check_options(fname, opts, allowed)
  return check.options(fname, opts, allowed)
end

--- The body of a forked or cloned child. Runs fn; whatever happens, the child then ends with
-- _exit and never returns into the code that forked it (its copy of the caller's script must
-- not go on running). An error is handed to report(err) (say, over a pipe) first, and the
-- child exits with `code` (125 by default). fn usually ends in exec.
function process.child(fn, report, code)
  local ok, err = xpcall(fn, function(e)
    if errors.is(e) then return e end
    return errors.new(debug.traceback(tostring(e), 2))
  end)
  if not ok and report then pcall(report, err) end
  -- report may set err.exit (127 for a command that is not there, say)
  sys._exit(ok and 0 or (errors.is(err) and math.type(err.exit) == "integer" and err.exit) or code or 125)
end

--- Lets go of every fd from 3 up but those in `keep` (fd objects or numbers). Each goes by
-- dup2 of /dev/null over it, not close: a Lua fd object may still name the number, and its
-- __gc must not close a socket made later under the same number.
function process.close_fds_except(keep)
  local kept = {}
  for _, fd in ipairs(keep) do kept[type(fd) == "number" and fd or fd:fileno()] = true end
  local null = assert(sys.open("/dev/null", "rdwr"))
  kept[null:fileno()] = true
  for _, name in ipairs(sys.listdir("/proc/self/fd") or {}) do
    local n = tonumber(name)
    if n and n > 2 and not kept[n] and sys.readlink("/proc/self/fd/" .. name) then sys.dup2(null, n) end
  end
  null:close()
end

--- Starts a helper process of moonbox's own (a keeper, a link relay, a port proxy) running
-- body(ready): the helper calls ready() once it serves, and this returns its pid then; an error
-- before that is raised here. The helper has default signal dispositions and its name in ps.
-- opts.daemon: it outlives this process (own session, stdio on /dev/null); otherwise it dies
-- with this process (PR_SET_PDEATHSIG). opts.keep: the fds (objects or numbers) it keeps
-- besides 0-2; every other fd is closed in it, so that it never holds a pipe another process
-- waits on (a container's stdin, a keeper's hold). Without opts.keep, it keeps all.
function process.helper(name, body, opts)
  opts = opts or {}
  local ready_r, ready_w = assert(sys.pipe())
  local parent = sys.getpid()
  local pid, msg = sys.fork()
  if not pid then errors.raise(name .. ": " .. msg, { op = "fork", code = 125 }, 2) end
  if pid == 0 then
    process.child(function()
      ready_r:close()
      if opts.keep then process.close_fds_except({ ready_w, table.unpack(opts.keep) }) end
      sys.signal("all", "default")
      sys.sigprocmask("setmask", {})
      if opts.daemon then
        -- It lets go of the caller's terminal and pipes (a `$(moonbox ...)` would wait on them).
        sys.setsid()
        local null = assert(sys.open("/dev/null", "rdwr"))
        for fd = 0, 2 do sys.dup2(null, fd) end
        null:close()
      else
        sys.prctl("set_pdeathsig", "KILL")
        if sys.getppid() ~= parent then sys._exit(1) end  -- the parent died before the line above
      end
      sys.prctl("set_name", name)
      body(function()
        sys.write(ready_w, "r")
        ready_w:close()
      end)
    end, function(e) sys.write(ready_w, tostring(e)) end, 1)
  end
  ready_w:close()
  local answer = process.read_all(ready_r, 4096)
  ready_r:close()
  if answer ~= "r" then
    sys.kill(pid, "KILL")
    sys.wait(pid)
    errors.raise(name .. ": " .. (answer ~= "" and answer or "ended before it was ready"), { code = 125 }, 2)
  end
  return pid
end

--- exec for a child of moonbox: every signal disposition back to its default and the signal
-- mask empty first (moonbox ignores SIGPIPE and catches others; a program must not inherit
-- that, as runc also ensures). Returns only on failure: nil, msg, errno.
function process.exec(argv, env)
  sys.signal("all", "default")
  sys.sigprocmask("setmask", {})
  return sys.exec(argv, env)
end

--- Runs an OCI hook {path=, args= (args[1] is its argv[0]), env= ({"NAME=value"}), timeout=
-- (seconds), stdin= (the state JSON)} and waits for it. Returns {ok = true} or {ok = false,
-- why = "..."}; a hook past its timeout is killed.
function process.run_hook(h, stdin)
  local argv = { h.path }
  for i = 2, #(h.args or {}) do argv[#argv + 1] = h.args[i] end
  local r, w = assert(sys.pipe())
  local pid, msg = sys.fork()
  if not pid then r:close() w:close() return { ok = false, why = "fork: " .. msg } end
  if pid == 0 then
    process.child(function()
      w:close()
      sys.dup2(r, 0)
      r:close()
      local _, emsg = process.exec(argv, h.env or {})
      sys.write(2, "hook " .. h.path .. ": " .. tostring(emsg) .. "\n")
      sys._exit(127)
    end)
  end
  r:close()
  local data = stdin or h.stdin
  if data then sys.write(w, data) end  -- a state JSON fits in the pipe
  w:close()
  local st = sys.wait(pid, h.timeout and { timeout = h.timeout } or nil)
  if st == false then
    sys.kill(pid, "KILL")
    sys.wait(pid)
    return { ok = false, why = "timed out after " .. tostring(h.timeout) .. " s" }
  end
  if st.status == "exited" and st.code == 0 then return { ok = true } end
  return { ok = false, why = st.status == "exited" and ("exit status " .. st.code) or ("killed by " .. tostring(st.signal_name)) }
end

--- Runs fn() in a forked child that joined the namespaces of process `pid`, in the order given
-- as {file, kind} pairs ({{"user", "user"}, {"mnt", "mount"}}): mount(2) acts only on the
-- caller's own mount namespace. Returns true, or nil and fn's error (or the setns failure).
function process.in_namespaces(pid, kinds, fn)
  local r, w = assert(sys.pipe())
  local child, msg = sys.fork()
  if not child then r:close() w:close() return nil, "fork: " .. msg end
  if child == 0 then
    process.child(function()
      r:close()
      local ok, err = pcall(function()
        for _, k in ipairs(kinds) do
          local okj, msgj = sys.setns("/proc/" .. pid .. "/ns/" .. k[1], k[2])
          if not okj then error(msgj, 0) end
        end
        fn()
      end)
      if not ok then sys.write(w, tostring(errors.is(err) and err.message or err)) sys._exit(1) end
    end)
  end
  w:close()
  local why = process.read_all(r)
  r:close()
  local st = sys.wait(child)
  if st.code ~= 0 then return nil, why ~= "" and why or ("exit " .. tostring(st.code)) end
  return true
end

--- The exit status a shell gives for an exec failure.
function process.exec_status(errno)
  return errno == "ENOENT" and 127 or 126
end

--- Reads everything from fd until EOF; keeps at most `limit` bytes. Returns the text and the
-- number of bytes read.
function process.read_all(fd, limit)
  local buf <close> = sys.buffer(limit)
  while true do
    local n, err = buf:read(fd)
    if not n then errors.raise("read failed: " .. err, { op = "read" }, 2) end
    if n == 0 then break end
  end
  return buf:take(), buf:total()
end

--- Reads several fds to EOF at once (so neither pipe fills while the other is read), keeping
-- at most `limit` bytes of each. Closes them. Returns the texts and the byte counts.
function process.collect(fds, limit)
  local bufs, open, index = {}, {}, {}
  for i, fd in ipairs(fds) do
    bufs[i] = sys.buffer(limit)
    open[#open + 1] = fd
    index[fd] = i
  end
  while #open > 0 do
    local ready = sys.poll(open)
    for _, fd in ipairs(ready or {}) do
      local n = bufs[index[fd]]:read(fd)
      if not n or n == 0 then
        sys.close(fd)
        for k, f in ipairs(open) do
          if f == fd then table.remove(open, k) break end
        end
      end
    end
  end
  local texts, totals = {}, {}
  for i, b in ipairs(bufs) do
    totals[i] = b:total()
    texts[i] = b:take()
  end
  return texts, totals
end

--- Writes `data` into the pipe `w` and closes it. Small inputs fit the pipe; a larger one is
-- written by a helper process while the reader reads, so neither side waits on the other.
-- Returns the helper's pid, to be waited for (or killed), or nil.
function process.feed(w, data)
  if #data <= 65536 then
    sys.write(w, data)
    sys.close(w)
    return nil
  end
  local pid = assert(sys.fork())
  if pid == 0 then
    process.child(function() sys.write(w, data) end)
  end
  sys.close(w)
  return pid
end

-- The pipes of a child's standard streams: stdin fed from a string, stdout and stderr captured.
local Stdio = { __name = "moonbox.process.stdio" }
Stdio.__index = Stdio

--- Made before fork; the child calls :child() before exec, the parent :finish([limit]).
function process.stdio(stdin, capture)
  local s = setmetatable({ stdin = stdin, capture = capture }, Stdio)
  if capture then
    s.out_r, s.out_w = assert(sys.pipe())
    s.err_r, s.err_w = assert(sys.pipe())
  end
  if stdin then s.in_r, s.in_w = assert(sys.pipe()) end
  return s
end

function Stdio:child()
  if self.in_r then sys.dup2(self.in_r, 0) end
  if self.capture then
    sys.dup2(self.out_w, 1)
    sys.dup2(self.err_w, 2)
  end
end

--- Feeds stdin and reads stdout and stderr to their ends (at most `limit` bytes of each kept).
function Stdio:finish(limit)
  -- The child's ends close first, so a feeder process forked below holds none of them.
  if self.in_r then sys.close(self.in_r) end
  if self.capture then
    sys.close(self.out_w)
    sys.close(self.err_w)
  end
  local feeder = self.in_w and process.feed(self.in_w, self.stdin)
  local texts = { "", "" }
  if self.capture then texts = process.collect({ self.out_r, self.err_r }, limit) end
  -- With the reader gone, a feeder still writing ends on EPIPE.
  if feeder then sys.wait(feeder) end
  return texts[1], texts[2]
end

--- Runs argv on the host and waits for it.
-- opts: stdin (string), capture (default true: stdout and stderr as strings),
-- env (table), cwd, check (raise unless the exit code is 0).
function process.run(argv, opts)
  opts = opts or {}
  check.options("process.run", opts, { stdin = true, capture = true, env = true, cwd = true, check = true })
  check.strings("process.run", "argv", argv)
  local stdio = process.stdio(opts.stdin, opts.capture ~= false)
  local pid = assert(sys.fork())
  if pid == 0 then
    process.child(function()
      stdio:child()
      if opts.cwd then
        local ok, msg = sys.chdir(opts.cwd)
        if not ok then io.stderr:write(msg, "\n") sys._exit(126) end
      end
      local _, msg, errno = process.exec(argv, opts.env)
      io.stderr:write(msg, "\n")
      sys._exit(process.exec_status(errno))
    end, function(err) io.stderr:write(tostring(err), "\n") end)
  end
  local stdout, stderr = stdio:finish()
  local st = assert(sys.wait(pid))
  local result = { code = st.code, signal = st.signal, stdout = stdout, stderr = stderr, status = st.status }
  if opts.check and st.code ~= 0 then
    errors.raise(string.format("%s failed (%s): %s", argv[1],
      st.code and ("exit " .. st.code) or ("signal " .. tostring(st.signal)), stderr ~= "" and stderr or stdout),
      { op = argv[1], code = st.code }, 2)
  end
  return result
end

--- Runs fn() in a child process, entering `namespaces` (a list for sys.clone) first.
-- The child's return value (anything json can carry) comes back; its error is raised
-- here with the child's message. The child always ends with _exit, never returns.
function process.call(fn, opts)
  opts = opts or {}
  check.options("process.call", opts, { namespaces = true })
  local r, w = assert(sys.pipe())
  local pid, err = sys.clone(opts.namespaces or {})
  if not pid then errors.raise("process.call: " .. err, { op = "clone" }, 2) end
  if pid == 0 then
    sys.close(r)
    process.child(function()
      local value = fn()
      local ok, text = pcall(json.encode, { ok = true, value = value })
      if not ok then text = json.encode({ ok = false, value = "process.call: result cannot be sent: " .. tostring(text) }) end
      sys.write(w, text)
    end, function(e)
      sys.write(w, json.encode({ ok = false, value = tostring(e) }))
    end, 1)
  end
  sys.close(w)
  local text = process.read_all(r)
  sys.close(r)
  local st = assert(sys.wait(pid))
  if text == "" then
    errors.raise(string.format("process.call: child ended without a result (%s %s)", st.status, st.code or st.signal), nil, 2)
  end
  local reply = json.decode(text)
  if not reply.ok then errors.raise(reply.value, nil, 2) end
  if reply.value == json.null then return nil end
  return reply.value
end

return process
