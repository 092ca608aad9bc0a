-- Tutorial, "Namespaces": a child in new mount, uts, ipc, net and pid namespaces,
-- with its namespace ids beside the host's, as lsns would show them.
local sys = require "moonbox.sys"
local process = require "moonbox.process"

local host = assert(sys.namespaces())
local child = process.call(function()
  return sys.namespaces()
end, { namespaces = { "mount", "uts", "ipc", "net", "pid" } })

print(string.format("%-8s %-12s %-12s %s", "NS", "HOST", "CHILD", ""))
for _, kind in ipairs({ "mnt", "uts", "ipc", "net", "pid_for_children", "user", "cgroup" }) do
  local differs = host[kind] ~= child[kind]
  print(string.format("%-8s %-12s %-12s %s", kind:gsub("_for_children", ""), host[kind], child[kind],
    differs and "new" or "shared"))
end
