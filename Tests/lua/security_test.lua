-- The secure defaults' knobs: seccomp profiles as docker/OCI JSON files or Lua tables, with
-- their capability conditions; seccomp = false; capabilities added and dropped by name.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local security = require "moonbox.security"

local dir, root

local function sh(script, extra)
  local spec = { rootfs = root, command = { "/bin/sh", "-c", script }, stdout = "capture", stderr = "capture" }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return container.run(spec)
end

describe("seccomp profiles and capabilities", function()
  before_each(function()
    needs_root()
    if not root then
      dir = fs.tempdir("security-test-")
      root = rootfs.busybox(dir.path .. "/root")
    end
  end)

  it("takes a docker-format JSON profile, honouring includes and excludes on capabilities", function()
    local profile = fs.write(dir.path .. "/profile.json", [[{
      "defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [
        { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 },
        { "names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "includes": { "caps": ["CAP_SYS_ADMIN"] } },
        { "names": ["symlink", "symlinkat"], "action": "SCMP_ACT_ERRNO", "excludes": { "caps": ["CAP_SYS_ADMIN"] } }
      ]
    }]])
    local r = sh("mkdir /tmp/a 2>&1; mkdir /tmp/b 2>/dev/null || true; ln -s x /tmp/l 2>&1; echo done", { seccomp = profile })
    expect(r.stdout).to_match("mkdir: can't create directory '/tmp/a': Permission denied")
    expect(r.stdout).to_match("ln: /tmp/l: Operation not permitted")
    -- With CAP_SYS_ADMIN the symlink rule is excluded and the rmdir rule included.
    local c = security.resolve_seccomp(profile, { "sys_admin" })
    local names = {}
    for _, rule in ipairs(c.syscalls) do names[#names + 1] = rule.names[1] end
    expect(names).to_equal({ "mkdir", "rmdir" })
  end)

  it("takes a Lua table profile, and turns seccomp off with false", function()
    local r = sh("grep Seccomp: /proc/self/status", { seccomp = false })
    expect(r.stdout).to_match("Seccomp:%s+0")
    r = sh("grep Seccomp: /proc/self/status; touch /tmp/x 2>&1", { seccomp = {
      defaultAction = "SCMP_ACT_ALLOW",
      syscalls = { { names = { "utimensat", "open", "openat", "creat" }, action = "SCMP_ACT_ERRNO", errnoRet = 1,
        args = { { index = 2, value = 64, valueTwo = 64, op = "SCMP_CMP_MASKED_EQ" } } } },
    } })
    expect(r.stdout).to_match("Seccomp:%s+2")
    expect(r.stdout).to_match("touch: /tmp/x: Operation not permitted")
  end)

  it("rejects broken profiles with a clear error", function()
    local bad = fs.write(dir.path .. "/bad.json", "{ not json")
    expect(function() sh("true", { seccomp = bad }) end).to_fail("seccomp profile .*bad.json")
    expect(function() sh("true", { seccomp = dir.path .. "/missing.json" }) end).to_fail("No such file")
    expect(function() sh("true", { seccomp = 5 }) end).to_fail("seccomp must be false, a profile table or a JSON file path")
  end)

  it("adds and drops capabilities by name", function()
    local r = sh("grep CapEff /proc/self/status", { cap_drop = { "ALL" }, cap_add = { "NET_BIND_SERVICE" } })
    expect(r.stdout).to_match("CapEff:%s+0000000000000400\n")
    r = sh("grep CapEff /proc/self/status", { cap_drop = { "chown", "kill" } })
    local bits = tonumber(r.stdout:match("CapEff:%s+(%x+)"), 16)
    expect(bits & 1).to_be(0)
    expect(bits & 32).to_be(0)
    expect(bits & 2).to_be(2)
    expect(function() sh("true", { cap_add = { "CAP_FLY" } }) end).to_fail("unknown capability 'CAP_FLY'")
  end)

  it("cleans up", function()
    if dir then dir:remove() end
    root = nil
  end)
end)
