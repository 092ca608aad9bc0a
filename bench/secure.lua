-- Case 6: what the secure defaults and the sandbox cost, in one process (runtimes' start-up
-- left out): mean milliseconds per run over N runs, after warm-up runs.
--   moonbox run bench/secure.lua ROOTFS [N]   -- prints JSON
local container = require "moonbox.container"
local sandbox = require "moonbox.sandbox"
local sys = require "moonbox.sys"
local json = require "moonbox.json"

local root, n = arg[1], tonumber(arg[2] or "50")
local function per_run(f)
  for _ = 1, 5 do f() end
  local t0 = sys.clock_gettime()
  for _ = 1, n do f() end
  return (sys.clock_gettime() - t0) / n * 1e3
end

local plain = { rootfs = root, command = { "/bin/true" }, seccomp = false, cap_add = { "ALL" }, no_new_privileges = false }
local secure = { rootfs = root, command = { "/bin/true" } }
local results = {
  { name = "container, secure defaults off", ms = per_run(function() container.run(plain) end) },
  { name = "container, secure defaults (caps, seccomp, devices, no_new_privs)", ms = per_run(function() container.run(secure) end) },
  { name = "sandbox, a fresh box per run", ms = per_run(function() sandbox.run({ rootfs = root, command = { "/bin/true" } }) end) },
}
local box <close> = sandbox.open({ rootfs = root })
table.insert(results, { name = "sandbox, a kept box (box:run)", ms = per_run(function() box:run({ "/bin/true" }) end) })
print(json.encode(results))
