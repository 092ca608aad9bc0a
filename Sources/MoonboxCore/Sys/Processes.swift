import CMoonbox
import Glibc

/// Processes: fork, exec, wait, kill, pidfds and process ids.

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
]
