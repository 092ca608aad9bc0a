-- Tutorial, "UTS": the hostname changes inside the namespace only.
local sys = require "moonbox.sys"
local process = require "moonbox.process"

local before = assert(sys.gethostname())
local inside = process.call(function()
  assert(sys.sethostname("my-test-container"))
  return sys.gethostname()
end, { namespaces = { "uts" } })
local after = assert(sys.gethostname())

print("host hostname before:  " .. before)
print("hostname inside:       " .. inside)
print("host hostname after:   " .. after)
assert(before == after, "the host's hostname changed")
