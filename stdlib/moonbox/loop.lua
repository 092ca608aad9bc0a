-- moonbox.loop: timers that fire while moonbox waits. Every wait in the stdlib (for containers,
-- ports, files, sleeps) goes through loop.poll or loop.sleep, so a timer set with loop.after
-- runs on time whatever the script is waiting for: samplers, faults on a timeline, deadlines.
--
--   local t = loop.after(2.0, function() lab:disconnect("srv") end)
--   t:cancel()
--   loop.every(0.1, function() sample() end)        -- until cancelled
--   loop.sleep(5)                                   -- timers keep firing meanwhile
local sys = require "moonbox.sys"

local loop = {}

local timers = {}   -- sorted by .at
local now = function() return sys.clock_gettime("monotonic") end
loop.now = now

local Timer = { __name = "moonbox.timer" }
Timer.__index = Timer
function Timer:cancel() self.cancelled = true end

local function insert(t)
  local i = #timers + 1
  while i > 1 and timers[i - 1].at > t.at do i = i - 1 end
  table.insert(timers, i, t)
  return t
end

--- Runs fn at monotonic time `at`.
function loop.at(at, fn)
  return insert(setmetatable({ at = at, fn = fn }, Timer))
end

--- Runs fn after `seconds`.
function loop.after(seconds, fn) return loop.at(now() + seconds, fn) end

--- Runs fn every `seconds`, first after one period, until cancelled or fn returns false.
function loop.every(seconds, fn)
  local t = setmetatable({ at = now() + seconds, period = seconds, fn = fn }, Timer)
  return insert(t)
end

--- The time of the next timer, or nil.
function loop.next_deadline()
  while timers[1] and timers[1].cancelled do table.remove(timers, 1) end
  return timers[1] and timers[1].at
end

--- Runs every timer whose time has come. A timer's error is raised after the others ran.
function loop.run_due()
  local t0 = now()
  local failure
  while timers[1] and timers[1].at <= t0 do
    local t = table.remove(timers, 1)
    if not t.cancelled then
      local ok, again = pcall(t.fn, t)
      if not ok then failure = failure or again end
      if t.period and again ~= false and not t.cancelled then
        t.at = math.max(t.at + t.period, t0)
        insert(t)
      end
    end
  end
  if failure then error(failure, 0) end
end

--- sys.poll that runs due timers while it waits. Returns the ready fds; at the deadline, what
-- is ready then (often nothing).
function loop.poll(fds, deadline)
  while true do
    loop.run_due()
    local t = now()
    local wake = loop.next_deadline()
    if deadline and (not wake or deadline < wake) then wake = deadline end
    local ready, msg, errno = sys.poll(fds, wake and math.max(0, wake - t) or nil)
    if not ready then return nil, msg, errno end
    if #ready > 0 or (deadline and now() >= deadline) then
      loop.run_due()
      return ready
    end
  end
end

--- Sleeps `seconds`, running timers meanwhile.
function loop.sleep(seconds)
  loop.poll({}, now() + seconds)
end

return loop
