import CMoonbox
import Glibc

/// File descriptors: the `moonbox.fd` userdata (closed by __gc and __close), pipes,
/// reads and writes, and waiting on several fds with a timeout through poll(2).
enum FdObject {
    static let metatable = "moonbox.fd"

    /// Pushes a new fd object that owns `fd`.
    static func push(_ lua: Lua, _ fd: Int32) {
        let box = mb_lua_newuserdata(lua.L, MemoryLayout<Int32>.size)!
        box.storeBytes(of: fd, as: Int32.self)
        if mb_luaL_getmetatable(lua.L, metatable) != LUA_TTABLE {
            lua.pop()
            createMetatable(lua)
        }
        lua_setmetatable(lua.L, -2)
    }

    /// The fd slot of the fd object at `i`, or nil when `i` holds something else.
    static func slot(_ lua: Lua, _ i: Int32) -> UnsafeMutableRawPointer? {
        luaL_testudata(lua.L, i, metatable)
    }

    private static func createMetatable(_ lua: Lua) {
        luaL_newmetatable(lua.L, metatable)
        let release: LuaFunction = { lua in
            if let p = slot(lua, 1) {
                let fd = p.load(as: Int32.self)
                if fd >= 0 { Glibc.close(fd) }
                p.storeBytes(of: -1, as: Int32.self)
            }
            return 0
        }
        lua.set("__gc") { lua.push(function: release, name: "fd.__gc") }
        lua.set("__close") { lua.push(function: release, name: "fd.__close") }
        lua.set("__name", metatable)
        lua.set("__tostring") {
            lua.push(function: { lua in
                let fd = slot(lua, 1)?.load(as: Int32.self) ?? -1
                lua.push(fd >= 0 ? "fd(\(fd))" : "fd(closed)")
                return 1
            }, name: "fd.__tostring")
        }
        lua.set("__index") {
            lua.push(module: [
                ("fileno", { lua in
                    lua.push(try Args(lua, "fd:fileno").fd(1, "self"))
                    return 1
                }),
                ("close", closeFunction),
                ("read", readFunction),
                ("write", writeFunction),
            ])
        }
    }

    static let closeFunction: LuaFunction = { lua in
        let a = Args(lua, "close")
        if let p = slot(lua, 1) {
            let fd = p.load(as: Int32.self)
            guard fd >= 0 else { return lua.ok() }  // closing twice is harmless
            p.storeBytes(of: -1, as: Int32.self)
            return Glibc.close(fd) == 0 ? lua.ok() : lua.fail("close(\(fd))")
        }
        let fd = try a.fd(1, "fd")
        return Glibc.close(fd) == 0 ? lua.ok() : lua.fail("close(\(fd))")
    }

    static let readFunction: LuaFunction = { lua in
        let a = Args(lua, "read")
        let fd = try a.fd(1, "fd")
        let size = try a.optInteger(2, "size") ?? 65536
        guard size >= 0, size <= 1 << 30 else { throw a.error(2, "size", "must be between 0 and 1 GiB") }
        var buffer = [UInt8](repeating: 0, count: max(size, 1))
        var n: Int
        repeat { n = Glibc.read(fd, &buffer, size) } while n < 0 && errno == EINTR && !signalWasCaught()
        if n < 0 { return lua.fail("read(fd \(fd))") }
        buffer.withUnsafeBytes { lua.push(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        return 1
    }

    static let writeFunction: LuaFunction = { lua in
        let a = Args(lua, "write")
        let fd = try a.fd(1, "fd")
        guard lua.type(2) == LUA_TSTRING else { _ = try a.string(2, "data"); return 0 }
        let result: Int = lua.withBytes(at: 2) { data in
            var done = 0
            while done < data.count {
                let n = Glibc.write(fd, data.baseAddress! + done, data.count - done)
                if n < 0 {
                    if errno == EINTR && !signalWasCaught() { continue }
                    return done > 0 ? done : -1
                }
                done += n
            }
            return done
        } ?? -1
        if result < 0 { return lua.fail("write(fd \(fd))") }
        lua.push(result)
        return 1
    }
}

extension Args {
    /// An fd argument: an fd object or a plain integer.
    public func fd(_ i: Int32, _ name: String) throws -> Int32 {
        if let p = FdObject.slot(lua, i) {
            let fd = p.load(as: Int32.self)
            guard fd >= 0 else { throw error(i, name, "fd is closed") }
            return fd
        }
        guard lua.type(i) == LUA_TNUMBER, let n = lua.integer(at: i) else {
            throw error(i, name, "fd or integer expected, got \(lua.type(i) == LUA_TNONE ? "no value" : lua.typeName(i))")
        }
        guard n >= 0, n <= Int(Int32.max) else { throw error(i, name, "fd \(n) out of range") }
        return Int32(n)
    }
}

let openFlags: [String: Int32] = [
    "rdonly": O_RDONLY, "wronly": O_WRONLY, "rdwr": O_RDWR, "creat": O_CREAT, "excl": O_EXCL,
    "trunc": O_TRUNC, "append": O_APPEND, "nonblock": O_NONBLOCK, "directory": O_DIRECTORY,
    "nofollow": O_NOFOLLOW, "noctty": O_NOCTTY, "path": 0o10000000, "sync": O_SYNC,
    "inherit": 0,  // without it the fd is close-on-exec
]

let fdFunctions: [(String, LuaFunction)] = [
    ("pipe", { lua in
        var fds: [Int32] = [0, 0]
        guard mb_pipe2(&fds, O_CLOEXEC) == 0 else { return lua.fail("pipe()") }
        FdObject.push(lua, fds[0])
        FdObject.push(lua, fds[1])
        return 2
    }),
    ("open", { lua in
        let a = Args(lua, "open")
        let path = try a.string(1, "path")
        var flags = try a.flags(2, "flags", openFlags)
        let mode = try a.mode(3, "mode", default: 0o644)
        let names = lua.isNoneOrNil(2) ? [] : (lua.type(2) == LUA_TSTRING ? [try a.string(2, "flags")] : try a.stringList(2, "flags"))
        if !names.contains("inherit") { flags |= O_CLOEXEC }
        let fd = mb_open(path, flags, mode)
        if fd < 0 { return lua.fail("open(\(path))") }
        FdObject.push(lua, fd)
        return 1
    }),
    ("read", FdObject.readFunction),
    ("write", FdObject.writeFunction),
    ("close", FdObject.closeFunction),
    ("dup2", { lua in
        let a = Args(lua, "dup2")
        let old = try a.fd(1, "oldfd"), new = try a.fd(2, "newfd")
        let r = Glibc.dup2(old, new)
        if r < 0 { return lua.fail("dup2(\(old), \(new))") }
        lua.push(r)
        return 1
    }),
    ("close_range", { lua in
        let a = Args(lua, "close_range")
        let first = try a.integer(1, "first")
        let last = try a.optInteger(2, "last") ?? Int(UInt32.max)
        guard first >= 0, last >= first else { throw a.error(1, "first", "range must be 0 <= first <= last") }
        // {"cloexec"}: mark them close-on-exec instead of closing them now.
        let flags = try a.flags(3, "flags", ["cloexec": Int32(4)])
        if mb_close_range(UInt32(first), UInt32(min(last, Int(UInt32.max))), flags) != 0 {
            return lua.fail("close_range(\(first))")
        }
        return lua.ok()
    }),
    // copy_file_range(src, dst): copies all of src (an fd, read from its start, or a path) into
    // dst (an fd, or a path created 0644 or truncated) with copy_file_range(2), in the kernel
    // (a reflink where the filesystem can), or read and write where it cannot. Returns the bytes.
    ("copy_file_range", { lua in
        let a = Args(lua, "copy_file_range")
        let src = lua.type(1) == LUA_TSTRING ? mb_open(try a.string(1, "src"), O_RDONLY | O_CLOEXEC, 0) : try a.fd(1, "src")
        if src < 0 { return lua.fail("copy_file_range(\(try a.string(1, "src")))") }
        defer { if lua.type(1) == LUA_TSTRING { Glibc.close(src) } }
        let dst = lua.type(2) == LUA_TSTRING ? mb_open(try a.string(2, "dst"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) : try a.fd(2, "dst")
        if dst < 0 { return lua.fail("copy_file_range(\(try a.string(2, "dst")))") }
        defer { if lua.type(2) == LUA_TSTRING { Glibc.close(dst) } }
        var total = 0
        var inOffset: Int64 = 0
        var useKernel = true
        var buffer: [UInt8] = []
        while true {
            var n: Int
            if useKernel {
                n = mb_copy_file_range(src, &inOffset, dst, 1 << 30)
                if n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
                    useKernel = false
                    continue
                }
            } else {
                if buffer.isEmpty { buffer = [UInt8](repeating: 0, count: 1 << 20) }
                n = pread(src, &buffer, buffer.count, off_t(inOffset))
                if n > 0 {
                    var done = 0
                    while done < n {
                        let w = buffer.withUnsafeBytes { Glibc.write(dst, $0.baseAddress! + done, n - done) }
                        if w < 0 { if errno == EINTR { continue }; return lua.fail("copy_file_range(write)") }
                        done += w
                    }
                    inOffset += Int64(n)
                }
            }
            if n < 0 { if errno == EINTR && !signalWasCaught() { continue }; return lua.fail("copy_file_range()") }
            if n == 0 { break }
            total += n
        }
        lua.push(total)
        return 1
    }),
    // fsync(fd): the file's data and metadata reach the disk (a folder's fd: its entries).
    ("fsync", { lua in
        let fd = try Args(lua, "fsync").fd(1, "fd")
        return Glibc.fsync(fd) == 0 ? lua.ok() : lua.fail("fsync(fd \(fd))")
    }),
    // flock(fd, "ex" | "sh" | "un" [, {"nb"}]): an advisory lock on the whole file, released
    // with the fd. "nb": nil, msg, "EWOULDBLOCK" instead of waiting.
    ("flock", { lua in
        let a = Args(lua, "flock")
        let fd = try a.fd(1, "fd")
        let kinds: [String: Int32] = ["ex": LOCK_EX, "sh": LOCK_SH, "un": LOCK_UN]
        let kindName = try a.string(2, "operation")
        guard let kind = kinds[kindName] else { throw a.error(2, "operation", "must be ex, sh or un") }
        let flags = try a.flags(3, "flags", ["nb": LOCK_NB])
        var r: Int32
        repeat { r = mb_flock(fd, kind | flags) } while r < 0 && errno == EINTR && !signalWasCaught()
        return r == 0 ? lua.ok() : lua.fail("flock(fd \(fd), \(kindName))")
    }),
    ("isatty", { lua in
        let fd = try Args(lua, "isatty").fd(1, "fd")
        lua.push(Glibc.isatty(fd) == 1)
        return 1
    }),
    ("set_cloexec", { lua in
        let a = Args(lua, "set_cloexec")
        let fd = try a.fd(1, "fd")
        let on = lua.isNoneOrNil(2) ? true : try a.boolean(2, "on")
        let flags = fcntl(fd, F_GETFD)
        if flags < 0 || fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC) < 0 {
            return lua.fail("fcntl(fd \(fd), F_SETFD)")
        }
        return lua.ok()
    }),
    ("set_nonblock", { lua in
        let a = Args(lua, "set_nonblock")
        let fd = try a.fd(1, "fd")
        let on = lua.isNoneOrNil(2) ? true : try a.boolean(2, "on")
        let flags = fcntl(fd, F_GETFL)
        if flags < 0 || fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) < 0 {
            return lua.fail("fcntl(fd \(fd), F_SETFL)")
        }
        return lua.ok()
    }),
    // poll(fds, timeout): waits until one of the fds is readable (or hung up, or a
    // pidfd's process ended) or timeout seconds pass (to the nanosecond: ppoll). An entry may
    // be {fd, "out"} (writable) or {fd, "inout"}. Returns the ready entries, in order.
    ("poll", { lua in
        let a = Args(lua, "poll")
        try a.table(1, "fds")
        let timeout = lua.isNoneOrNil(2) ? nil : try a.seconds(2, "timeout")
        let count = lua.rawLength(1)
        var pfds: [pollfd] = []
        let wants: [String: Int16] = ["in": Int16(POLLIN), "out": Int16(POLLOUT), "inout": Int16(POLLIN | POLLOUT)]
        for k in 0..<count {
            lua.rawGet(1, k + 1)
            defer { lua.pop() }
            let entry = lua.top
            var events = Int16(POLLIN)
            var fdIndex = entry
            if lua.type(entry) == LUA_TTABLE && FdObject.slot(lua, entry) == nil {
                lua.rawGet(entry, 2)
                let want = lua.type(-1) == LUA_TSTRING ? lua.string(at: -1) : nil
                lua.pop()
                guard let want, let e = wants[want] else { throw a.error(1, "fds", "entry \(k + 1): {fd, \"in\"|\"out\"|\"inout\"} expected") }
                events = e
                lua.rawGet(entry, 1)
                fdIndex = lua.top
            }
            let fd = try Args(lua, "poll").fd(fdIndex, "fds[\(k + 1)]")
            if fdIndex != entry { lua.pop() }
            pfds.append(pollfd(fd: fd, events: events, revents: 0))
        }
        let deadline = timeout.map { monotonicNow() + max($0, 0) }
        var r: Int32
        repeat {
            let ns = deadline.map { Int64(max(0, min(($0 - monotonicNow()) * 1e9, 9e17))) } ?? -1
            r = mb_ppoll(&pfds, UInt(pfds.count), ns)
        } while r < 0 && errno == EINTR && !signalWasCaught()
        if r < 0 { return lua.fail("poll(\(pfds.count) fds)") }
        lua.newTable()
        var n = 0
        for (k, p) in pfds.enumerated() where p.revents != 0 {
            n += 1
            lua.append(n) { lua.rawGet(1, k + 1) }
        }
        return 1
    }),
]

/// Seconds on the monotonic clock.
func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
