-- The OCI runtime command line (moonbox oci, moonbox-runc): runc's contract as containerd and
-- conmon use it (create holds, start releases, state, kill, delete, exec, console sockets,
-- hooks, errors and their texts), config.json mapped field by field, and podman driving
-- moonbox end to end (in a private mount namespace, with its storage in a temporary folder).
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local json = require "moonbox.json"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local test = require "moonbox.test"
local loop = require "moonbox.loop"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root, bin

local function setup()
  if root then return end
  base = fs.tempdir("oci-test")
  assert(sys.chmod(base.path, tonumber("755", 8)))
  root = rootfs.busybox(base.path .. "/rootfs")
  bin = base.path .. "/bin"
  assert(sys.mkdir(bin, tonumber("755", 8)))
  assert(sys.symlink(moonbox, bin .. "/moonbox-runc"))
  assert(sys.symlink(moonbox, bin .. "/runc"))
end

local state_root
local function runc(args, opts)
  local argv = { bin .. "/moonbox-runc", "--root", state_root }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return process.run(argv, opts)
end

-- create and run --detach leave the container holding their stdout and stderr, as runc's do:
-- their output goes to a file, or a pipe would never end.
local function runc_detached(args)
  local log = base.path .. "/detached.log"
  local argv = { "sh", "-c", "exec \"$@\" > " .. log .. " 2>&1 < /dev/null", "sh", bin .. "/moonbox-runc", "--root", state_root }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = process.run(argv)
  r.stderr = fs.read(log)
  return r
end

-- A bundle: runc spec's config with `args`, changed by `edit(doc)`.
local n_bundles = 0
local function bundle(args, edit)
  n_bundles = n_bundles + 1
  local dir = base.path .. "/b" .. n_bundles
  assert(sys.mkdir(dir, tonumber("755", 8)))
  assert(sys.symlink(root, dir .. "/rootfs"))
  local r = process.run({ bin .. "/moonbox-runc", "spec", "--bundle", dir })
  assert(r.code == 0, r.stderr)
  local doc = json.decode(fs.read(dir .. "/config.json"))
  doc.process.terminal = false
  doc.process.args = args
  doc.root.readonly = false
  if edit then edit(doc) end
  fs.write(dir .. "/config.json", json.encode(doc))
  return dir
end

-- Whatever a test leaves running (it failed half-way) goes at its end.
local function delete_at_end(...)
  local ids = { ... }
  finally(function() for _, id in ipairs(ids) do runc({ "delete", "--force", id }) end end)
end

local function state_of(id)
  local r = runc({ "state", id })
  if r.code ~= 0 then return nil, r.stderr end
  return json.decode(r.stdout)
end

describe("moonbox oci (the runc command line)", function()
  before_each(function()
    needs_root()
    setup()
    state_root = fs.tempdir("oci-state").path
  end)

  it("creates a container held before exec, starts it, reports its state, and deletes it", function()
    delete_at_end("c1")
    local out = base.path .. "/out1"
    local b = bundle({ "sh", "-c", "echo started > /tmp/started; hostname; sleep 30" }, function(d)
      d.hostname = "box1"
      d.mounts[#d.mounts + 1] = { destination = "/tmp", type = "tmpfs", source = "tmpfs", options = { "nosuid", "mode=1777" } }
    end)
    local pidfile = base.path .. "/c1.pid"
    local r = runc_detached({ "create", "--bundle", b, "--pid-file", pidfile, "c1" })
    expect(r.code).to_be(0)
    local st = state_of("c1")
    expect(st.status).to_be("created")
    expect(st.ociVersion).to_match("^1%.")
    expect(st.bundle).to_be(b)
    expect(st.pid).to_be(tonumber(fs.read(pidfile)))
    expect(st.created).to_match("^%d%d%d%d%-%d%d%-%d%dT")
    -- held: the command has not run yet
    expect(fs.read_if_exists("/proc/" .. st.pid .. "/root/tmp/started")).to_be(nil)
    local cmd = fs.read("/proc/" .. st.pid .. "/cmdline")
    expect(cmd).not_to_match("sleep")
    r = runc({ "start", "c1" })
    expect(r.code).to_be(0)
    test.eventually(function() return fs.read_if_exists("/proc/" .. st.pid .. "/root/tmp/started") end, 5)
    expect(state_of("c1").status).to_be("running")
    r = runc_detached({ "create", "--bundle", b, "c1" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("exists")
    r = runc({ "start", "c1" })
    expect(r.stderr).to_match("cannot start an already running container")
    r = runc({ "delete", "c1" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("cannot delete container c1 that is not stopped: running")
    expect(runc({ "kill", "c1", "SIGKILL" }).code).to_be(0)
    test.eventually(function() return state_of("c1").status == "stopped" end, 5)
    r = runc({ "kill", "c1", "KILL" })
    expect(r.stderr).to_match("container not running")
    expect(runc({ "delete", "c1" }).code).to_be(0)
    local _, err = state_of("c1")
    expect(err).to_match("does not exist")
    expect(runc({ "delete", "c1" }).stderr).to_match("does not exist")
    expect(runc({ "kill", "nosuch", "9" }).stderr).to_match("does not exist")
    expect(sys.lstat(state_root .. "/c1")).to_be(nil)
  end)

  it("runs to the end with run, and passes the exit status", function()
    local b = bundle({ "sh", "-c", "echo out; echo err >&2; exit 3" })
    local r = runc({ "run", "--bundle", b, "r1" })
    expect(r.code).to_be(3)
    expect(r.stdout).to_be("out\n")
    expect(r.stderr).to_be("err\n")
    expect(runc({ "list", "--format", "json" }).stdout).to_be("[]\n")
  end)

  it("maps config.json: user, env, cwd, capabilities, rlimits, sysctl, devices, masks, readonly root", function()
    local b = bundle({ "sh", "-c", table.concat({
      "id -u; id -g; echo $FOO; pwd; grep CapBnd /proc/self/status; ulimit -n",
      "cat /proc/sys/net/ipv4/ip_forward; ls -l /dev/fuse | cut -c1; wc -c < /proc/timer_list",
      "touch /x 2>&1 | grep -c Read-only" }, "; ") }, function(d)
      d.process.user = { uid = 1000, gid = 1000, additionalGids = { 5 } }
      d.process.env = { "PATH=/bin", "FOO=bar" }
      d.process.cwd = "/tmp"
      d.process.capabilities = { bounding = { "CAP_KILL" }, effective = { "CAP_KILL" }, permitted = { "CAP_KILL" } }
      d.process.rlimits = { { type = "RLIMIT_NOFILE", soft = 77, hard = 77 } }
      d.linux.sysctl = { ["net.ipv4.ip_forward"] = "1" }
      d.linux.devices = { { path = "/dev/fuse", type = "c", major = 10, minor = 229, fileMode = tonumber("666", 8) } }
      d.root.readonly = true
    end)
    local r = runc({ "run", "--bundle", b, "m1" })
    expect(r.stderr).to_be("")
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(lines[1]).to_be("1000")
    expect(lines[2]).to_be("1000")
    expect(lines[3]).to_be("bar")
    expect(lines[4]).to_be("/tmp")
    expect(lines[5]).to_be("CapBnd:\t0000000000000020")
    expect(lines[6]).to_be("77")
    expect(lines[7]).to_be("1")
    expect(lines[8]).to_be("c")
    expect(lines[9]).to_be("0")
    expect(lines[10]).to_be("1")
  end)

  it("refuses what it cannot honour, naming the field, and logs errors as JSON for containerd", function()
    local b = bundle({ "true" }, function(d) d.linux.intelRdt = { closID = "x" } end)
    local log = base.path .. "/log.json"
    local r = process.run({ bin .. "/moonbox-runc", "--root", state_root, "--log", log, "--log-format", "json", "create", "--bundle", b, "bad1" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("config.json: linux.intelRdt: not supported by moonbox")
    local last = json.decode(fs.read(log):match("([^\n]+)\n$"))
    expect(last.level).to_be("error")
    expect(last.msg).to_match("linux.intelRdt")
    expect(sys.lstat(state_root .. "/bad1")).to_be(nil)
    b = bundle({ "true" }, function(d) d.mounts[#d.mounts + 1] = { destination = "/x", type = "nfs", source = "srv:/x" } end)
    expect(runc({ "create", "--bundle", b, "bad2" }).stderr).to_match("mounts%[%d+%]%.type: filesystem \"nfs\" is not supported")
    b = bundle({ "true" }, function(d) d.process.args = {} end)
    expect(runc({ "create", "--bundle", b, "bad3" }).stderr).to_match("process.args: a non%-empty list expected")
    expect(runc({ "create", "--bundle", b, "../bad" }).stderr).to_match("invalid container id")
    expect(runc({ "frobnicate" }).stderr).to_match("unknown command frobnicate")
    expect(runc({ "create", "--bogus", "x" }).stderr).to_match("unknown option %-%-bogus")
  end)

  it("execs in a running container: argv and --process forms, exit codes, --detach with a pid file", function()
    delete_at_end("e1")
    local b = bundle({ "sleep", "30" })
    expect(runc_detached({ "run", "--detach", "--bundle", b, "e1" }).code).to_be(0)
    local r = runc({ "exec", "e1", "sh", "-c", "echo in; exit 4" })
    expect(r.code).to_be(4)
    expect(r.stdout).to_be("in\n")
    local proc = base.path .. "/process.json"
    fs.write(proc, json.encode({ args = { "sh", "-c", "echo $A $(id -u)" }, env = { "A=b", "PATH=/bin" }, cwd = "/", user = { uid = 7, gid = 7 } }))
    r = runc({ "exec", "--process", proc, "e1" })
    expect(r.stdout).to_be("b 7\n")
    local pidfile = base.path .. "/e1.pid"
    fs.write(proc, json.encode({ args = { "sh", "-c", "sleep 0.3; touch /tmp/detached" }, cwd = "/", env = { "PATH=/bin" } }))
    r = runc_detached({ "exec", "--detach", "--pid-file", pidfile, "--process", proc, "e1" })
    expect(r.code).to_be(0)
    local pid = tonumber(fs.read(pidfile))
    expect(pid).to_be_a("number")
    local st = state_of("e1")
    test.eventually(function() return fs.read_if_exists("/proc/" .. st.pid .. "/root/tmp/detached") end, 5)
    expect(json.decode(runc({ "ps", "--format", "json", "e1" }).stdout)[1]).to_be(st.pid)
    -- pause, resume, update
    expect(runc({ "pause", "e1" }).code).to_be(0)
    expect(state_of("e1").status).to_be("paused")
    expect(runc({ "exec", "e1", "true" }).stderr).to_match("paused")
    expect(runc({ "resume", "e1" }).code).to_be(0)
    expect(state_of("e1").status).to_be("running")
    r = runc({ "update", "--resources", "-", "e1" }, { stdin = json.encode({ pids = { limit = 42 } }) })
    expect(r.code).to_be(0)
    local group = "oci/e1"
    expect(sys.cgroup_get(group, "pids.max")).to_be("42")
    expect(runc({ "kill", "--all", "e1", "KILL" }).code).to_be(0)
    test.eventually(function() return state_of("e1").status == "stopped" end, 5)
    expect(runc({ "delete", "e1" }).code).to_be(0)
    expect(sys.cgroup_path(group) and sys.lstat(sys.cgroup_path(group)[1])).to_be(nil)
  end)

  it("sends the terminal to --console-socket, for create and for exec", function()
    delete_at_end("t1")
    local sock_path = base.path .. "/console.sock"
    local listener = assert(sys.socket("unix", "stream"))
    assert(sys.bind(listener, sock_path))
    assert(sys.listen(listener, 4))
    local b = bundle({ "sh", "-c", "tty; sleep 30" }, function(d) d.process.terminal = true end)
    local pid = assert(sys.fork())
    if pid == 0 then sys.exec({ bin .. "/moonbox-runc", "--root", state_root, "run", "-d", "--console-socket", sock_path, "--bundle", b, "t1" }) end
    local conn = assert(sys.accept(listener))
    local master = assert(sys.recv_fd(conn))
    conn:close()
    expect(sys.wait(pid).code).to_be(0)
    local got = ""
    test.eventually(function()
      if #(sys.poll({ master }, 0.2) or {}) > 0 then got = got .. (sys.read(master, 4096) or "") end
      return got:find("/dev/pts/0", 1, true)
    end, 5)
    master:close()
    -- exec with a terminal
    pid = assert(sys.fork())
    if pid == 0 then sys.exec({ bin .. "/moonbox-runc", "--root", state_root, "exec", "-t", "--console-socket", sock_path, "t1", "tty" }) end
    conn = assert(sys.accept(listener))
    master = assert(sys.recv_fd(conn))
    conn:close()
    got = ""
    test.eventually(function()
      if #(sys.poll({ master }, 0.2) or {}) > 0 then got = got .. (sys.read(master, 4096) or "") end
      return got:find("/dev/pts/", 1, true)
    end, 5)
    expect(sys.wait(pid).code).to_be(0)
    master:close()
    listener:close()
    expect(runc({ "delete", "--force", "t1" }).code).to_be(0)
  end)

  it("runs hooks at their moments with the state on stdin, and org.moonbox.setup inside the container", function()
    local dir = base.path .. "/hooks"
    assert(sys.mkdir(dir, tonumber("755", 8)))
    local function hook(name) return { path = "/bin/sh", args = { "sh", "-c", "cat > " .. dir .. "/" .. name } } end
    local b = bundle({ "sh", "-c", "cat /from-setup" }, function(d)
      d.hooks = { prestart = { hook("prestart") }, createRuntime = { hook("createRuntime") }, poststart = { hook("poststart") },
        poststop = { hook("poststop") } }
      d.annotations = { ["org.moonbox.setup"] = "setup.lua" }
    end)
    fs.write(b .. "/setup.lua", [[
      local sys = ...
      local f = assert(io.open("/from-setup", "w"))
      f:write("setup ran as pid ", sys.getpid(), "\n")
      f:close()
    ]])
    local r = runc({ "run", "--bundle", b, "h1" })
    expect(r.stdout).to_be("setup ran as pid 1\n")
    for _, name in ipairs({ "prestart", "createRuntime", "poststart", "poststop" }) do
      local st = json.decode(fs.read(dir .. "/" .. name))
      expect(st.id).to_be("h1")
      expect(st.bundle).to_be(b)
    end
    expect(json.decode(fs.read(dir .. "/createRuntime")).status).to_be("created")
    expect(json.decode(fs.read(dir .. "/poststop")).status).to_be("stopped")
    expect(json.decode(fs.read(dir .. "/createRuntime")).pid).to_be_at_least(1)
    -- a failing prestart hook fails create, and leaves nothing
    b = bundle({ "true" }, function(d) d.hooks = { prestart = { { path = "/bin/false" } } } end)
    r = runc({ "create", "--bundle", b, "h2" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("prestart hook 0 %(/bin/false%) failed: exit status 1")
    expect(sys.lstat(state_root .. "/h2")).to_be(nil)
  end)

  it("answers as runc when invoked by that name, and lists its features", function()
    local r = process.run({ bin .. "/runc", "--version" })
    expect(r.stdout).to_match("^moonbox%-runc version")
    local f = json.decode(runc({ "features" }).stdout)
    expect(f.ociVersionMax).to_match("^1%.")
    expect(f.linux.namespaces).to_contain("network")
    expect(f.hooks).to_contain("createRuntime")
  end)
end)

-- podman (conmon) driving moonbox. Everything podman mounts stays in a private mount namespace;
-- its storage (vfs: plain folders, no overlay mounts) is a temporary folder; --network none.
describe("podman --runtime moonbox-runc", function()
  local pm
  before_each(function()
    needs_root()
    if not sys.stat("/usr/bin/podman") then skip("podman is not installed") end
    setup()
    if not pm then
      local dir = fs.tempdir("podman-test").path
      pm = { dir = dir, args = { "podman", "--root", dir .. "/storage", "--runroot", dir .. "/run", "--storage-driver", "vfs",
        "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", bin .. "/moonbox-runc",
        "--tmpdir", dir .. "/libpod" } }
      -- The runtime's state root stays the default: podman's cleanup of a --rm container runs
      -- later, from conmon, without any --runtime-flag, and must find the container there.
      pm.made_root = not sys.lstat("/run/moonbox-oci")
      local archive = dir .. "/busybox.tar"
      local r = process.run({ moonbox, "image", "import", root, "localhost/mbtest-busybox:1" })
      assert(r.code == 0, r.stderr)
      r = process.run({ moonbox, "image", "export", "localhost/mbtest-busybox:1", archive })
      assert(r.code == 0, r.stderr)
      process.run({ moonbox, "image", "rm", "localhost/mbtest-busybox:1" })
      pm.load = archive
    end
  end)

  -- One shell script under `unshare -m`, so that podman's mounts die with it.
  local function podman_script(body)
    local script = pm.dir .. "/script.sh"
    local p = table.concat(pm.args, " ")
    fs.write(script, "set -u\nP=\"" .. p .. "\"\nU=\"--network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024\"\n"
      .. "export HOME=" .. pm.dir .. "\n$P load -i " .. pm.load .. " >/dev/null\n" .. body)
    return process.run({ "unshare", "-m", "--propagation", "private", "sh", script })
  end

  it("runs, attaches a terminal, execs, kills and stops containers, with memory and pids limits", function()
    finally(function()
        if pm then
        podman_script("$P rm -a -f -t 0 >/dev/null 2>&1\n")
        -- --rm containers are deleted by conmon's exit command, after podman run returned
        test.eventually(function() return #(sys.listdir("/run/moonbox-oci") or {}) == 0 end, 20)
        if pm.made_root then sys.rmdir("/run/moonbox-oci") end
        -- the cgroups podman and conmon made for these runs
        for _, c in ipairs({ "cpu", "cpuacct", "memory", "pids", "freezer", "devices", "blkio", "cpuset", "systemd" }) do
          sys.rmdir("/sys/fs/cgroup/" .. c .. "/libpod_parent/conmon")
          sys.rmdir("/sys/fs/cgroup/" .. c .. "/libpod_parent")
        end
        sys.remove_tree(pm.dir)
      end
    end)
    local r = podman_script([[
$P run --rm $U localhost/mbtest-busybox:1 sh -c 'echo hello; cat /sys/fs/cgroup/pids/pids.max'
echo "run=$?"
$P run --rm $U --pids-limit 33 --memory 48m localhost/mbtest-busybox:1 sh -c 'cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes'
$P run --rm -t $U localhost/mbtest-busybox:1 tty
$P run -d --name srv $U localhost/mbtest-busybox:1 sleep 300 >/dev/null
$P exec srv sh -c 'echo exec-out; exit 5'
echo "exec=$?"
$P exec -t srv tty
$P kill -s KILL srv >/dev/null
$P wait srv
$P ps -a --format '{{.Names}} {{.Status}}' | cut -c1-13
$P rm srv >/dev/null
$P run -d --name srv2 $U localhost/mbtest-busybox:1 sh -c 'trap "exit 0" TERM; while true; do sleep 0.1; done' >/dev/null
$P stop -t 5 srv2 >/dev/null
$P inspect srv2 --format 'stopped={{.State.ExitCode}}'
$P rm srv2 >/dev/null
$P run --rm $U --memory 16m localhost/mbtest-busybox:1 sh -c 'head -c 67108864 /dev/zero | sort > /dev/null'
echo "oom=$?"
]])
    local out = r.stdout
    expect(out).to_match("^hello\n")
    expect(out).to_match("run=0\n")
    expect(out).to_match("\n33\n50331648\n")
    expect(out).to_match("/dev/pts/0\r?\n")
    expect(out).to_match("exec%-out\nexec=5\n")
    expect(out).to_match("\n137\n")
    expect(out).to_match("srv Exited %(1")
    expect(out).to_match("stopped=0\n")
    expect(out).to_match("oom=137\n")
    -- every container podman ran is gone: no state, no record, no cgroup
    test.eventually(function() return #(sys.listdir("/run/moonbox-oci") or {}) == 0 end, 20)
    for _, rec in ipairs(require("moonbox.state").list()) do expect(rec.id).not_to_match("^" .. ("%x"):rep(64) .. "$") end
    for _, c in ipairs({ "memory", "pids" }) do
      for _, name in ipairs(sys.listdir("/sys/fs/cgroup/" .. c .. "/libpod_parent") or {}) do expect(name).not_to_match("^libpod%-") end
    end
  end)
end)

-- containerd with its runc shim (containerd-shim-runc-v2) calling moonbox-runc: the daemon runs
-- in a private mount namespace with its root, state and socket in a temporary folder.
describe("containerd --runc-binary moonbox-runc", function()
  before_each(function()
    needs_root()
    if not sys.stat("/usr/bin/containerd") or not sys.stat("/usr/bin/ctr") then skip("containerd is not installed") end
    setup()
  end)

  it("runs a task, execs in it, kills and deletes it", function()
    local dir = fs.tempdir("containerd-test").path
    finally(function() sys.remove_tree(dir) end)
    local archive = dir .. "/busybox.tar"
    local r = process.run({ moonbox, "image", "import", root, "localhost/mbtest-ctr:1" })
    assert(r.code == 0, r.stderr)
    r = process.run({ moonbox, "image", "export", "localhost/mbtest-ctr:1", archive })
    assert(r.code == 0, r.stderr)
    process.run({ moonbox, "image", "rm", "localhost/mbtest-ctr:1" })
    fs.write(dir .. "/config.toml", string.format([[
version = 2
root = "%s/root"
state = "%s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "%s/ctd.sock"
[ttrpc]
  address = "%s/ctd.sock.ttrpc"
]], dir, dir, dir, dir))
    local runtime = "--runtime io.containerd.runc.v2 --runc-binary " .. bin .. "/moonbox-runc --snapshotter native"
      .. " --runc-root " .. dir .. "/runc-root --fifo-dir " .. dir .. "/fifo"
    -- the shim keeps its sockets in /run/containerd/s whatever the config says: what this test
    -- made there goes at its end
    local made = {}
    for _, d in ipairs({ "/run/containerd/s", "/run/containerd" }) do if not sys.lstat(d) then made[#made + 1] = d end end
    finally(function() for _, d in ipairs(made) do sys.rmdir(d) end end)
    fs.write(dir .. "/run.sh", string.format([[
containerd --config %s/config.toml > %s/containerd.log 2>&1 &
daemon=$!
for i in $(seq 100); do [ -S %s/ctd.sock ] && break; sleep 0.1; done
C="ctr --address %s/ctd.sock"
$C images import --base-name localhost/mbtest-ctr %s > /dev/null
$C run --rm %s localhost/mbtest-ctr:1 t1 sh -c 'echo hello; cat /proc/self/cgroup | grep pids'
echo "run=$?"
$C run -d %s localhost/mbtest-ctr:1 t2 sleep 100
$C task exec --fifo-dir %s/fifo --exec-id e1 t2 sh -c 'echo exec-out; exit 3'
echo "exec=$?"
$C task ls | grep -c RUNNING
$C task kill -s KILL t2
sleep 1
$C task ls | grep t2
$C task delete t2 > /dev/null
$C container delete t2
echo "deleted=$?"
kill $daemon
wait $daemon
]], dir, dir, dir, dir, archive, runtime, runtime, dir))
    r = process.run({ "unshare", "-m", "--propagation", "private", "sh", dir .. "/run.sh" })
    expect(r.stdout).to_match("^hello\n%d+:pids:/default/t1\nrun=0\n")
    expect(r.stdout).to_match("exec%-out\nexec=3\n1\n")
    expect(r.stdout).to_match("t2%s+%d+%s+STOPPED")
    expect(r.stdout).to_match("deleted=0\n")
    for _, c in ipairs({ "cpu", "cpuacct", "memory", "pids", "freezer", "devices" }) do
      expect(sys.stat("/sys/fs/cgroup/" .. c .. "/default/t2")).to_be(nil)
    end
  end)
end)
