import CMoonbox
import Glibc

/// Sockets (socket(2), bind(2), listen(2), accept4(2), connect(2), recvfrom(2), sendto(2),
/// shutdown(2), getsockopt(2), setsockopt(2)): TCP and UDP for the port proxy, and packet
/// sockets (packet(7)) for the userspace link relay. A socket is made in the caller's network
/// namespace; a process that serves another namespace steps into it first (setns).

let ETH_P_ALL: UInt16 = 0x0003
let SOL_PACKET: Int32 = 263, PACKET_VNET_HDR: Int32 = 15, PACKET_IGNORE_OUTGOING: Int32 = 23

/// An IPv4 or IPv6 socket address from text and a port.
enum SocketAddress {
    case v4(sockaddr_in)
    case v6(sockaddr_in6)

    init?(_ text: String, port: Int) {
        guard (0...65535).contains(port) else { return nil }
        if let b = parseIPv4(text) {
            var s = sockaddr_in()
            s.sin_family = sa_family_t(AF_INET)
            s.sin_port = in_port_t(UInt16(port).bigEndian)
            withUnsafeMutableBytes(of: &s.sin_addr) { $0.copyBytes(from: b) }
            self = .v4(s)
        } else if let b = parseIPv6(text) {
            var s = sockaddr_in6()
            s.sin6_family = sa_family_t(AF_INET6)
            s.sin6_port = in_port_t(UInt16(port).bigEndian)
            withUnsafeMutableBytes(of: &s.sin6_addr) { $0.copyBytes(from: b) }
            self = .v6(s)
        } else {
            return nil
        }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch self {
        case .v4(var s):
            return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        case .v6(var s):
            return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
    }

    /// Text and port of a sockaddr_storage the kernel filled.
    static func describe(_ ss: sockaddr_storage) -> (String, Int)? {
        var ss = ss
        switch Int32(ss.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &ss) { raw in
                let s = raw.load(as: sockaddr_in.self)
                let addr = withUnsafeBytes(of: s.sin_addr) { formatIP(AF_INET, ArraySlice($0)) }
                return (addr, Int(UInt16(bigEndian: s.sin_port)))
            }
        case AF_INET6:
            return withUnsafeBytes(of: &ss) { raw in
                let s = raw.load(as: sockaddr_in6.self)
                let addr = withUnsafeBytes(of: s.sin6_addr) { formatIP(AF_INET6, ArraySlice($0)) }
                return (addr, Int(UInt16(bigEndian: s.sin6_port)))
            }
        default:
            return nil
        }
    }
}

private func socketDomain(_ fd: Int32) -> Int32 {
    var domain: Int32 = 0
    var len = socklen_t(MemoryLayout<Int32>.size)
    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 ? domain : -1
}

/// Pushes address and port (or nothing for other families); answers how many values.
private func pushAddress(_ lua: Lua, _ ss: sockaddr_storage) -> Int32 {
    guard let (addr, port) = SocketAddress.describe(ss) else { return 0 }
    lua.push(addr)
    lua.push(port)
    return 2
}

private let socketOptions: [String: (level: Int32, name: Int32, boolean: Bool)] = [
    "reuseaddr": (SOL_SOCKET, SO_REUSEADDR, true),
    "reuseport": (SOL_SOCKET, SO_REUSEPORT, true),
    "broadcast": (SOL_SOCKET, SO_BROADCAST, true),
    "keepalive": (SOL_SOCKET, SO_KEEPALIVE, true),
    "rcvbuf": (SOL_SOCKET, SO_RCVBUF, false),
    "sndbuf": (SOL_SOCKET, SO_SNDBUF, false),
    "nodelay": (Int32(IPPROTO_TCP), TCP_NODELAY, true),
    "v6only": (Int32(IPPROTO_IPV6), IPV6_V6ONLY, true),
    // A packet socket's frames start with a struct virtio_net_hdr (10 bytes): offloaded
    // (GSO, partial checksum) frames pass through intact, and the kernel finishes them on send.
    "packet_vnet_hdr": (SOL_PACKET, PACKET_VNET_HDR, true),
    // A packet socket does not see what its own link sends.
    "packet_ignore_outgoing": (SOL_PACKET, PACKET_IGNORE_OUTGOING, true),
]

/// Calls body with a sockaddr_un for a filesystem socket path; nil when the path does not fit.
private func withUnixAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32? {
    var sun = sockaddr_un()
    sun.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: sun.sun_path)
    guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else { return nil }
    withUnsafeMutableBytes(of: &sun.sun_path) { raw in raw.copyBytes(from: bytes) }
    let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
    return withUnsafePointer(to: &sun) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, len) } }
}

let socketFunctions: [(String, LuaFunction)] = [
    // socket(family, type [, flags]): family "inet", "inet6", "unix" or "packet" (every
    // protocol: ETH_P_ALL); type "stream", "dgram" or "raw"; flags {"nonblock"}. Close-on-exec.
    ("socket", { lua in
        let a = Args(lua, "socket")
        let families: [String: Int32] = ["inet": AF_INET, "inet6": AF_INET6, "unix": AF_UNIX, "packet": AF_PACKET]
        let types: [String: Int32] = ["stream": Int32(SOCK_STREAM.rawValue), "dgram": Int32(SOCK_DGRAM.rawValue), "raw": Int32(SOCK_RAW.rawValue)]
        let familyName = try a.string(1, "family"), typeName = try a.string(2, "type")
        guard let family = families[familyName] else { throw a.error(1, "family", "must be inet, inet6, unix or packet") }
        guard let type = types[typeName] else { throw a.error(2, "type", "must be stream, dgram or raw") }
        let flags = try a.flags(3, "flags", ["nonblock": Int32(SOCK_NONBLOCK.rawValue)])
        let proto = family == AF_PACKET ? Int32(ETH_P_ALL.bigEndian) : 0
        let fd = Glibc.socket(family, type | flags | Int32(SOCK_CLOEXEC.rawValue), proto)
        if fd < 0 { return lua.fail("socket(\(familyName), \(typeName))") }
        FdObject.push(lua, fd)
        return 1
    }),
    // bind(sock, address, port): an IPv4 or IPv6 address and a port (0: any free one); for a
    // packet socket, a link name in this namespace ("eth0"), and no port.
    ("bind", { lua in
        let a = Args(lua, "bind")
        let fd = try a.fd(1, "socket")
        let address = try a.string(2, "address")
        if socketDomain(fd) == AF_PACKET {
            let index = if_nametoindex(address)
            if index == 0 { return lua.fail("bind(\(address))") }
            let r = mb_packet_bind(fd, Int32(index))
            return r == 0 ? lua.ok() : lua.fail("bind(\(address))")
        }
        if socketDomain(fd) == AF_UNIX {
            guard let r = withUnixAddress(address, { Glibc.bind(fd, $0, $1) }) else { throw a.error(2, "address", "a socket path of at most 107 bytes expected") }
            return r == 0 ? lua.ok() : lua.fail("bind(\(address))")
        }
        let port = try a.integer(3, "port")
        guard let sa = SocketAddress(address, port: port) else {
            throw a.error(2, "address", "an IPv4 or IPv6 address and a port 0-65535 expected")
        }
        let r = sa.withSockaddr { Glibc.bind(fd, $0, $1) }
        return r == 0 ? lua.ok() : lua.fail("bind(\(address), \(port))")
    }),
    // listen(sock [, backlog])
    ("listen", { lua in
        let a = Args(lua, "listen")
        let fd = try a.fd(1, "socket")
        let backlog = try a.optInteger(2, "backlog") ?? 128
        guard (0...65535).contains(backlog) else { throw a.error(2, "backlog", "must be 0 to 65535") }
        return Glibc.listen(fd, Int32(backlog)) == 0 ? lua.ok() : lua.fail("listen(fd \(fd))")
    }),
    // accept(sock [, flags]) -> fd, address, port; flags {"nonblock"}. nil, msg, "EAGAIN" on a
    // non-blocking socket with nothing waiting.
    ("accept", { lua in
        let a = Args(lua, "accept")
        let fd = try a.fd(1, "socket")
        let flags = try a.flags(2, "flags", ["nonblock": Int32(SOCK_NONBLOCK.rawValue)])
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        var c: Int32
        repeat {
            c = withUnsafeMutablePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { mb_accept4(fd, $0, &len, flags | Int32(SOCK_CLOEXEC.rawValue)) }
            }
        } while c < 0 && errno == EINTR && !signalWasCaught()
        if c < 0 { return lua.fail("accept(fd \(fd))") }
        FdObject.push(lua, c)
        return 1 + pushAddress(lua, ss)
    }),
    // connect(sock, address, port): true, or nil, msg, "EINPROGRESS" for a non-blocking socket
    // still connecting (poll it for "out", then getsockopt(sock, "error")).
    ("connect", { lua in
        let a = Args(lua, "connect")
        let fd = try a.fd(1, "socket")
        let address = try a.string(2, "address")
        if socketDomain(fd) == AF_UNIX {
            var r: Int32?
            repeat { r = withUnixAddress(address, { Glibc.connect(fd, $0, $1) }) } while r == -1 && errno == EINTR && !signalWasCaught()
            guard let result = r else { throw a.error(2, "address", "a socket path of at most 107 bytes expected") }
            return result == 0 ? lua.ok() : lua.fail("connect(\(address))")
        }
        let port = try a.integer(3, "port")
        guard let sa = SocketAddress(address, port: port) else {
            throw a.error(2, "address", "an IPv4 or IPv6 address and a port 0-65535 expected")
        }
        var r: Int32
        repeat { r = sa.withSockaddr { Glibc.connect(fd, $0, $1) } } while r < 0 && errno == EINTR && !signalWasCaught()
        return r == 0 ? lua.ok() : lua.fail("connect(\(address), \(port))")
    }),
    // getsockname(sock) -> address, port
    ("getsockname", { lua in
        let fd = try Args(lua, "getsockname").fd(1, "socket")
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.getsockname(fd, $0, &len) } }
        if r != 0 { return lua.fail("getsockname(fd \(fd))") }
        let n = pushAddress(lua, ss)
        if n == 0 { lua.pushNil() }
        return max(n, 1)
    }),
    // recvfrom(sock [, size]) -> data, address, port (a datagram and its sender)
    ("recvfrom", { lua in
        let a = Args(lua, "recvfrom")
        let fd = try a.fd(1, "socket")
        let size = try a.optInteger(2, "size") ?? 65536
        guard (1...(1 << 20)).contains(size) else { throw a.error(2, "size", "must be 1 to 1 MiB") }
        var buffer = [UInt8](repeating: 0, count: size)
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        var n: Int
        repeat {
            n = withUnsafeMutablePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.recvfrom(fd, &buffer, size, 0, $0, &len) }
            }
        } while n < 0 && errno == EINTR && !signalWasCaught()
        if n < 0 { return lua.fail("recvfrom(fd \(fd))") }
        buffer.withUnsafeBytes { lua.push(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        return 1 + pushAddress(lua, ss)
    }),
    // sendto(sock, data, address, port) -> bytes sent
    ("sendto", { lua in
        let a = Args(lua, "sendto")
        let fd = try a.fd(1, "socket")
        guard lua.type(2) == LUA_TSTRING else { _ = try a.string(2, "data"); return 0 }
        let address = try a.string(3, "address"), port = try a.integer(4, "port")
        guard let sa = SocketAddress(address, port: port) else {
            throw a.error(3, "address", "an IPv4 or IPv6 address and a port 0-65535 expected")
        }
        let n: Int = lua.withBytes(at: 2) { data in
            sa.withSockaddr { Glibc.sendto(fd, data.baseAddress, data.count, Int32(MSG_NOSIGNAL), $0, $1) }
        } ?? -1
        if n < 0 { return lua.fail("sendto(\(address), \(port))") }
        lua.push(n)
        return 1
    }),
    // shutdown(sock, "read" | "write" | "both")
    ("shutdown", { lua in
        let a = Args(lua, "shutdown")
        let fd = try a.fd(1, "socket")
        let hows: [String: Int32] = ["read": Int32(SHUT_RD), "write": Int32(SHUT_WR), "both": Int32(SHUT_RDWR)]
        let howName = try a.string(2, "how")
        guard let how = hows[howName] else { throw a.error(2, "how", "must be read, write or both") }
        return Glibc.shutdown(fd, how) == 0 ? lua.ok() : lua.fail("shutdown(fd \(fd), \(howName))")
    }),
    // setsockopt(sock, option, value): reuseaddr, reuseport, broadcast, keepalive, nodelay,
    // v6only, packet_vnet_hdr, packet_ignore_outgoing (booleans); rcvbuf, sndbuf (bytes).
    ("setsockopt", { lua in
        let a = Args(lua, "setsockopt")
        let fd = try a.fd(1, "socket")
        let name = try a.string(2, "option")
        guard let o = socketOptions[name] else {
            throw a.error(2, "option", "unknown; known: \(socketOptions.keys.sorted().joined(separator: ", "))")
        }
        var value: Int32
        if o.boolean {
            value = try a.boolean(3, "value") ? 1 : 0
        } else {
            let n = try a.integer(3, "value")
            guard (0...Int(Int32.max)).contains(n) else { throw a.error(3, "value", "must be 0 to 2^31-1") }
            value = Int32(n)
        }
        let r = setsockopt(fd, o.level, o.name, &value, socklen_t(MemoryLayout<Int32>.size))
        return r == 0 ? lua.ok() : lua.fail("setsockopt(\(name))")
    }),
    // getsockopt(sock, "error"): true, or nil, msg, ERRNO for the socket's pending error (a
    // non-blocking connect's outcome). getsockopt(sock, "rcvbuf" | "sndbuf") -> bytes.
    ("getsockopt", { lua in
        let a = Args(lua, "getsockopt")
        let fd = try a.fd(1, "socket")
        let name = try a.string(2, "option")
        let known: [String: Int32] = ["error": SO_ERROR, "rcvbuf": SO_RCVBUF, "sndbuf": SO_SNDBUF]
        guard let opt = known[name] else { throw a.error(2, "option", "must be error, rcvbuf or sndbuf") }
        var value: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, opt, &value, &len) != 0 { return lua.fail("getsockopt(\(name))") }
        if name == "error" { return value == 0 ? lua.ok() : lua.fail("connect", errno: value) }
        lua.push(Int(value))
        return 1
    }),
]
