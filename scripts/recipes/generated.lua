-- Steps made by Lua: a loop writes one layer per tool, a Lua step writes a file from inside
-- the build container, and an arg parameterizes a RUN.
--   moonbox build scripts/recipes/generated.lua --arg GREETING=hi
local tools = { "awk", "sed", "grep" }
local steps = { from "busybox", arg { GREETING = "hello" } }
for _, t in ipairs(tools) do
  steps[#steps + 1] = run(string.format("mkdir -p /opt/tools && ln -s /bin/busybox /opt/tools/%s", t))
end
steps[#steps + 1] = step("write the motd", function(sys)
  local f = assert(io.open("/etc/motd", "w"))
  f:write("built by a Lua step in pid ", sys.getpid(), "\n")
  f:close()
end)
steps[#steps + 1] = run "echo \"$GREETING\" > /etc/greeting"
steps[#steps + 1] = env { PATH = "/opt/tools:/usr/sbin:/usr/bin:/sbin:/bin" }
steps[#steps + 1] = cmd { "/bin/sh", "-c", "cat /etc/greeting /etc/motd; ls /opt/tools" }
return recipe "generated:1" (steps)
