-- moonbox.container.child: everything between clone and exec, for a container's first process
-- (child.main) and for a command run inside a running container (child.exec_main).
--
-- A child never returns into the caller's Lua code: its body runs under process.child, and any
-- error, from Lua or from a misused primitive, goes to the parent over the error pipe as one
-- JSON line, and the child ends with _exit. The order follows runc: pdeathsig before anything,
-- the parent's go-ahead, namespaces and the root, limits in place before any caller code or the
-- command runs, then user, capabilities, no_new_privs, working folder, seccomp last, exec.
local sys = require "moonbox.sys"
local json = require "moonbox.json"
local errors = require "moonbox.errors"
local process = require "moonbox.process"
local security = require "moonbox.security"
local plan = require "moonbox.container.plan"
local users = require "moonbox.container.users"

local child = {}

-- A test-only stop at a named step (MOONBOX_TEST_FAULT), so a crash test can SIGKILL moonbox
-- exactly there: the process renames itself "fault-STEP" and sleeps (a pid namespace's init would
-- ignore a SIGSTOP). Read once; unset, it costs one comparison.
local fault_point = os.getenv("MOONBOX_TEST_FAULT")
function child.fault(name)
  if fault_point == name then
    sys.prctl("set_name", ("fault-" .. name):sub(1, 15))
    while true do sys.nanosleep(3600) end
  end
end

local function check(step, ok, msg, errno, ...)
  if ok then return ok, msg, errno, ... end
  errors.raise(msg or "failed", { step = step, errno = errno }, 0)
end

--- Sends err to the parent as one JSON line. Exec failures exit 127 or 126, as a shell does.
function child.report_to(pipe)
  return function(err)
    local e = errors.wrap(err)
    sys.write(pipe, json.encode({ message = e.message, step = e.step, errno = e.errno, exec = e.exec,
      code = e.exec and process.exec_status(e.errno) or nil }) .. "\n")
    if e.exec then e.exit = process.exec_status(e.errno) end
  end
end

-- pdeathsig first; then, in case the parent died before it was set, a look at the parent's
-- pidfd (readable once the parent is gone). getppid() cannot tell: in a new pid namespace it
-- is 0 whether the parent lives or not.
local function die_with_parent(parent_pidfd)
  check("prctl", sys.prctl("set_pdeathsig", "KILL"))
  if parent_pidfd and #(sys.poll({ parent_pidfd }, 0) or {}) > 0 then sys._exit(125) end
end

local function resolve_user(c, user)
  if not user then return nil end
  if user.user or user.group then
    local resolved, why = users.resolve(user)
    if not resolved then errors.raise(why, { step = "user" }, 0) end
    return resolved
  end
  local resolved = users.resolve(user)  -- a numeric user still gets its home and groups
  return resolved or user
end

-- Limits, capabilities, the user switch and no_new_privs, in the order they need: the bounding
-- set is dropped while CAP_SETPCAP is still held, and a non-root user loses the rest at setuid.
local function harden(c, user)
  for _, r in ipairs(c.rlimits) do check("rlimits", sys.setrlimit(r[1], r[2], r[3])) end
  check("capabilities", security.drop_bounding(c.capabilities))
  if user or c.additional_gids then
    -- In a user namespace setgroups is denied (the map was written that way): none to set.
    local groups = {}
    for _, g in ipairs(user and user.groups or {}) do groups[#groups + 1] = g end
    for _, g in ipairs(c.additional_gids or {}) do groups[#groups + 1] = g end
    if not c.namespaces.user then check("user", sys.setgroups(groups)) end
  end
  -- explicit capability sets (an OCI process's) survive the switch to another user, as runc's do
  local keep = c.capability_sets and user and user.uid ~= 0
  if keep then check("capabilities", sys.prctl("set_keepcaps", true)) end
  if user then
    check("user", sys.setgid(user.gid))
    check("user", sys.setuid(user.uid))
  end
  if keep then check("capabilities", sys.prctl("set_keepcaps", false)) end
  if c.capability_sets then
    check("capabilities", security.set_capability_sets(c.capability_sets))
  elseif not user or user.uid == 0 then
    check("capabilities", security.set_capabilities(c.capabilities))
  end
  if c.no_new_privileges then check("no_new_privs", sys.prctl("set_no_new_privs")) end
end

--- The last steps before exec, shared by a container's first process and by exec inside it:
-- user, limits and capabilities, the working folder (made when an image names a missing one),
-- pdeathsig again (a credential change clears it), fds, seccomp, the umask.
-- runc's create/start: the process waits here, all set up, until `start` opens the exec fifo
-- for reading. The fifo was opened (O_PATH) before pivot_root; it is reopened for writing
-- through /proc/self/fd, which blocks until the reader comes. Then startContainer hooks run.
local function hold(c, ctx)
  if ctx.err_w then ctx.err_w:close() ctx.err_w = nil end  -- the caller's create returns now
  local fifo = check("exec fifo", sys.open("/proc/self/fd/" .. ctx.exec_fifo:fileno(), "wronly"))
  check("exec fifo", sys.write(fifo, "0"))
  fifo:close()
  ctx.exec_fifo:close()
  for i, h in ipairs(c.start_hooks or {}) do
    local r = process.run_hook(h)
    if not r.ok then errors.raise("startContainer hook " .. i .. " (" .. h.path .. "): " .. r.why, { step = "hooks" }, 0) end
  end
end

local function finish(c, user, cwd, make_cwd, parent_pidfd, env, ctx, detached)
  user = resolve_user(c, user)
  if user and not c.env_home_given then env.HOME = user.home or (user.uid == 0 and "/root" or "/") end
  if not user and not c.env_home_given then env.HOME = env.HOME or "/root" end
  if make_cwd then sys.mkdir(cwd) end
  -- fds 3 to 3+keep_fds-1 are the caller's to pass on (OCI --preserve-fds, LISTEN_FDS). Marked
  -- before any filter goes in: a bundle's profile may not know close_range.
  check("fds", sys.close_range(3 + (ctx and c.keep_fds or 0), nil, { "cloexec" }))
  -- CVE-2024-21626: the working folder must be inside the container's root. Checked before
  -- any filter goes in (a bundle's profile may deny getcwd), and entered again as the user.
  check("cwd", sys.chdir(cwd))
  local here = sys.getcwd()
  if not here or here:sub(1, 1) ~= "/" then
    errors.raise("chdir(" .. cwd .. "): working folder is outside the container", { step = "cwd" }, 0)
  end
  -- Without no_new_privs, seccomp goes in while CAP_SYS_ADMIN is still held (as runc does);
  -- the filter allows everything that follows.
  if c.seccomp_program and not c.no_new_privileges then
    check("seccomp", sys.seccomp_load(c.seccomp_program, { no_new_privs = false }))
  end
  harden(c, user)
  check("cwd", sys.chdir(cwd))
  if detached or (c.detach and ctx) then
    -- It outlives the moonbox that made it (an OCI create or exec --detach): its caller's
    -- subreaper reaps it.
    check("prctl", sys.prctl("set_pdeathsig", 0))
  else
    die_with_parent(parent_pidfd)
  end
  sys.umask(c.umask or tonumber("022", 8))
  if ctx and ctx.exec_fifo then hold(c, ctx) end
  -- seccomp last, just before exec: nothing of the setup runs under it.
  if c.seccomp_program and c.no_new_privileges then check("seccomp", sys.seccomp_load(c.seccomp_program)) end
end

-- The root: the parent made it as a detached mount (a clone of the rootfs folder, or an
-- overlay), as real root; it is attached here over the working folder the parent left us in,
-- with no path walked, so a rootfs below a folder the user namespace may not enter works and a
-- rootfs renamed meanwhile changes nothing. On kernels without "lowerdir+" the overlay is
-- mounted here instead, by its paths.
local function make_root(ctx)
  check("mounts", sys.mount(nil, "/", nil, { "rprivate" }))
  if ctx.overlay then
    check("overlay", sys.overlay(ctx.overlay))
    return check("rootfs", sys.open(ctx.overlay.target, { "path", "directory" }))
  end
  local tree = ctx.root_tree
  if not tree then  -- rootless: the tree is made here, in the user namespace, from our working folder
    tree = check("rootfs", sys.open_tree(".", { "clone", "recursive" }))
  end
  check("rootfs", sys.move_mount(tree, "."))
  return tree
end

-- pivot_root the way runc does it: no put_old folder, so a read-only rootfs works too.
local function enter_root(c, root)
  check("pivot_root", sys.fchdir(root))
  if c.chroot then
    check("chroot", sys.chroot("."))
  else
    check("pivot_root", sys.pivot_root(".", "."))
    check("pivot_root", sys.mount(nil, ".", nil, { "rslave", "rec" }))  -- the old root's unmount stays here
    check("pivot_root", sys.umount(".", { "detach" }))
  end
  check("pivot_root", sys.chdir("/"))
  root:close()
end

-- As runc: the pty comes from the container's own devpts, its slave is /dev/console, and the
-- master goes to the parent over the console socket.
local function make_console(console)
  local master, slave, name = sys.openpty("/dev/pts/ptmx")
  check("tty", master, slave, name)
  local f = sys.open("/dev/console", { "wronly", "creat", "nofollow" }, tonumber("600", 8))
  if f then f:close() end
  check("tty", sys.mount(name, "/dev/console", nil, { "bind" }))
  check("tty", sys.send_fd(console, master))
  master:close()
  for fd = 0, 2 do check("tty", sys.dup2(slave, fd)) end
  slave:close()
  check("tty", sys.tiocsctty(0))
end

-- A minimal PID 1 (docker's --init): runs the command as its child, forwards signals to it,
-- reaps every zombie, and exits with the command's status. A command it cannot start (no fork
-- left under a pids limit, no such program) is reported as a setup failure, never as exit 0.
local function run_init(argv, env, err_w)
  local forward = { "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH" }
  sys.signal(forward, "catch")
  local r, w = check("init", sys.pipe())
  local pid, msg, errno = sys.fork()
  if not pid then errors.raise("init: cannot start the command: " .. msg, { step = "init", errno = errno }, 0) end
  if pid == 0 then
    process.child(function()
      r:close()
      sys.setsid()
      local _, emsg, eerr = process.exec(argv, env)
      errors.raise(emsg, { step = "exec", errno = eerr, exec = true }, 0)
    end, child.report_to(w))
  end
  w:close()
  local report = process.read_all(r)  -- empty: the command's exec closed the pipe
  r:close()
  if report ~= "" then
    sys.wait(pid)
    sys.write(err_w, report)
    sys._exit(process.exec_status(json.decode(report).errno))
  end
  err_w:close()  -- now the parent knows the command runs
  while true do
    local st, _, werr = sys.wait(-1)
    for _, s in ipairs(sys.signals_caught()) do sys.kill(pid, s) end
    if st and st.pid == pid then
      sys._exit(st.status == "exited" and st.code or 128 + (st.signal or 0))
    elseif not st and werr == "ECHILD" then
      sys._exit(0)
    end
  end
end

--- The container's first process. ctx: sync_r, sync_w, err_r, err_w (pipes), parent_pidfd,
-- stdio = {stdin=, stdout=, stderr=, console=}, root_tree (or overlay), ops, trees.
function child.main(c, ctx)
  process.child(function()
    -- The parent's ends go at once: a read of the sync pipe then ends when the parent dies.
    ctx.sync_w:close()
    ctx.err_r:close()
    die_with_parent(ctx.parent_pidfd)  -- until it is handed off (detach: in finish)
    child.fault("child_started")
    -- The parent's go-ahead: id maps and cgroup attach are under way.
    if sys.read(ctx.sync_r, 1) ~= "g" then sys._exit(125) end
    -- Namespaces named by path (an OCI bundle's: a pod's network, say) are joined, not made.
    for _, kind in ipairs({ "ipc", "uts", "net", "cgroup" }) do
      if c.join[kind] then check("join " .. kind .. " namespace", sys.setns(c.join[kind], kind)) end
    end
    -- Non-dumpable from here to exec: nothing in the container may read or ptrace this
    -- process (its /proc files turn root-owned; the parent needed them for the id maps).
    check("prctl", sys.prctl("set_dumpable", false))
    sys.umask(0)  -- modes of what the setup makes are exact
    if c.namespaces.user then
      -- Become the namespace's root (the mapped uid 0): until then files made here would
      -- belong to an unmapped owner.
      check("user namespace", sys.setgid(0))
      check("user namespace", sys.setuid(0))
    end
    local io = ctx.stdio
    if io.stdin then check("stdio", sys.dup2(io.stdin, 0)) end
    if io.stdout then check("stdio", sys.dup2(io.stdout, 1)) end
    if io.stderr then check("stdio", sys.dup2(io.stderr, 2)) end
    check("setsid", sys.setsid())  -- a session of its own: no TIOCSTI into the caller's terminal
    if c.namespaces.uts then check("sethostname", sys.sethostname(c.hostname or c.env.HOSTNAME)) end
    if c.namespaces.net and c.network == "none" then check("network", sys.netlink():link_set("lo", { up = true })) end
    child.fault("during_setup")
    local root = make_root(ctx)
    check("mounts", plan.apply(ctx.ops, root, c.namespaces.user, ctx.trees))
    enter_root(c, root)
    if c.root_propagation then
      -- an OCI bundle's rootfsPropagation, on the container's / once it is there
      check("rootfs propagation", sys.mount(nil, "/", nil, { c.root_propagation, "rec" }))
    end
    if c.tty then make_console(io.console) end
    -- The cgroup and its limits are in place when the parent says so; nothing of the caller's
    -- code (setup) or the command runs before.
    if sys.read(ctx.sync_r, 1) ~= "c" then sys._exit(125) end
    ctx.sync_r:close()
    if c.namespaces.cgroup then check("unshare(cgroup)", sys.unshare({ "cgroup" })) end
    if c.setup then
      local ok, e = xpcall(c.setup, debug.traceback, sys)
      if not ok then
        errors.raise("setup: " .. tostring(errors.is(e) and e.message or e), { step = "setup" }, 0)
      end
    end
    local env = {}
    for k, v in pairs(c.env) do env[k] = v end
    finish(c, c.user, c.cwd, c.make_cwd, ctx.parent_pidfd, env, ctx)
    if ctx.parent_pidfd then ctx.parent_pidfd:close() end
    if c.init then run_init(c.command, env, ctx.err_w) end
    local _, msg, errno = process.exec(c.command, env)
    errors.raise(msg, { step = "exec", errno = errno, exec = true }, 0)
  end, function(err)
    if ctx.err_w then return child.report_to(ctx.err_w)(err) end
    -- after an OCI create returned, nobody reads the pipe: the error goes to the container's stderr
    local e = errors.wrap(err)
    sys.write(2, "moonbox: " .. (e.step and (e.step .. ": ") or "") .. e.message .. "\n")
    if e.exec then e.exit = process.exec_status(e.errno) end
  end)
end

--- A command in a running container: this process (forked by the parent) joins the cgroup and
-- the namespaces of `target` (the container's first process), then forks the command into the
-- pid namespace and reports the command's end as a JSON line {status=, code=, signal=}.
-- ctx: report (pipe), stdio (a process.stdio), parent_pidfd, group (moonbox.cgroup or nil),
-- target (pid), kinds (namespace files to join, in order), argv, env, user, cwd.
function child.exec_main(c, ctx)
  process.child(function()
    die_with_parent(ctx.parent_pidfd)
    check("prctl", sys.prctl("set_dumpable", false))
    if ctx.group then check("cgroup", ctx.group:attach(sys.getpid())) end
    for _, k in ipairs(ctx.kinds) do
      check("setns", sys.setns("/proc/" .. ctx.target .. "/ns/" .. k[1], k[2]))
    end
    local me = check("pidfd", sys.pidfd_open(sys.getpid()))
    -- The pid namespace applies to children: the command runs in a grandchild.
    local inner = check("fork", sys.fork())
    if inner ~= 0 and ctx.detach then
      -- Detached (an OCI exec --detach): its pid goes back, and it is left to the caller's
      -- subreaper; a failure of its exec follows on the pipe and is read by nobody.
      sys.write(ctx.report, json.encode({ pid = inner }) .. "\n")
      sys._exit(0)
    end
    if inner ~= 0 then
      me:close()
      -- This process only waits: its copies of the pipes would keep the command's stdin open.
      local keep = ctx.report:fileno()
      if keep > 3 then sys.close_range(3, keep - 1) end
      sys.close_range(keep + 1)
      local st = sys.wait(inner)
      sys.write(ctx.report, json.encode({ status = st and st.status, code = st and st.code, signal = st and st.signal }) .. "\n")
      sys._exit(0)
    end
    process.child(function()
      ctx.stdio:child()
      if ctx.console then
        check("setsid", sys.setsid())
        local master, slave, name = sys.openpty("/dev/pts/ptmx")
        check("tty", master, slave, name)
        check("tty", sys.send_fd(ctx.console, master))
        master:close()
        ctx.console:close()
        for fd = 0, 2 do check("tty", sys.dup2(slave, fd)) end
        slave:close()
        check("tty", sys.tiocsctty(0))
      end
      local env = {}
      for k2, v in pairs(ctx.env) do env[k2] = v end
      finish(c, ctx.user, ctx.cwd, false, me, env, nil, ctx.detach)
      me:close()
      local _, msg, errno = process.exec(ctx.argv, env)
      errors.raise(msg, { step = "exec", errno = errno, exec = true }, 0)
    end, child.report_to(ctx.report))
  end, child.report_to(ctx.report))
end

return child
