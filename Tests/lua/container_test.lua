local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local state = require "moonbox.state"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root

local function setup_rootfs()
  if root then return end
  base = fs.tempdir("container-test-")
  root = rootfs.busybox(base.path .. "/rootfs")
end

local function sh(script, spec)
  spec = spec or {}
  spec.rootfs = spec.rootfs or root
  spec.command = { "/bin/sh", "-c", script }
  spec.stdout = spec.stdout or "capture"
  spec.stderr = spec.stderr or "capture"
  return container.run(spec)
end

local function moonbox_cgroups()
  local found = {}
  for _, c in ipairs({ "pids", "memory", "cpu" }) do
    local paths = { "/sys/fs/cgroup/" .. c }
    while #paths > 0 do
      local p = table.remove(paths)
      for _, n in ipairs(sys.listdir(p) or {}) do
        local st = sys.lstat(p .. "/" .. n)
        if st and st.type == "dir" then
          if n:match("^c%-mb%-") then found[#found + 1] = p .. "/" .. n end
          paths[#paths + 1] = p .. "/" .. n
        end
      end
    end
  end
  return found
end

describe("a container, seen from inside", function()
  before_each(function() needs_root() setup_rootfs() end)

  it("is pid 1 with its own hostname and only lo", function()
    local r = sh("echo $$; hostname; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '", { hostname = "inside" })
    expect(r.status).to_be("exited")
    expect(r.code).to_be(0)
    expect(r.stdout).to_be("1\ninside\nlo\n")
  end)

  it("brings lo up, and sees the host's network with network=host", function()
    local r = sh("cat /sys/class/net/lo/operstate; ls /sys/class/net | wc -l")
    expect(r.stdout).to_match("^unknown\n1\n")
    local host = sh("ls /sys/class/net | wc -l", { network = "host" })
    expect(tonumber(host.stdout)).to_be(#sys.listdir("/sys/class/net"))
  end)

  it("cannot see a marker file made on the host", function()
    local marker = base.path .. "/host-marker"
    fs.write(marker, "secret")
    local r = sh("ls " .. marker .. " /oldroot 2>&1; cat /proc/1/mountinfo | wc -l")
    expect(r.stdout).to_match("No such file or directory")
    expect(r.stdout).not_to_be(nil)
  end)

  it("has runc's masked and read-only paths", function()
    local r = sh([[
      wc -c < /proc/keys; wc -c < /proc/timer_list
      test -e /proc/kcore && wc -c < /proc/kcore || echo 0
      ls /sys/firmware | wc -l
      echo x > /proc/sys/kernel/hostname 2>/dev/null && echo writable || echo readonly
      echo x > /proc/sysrq-trigger 2>/dev/null && echo writable || echo readonly
      touch /sys/x 2>/dev/null && echo writable || echo readonly
    ]])
    expect(r.stdout).to_be("0\n0\n0\n0\nreadonly\nreadonly\nreadonly\n")
  end)

  it("has /dev as runc makes it", function()
    local r = sh([[
      ls /dev | tr '\n' ' '; echo
      stat -c '%t:%T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | tr '\n' ' '; echo
      for l in fd stdin ptmx; do readlink /dev/$l; done | tr '\n' ' '; echo
      mount | grep -E ' /dev/(pts|shm|mqueue) ' | cut -d' ' -f5 | tr '\n' ' '
      head -c 4 /dev/zero | wc -c
    ]])
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(lines[1]).to_be("core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero ")
    expect(lines[2]).to_be("1:3 1:5 1:7 1:8 1:9 5:0 ")
    expect(lines[3]).to_be("/proc/self/fd /proc/self/fd/0 pts/ptmx ")
    expect(lines[4]).to_match("devpts tmpfs mqueue")
  end)

  it("inherits no fds from the parent", function()
    local leak = assert(sys.open("/dev/null", { "rdonly", "inherit" }))
    local r = sh("ls /proc/self/fd | tr '\n' ' '")
    leak:close()
    -- 0, 1, 2 and the one ls opens to list the folder
    expect(r.stdout).to_be("0 1 2 3 ")
  end)

  it("runs as another user and in another folder, with env", function()
    local r = sh("id -u; id -g; pwd; echo $GREETING $HOME", { user = "1000:1001", cwd = "/tmp", env = { GREETING = "hello" } })
    expect(r.stdout).to_be("1000\n1001\n/tmp\nhello /\n")
  end)

  it("has a read-only rootfs when asked", function()
    local r = sh("touch /x && echo writable || echo readonly; touch /dev/shm/x && echo shm-ok", { readonly_rootfs = true })
    expect(r.stdout).to_be("readonly\nshm-ok\n")
  end)

  it("mounts binds read-only and read-write, a sized tmpfs, and proc", function()
    local data = base.path .. "/data"
    assert(sys.mkdir(data))
    fs.write(data .. "/in", "input")
    local out = base.path .. "/out"
    assert(sys.mkdir(out))
    local r = sh([[
      cat /data/in; touch /data/new 2>/dev/null || echo ro
      echo result > /out/file
      df -k /scratch | tail -1 | awk '{print $2}'
      ls /altproc/self >/dev/null && echo proc
    ]], { mounts = { data .. ":/data:ro", { type = "bind", source = out, target = "/out" },
      { type = "tmpfs", target = "/scratch", size = "2m" }, { type = "proc", target = "/altproc" } } })
    expect(r.stdout).to_be("input" .. "ro\n2048\nproc\n")
    expect(fs.read(out .. "/file")).to_be("result\n")
  end)

  it("feeds stdin and writes stdout to a file", function()
    local file = base.path .. "/stdout.txt"
    local r = container.run({ rootfs = root, command = { "/bin/sh", "-c", "tr a-z A-Z; echo err >&2" }, stdin = "hello",
      stdout = file, stderr = "capture" })
    expect(fs.read(file)).to_be("HELLO")
    expect(r.stderr).to_be("err\n")
    local big = string.rep("0123456789", 50000)
    local r2 = sh("wc -c", { stdin = big })
    expect(tonumber(r2.stdout)).to_be(#big)
  end)

  it("caps captured output and says so", function()
    local r = sh("head -c 100000 /dev/zero", { capture_limit = 1000 })
    expect(#r.stdout).to_be(1000)
    expect(r.stdout_bytes).to_be(100000)
    expect(r.stdout_truncated).to_be(true)
  end)

  it("gives the command a terminal with tty=true", function()
    local r = sh("tty; test -t 0 && test -t 1 && echo isatty", { tty = true })
    expect(r.stdout).to_match("^/dev/pts/0\r?\nisatty")
  end)

  it("runs a setup function inside the container before exec", function()
    local r = sh("cat /etc/motd; hostname", { setup = function(sys)
      local f = assert(io.open("/etc/motd", "w"))
      f:write("written by setup, pid " .. sys.getpid() .. "\n")
      f:close()
      assert(sys.sethostname("from-setup"))
    end })
    expect(r.stdout).to_be("written by setup, pid 1\nfrom-setup\n")
  end)

  it("reports a failing setup function with its message", function()
    expect(function()
      sh("true", { setup = function() error("no way") end })
    end).to_fail("container setup failed: setup: .*no way")
  end)

  it("reaps zombies and forwards signals with init=true", function()
    local r = sh("(sleep 0.1 &) ; sleep 0.3; ps -o stat | grep -c Z; exit 5", { init = true })
    expect(r.code).to_be(5)
    expect(r.stdout).to_be("0\n")
    local c <close> = container.new({ rootfs = root, init = true, command = { "/bin/sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.05; done" } })
    c:start()
    sys.nanosleep(0.2)
    c:kill("TERM")
    expect(c:wait(5).code).to_be(9)
  end)
end)

describe("limits", function()
  before_each(function() needs_root() setup_rootfs() end)

  it("OOM-kills a memory hog and reports status oom", function()
    local r = sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived", { limits = { memory = "32M" } })
    expect(r.status).to_be("oom")
    expect(r.oom_killed).to_be(true)
    expect(r.signal).to_be(9)
    expect(r.memory_peak).to_be_at_least(20 << 20)
  end)

  it("stops a fork bomb at the pids limit", function()
    local r = sh("i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; cat /sys/fs/cgroup/pids.max 2>/dev/null; echo $i",
      { limits = { pids = 20 }, timeout = 20 })
    expect(r.status).not_to_be("timeout")
    local c <close> = container.new({ rootfs = root, limits = { pids = 20 }, command = { "/bin/sh", "-c", "for i in $(seq 1 100); do sleep 30 & done; sleep 30" }, stderr = "null" })
    c:start()
    sys.nanosleep(0.5)
    expect(c:stats().pids).to_be_at_most(20)
  end)

  it("holds a busy loop to about cpus=0.2 of one CPU", function()
    local r = sh("while :; do :; done", { limits = { cpus = 0.2 }, timeout = 2 })
    expect(r.status).to_be("timeout")
    local share = r.cpu.total / r.wall
    expect(share).to_be_near(0.2, 0.07)
  end)

  it("kills a process that ignores SIGTERM when the timeout runs out", function()
    local r = sh("trap '' TERM INT; while :; do sleep 1; done", { timeout = 0.3 })
    expect(r.status).to_be("timeout")
    expect(r.timed_out).to_be(true)
    expect(r.wall).to_be_at_least(0.3)
    expect(r.wall).to_be_at_most(5)
  end)
end)

describe("lifecycle", function()
  before_each(function() needs_root() setup_rootfs() end)

  it("starts, execs inside, pauses, resumes, reports stats, and removes", function()
    local c <close> = container.new({ rootfs = root, hostname = "life", command = { "/bin/sh", "-c", "echo $$ > /tmp/pid; while :; do sleep 0.05; done" } })
    expect(tostring(c)).to_match("^container%(mb%-")
    c:start()
    sys.nanosleep(0.1)
    local e = c:exec({ "/bin/sh", "-c", "hostname; cat /tmp/pid; echo $FOO" }, { env = { FOO = "bar" } })
    expect(e.stdout).to_be("life\n1\nbar\n")
    expect(e.code).to_be(0)
    expect(c:exec({ "/bin/sh", "-c", "exit 7" }).code).to_be(7)
    local big = string.rep("x", 1 << 20)
    expect(#c:exec({ "/bin/cat" }, { stdin = big }).stdout).to_be(#big)
    c:pause()
    expect(c:stats().paused).to_be(true)
    c:resume()
    local s = c:stats()
    expect(s.pids).to_be_at_least(1)
    expect(s.memory).to_be_at_least(1)
    expect(c:wait(0.05)).to_be_nil()
    c:kill("KILL")
    local r = c:wait(5)
    expect(r.status).to_be("signaled")
    c:remove()
    expect(c.state).to_be("removed")
    c:remove()
  end)

  it("fails exec inside with the command's code", function()
    local c <close> = container.new({ rootfs = root, command = { "/bin/sleep", "30" } })
    c:start()
    local ok, err = pcall(c.exec, c, { "nosuch" })
    expect(ok).to_be(false)
    expect(tostring(err)).to_be("container exec failed: exec(nosuch): No such file or directory")
    expect(err.code).to_be(127)
  end)

  it("runs several containers at once and waits for any", function()
    local a <close> = container.new({ rootfs = root, command = { "/bin/sleep", "0.5" } })
    local b <close> = container.new({ rootfs = root, command = { "/bin/sh", "-c", "sleep 0.05; exit 3" } })
    a:start()
    b:start()
    local first, result = container.wait_any({ a, b })
    expect(first).to_be(b)
    expect(result.code).to_be(3)
    local second = container.wait_any({ a, b }) -- b is done: returns at once
    expect(second).to_be(b)
    expect(a:wait(5).code).to_be(0)
  end)

  it("gives setup failures as errors naming the step, and exec failures 127 and 126", function()
    local ok, err = pcall(container.run, { rootfs = root, command = { "/nonexistent" } })
    expect(ok).to_be(false)
    expect(tostring(err)).to_be("container setup failed: exec(/nonexistent): No such file or directory")
    expect(err.code).to_be(127)
    expect(err.step).to_be("exec")
    fs.write(root .. "/tmp/notexec", "data", tonumber("644", 8))
    ok, err = pcall(container.run, { rootfs = root, command = { "/tmp/notexec" } })
    expect(err.code).to_be(126)
    ok, err = pcall(container.run, { rootfs = root, command = { "true" }, cwd = "/nonexistent" })
    expect(tostring(err)).to_be("container setup failed: chdir(/nonexistent): No such file or directory")
    expect(err.step).to_be("cwd")
    ok, err = pcall(container.run, { rootfs = root, command = { "true" }, mounts = { { type = "tmpfs", target = "/x", options = "nr_inodes=bogus" } } })
    expect(tostring(err)).to_match("^container setup failed: mount%(tmpfs on /x%): Invalid argument")
    expect(err.step).to_be("mounts")
  end)

  it("rejects bad specs with clear messages", function()
    expect(function() container.run({ command = { "true" } }) end).to_fail("rootfs is required")
    expect(function() container.run({ rootfs = root }) end).to_fail("command is required")
    expect(function() container.run({ rootfs = root, command = "true" }) end).to_fail("command must be a non%-empty list")
    expect(function() container.run({ rootfs = root, command = { "true" }, colour = "red" }) end).to_fail("unknown field 'colour'")
    expect(function() container.run({ rootfs = root, command = { "true" }, limits = { ram = 1 } }) end).to_fail("unknown limit 'ram'")
    expect(function() container.run({ rootfs = root, command = { "true" }, network = "bridge" }) end).to_fail("network must be")
    expect(function() container.run({ rootfs = root, command = { "true" }, user = "no such" }) end).to_fail("user must be a uid")
    expect(function() container.run({ rootfs = root, command = { "true" }, mounts = { { type = "tmpfs", target = "/x", size = "bogus" } } }) end)
      .to_fail("mounts%[1%]%.size must be a size like \"512M\" or a number of bytes, got \"bogus\"")
    expect(function() container.run({ rootfs = root, command = { "true" }, mounts = { "/nonexistent:/x" } }) end).to_fail("does not exist")
    expect(function() container.run({ rootfs = "/nonexistent", command = { "true" } }) end).to_fail("is not a folder")
  end)
end)

describe("cleanup", function()
  local statedir
  before_each(function()
    needs_root()
    setup_rootfs()
    statedir = fs.tempdir("state-")
  end)
  after_each(function() if statedir then statedir:remove() end end)

  -- Starts a moonbox script in the background; returns its pid and a reader of its stdout.
  local function spawn(script)
    local path = fs.write(statedir.path .. "/script.lua", script)
    local r, w = assert(sys.pipe())
    local pid = assert(sys.fork())
    if pid == 0 then
      sys.dup2(w, 1)
      sys.dup2(assert(sys.open("/dev/null", "wronly")), 2)
      sys.exec({ moonbox, "run", path, root }, { MOONBOX_STATE = statedir.path .. "/run", PATH = "/usr/bin:/bin" })
      sys._exit(127)
    end
    w:close()
    return pid, function()
      local line = ""
      while not line:find("\n") do
        local chunk = sys.read(r, 1)
        if not chunk or chunk == "" then return line end
        line = line .. chunk
      end
      return line:sub(1, -2)
    end
  end

  local starter = [[
    local container = require "moonbox.container"
    local c = container.new({ rootfs = arg[1], command = { "/bin/sleep", "60" } })
    c:start()
    print(c.id .. " " .. c.pid)
    io.stdout:flush()
  ]]

  -- The records in the state folder (its cache of compiled filters aside).
  local function records()
    local out = {}
    for _, n in ipairs(sys.listdir(statedir.path .. "/run") or {}) do if n:match("%.json$") then out[#out + 1] = n end end
    return out
  end

  local function gone(pid)
    for _ = 1, 200 do
      local ok, _, errno = sys.kill(tonumber(pid), 0)
      if not ok and errno == "ESRCH" then return true end
      sys.nanosleep(0.01)
    end
    return false
  end

  local function cgroup_exists(id)
    for _, p in ipairs(moonbox_cgroups()) do if p:find(id, 1, true) then return true end end
    return false
  end

  it("leaves nothing after success and failure", function()
    sh("true")
    pcall(container.run, { rootfs = root, command = { "/nonexistent" } })
    expect(moonbox_cgroups()).to_equal({})
  end)

  it("leaves nothing when the script raises an error", function()
    local records_before = #state.list()
    local pid, line = spawn(starter .. "\nerror('script failed')")
    local id, cpid = line():match("(%S+) (%d+)")
    local st = sys.wait(pid)
    expect(st.code).to_be(1)
    expect(gone(cpid)).to_be(true)
    expect(cgroup_exists(id)).to_be(false)
    expect(#state.list()).to_be(records_before)
  end)

  it("leaves nothing when moonbox gets SIGINT or SIGTERM", function()
    for _, sig in ipairs({ "INT", "TERM" }) do
      local pid, line = spawn(starter .. "\nc:wait()")
      local id, cpid = line():match("(%S+) (%d+)")
      expect(cgroup_exists(id)).to_be(true)
      assert(sys.kill(pid, sig))
      local st = sys.wait(pid)
      expect(st.signal_name).to_be(sig)
      expect(gone(cpid)).to_be(true)
      expect(cgroup_exists(id)).to_be(false)
      expect(records()).to_equal({})
    end
  end)

  it("stops containers when the script is busy in Lua and gets SIGINT", function()
    local pid, line = spawn(starter .. "\nwhile true do local x = {} end")
    local id, cpid = line():match("(%S+) (%d+)")
    assert(sys.kill(pid, "INT"))
    expect(sys.wait(pid).signal_name).to_be("INT")
    expect(gone(cpid)).to_be(true)
    expect(cgroup_exists(id)).to_be(false)
  end)

  it("kills containers when moonbox is SIGKILLed, and gc removes the rest", function()
    local pid, line = spawn(starter .. "\nc:wait()")
    local id, cpid = line():match("(%S+) (%d+)")
    assert(sys.kill(pid, "KILL"))
    sys.wait(pid)
    expect(gone(cpid)).to_be(true)
    expect(cgroup_exists(id)).to_be(true)
    local r = process.run({ moonbox, "gc" }, { env = { MOONBOX_STATE = statedir.path .. "/run" } })
    expect(r.code).to_be(0)
    expect(r.stdout).to_match("removed " .. id:gsub("%p", "%%%0") .. ": cgroup c%-" .. id:gsub("%p", "%%%0"))
    expect(cgroup_exists(id)).to_be(false)
    expect(records()).to_equal({})
    r = process.run({ moonbox, "gc" }, { env = { MOONBOX_STATE = statedir.path .. "/run" } })
    expect(r.stdout).to_match("nothing to collect")
  end)

  it("runs 1000 containers in a row, leaving nothing and not slowing down", function()
    local times = {}
    local records_before = #state.list()
    local t0 = sys.clock_gettime()
    for i = 1, 1000 do
      local r = container.run({ rootfs = root, command = { "/bin/true" } })
      if r.code ~= 0 then error("run " .. i .. " failed: " .. tostring(r.status)) end
      if i % 100 == 0 then
        local now = sys.clock_gettime()
        times[#times + 1] = now - t0
        t0 = now
      end
    end
    expect(moonbox_cgroups()).to_equal({})
    expect(#state.list()).to_be(records_before)
    -- The last hundred take no longer than three times the first hundred.
    expect(times[10]).to_be_at_most(times[1] * 3)
    collectgarbage()
    expect(#sys.listdir("/proc/self/fd")).to_be_at_most(10)
  end)
end)

describe("moonbox box", function()
  before_each(function() needs_root() setup_rootfs() end)

  local function box(args)
    local argv = { moonbox, "box", "--rootfs", root }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return process.run(argv)
  end

  it("exits with the command's status, 128+signal, 125 and 127", function()
    expect(box({ "--hostname", "b1", "--", "sh", "-c", "hostname; exit 3" }).code).to_be(3)
    expect(box({ "--hostname", "b1", "--", "hostname" }).stdout).to_be("b1\n")
    expect(box({ "--", "nosuch" }).code).to_be(127)
    expect(box({ "--timeout", "0.2", "--", "sleep", "5" }).code).to_be(137)
    expect(box({ "--bogus", "--", "true" }).code).to_be(125)
    local r = process.run({ moonbox, "box", "--rootfs", "/nonexistent", "--", "true" })
    expect(r.code).to_be(125)
    expect(r.stderr).to_match("rootfs /nonexistent is not a folder")
  end)

  it("applies limits, mounts and environment from flags", function()
    local dir = base.path .. "/boxvol"
    assert(sys.mkdir(dir))
    fs.write(dir .. "/f", "vol\n")
    local r = box({ "--memory", "64M", "--pids", "30", "--cpus", "0.5", "-v", dir .. ":/vol:ro", "-e", "A=b", "-w", "/vol",
      "--", "sh", "-c", "cat f; echo $A; pwd; touch g 2>/dev/null || echo ro" })
    expect(r.stdout).to_be("vol\nb\n/vol\nro\n")
    expect(r.code).to_be(0)
  end)
end)

describe("results", function()
  before_each(function() needs_root() setup_rootfs() end)
  it("carries wall, cpu and memory accounting and prints as JSON", function()
    local r = sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i")
    expect(r.stdout).to_be("20000\n")
    expect(r.wall).to_be_at_least(r.cpu.total * 0.5)
    expect(r.cpu.total).to_be_at_least(0.001)
    expect(r.memory_peak).to_be_at_least(1)
    local text = container.to_json(r)
    expect(require("moonbox.json").decode(text).stdout).to_be("20000\n")
  end)
end)

-- The shared rootfs goes when the file is done.
describe("teardown", function()
  it("removes the shared rootfs", function()
    if base then base:remove() end
    base, root = nil, nil
  end)
end)
