-- The hostile-job suite: every attack runs in a default container and in the sandbox profile,
-- and must be contained, with the host unchanged afterwards: a sentinel process alive, the
-- same hostname, mounts, cgroups and files. The attacks only detect: none does harm if it works.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local sandbox = require "moonbox.sandbox"
local test = require "moonbox.test"

local source = (os.getenv("MOONBOX_SOURCE") or ".") .. "/Tests/lua/fixtures/probe.c"
local base, root, sentinel, host_before, marker

local function setup()
  if root then return end
  base = fs.tempdir("hostile-")
  assert(sys.chmod(base.path, tonumber("755", 8)))  -- the sandbox's unprivileged root must reach the rootfs
  root = rootfs.busybox(base.path .. "/rootfs")
  marker = fs.write(base.path .. "/marker", "untouched")
  sentinel = assert(sys.fork())
  if sentinel == 0 then
    sys.prctl("set_pdeathsig", "KILL")  -- gone with the suite, even when --filter skips the last test
    while true do sys.nanosleep(1) end
  end
  host_before = test.host_state()
end

local function host_unchanged()
  expect(sys.kill(sentinel, 0)).to_be(true)
  expect(fs.read(marker)).to_be("untouched")
  expect(test.host_state()).to_equal(host_before)
end

local profiles = {
  container = function(script, extra)
    local spec = { rootfs = root, command = { "/bin/sh", "-c", script }, stdout = "capture", stderr = "capture",
      limits = { memory = "64M", pids = 32 }, timeout = 20, capture_limit = 1 << 20, kill_on_output_limit = true }
    for k, v in pairs(extra or {}) do spec[k] = v end
    local r = container.run(spec)
    return { stdout = r.stdout, status = r.status, result = r }
  end,
  sandbox = function(script, extra)
    local opts = { rootfs = root, command = { "/bin/sh", "-c", script }, memory = "64M", pids = 32, time = 5,
      wall_time = 20, output_limit = 1 << 20, work_size = "8M", tmp_size = "8M", output_size = "8M" }
    for k, v in pairs(extra or {}) do opts[k] = v end
    local v = sandbox.run(opts)
    return { stdout = v.stdout, status = v.status, result = v }
  end,
}

for name, run in pairs(profiles) do
  describe("hostile jobs in the " .. name .. " profile", function()
    before_each(function()
      needs_root()
      setup()
    end)
    after_each(function() if host_before then host_unchanged() end end)

    it("blocks every probe: keyctl, bpf, mounts, mknod, /dev/mem, unshare, ptrace, TIOCSTI, loopback", function()
      local cc = process.run({ "sh", "-c", "command -v cc" })
      if cc.code ~= 0 then skip("needs a C compiler (cc) to build the probe") end
      local bin = root .. "/bin/probe"
      if not sys.stat(bin) then
        local r = process.run({ "cc", "-static", "-O1", "-o", bin, source })
        if r.code ~= 0 then skip("cannot build a static probe: " .. r.stderr) end
      end
      -- A real listener on the host's loopback, which the job must not reach.
      local listen = process.run({ "python3", "-c", "print(1)" })
      local port = 0
      local server
      if listen.code == 0 then
        local r, w = assert(sys.pipe())
        server = assert(sys.fork())
        if server == 0 then
          sys.dup2(w, 1)
          sys.exec({ "python3", "-c", "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)" })
          sys._exit(127)
        end
        w:close()
        port = tonumber((sys.read(r, 64) or ""):match("%d+")) or 0
      end
      finally(function() if server then sys.kill(server, "KILL") sys.wait(server) end end)
      local out = run("/bin/probe " .. port .. " " .. sentinel)
      expect(out.result.message).to_be_nil()  -- the probe ran to its end: no setup failure, no kill
      expect(out.stdout).to_match("probe done: 0 allowed")
      expect(out.stdout:find("ALLOWED")).to_be_nil()
    end)

    it("stops a fork bomb at the pids limit", function()
      local out = run("bomb() { bomb | bomb & }; bomb 2>/dev/null; sleep 1; cat /proc/loadavg >/dev/null; echo survived")
      expect(out.result.pids_peak).to_be_a("number")  -- accounted by the cgroup, not guessed
      expect(out.result.pids_peak).to_be_at_least(2)
      expect(out.result.pids_peak).to_be_at_most(32)
    end)

    it("kills a memory bomb", function()
      local out = run("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo done")
      expect(out.status == "oom" or out.status == "ML").to_be(true)
    end)

    it("stops a CPU hog at the time limit", function()
      local out = run("while :; do :; done", name == "container" and { timeout = 1 } or { time = 0.5 })
      expect(out.status == "timeout" or out.status == "TO").to_be(true)
    end)

    it("cannot fill the disk from any writable place", function()
      -- A default container writes its rootfs by design: here it is read-only, as a careful caller sets it.
      local extra = name == "container" and { readonly_rootfs = true, mounts = { { type = "tmpfs", target = "/tmp", size = "8m" } } } or nil
      local out = run([[
        for d in / /box /tmp /output /dev/shm /var /root; do
          dd if=/dev/zero of=$d/fill bs=1M count=200 2>/dev/null; echo "$d $(wc -c < $d/fill 2>/dev/null || echo 0)"
        done]], extra)
      local seen = 0
      for d, size in out.stdout:gmatch("(%S+) (%d+)") do
        seen = seen + 1
        expect(tonumber(size)).to_be_at_most(name == "sandbox" and (8 << 20) or (64 << 20))
      end
      expect(seen).to_be(7)  -- every place was tried and reported
    end)

    it("survives kill -9 -1 inside, and so does the host", function()
      local out = run("sleep 5 & sleep 5 & kill -9 -1; echo still-here")
      expect(out.stdout).to_be("still-here\n")  -- the job's own init outlives its kill -9 -1
      expect(sys.kill(sentinel, 0)).to_be(true)
    end)

    it("ends an output flood at the limit", function()
      local out = run("yes flood")
      expect(#out.stdout).to_be_at_most(1 << 20)
      expect(out.status == "OL" or out.result.output_exceeded).to_be(true)
    end)

    it("inherits no fds from the host", function()
      local leak = assert(sys.open(marker, { "rdonly", "inherit" }))
      finally(function() leak:close() end)
      local out = run("ls /proc/self/fd | tr '\\n' ' '")
      expect(out.stdout).to_be("0 1 2 3 ")
    end)

    it("cannot gain root through a setuid binary", function()
      local suid = root .. "/bin/busybox-suid"  -- busybox runs argv[1] when its name starts with "busybox"
      if not sys.stat(suid) then
        fs.write(suid, fs.read(root .. "/bin/busybox"), tonumber("4755", 8))
        assert(sys.chown(suid, 0, 0))
        assert(sys.chmod(suid, tonumber("4755", 8)))
      end
      local out = run("/bin/busybox-suid id -u", name == "container" and { user = "1000:1000" } or nil)
      expect(out.stdout).to_be("1000\n")
    end)
  end)
end

describe("the runtime itself", function()
  before_each(function() needs_root() setup() end)

  it("cannot be reached through /proc/1/exe when moonbox is the container's init", function()
    local r = container.run({ rootfs = root, init = true, stdout = "capture",
      command = { "/bin/sh", "-c", "cat /proc/1/exe > /dev/null 2>&1 && echo readable || echo denied; ls -l /proc/1/exe 2>&1 | grep -c moonbox" } })
    expect(r.stdout).to_match("^denied\n")
  end)

  it("leaves the host as it was", function()
    host_unchanged()
    sys.kill(sentinel, "KILL")
    sys.wait(sentinel)
    base:remove()
    root = nil
  end)
end)
