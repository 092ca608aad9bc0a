-- moonbox.security: the secure defaults every container gets, as docker gives them:
-- docker's 14 capabilities, only the standard devices, a seccomp allowlist equivalent to
-- docker's default profile, and no_new_privs.
local sys = require "moonbox.sys"
local json = require "moonbox.json"

local security = {}

security.default_capabilities = {
  "chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid", "setfcap",
  "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write",
}

-- Every capability the kernel knows, by name, in number order (moonbox.sys holds the table).
security.all_capabilities = sys.capability_names

local function normalize_cap(name)
  if type(name) ~= "string" then error("capability names must be strings", 4) end
  local n = name:lower():gsub("^cap_", "")
  if n == "all" then return "all" end
  for _, known in ipairs(security.all_capabilities) do
    if known == n then return n end
  end
  error("unknown capability '" .. name .. "'", 4)
end

--- The capability set for a spec: the defaults, plus cap_add, minus cap_drop ("ALL" works in both).
function security.capabilities(cap_add, cap_drop)
  local set = {}
  for _, c in ipairs(security.default_capabilities) do set[c] = true end
  for _, c in ipairs(cap_drop or {}) do
    c = normalize_cap(c)
    if c == "all" then set = {} else set[c] = nil end
  end
  for _, c in ipairs(cap_add or {}) do
    c = normalize_cap(c)
    if c == "all" then
      for _, k in ipairs(security.all_capabilities) do set[k] = true end
    else
      set[c] = true
    end
  end
  local list = {}
  for _, c in ipairs(security.all_capabilities) do if set[c] then list[#list + 1] = c end end
  return list
end

-- The character devices a container may use, as devices-cgroup rules: moonbox.cgroup applies
-- them (the v1 devices controller, or an eBPF program on v2).
security.allowed_devices = {
  "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", -- null zero full random urandom
  "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm",                           -- tty console ptmx
  "c 136:* rwm",                                                    -- pts
}

-- MARK: seccomp

-- docker's default allowlist (profiles/seccomp/default.json), without the calls that need
-- a capability; those follow below, by capability.
local allowed = [[
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old
eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync
fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt
get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr
llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
nanosleep newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2
pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat
readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat
renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity
sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send
sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid
setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area
set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink
symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64
ugetrlimit umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4
waitid waitpid write writev arch_prctl modify_ldt
]]

local by_capability = {
  sys_admin = "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr "
    .. "move_mount name_to_handle_at open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname "
    .. "setns syslog umount umount2 unshare",
  sys_boot = "reboot",
  sys_chroot = "chroot",
  sys_module = "delete_module init_module finit_module",
  sys_pacct = "acct",
  sys_ptrace = "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
  sys_rawio = "iopl ioperm",
  sys_time = "settimeofday stime clock_settime clock_settime64",
  sys_tty_config = "vhangup",
  sys_nice = "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
  syslog = "syslog",
  bpf = "bpf",
  perfmon = "perf_event_open",
  dac_read_search = "open_by_handle_at",
}

local function words(s)
  local list = {}
  for w in s:gmatch("%S+") do list[#list + 1] = w end
  return list
end

local CLONE_NAMESPACE_FLAGS = 0x7E020000  -- NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET
local AF_ALG, AF_VSOCK = 38, 40

--- docker's default profile, as a profile table, for a container holding `caps`.
-- Left out on purpose (EPERM): keyctl, add_key, request_key, userfaultfd, kexec_*, io_uring_*,
-- bpf and perf_event_open (without their capabilities), open_by_handle_at, the AF_ALG and
-- AF_VSOCK sockets, and mount, umount, unshare, setns and namespace clones without CAP_SYS_ADMIN.
local default_profiles = {}  -- one profile table per capability set, so it compiles once

function security.default_seccomp(caps)
  local key = table.concat(caps or {}, ",")
  if default_profiles[key] then return default_profiles[key] end
  local has = {}
  for _, c in ipairs(caps or {}) do has[c] = true end
  local rules = { { names = words(allowed), action = "SCMP_ACT_ALLOW" } }
  for cap, names in pairs(by_capability) do
    if has[cap] then rules[#rules + 1] = { names = words(names), action = "SCMP_ACT_ALLOW" } end
  end
  if not has.sys_admin then
    -- clone only without namespace flags; clone3 says ENOSYS so libc falls back to clone.
    rules[#rules + 1] = { names = { "clone" }, action = "SCMP_ACT_ALLOW",
      args = { { index = 0, value = CLONE_NAMESPACE_FLAGS, valueTwo = 0, op = "SCMP_CMP_MASKED_EQ" } } }
    rules[#rules + 1] = { names = { "clone3" }, action = "SCMP_ACT_ERRNO", errnoRet = 38 }
  end
  -- personality: only the harmless personas, as docker allows.
  for _, persona in ipairs({ 0x0, 0x0008, 0x20000, 0x20008, 0xffffffff }) do
    rules[#rules + 1] = { names = { "personality" }, action = "SCMP_ACT_ALLOW",
      args = { { index = 0, value = persona, op = "SCMP_CMP_EQ" } } }
  end
  -- sockets of every family but AF_ALG (38) and AF_VSOCK (40); a rule compares an argument
  -- once, so: below 38, 39, and above 40.
  for _, cmp in ipairs({ { AF_ALG, "SCMP_CMP_LT" }, { AF_ALG + 1, "SCMP_CMP_EQ" }, { AF_VSOCK, "SCMP_CMP_GT" } }) do
    rules[#rules + 1] = { names = { "socket" }, action = "SCMP_ACT_ALLOW",
      args = { { index = 0, value = cmp[1], op = cmp[2] } } }
  end
  local profile = { defaultAction = "SCMP_ACT_ERRNO", defaultErrnoRet = 1, syscalls = rules }
  default_profiles[key] = profile
  return profile
end

--- A profile from a docker/OCI seccomp JSON file, or a table in the same shape, with its
-- includes/excludes resolved against the container's capabilities.
function security.resolve_seccomp(profile, caps)
  if type(profile) == "string" then
    local f, err = io.open(profile)
    if not f then error("seccomp profile: " .. err, 3) end
    local text = f:read("a")
    f:close()
    local ok, decoded = pcall(json.decode, text)
    if not ok then error("seccomp profile " .. profile .. ": " .. tostring(decoded), 3) end
    profile = decoded
  end
  if type(profile) ~= "table" then error("seccomp must be false, a profile table or a JSON file path", 3) end
  local has = {}
  for _, c in ipairs(caps or {}) do has["cap_" .. c] = true end
  local function caps_match(list, all)
    for _, c in ipairs(list or {}) do
      local present = has[c:lower()] or false
      if all and not present then return false end
      if not all and present then return true end
    end
    return all
  end
  local out = { defaultAction = profile.defaultAction, defaultErrnoRet = profile.defaultErrnoRet, syscalls = {} }
  for _, rule in ipairs(profile.syscalls or {}) do
    local inc, exc = rule.includes or {}, rule.excludes or {}
    if caps_match(inc.caps, true) and not (exc.caps and caps_match(exc.caps, false)) then
      local names = rule.names or (rule.name and { rule.name }) or {}
      out.syscalls[#out.syscalls + 1] = { names = names, action = rule.action, errnoRet = rule.errnoRet, args = rule.args }
    end
  end
  return out
end

-- MARK: compiled filters

local compiled = {}
local compiled_tables = setmetatable({}, { __mode = "k" })  -- a table seen before skips the encoding

-- The header of a cached program: what it was compiled from (the profile's hash, with the
-- moonbox version in it) and the program's own hash. A file that does not match is ignored.
local function cache_header(key_hash, program)
  return "moonbox-seccomp 1 " .. key_hash .. " " .. sys.sha256_string(program) .. "\n"
end

local function read_cached(path, key_hash)
  local f = sys.open(path, { "rdonly", "nofollow" })
  if not f then return nil end
  local st = sys.stat(f)
  local text = st and st.type == "file" and st.uid == sys.geteuid() and st.mode & tonumber("077", 8) == 0 and sys.read(f, 1 << 20)
  f:close()
  if not text then return nil end
  local header, program = text:match("^([^\n]*\n)(.*)$")
  if not header or #program == 0 or #program % 8 ~= 0 or header ~= cache_header(key_hash, program) then return nil end
  return program
end

--- The profile compiled to a BPF program, built by libseccomp once: kept in memory, and in the
-- state folder (checked: the user's own, writable by nobody else) so the next moonbox process
-- loads it instead of building it again. A cached file is used only when its header names the
-- hash of this very profile and the hash of the program that follows.
function security.compile(profile)
  if compiled_tables[profile] then return compiled_tables[profile] end
  local key = json.encode(profile)
  if compiled[key] then
    compiled_tables[profile] = compiled[key]
    return compiled[key]
  end
  local key_hash = sys.sha256_string(sys._VERSION .. "\n" .. key)
  local ok, cache = pcall(function() return require("moonbox.state").ensure("cache") end)
  local path = ok and (cache .. "/seccomp-" .. key_hash .. ".bpf") or nil
  local program = path and read_cached(path, key_hash)
  if not program then
    local err
    program, err = sys.seccomp_compile(profile)
    if not program then error("seccomp: " .. err, 2) end
    if path then pcall(require("moonbox.fs").write_atomic, path, cache_header(key_hash, program) .. program, false, tonumber("600", 8)) end
  end
  compiled[key] = program
  compiled_tables[profile] = program
  return program
end

--- Drops every capability not in `caps` from the bounding set (needs CAP_SETPCAP, so before
-- the user switch), then sets effective, permitted and inheritable; the ambient set is cleared.
function security.drop_bounding(caps)
  local keep = {}
  for _, c in ipairs(caps) do keep[c] = true end
  -- read through a close-on-exec fd, closed at once: this runs in a child about to exec
  local text = ""
  local fd = sys.open("/proc/sys/kernel/cap_last_cap", "rdonly")
  if fd then text = sys.read(fd, 64) or "" fd:close() end
  local last = tonumber(text:match("%d+") or "") or 40
  for n = 0, last do
    local name = security.all_capabilities[n + 1]
    if not (name and keep[name]) then
      local ok, msg = sys.prctl("capbset_drop", n)
      if not ok then return nil, msg end
    end
  end
  return sys.prctl("cap_ambient_clear_all")
end

--- Sets effective, permitted and inheritable to `caps`, less any this process's bounding set
-- lacks (the host's own limits: "ALL" means all there are here).
function security.set_capabilities(caps)
  local have = {}
  for _, c in ipairs(caps) do
    if sys.prctl("capbset_read", c) then have[#have + 1] = c end
  end
  return sys.capset({ effective = have, permitted = have, inheritable = have })
end

--- Sets each capability set as given (an OCI process's capabilities): effective, permitted,
-- inheritable, and ambient raised one by one. The bounding set was dropped before.
function security.set_capability_sets(sets)
  -- what this host's root itself lacks is left out, as for "ALL" (set_capabilities)
  local function have(list)
    local out = {}
    for _, c in ipairs(list or {}) do if sys.prctl("capbset_read", c) then out[#out + 1] = c end end
    return out
  end
  local ok, msg, errno = sys.capset({ effective = have(sets.effective), permitted = have(sets.permitted), inheritable = have(sets.inheritable) })
  if not ok then return nil, msg, errno end
  for _, c in ipairs(have(sets.ambient)) do
    ok, msg, errno = sys.prctl("cap_ambient_raise", c)
    if not ok then return nil, msg, errno end
  end
  return true
end

return security
