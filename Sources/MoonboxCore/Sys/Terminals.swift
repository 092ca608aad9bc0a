import CMoonbox
import Glibc

/// Terminals: pty(7), termios(3), TIOCSCTTY, and fds passed over unix sockets.
let terminalFunctions: [(String, LuaFunction)] = [
    // openpty([ptmx]): master fd, slave fd, slave path; ptmx picks the devpts instance.
    ("openpty", { lua in
        let ptmx = try Args(lua, "openpty").optString(1, "ptmx")
        var master: Int32 = -1, slave: Int32 = -1
        var name = [CChar](repeating: 0, count: 128)
        if mb_openpty(ptmx, &master, &slave, &name, name.count) != 0 { return lua.fail("openpty(\(ptmx ?? "/dev/ptmx"))") }
        FdObject.push(lua, master)
        FdObject.push(lua, slave)
        lua.push(String(cString: name))
        return 3
    }),
    // socketpair(): two connected unix stream sockets (close-on-exec).
    ("socketpair", { lua in
        var fds: [Int32] = [0, 0]
        if socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) != 0 { return lua.fail("socketpair()") }
        FdObject.push(lua, fds[0])
        FdObject.push(lua, fds[1])
        return 2
    }),
    // send_fd(sock, fd) and recv_fd(sock): pass an open fd to another process (SCM_RIGHTS).
    ("send_fd", { lua in
        let a = Args(lua, "send_fd")
        let sock = try a.fd(1, "socket"), fd = try a.fd(2, "fd")
        return mb_send_fd(sock, fd) == 0 ? lua.ok() : lua.fail("send_fd(fd \(fd))")
    }),
    ("recv_fd", { lua in
        let sock = try Args(lua, "recv_fd").fd(1, "socket")
        let fd = mb_recv_fd(sock)
        if fd < 0 { return lua.fail("recv_fd(fd \(sock))") }
        FdObject.push(lua, fd)
        return 1
    }),
    // tiocsctty(fd): make the terminal on fd the controlling terminal of this session.
    ("tiocsctty", { lua in
        let fd = try Args(lua, "tiocsctty").fd(1, "fd")
        return mb_ioctl_int(fd, UInt(mb_TIOCSCTTY()), 0) == 0 ? lua.ok() : lua.fail("ioctl(fd \(fd), TIOCSCTTY)")
    }),
    // tcgetattr(fd): the terminal's mode as an opaque string, for tcsetattr.
    ("tcgetattr", { lua in
        let fd = try Args(lua, "tcgetattr").fd(1, "fd")
        var buf = [UInt8](repeating: 0, count: mb_termios_size())
        if mb_tcgetattr(fd, &buf) != 0 { return lua.fail("tcgetattr(fd \(fd))") }
        buf.withUnsafeBytes { lua.push(bytes: $0) }
        return 1
    }),
    // tcsetattr(fd, mode [, "raw"]): restore a saved mode, or set its raw variant.
    ("tcsetattr", { lua in
        let a = Args(lua, "tcsetattr")
        let fd = try a.fd(1, "fd")
        guard lua.type(2) == LUA_TSTRING else { _ = try a.string(2, "mode"); return 0 }
        var buf: [UInt8] = lua.withBytes(at: 2) { Array($0) } ?? []
        guard buf.count == mb_termios_size() else { throw a.error(2, "mode", "not a mode from tcgetattr") }
        if let how = try a.optString(3, "how") {
            guard how == "raw" else { throw a.error(3, "how", "only \"raw\" is known") }
            mb_cfmakeraw(&buf)
        }
        return mb_tcsetattr(fd, buf) == 0 ? lua.ok() : lua.fail("tcsetattr(fd \(fd))")
    }),
    // winsize(fd [, rows, cols]): read, or set, a terminal's size.
    ("winsize", { lua in
        let a = Args(lua, "winsize")
        let fd = try a.fd(1, "fd")
        if !lua.isNoneOrNil(2) {
            let rows = try a.integer(2, "rows"), cols = try a.integer(3, "cols")
            guard (0...65535).contains(rows), (0...65535).contains(cols) else { throw a.error(2, "rows", "must be 0 to 65535") }
            return mb_tty_set_winsize(fd, UInt16(rows), UInt16(cols)) == 0 ? lua.ok() : lua.fail("ioctl(fd \(fd), TIOCSWINSZ)")
        }
        var rows: UInt16 = 0, cols: UInt16 = 0
        if mb_tty_get_winsize(fd, &rows, &cols) != 0 { return lua.fail("ioctl(fd \(fd), TIOCGWINSZ)") }
        lua.push(Int(rows))
        lua.push(Int(cols))
        return 2
    }),
]
