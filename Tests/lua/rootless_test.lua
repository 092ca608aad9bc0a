-- Rootless mode, as a real non-root user that this test creates and removes: the user maps to
-- root inside a user namespace, /dev comes from the host by bind mounts, and without a
-- delegated cgroup the limits are off with a clear warning, never silently.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"

local moonbox = assert(sys.readlink("/proc/self/exe"))

describe("rootless mode", function()
  local user, uid, dir, root

  before_each(function()
    needs_root()
    for _, tool in ipairs({ "useradd", "userdel", "setpriv" }) do
      if process.run({ "sh", "-c", "command -v " .. tool }).code ~= 0 then skip("needs " .. tool) end
    end
    user = "mbrl" .. sys.getpid()
    local r = process.run({ "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user })
    if r.code ~= 0 then skip("cannot create a test user: " .. r.stderr) end
    uid = tonumber(process.run({ "id", "-u", user }).stdout)
    dir = fs.tempdir("rootless-")
    assert(sys.chmod(dir.path, tonumber("755", 8)))
    root = rootfs.busybox(dir.path .. "/rootfs")
  end)

  after_each(function()
    if user then process.run({ "userdel", user }) end
    if uid then sys.remove_tree("/tmp/moonbox-" .. uid) end
    if dir then dir:remove() end
    user, uid, dir = nil, nil, nil
  end)

  local function as_user(args)
    local argv = { "setpriv", "--reuid=" .. user, "--regid=" .. user, "--clear-groups", "env", "-i",
      "PATH=/usr/bin:/bin", "HOME=/tmp", moonbox }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return process.run(argv)
  end

  it("runs a container as a plain user, who is root inside", function()
    local r = as_user({ "box", "--rootfs", root, "--hostname", "rootless", "--",
      "sh", "-c", "id -u; hostname; echo $$; cat /proc/self/uid_map; echo x > /dev/null && echo devnull; ls /dev/pts" })
    expect(r.code).to_be(0)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(lines[1]).to_be("0")
    expect(lines[2]).to_be("rootless")
    expect(lines[3]).to_be("1")
    expect(lines[4]).to_match("^%s*0%s+" .. uid .. "%s+1$")
    expect(lines[5]).to_be("devnull")
    expect(r.stderr).to_be("")
  end)

  it("says out loud that limits are off without a delegated cgroup", function()
    local r = as_user({ "box", "--rootfs", root, "--memory", "64M", "--", "true" })
    expect(r.code).to_be(0)
    expect(r.stderr).to_match("warning: cgroup limits are off")
  end)

  it("runs scripts with containers, keeping its records where the user may write", function()
    local script = fs.write(dir.path .. "/s.lua", [[
      local container = require "moonbox.container"
      local state = require "moonbox.state"
      local r = container.run({ rootfs = arg[1], command = { "/bin/sh", "-c", "echo inside; exit 4" }, stdout = "capture" })
      print(r.stdout:gsub("\n", ""), r.code, r.status, state.dir(), #state.list())
    ]])
    assert(sys.chmod(script, tonumber("644", 8)))
    local r = as_user({ "run", script, root })
    expect(r.stderr).to_be("")
    expect(r.stdout).to_be("inside\t4\texited\t/tmp/moonbox-" .. uid .. "\t0\n")
  end)

  it("publishes a port of a rootless container (in a namespace playing the host)", function()
    fs.write(root .. "/index.html", "rootless page\n")
    local script = fs.write(dir.path .. "/ports.lua", [[
      local container = require "moonbox.container"
      local process = require "moonbox.process"
      local loop = require "moonbox.loop"
      local c <close> = container.new{ rootfs = ..., ports = { "127.0.0.1:0:80" }, command = { "httpd", "-f", "-p", "80", "-h", "/" } }
      c:start()
      for _ = 1, 50 do
        local r = process.run({ "curl", "-s", "-m", "1", "http://127.0.0.1:" .. c:port(80) .. "/index.html" })
        if r.code == 0 then io.write(r.stdout) break end
        loop.sleep(0.1)
      end
    ]])
    assert(sys.chmod(script, tonumber("644", 8)))
    local r = process.call(function()
      assert(sys.netlink():link_set("lo", { up = true }))
      return as_user({ "run", script, root })
    end, { namespaces = { "net" } })
    expect(r.stderr).to_be("")
    expect(r.stdout).to_be("rootless page\n")
  end)
end)
