-- moonbox.events: what the stdlib did that an observer may want on a timeline. Networks and
-- containers announce their faults here (a partition, a shape change, a kill, a pause); an
-- experiment's trial subscribes and marks them in its series. Nobody listening costs nothing.
--
--   local token = events.subscribe(function(kind, text) ... end)
--   events.emit("fault", "disconnect srv")
--   events.unsubscribe(token)
local events = {}
local subscribers = {}
local next_token = 0

function events.subscribe(fn)
  if type(fn) ~= "function" then error("events.subscribe: a function expected", 2) end
  next_token = next_token + 1
  subscribers[next_token] = fn
  return next_token
end

function events.unsubscribe(token)
  if token then subscribers[token] = nil end
end

--- Tells every subscriber: kind ("fault"), text (what happened, one line).
function events.emit(kind, text)
  for _, fn in pairs(subscribers) do fn(kind, text) end
end

return events
