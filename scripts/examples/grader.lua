-- A grader: compile a submission once in a sandbox, then run it against several tests,
-- each in the same box with its own limits and an isolate-style verdict.
--   moonbox run scripts/examples/grader.lua [solution.c]
-- The box's root is an empty skeleton with the host's /usr bound read-only, so the host's
-- gcc compiles inside the box (as isolate binds /usr).
local sandbox = require "moonbox.sandbox"
local fs = require "moonbox.fs"
local sys = require "moonbox.sys"

local solution = arg[1] and assert(fs.read(arg[1])) or [[
#include <stdio.h>
int main(void) {
    long a, b;
    if (scanf("%ld %ld", &a, &b) != 2) return 1;
    if (a == 0) for (;;) ;                       /* a bug: spins on zero */
    if (a < 0) { char *p = 0; *p = 1; }          /* and crashes on negatives */
    printf("%ld\n", a + b);
    return 0;
}
]]

local tests = {
  { input = "1 2\n", expected = "3\n" },
  { input = "40 2\n", expected = "42\n" },
  { input = "5 5\n", expected = "11\n" },
  { input = "0 7\n", expected = "7\n" },
  { input = "-1 1\n", expected = "0\n" },
}

local dir <close> = fs.tempdir("grader-")
assert(sys.chmod(dir.path, tonumber("755", 8)))
local root = dir.path .. "/root"
for _, d in ipairs({ "usr", "etc", "tmp", "input" }) do assert(sys.mkdir(root .. "/" .. d)) end
for _, l in ipairs({ "bin", "sbin", "lib", "lib64" }) do
  if sys.lstat("/" .. l) then assert(sys.symlink("usr/" .. l, root .. "/" .. l)) end
end
local source = fs.write(dir.path .. "/solution.c", solution)

local box <close> = sandbox.open {
  rootfs = root,
  inputs = { "/usr:/usr", source .. ":/input/solution.c" },
  memory = "512M", pids = 32, time = 10, wall_time = 20,
}

local compiled = box:run({ "gcc", "-O2", "-o", "/box/solution", "/input/solution.c" })
print(string.format("compile: %s in %.2fs", compiled.status, compiled.wall))
if compiled.status ~= "OK" then io.write(compiled.stderr) os.exit(1) end

for i, t in ipairs(tests) do
  local v = box:run({ "/box/solution" }, { stdin = t.input, time = 1, wall_time = 3, memory = "64M" })
  local verdict = v.status == "OK" and (v.stdout == t.expected and "AC" or "WA") or v.status
  print(string.format("test %d: %-2s  time %.3fs  wall %.3fs  memory %4d KiB%s", i, verdict, v.time, v.wall,
    (v.memory_peak or 0) // 1024, v.message and ("  (" .. v.message .. ")") or ""))
end
