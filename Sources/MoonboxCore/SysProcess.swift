import CMoonbox
import Glibc

/// Namespaces, processes, credentials, limits, prctl and signals.

let namespaceFlags: [String: Int32] = [
    "mount": 0x0002_0000, "uts": 0x0400_0000, "ipc": 0x0800_0000, "net": 0x4000_0000,
    "pid": 0x2000_0000, "user": 0x1000_0000, "cgroup": 0x0200_0000, "time": 0x0000_0080,
]

let signalNumbers: [String: Int32] = [
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16,
    "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23,
    "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
]

func signalName(_ n: Int32) -> String {
    signalNumbers.first { $0.value == n }?.key ?? "SIG\(n)"
}

let capabilityNumbers: [String: Int32] = [
    "chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4, "kill": 5,
    "setgid": 6, "setuid": 7, "setpcap": 8, "linux_immutable": 9, "net_bind_service": 10,
    "net_broadcast": 11, "net_admin": 12, "net_raw": 13, "ipc_lock": 14, "ipc_owner": 15,
    "sys_module": 16, "sys_rawio": 17, "sys_chroot": 18, "sys_ptrace": 19, "sys_pacct": 20,
    "sys_admin": 21, "sys_boot": 22, "sys_nice": 23, "sys_resource": 24, "sys_time": 25,
    "sys_tty_config": 26, "mknod": 27, "lease": 28, "audit_write": 29, "audit_control": 30,
    "setfcap": 31, "mac_override": 32, "mac_admin": 33, "syslog": 34, "wake_alarm": 35,
    "block_suspend": 36, "audit_read": 37, "perfmon": 38, "bpf": 39, "checkpoint_restore": 40,
]

let rlimitResources: [String: Int32] = [
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
    "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14,
    "rttime": 15,
]

extension Args {
    /// A signal as a number or a name: "TERM", "SIGTERM" or 15.
    func signal(_ i: Int32, _ name: String) throws -> Int32 {
        if lua.type(i) == LUA_TNUMBER {
            let n = try integer(i, name)
            guard n >= 0, n <= 64 else { throw error(i, name, "signal \(n) out of range") }
            return Int32(n)
        }
        var s = try string(i, name).uppercased()
        if s.hasPrefix("SIG") { s.removeFirst(3) }
        guard let n = signalNumbers[s] else { throw error(i, name, "unknown signal '\(s)'") }
        return n
    }

    /// A capability as a name ("sys_admin", "CAP_SYS_ADMIN") or a number.
    func capability(_ i: Int32, _ name: String) throws -> Int32 {
        if lua.type(i) == LUA_TNUMBER {
            let n = try integer(i, name)
            guard n >= 0, n < 64 else { throw error(i, name, "capability \(n) out of range") }
            return Int32(n)
        }
        return try capabilityNumber(try string(i, name), i, name)
    }

    func capabilityNumber(_ raw: String, _ i: Int32, _ name: String) throws -> Int32 {
        var s = raw.lowercased()
        if s.hasPrefix("cap_") { s.removeFirst(4) }
        guard let n = capabilityNumbers[s] else { throw error(i, name, "unknown capability '\(raw)'") }
        return n
    }

    /// uid or gid: a non-negative integer.
    func id(_ i: Int32, _ name: String) throws -> UInt32 {
        let n = try integer(i, name)
        guard n >= 0, n < Int(UInt32.max) else { throw error(i, name, "id \(n) out of range") }
        return UInt32(n)
    }
}

/// Pushes the result table of a wait: {pid=, status=, code=, signal=, rusage=}.
private func pushWaitResult(_ lua: Lua, pid: pid_t, status: Int32, usage: rusage) {
    lua.newTable()
    lua.set("pid", Int(pid))
    if mb_wifexited(status) != 0 {
        lua.set("status", "exited")
        lua.set("code", Int(mb_wexitstatus(status)))
    } else if mb_wifsignaled(status) != 0 {
        lua.set("status", "signaled")
        lua.set("signal", Int(mb_wtermsig(status)))
        lua.set("signal_name", signalName(mb_wtermsig(status)))
        lua.set("core_dumped", mb_wcoredump(status) != 0)
    } else if mb_wifstopped(status) != 0 {
        lua.set("status", "stopped")
        lua.set("signal", Int(mb_wstopsig(status)))
    }
    lua.set("rusage") {
        lua.newTable()
        lua.set("utime", Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6)
        lua.set("stime", Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6)
        lua.set("maxrss_kb", Int(usage.ru_maxrss))
    }
}

/// Blocks until `pidfd` is readable or `deadline` passes; false on timeout.
/// Returns nil on a poll error or when a caught signal interrupted the wait.
private func waitReadable(_ fd: Int32, until deadline: Double) -> Bool? {
    while true {
        let left = deadline - monotonicNow()
        if left <= 0 { return false }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let r = Glibc.poll(&p, 1, Int32(min(left * 1000, 2_000_000_000).rounded(.up)))
        if r > 0 { return true }
        if r < 0 {
            if errno == EINTR && !signalWasCaught() { continue }
            return nil
        }
    }
}

func signalWasCaught() -> Bool { mb_signals_caught(0) != 0 }

/// Looks `file` up in `path` the way execvp does, but in the PATH the new program
/// will see, and execs it. Returns only on failure, with errno set.
private func execSearching(_ file: String, _ argv: [String], _ env: [String], path: String) {
    let argvC = argv.map { strdup($0) } + [nil]
    let envC = env.map { strdup($0) } + [nil]
    defer {
        argvC.forEach { free($0) }
        envC.forEach { free($0) }
    }
    if file.contains("/") {
        execve(file, argvC, envC)
        return
    }
    var sawEACCES = false
    for dir in path.split(separator: ":", omittingEmptySubsequences: false) {
        let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + file
        execve(candidate, argvC, envC)
        if errno == EACCES { sawEACCES = true }
        if errno != ENOENT && errno != ENOTDIR && errno != EACCES { return }
    }
    errno = sawEACCES ? EACCES : ENOENT
}

let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/// Reads an environment table: {KEY="value"} or {"KEY=value", ...}.
private func readEnvironment(_ a: Args, _ i: Int32) throws -> [String] {
    let lua = a.lua
    try a.table(i, "env")
    var env: [String] = []
    lua.pushNil()
    while lua_next(lua.L, i) != 0 {
        defer { lua.pop() }
        if lua.type(-2) == LUA_TNUMBER, lua.type(-1) == LUA_TSTRING, let s = lua.string(at: -1) {
            env.append(s)
        } else if lua.type(-2) == LUA_TSTRING, lua.type(-1) == LUA_TSTRING || lua.type(-1) == LUA_TNUMBER,
                  let k = lua.string(at: -2), let v = lua.string(at: -1) {
            guard !k.isEmpty, !k.contains("=") else { lua.pop(2); throw a.error(i, "env", "bad variable name '\(k)'") }
            env.append("\(k)=\(v)")
        } else {
            let t = lua.typeName(-1)
            lua.pop(2)
            throw a.error(i, "env", "entries must be KEY=value strings or string values, got \(t)")
        }
    }
    if env.contains(where: { $0.utf8.contains(0) }) { throw a.error(i, "env", "a value contains a NUL byte") }
    return env.sorted()
}

let processFunctions: [(String, LuaFunction)] = [
    ("unshare", { lua in
        let a = Args(lua, "unshare")
        let flags = try a.flags(1, "namespaces", namespaceFlags)
        return mb_unshare(flags) == 0 ? lua.ok() : lua.fail("unshare(\(try a.stringList(1, "namespaces").joined(separator: ",")))")
    }),
    ("clone", { lua in
        let a = Args(lua, "clone")
        let names = try a.optStringList(1, "namespaces")
        if names.contains("time") {
            throw a.error(1, "namespaces", "'time' cannot be entered by clone; use unshare{\"time\"} and then fork")
        }
        let flags = try a.flags(1, "namespaces", namespaceFlags)
        let pid = mb_clone(UInt(UInt32(bitPattern: flags)))
        if pid < 0 { return lua.fail("clone(\(names.joined(separator: ",")))") }
        lua.push(Int(pid))
        return 1
    }),
    ("fork", { lua in
        let pid = mb_fork()
        if pid < 0 { return lua.fail("fork()") }
        lua.push(Int(pid))
        return 1
    }),
    // exec(argv [, env]): argv[1] is looked up in env's PATH when it has no slash.
    ("exec", { lua in
        let a = Args(lua, "exec")
        let argv = try a.stringList(1, "argv")
        guard let file = argv.first else { throw a.error(1, "argv", "must not be empty") }
        var env: [String]
        if lua.isNoneOrNil(2) {
            env = []
            var p = environ
            while let entry = p.pointee { env.append(String(cString: entry)); p += 1 }
        } else {
            env = try readEnvironment(a, 2)
        }
        let path = env.last { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? defaultPath
        fflush(nil)
        execSearching(file, argv, env, path: path)
        return lua.fail("exec(\(file))")
    }),
    ("_exit", { lua in
        let code = try Args(lua, "_exit").optInteger(1, "code") ?? 0
        fflush(nil)
        Glibc._exit(Int32(truncatingIfNeeded: code))
    }),
    // wait(pid [, {nohang=, timeout=}]): the child's end, or false when it has not ended yet.
    ("wait", { lua in
        let a = Args(lua, "wait")
        let pid = try a.int32(1, "pid")
        var nohang = false
        var timeout: Double?
        if try a.optTable(2, "options") {
            try a.options(2, "options", allowed: ["nohang", "timeout"])
            nohang = try a.boolField(2, "nohang") ?? false
            timeout = try a.secondsField(2, "timeout")
        }
        if let t = timeout {
            guard pid > 0 else { throw a.error(2, "timeout", "a timeout needs a single pid") }
            let pidfd = mb_pidfd_open(pid_t(pid))
            if pidfd < 0 { return lua.fail("wait(\(pid))") }
            defer { Glibc.close(pidfd) }
            guard let ready = waitReadable(pidfd, until: monotonicNow() + t) else { return lua.fail("wait(\(pid))") }
            if !ready {
                lua.push(false)
                return 1
            }
            nohang = true
        }
        var status: Int32 = 0
        var usage = rusage()
        var r: pid_t
        repeat { r = wait4(pid_t(pid), &status, nohang ? WNOHANG : 0, &usage) } while r < 0 && errno == EINTR && !signalWasCaught()
        if r < 0 { return lua.fail("wait(\(pid))") }
        if r == 0 {
            lua.push(false)
            return 1
        }
        pushWaitResult(lua, pid: r, status: status, usage: usage)
        return 1
    }),
    ("kill", { lua in
        let a = Args(lua, "kill")
        let pid = try a.int32(1, "pid")
        let sig = lua.isNoneOrNil(2) ? SIGTERM : try a.signal(2, "signal")
        return Glibc.kill(pid_t(pid), sig) == 0 ? lua.ok() : lua.fail("kill(\(pid), \(signalName(sig)))")
    }),
    ("pidfd_open", { lua in
        let pid = try Args(lua, "pidfd_open").int32(1, "pid")
        let fd = mb_pidfd_open(pid_t(pid))
        if fd < 0 { return lua.fail("pidfd_open(\(pid))") }
        FdObject.push(lua, fd)
        return 1
    }),
    ("pidfd_send_signal", { lua in
        let a = Args(lua, "pidfd_send_signal")
        let fd = try a.fd(1, "pidfd")
        let sig = try a.signal(2, "signal")
        return mb_pidfd_send_signal(fd, sig) == 0 ? lua.ok() : lua.fail("pidfd_send_signal(fd \(fd), \(signalName(sig)))")
    }),
    ("getpid", { lua in lua.push(Int(getpid())); return 1 }),
    ("getppid", { lua in lua.push(Int(getppid())); return 1 }),
    ("getuid", { lua in lua.push(Int(getuid())); return 1 }),
    ("geteuid", { lua in lua.push(Int(geteuid())); return 1 }),
    ("getgid", { lua in lua.push(Int(getgid())); return 1 }),
    ("getegid", { lua in lua.push(Int(getegid())); return 1 }),
    ("setsid", { lua in
        let sid = setsid()
        if sid < 0 { return lua.fail("setsid()") }
        lua.push(Int(sid))
        return 1
    }),
    ("setns", { lua in
        let a = Args(lua, "setns")
        // A namespace file's path, or an open fd of one (to come back to a saved namespace).
        let heldFd: Int32? = lua.type(1) == LUA_TSTRING ? nil : try a.fd(1, "path")
        let path = try heldFd.map { "fd \($0)" } ?? a.string(1, "path")
        let kind = try a.optString(2, "kind")
        var nstype: Int32 = 0
        if let kind {
            guard let f = namespaceFlags[kind] else {
                throw a.error(2, "kind", "unknown namespace '\(kind)'; known: \(namespaceFlags.keys.sorted().joined(separator: ", "))")
            }
            nstype = f
        }
        if let heldFd { return mb_setns(heldFd, nstype) == 0 ? lua.ok() : lua.fail("setns(\(path))") }
        let fd = mb_open(path, O_RDONLY | O_CLOEXEC, 0)
        if fd < 0 { return lua.fail("setns(\(path))") }
        defer { Glibc.close(fd) }
        return mb_setns(fd, nstype) == 0 ? lua.ok() : lua.fail("setns(\(path))")
    }),
    ("sethostname", { lua in
        let name = try Args(lua, "sethostname").string(1, "name")
        return mb_sethostname(name, name.utf8.count) == 0 ? lua.ok() : lua.fail("sethostname(\(name))")
    }),
    ("gethostname", { lua in
        var buf = [CChar](repeating: 0, count: 256)
        if Glibc.gethostname(&buf, 255) != 0 { return lua.fail("gethostname()") }
        lua.push(String(cString: buf))
        return 1
    }),
    ("setuid", { lua in
        let id = try Args(lua, "setuid").id(1, "uid")
        return Glibc.setuid(id) == 0 ? lua.ok() : lua.fail("setuid(\(id))")
    }),
    ("setgid", { lua in
        let id = try Args(lua, "setgid").id(1, "gid")
        return Glibc.setgid(id) == 0 ? lua.ok() : lua.fail("setgid(\(id))")
    }),
    ("setgroups", { lua in
        let a = Args(lua, "setgroups")
        try a.table(1, "groups")
        var groups: [gid_t] = []
        for k in 0..<lua.rawLength(1) {
            lua.rawGet(1, k + 1)
            defer { lua.pop() }
            groups.append(try a.id(lua.top, "groups[\(k + 1)]"))
        }
        return Glibc.setgroups(groups.count, groups) == 0 ? lua.ok() : lua.fail("setgroups(\(groups.count) groups)")
    }),
    // id_map(pid, {uid={{inside, outside, count}, ...}, gid={...}, setgroups="deny"|"allow"}):
    // writes a child's user namespace maps. setgroups is denied unless asked otherwise.
    ("id_map", { lua in
        let a = Args(lua, "id_map")
        let pid = try a.int32(1, "pid")
        try a.table(2, "maps")
        try a.options(2, "maps", allowed: ["uid", "gid", "setgroups"])
        func readMap(_ key: String) throws -> String? {
            try a.field(2, key) { t in
                guard lua.type(t) == LUA_TTABLE else { throw a.error(2, key, "list of {inside, outside, count} expected") }
                var lines: [String] = []
                for k in 0..<lua.rawLength(t) {
                    lua.rawGet(t, k + 1)
                    defer { lua.pop() }
                    let e = lua.top
                    guard lua.type(e) == LUA_TTABLE, lua.rawLength(e) == 3 else {
                        throw a.error(2, key, "entry \(k + 1) must be {inside, outside, count}")
                    }
                    var nums: [Int] = []
                    for j in 1...3 {
                        lua.rawGet(e, j)
                        defer { lua.pop() }
                        guard let n = lua.integer(at: -1), n >= 0, n <= Int(UInt32.max) else {
                            throw a.error(2, key, "entry \(k + 1) must hold three non-negative integers")
                        }
                        nums.append(n)
                    }
                    lines.append("\(nums[0]) \(nums[1]) \(nums[2])")
                }
                return lines.joined(separator: "\n") + "\n"
            }
        }
        let uid = try readMap("uid"), gid = try readMap("gid")
        let setgroups = try a.stringField(2, "setgroups") ?? "deny"
        guard setgroups == "deny" || setgroups == "allow" else { throw a.error(2, "setgroups", "must be 'deny' or 'allow'") }
        if gid != nil, let e = writeProcFile("/proc/\(pid)/setgroups", setgroups) {
            return lua.fail("id_map(\(pid), setgroups)", errno: e)
        }
        if let uid, let e = writeProcFile("/proc/\(pid)/uid_map", uid) { return lua.fail("id_map(\(pid), uid_map)", errno: e) }
        if let gid, let e = writeProcFile("/proc/\(pid)/gid_map", gid) { return lua.fail("id_map(\(pid), gid_map)", errno: e) }
        return lua.ok()
    }),
    ("setrlimit", { lua in
        let a = Args(lua, "setrlimit")
        let name = try a.string(1, "resource")
        guard let resource = rlimitResources[name] else {
            throw a.error(1, "resource", "unknown resource '\(name)'; known: \(rlimitResources.keys.sorted().joined(separator: ", "))")
        }
        func limit(_ i: Int32, _ label: String) throws -> rlim_t {
            if lua.type(i) == LUA_TSTRING, try a.string(i, label) == "unlimited" { return rlim_t(bitPattern: -1) }
            let n = try a.integer(i, label)
            guard n >= 0 else { throw a.error(i, label, "must be >= 0 or \"unlimited\"") }
            return rlim_t(n)
        }
        let soft = try limit(2, "soft")
        let hard = lua.isNoneOrNil(3) ? soft : try limit(3, "hard")
        var rl = rlimit(rlim_cur: soft, rlim_max: hard)
        return setrlimit(__rlimit_resource_t(UInt32(resource)), &rl) == 0 ? lua.ok() : lua.fail("setrlimit(\(name))")
    }),
    ("getrlimit", { lua in
        let a = Args(lua, "getrlimit")
        let name = try a.string(1, "resource")
        guard let resource = rlimitResources[name] else { throw a.error(1, "resource", "unknown resource '\(name)'") }
        var rl = rlimit()
        if getrlimit(__rlimit_resource_t(UInt32(resource)), &rl) != 0 { return lua.fail("getrlimit(\(name))") }
        for v in [rl.rlim_cur, rl.rlim_max] {
            if v == rlim_t(bitPattern: -1) { lua.push("unlimited") } else { lua.push(Int(v)) }
        }
        return 2
    }),
    // prctl(option [, value]): the process controls a runtime needs, by name.
    ("prctl", { lua in
        let a = Args(lua, "prctl")
        let option = try a.string(1, "option")
        func call(_ op: Int32, _ arg: UInt = 0, _ arg3: UInt = 0) -> Int32 { mb_prctl(op, arg, arg3, 0, 0) }
        var r: Int32
        switch option {
        case "set_pdeathsig": r = call(PR_SET_PDEATHSIG, UInt(try a.signal(2, "signal")))
        case "get_pdeathsig":
            var sig: Int32 = 0
            r = withUnsafeMutablePointer(to: &sig) { mb_prctl(PR_GET_PDEATHSIG, UInt(bitPattern: $0), 0, 0, 0) }
            if r == 0 { lua.push(Int(sig)); return 1 }
        case "set_no_new_privs": r = call(PR_SET_NO_NEW_PRIVS, 1)
        case "get_no_new_privs": r = call(PR_GET_NO_NEW_PRIVS); if r >= 0 { lua.push(r == 1); return 1 }
        case "set_dumpable": r = call(PR_SET_DUMPABLE, try a.boolean(2, "dumpable") ? 1 : 0)
        case "get_dumpable": r = call(PR_GET_DUMPABLE); if r >= 0 { lua.push(r == 1); return 1 }
        case "set_child_subreaper": r = call(PR_SET_CHILD_SUBREAPER, lua.isNoneOrNil(2) || lua.bool(at: 2) ? 1 : 0)
        case "set_keepcaps": r = call(PR_SET_KEEPCAPS, try a.boolean(2, "keep") ? 1 : 0)
        case "capbset_drop": r = call(PR_CAPBSET_DROP, UInt(try a.capability(2, "capability")))
        case "capbset_read": r = call(PR_CAPBSET_READ, UInt(try a.capability(2, "capability"))); if r >= 0 { lua.push(r == 1); return 1 }
        case "cap_ambient_clear_all": r = call(PR_CAP_AMBIENT, UInt(PR_CAP_AMBIENT_CLEAR_ALL))
        case "set_name":
            let name = try a.string(2, "name")
            r = name.withCString { mb_prctl(PR_SET_NAME, UInt(bitPattern: $0), 0, 0, 0) }
        default:
            throw a.error(1, "option", "unknown prctl option '\(option)'; known: set_pdeathsig, get_pdeathsig, set_no_new_privs, get_no_new_privs, set_dumpable, get_dumpable, set_child_subreaper, set_keepcaps, capbset_drop, capbset_read, cap_ambient_clear_all, set_name")
        }
        return r >= 0 ? lua.ok() : lua.fail("prctl(\(option))")
    }),
    // capget([pid]): {effective={...}, permitted={...}, inheritable={...}} as capability names.
    ("capget", { lua in
        let pid = lua.isNoneOrNil(1) ? 0 : try Args(lua, "capget").int32(1, "pid")
        var sets = [UInt32](repeating: 0, count: 6)
        if mb_capget_all(Int32(pid), &sets) != 0 { return lua.fail("capget(\(pid))") }
        let names = capabilityNumbers.sorted { $0.value < $1.value }
        lua.newTable()
        for (k, key) in ["effective", "permitted", "inheritable"].enumerated() {
            let bits = UInt64(sets[2 * k]) | UInt64(sets[2 * k + 1]) << 32
            lua.set(key) { lua.push(list: names.filter { bits & (1 << UInt64($0.value)) != 0 }.map(\.key)) }
        }
        return 1
    }),
    // capset{effective=, permitted=, inheritable=}: each a list of capability names.
    ("capset", { lua in
        let a = Args(lua, "capset")
        try a.table(1, "sets")
        try a.options(1, "sets", allowed: ["effective", "permitted", "inheritable"])
        var sets = [UInt32](repeating: 0, count: 6)
        for (k, key) in ["effective", "permitted", "inheritable"].enumerated() {
            let names: [String] = try a.field(1, key) { try Args(lua, "capset").stringList($0, key) } ?? []
            var bits: UInt64 = 0
            for n in names { bits |= 1 << UInt64(try a.capabilityNumber(n, 1, key)) }
            sets[2 * k] = UInt32(truncatingIfNeeded: bits)
            sets[2 * k + 1] = UInt32(truncatingIfNeeded: bits >> 32)
        }
        return mb_capset_all(sets) == 0 ? lua.ok() : lua.fail("capset()")
    }),
    // signal(names, "catch"|"ignore"|"default"): caught signals are read with signals_caught().
    ("signal", { lua in
        let a = Args(lua, "signal")
        var sigs: [Int32] = []
        if lua.type(1) == LUA_TTABLE {
            for k in 0..<lua.rawLength(1) {
                lua.rawGet(1, k + 1)
                defer { lua.pop() }
                sigs.append(try a.signal(lua.top, "signals[\(k + 1)]"))
            }
        } else {
            sigs.append(try a.signal(1, "signal"))
        }
        let action = try a.string(2, "action")
        for s in sigs {
            let r: Int32
            switch action {
            case "catch": r = mb_signal_catch(s)
            case "ignore": r = mb_signal_reset(s, 1)
            case "default": r = mb_signal_reset(s, 0)
            default: throw a.error(2, "action", "must be 'catch', 'ignore' or 'default'")
            }
            if r != 0 { return lua.fail("signal(\(signalName(s)))") }
        }
        return lua.ok()
    }),
    // signals_caught(): names of the signals caught since the last call, and clears them.
    ("signals_caught", { lua in
        let bits = mb_signals_caught(1)
        lua.push(list: (1..<64).filter { bits & (1 << UInt64($0)) != 0 }.map { signalName(Int32($0)) })
        return 1
    }),
    ("clock_gettime", { lua in
        let a = Args(lua, "clock_gettime")
        let name = try a.optString(1, "clock") ?? "monotonic"
        let clocks: [String: clockid_t] = [
            "monotonic": CLOCK_MONOTONIC, "realtime": CLOCK_REALTIME, "boottime": CLOCK_BOOTTIME,
            "process_cputime": CLOCK_PROCESS_CPUTIME_ID,
        ]
        guard let id = clocks[name] else { throw a.error(1, "clock", "unknown clock '\(name)'") }
        var ts = timespec()
        clock_gettime(id, &ts)
        lua.push(Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9)
        return 1
    }),
    ("nanosleep", { lua in
        let a = Args(lua, "nanosleep")
        let s = try a.seconds(1, "seconds")
        var ts = timespec(tv_sec: Int(s), tv_nsec: Int((s - s.rounded(.down)) * 1e9))
        var rem = timespec()
        while Glibc.nanosleep(&ts, &rem) != 0 {
            if errno != EINTR || signalWasCaught() { return lua.fail("nanosleep(\(s))") }
            ts = rem
        }
        return lua.ok()
    }),
]

/// Writes `text` to a /proc or /sys file in one write(2), so the kernel's verdict is
/// seen at once. Returns nil or the errno.
func writeProcFile(_ path: String, _ text: String) -> Int32? {
    let fd = mb_open(path, O_WRONLY | O_TRUNC | O_CLOEXEC, 0)
    if fd < 0 { return errno }
    defer { Glibc.close(fd) }
    let n = text.withCString { Glibc.write(fd, $0, strlen($0)) }
    if n < 0 { return errno }
    if n != text.utf8.count { return EIO }
    return nil
}
