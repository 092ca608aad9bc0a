-- moonbox.errors: the one error type of the stdlib.
--
-- The convention (docs/errors.md): moonbox.sys returns nil, "op(arg): strerror", "ERRNO" on a
-- failure and raises on a misuse. The stdlib raises an error object of this type for every
-- failure, carrying what a caller may branch on:
--   message  the text, as tostring(err) gives it
--   op       the operation that failed ("mount", "cgroup", "exec", ...)
--   step     where in a larger job it failed ("pivot_root", "setup", "step 3", ...)
--   errno    the errno name from moonbox.sys, when there is one ("ENOENT")
--   code     the exit status a command line gives for it (125, 126, 127, ...)
-- Lookups that find nothing (image.resolve, state.find) return nil; they do not raise.
local errors = {}

local Error = { __name = "moonbox.error" }
Error.__index = Error
Error.__tostring = function(e) return e.message end

--- A new error object (not raised).
function errors.new(message, fields)
  local e = {}
  for k, v in pairs(fields or {}) do e[k] = v end
  e.message = tostring(message)
  return setmetatable(e, Error)
end

-- The first line on the stack outside the stdlib: where a script called into it.
local function script_line()
  for level = 3, 64 do
    local info = debug.getinfo(level, "Sl")
    if not info then return nil end
    if info.currentline > 0 and info.what ~= "C" and not info.source:find("stdlib/moonbox/", 1, true) then
      return info.short_src .. ":" .. info.currentline
    end
  end
end

--- Raises an error object; level as for error() (1: the caller of raise). The object records
-- `where` the script called into the stdlib, for the one-line report at the top.
function errors.raise(message, fields, level)
  local e = errors.new(message, fields)
  e.where = e.where or script_line()
  error(e, level == 0 and 0 or (level or 1) + 1)
end

function errors.is(e) return getmetatable(e) == Error end

--- An error object for any error value: objects pass, strings and others are wrapped.
function errors.wrap(e, fields)
  if errors.is(e) then return e end
  return errors.new(type(e) == "table" and (e.message or tostring(e)) or tostring(e), fields)
end

--- Passes a sys call's results through, or raises its failure as an error object. `fields`
-- come first so that every result of the call reaches here:
--   errors.check({ step = "mounts" }, sys.mkdir(path))
function errors.check(fields, ok, msg, errno, ...)
  if ok then return ok, msg, errno, ... end
  local f = { errno = errno }
  for k, v in pairs(fields or {}) do f[k] = v end
  errors.raise(msg or "failed", f, 2)
end

errors.Error = Error
return errors
