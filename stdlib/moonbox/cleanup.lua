-- moonbox.cleanup: what must be undone however the run ends, in one registry.
--
--   local token = cleanup.add(function() ... end, "container c1")   -- newest runs first
--   cleanup.remove(token)                                           -- done with it normally
--
-- Everything registered runs, newest first, when moonbox gets SIGINT, SIGTERM or SIGHUP (then
-- moonbox dies of that same signal), and when the Lua state closes: the script's end, an
-- uncaught error, os.exit. Containers, boxes, networks, temporary folders, images being
-- built or imported all register here. Signals are caught through moonbox.sys.on_signal: the
-- handler runs at the script's next instruction or when a blocking call returns, with no
-- polling and no debug hook taken from the script. Only the process that registered an action
-- runs it: a forked child's copy of the registry does nothing.
local sys = require "moonbox.sys"

local cleanup = {}

local owner = sys.getpid()
local actions = {}      -- token -> { fn =, label =, seq = }
local seq = 0
local listeners = {}    -- signal name -> list of functions (WINCH: terminals follow their size)
local installed = false
local dying = false

--- Runs every registered action, newest first. Failures are reported on stderr, and the
--  rest still run. Returns the list of failure messages.
function cleanup.run_all()
  if sys.getpid() ~= owner then return {} end
  local list = {}
  for token, a in pairs(actions) do list[#list + 1] = { token = token, a = a } end
  table.sort(list, function(x, y) return x.a.seq > y.a.seq end)
  local failures = {}
  for _, item in ipairs(list) do
    if actions[item.token] then
      actions[item.token] = nil
      local ok, err = pcall(item.a.fn)
      if not ok then
        failures[#failures + 1] = item.a.label .. ": " .. tostring(err)
        io.stderr:write("moonbox: cleanup of ", item.a.label, " failed: ", tostring(err), "\n")
      end
    end
  end
  return failures
end

local FATAL = { INT = 2, TERM = 15, HUP = 1 }

local function handle_signals()
  local fatal
  for _, name in ipairs(sys.signals_caught()) do
    if FATAL[name] then
      fatal = fatal or name
    else
      for _, fn in ipairs(listeners[name] or {}) do pcall(fn, name) end
    end
  end
  if not fatal then return end
  -- A second Ctrl-C while cleaning up must not cut the cleanup short.
  if dying then return end
  dying = true
  cleanup.run_all()
  sys.signal({ "INT", "TERM", "HUP" }, "default")
  io.stdout:flush()
  io.stderr:flush()
  sys.kill(sys.getpid(), fatal)
  sys.nanosleep(1)
  os.exit(128 + FATAL[fatal], false)
end

--- Catches the fatal signals once, in the process that owns the registry.
function cleanup.install()
  if installed or sys.getpid() ~= owner then return end
  installed = true
  assert(sys.signal({ "INT", "TERM", "HUP" }, "catch"))
  -- A child that died early must not take moonbox with it through SIGPIPE: writes fail instead.
  -- (Every program moonbox starts gets the default back: process.exec resets dispositions.)
  assert(sys.signal("PIPE", "ignore"))
  assert(sys.on_signal(handle_signals))
end

--- Registers `fn`, to run once when the run ends unless removed first. Returns a token.
function cleanup.add(fn, label)
  if type(fn) ~= "function" then error("cleanup.add: a function expected", 2) end
  cleanup.install()
  seq = seq + 1
  actions[seq] = { fn = fn, label = label or "cleanup", seq = seq }
  return seq
end

--- Makes a forked child the owner of a registry of its own (an experiment's trial worker):
-- the parent's actions stay the parent's, and what the child registers runs on its signals.
function cleanup.adopt()
  owner = sys.getpid()
  actions = {}
  installed = false
  cleanup.install()
end

--- Forgets an action (it was done the normal way). Safe with nil and twice.
function cleanup.remove(token)
  if token then actions[token] = nil end
end

--- Calls fn(name) when the signal `name` arrives ("WINCH"), without ending the run.
function cleanup.on(name, fn)
  cleanup.install()
  listeners[name] = listeners[name] or {}
  table.insert(listeners[name], fn)
  assert(sys.signal(name, "catch"))
end

-- Runs when the Lua state closes: the end of the script, an uncaught error, os.exit.
cleanup._sentinel = setmetatable({}, { __gc = function() cleanup.run_all() end })

return cleanup
