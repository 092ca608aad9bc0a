-- moonbox.process: host processes from Lua, built on moonbox.sys.
--   process.run(argv, opts)      runs a command and waits: {code=, signal=, stdout=, stderr=}
--   process.call(fn, opts)       runs a Lua function in a forked child (optionally in new
--                                namespaces) and returns what it returned, or raises its error
local sys = require "moonbox.sys"
local json = require "moonbox.json"

local process = {}

local function check_options(fname, opts, allowed)
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (known: %s)", fname, tostring(k), table.concat(names, ", ")), 3)
    end
  end
end
process.check_options = check_options

--- Reads everything from fd until EOF.
function process.read_all(fd, limit)
  local parts, total = {}, 0
  while true do
    local chunk, err = sys.read(fd, 65536)
    if not chunk then error("read failed: " .. err, 2) end
    if chunk == "" then break end
    if not limit or total < limit then parts[#parts + 1] = chunk end
    total = total + #chunk
  end
  local s = table.concat(parts)
  if limit and #s > limit then s = s:sub(1, limit) end
  return s, total
end

--- Reads several fds to EOF at once (so neither pipe fills while the other is read),
-- keeping at most `limit` bytes of each. Closes them. Returns the texts and the byte counts.
function process.collect(fds, limit)
  local parts, totals, open = {}, {}, {}
  for i, fd in ipairs(fds) do
    parts[i], totals[i] = {}, 0
    open[#open + 1] = fd
  end
  local index = {}
  for i, fd in ipairs(fds) do index[fd] = i end
  while #open > 0 do
    local ready = sys.poll(open)
    if ready then
      for _, fd in ipairs(ready) do
        local i = index[fd]
        local chunk = sys.read(fd, 65536)
        if not chunk or chunk == "" then
          sys.close(fd)
          for k, f in ipairs(open) do
            if f == fd then table.remove(open, k) break end
          end
        else
          local kept = limit and math.max(0, math.min(#chunk, limit - totals[i])) or #chunk
          if kept > 0 then parts[i][#parts[i] + 1] = chunk:sub(1, kept) end
          totals[i] = totals[i] + #chunk
        end
      end
    end
  end
  local texts = {}
  for i in ipairs(fds) do texts[i] = table.concat(parts[i]) end
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
    sys.write(w, data)
    sys._exit(0)
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
  check_options("process.run", opts, { stdin = true, capture = true, env = true, cwd = true, check = true })
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then
    error("process.run: argv must be a list of strings", 2)
  end
  local stdio = process.stdio(opts.stdin, opts.capture ~= false)
  local pid = assert(sys.fork())
  if pid == 0 then
    stdio:child()
    if opts.cwd then
      local ok, msg = sys.chdir(opts.cwd)
      if not ok then io.stderr:write(msg, "\n") sys._exit(126) end
    end
    local _, msg, errno = sys.exec(argv, opts.env)
    io.stderr:write(msg, "\n")
    sys._exit(errno == "ENOENT" and 127 or 126)
  end
  local stdout, stderr = stdio:finish()
  local st = assert(sys.wait(pid))
  local result = { code = st.code, signal = st.signal, stdout = stdout, stderr = stderr, status = st.status }
  if opts.check and st.code ~= 0 then
    error(string.format("%s failed (%s): %s", argv[1],
      st.code and ("exit " .. st.code) or ("signal " .. tostring(st.signal)), stderr ~= "" and stderr or stdout), 2)
  end
  return result
end

--- Runs fn() in a child process, entering `namespaces` (a list for sys.clone) first.
-- The child's return value (anything json can carry) comes back; its error is raised
-- here with the child's message. The child always ends with _exit, never returns.
function process.call(fn, opts)
  opts = opts or {}
  check_options("process.call", opts, { namespaces = true })
  local r, w = assert(sys.pipe())
  local pid, err = sys.clone(opts.namespaces or {})
  if not pid then error("process.call: " .. err, 2) end
  if pid == 0 then
    sys.close(r)
    local ok, value = xpcall(fn, debug.traceback)
    local ok2, text = pcall(json.encode, { ok = ok, value = ok and value or tostring(value) })
    if not ok2 then text = json.encode({ ok = false, value = "process.call: result cannot be sent: " .. text }) end
    sys.write(w, text)
    sys._exit(ok and 0 or 1)
  end
  sys.close(w)
  local text = process.read_all(r)
  sys.close(r)
  local st = assert(sys.wait(pid))
  if text == "" then
    error(string.format("process.call: child ended without a result (%s %s)", st.status, st.code or st.signal), 2)
  end
  local reply = json.decode(text)
  if not reply.ok then error(reply.value, 2) end
  if reply.value == json.null then return nil end
  return reply.value
end

return process
