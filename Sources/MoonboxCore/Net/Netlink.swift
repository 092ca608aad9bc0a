import CMoonbox
import Glibc

/// rtnetlink(7): requests built attribute by attribute, sent on a NETLINK_ROUTE socket opened in
/// a chosen network namespace, and every answer's NLMSG_ERROR ack turned into an errno.

let NLM_F_REQUEST: UInt16 = 0x1, NLM_F_MULTI: UInt16 = 0x2, NLM_F_ACK: UInt16 = 0x4
let NLM_F_REPLACE: UInt16 = 0x100, NLM_F_EXCL: UInt16 = 0x200, NLM_F_CREATE: UInt16 = 0x400, NLM_F_DUMP: UInt16 = 0x300
let NLMSG_ERROR: UInt16 = 2, NLMSG_DONE: UInt16 = 3

/// A netlink message under construction: the header, a fixed family header, then attributes.
struct NetlinkMessage {
    private(set) var bytes: [UInt8]

    init(type: UInt16, flags: UInt16) {
        bytes = [UInt8](repeating: 0, count: 16)
        put16(type, at: 4)
        put16(flags, at: 6)
    }

    mutating func put16(_ v: UInt16, at i: Int) { bytes[i] = UInt8(v & 0xff); bytes[i + 1] = UInt8(v >> 8) }
    mutating func put32(_ v: UInt32, at i: Int) { for k in 0..<4 { bytes[i + k] = UInt8((v >> (8 * UInt32(k))) & 0xff) } }

    /// Raw bytes (a family header, a C struct), padded to 4.
    mutating func append(_ raw: [UInt8]) {
        bytes += raw
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    mutating func attr(_ type: UInt16, _ payload: [UInt8]) {
        let len = 4 + payload.count
        bytes += le16(UInt16(len)) + le16(type) + payload
        while bytes.count % 4 != 0 { bytes.append(0) }
    }
    mutating func attr(_ type: UInt16, string: String) { attr(type, Array(string.utf8) + [0]) }
    mutating func attr(_ type: UInt16, u32: UInt32) { attr(type, le32(u32)) }
    mutating func attr(_ type: UInt16, u16: UInt16) { attr(type, le16(u16)) }
    mutating func attr(_ type: UInt16, u8: UInt8) { attr(type, [u8]) }

    /// A nested attribute: what `body` appends goes inside it.
    mutating func nested(_ type: UInt16, _ body: (inout NetlinkMessage) -> Void) {
        let start = bytes.count
        bytes += [0, 0, 0, 0]
        body(&self)
        put16(UInt16(bytes.count - start), at: start)
        put16(type, at: start + 2)  // as iproute2 sends it: no NLA_F_NESTED flag
    }

    /// The finished message with its length and sequence number.
    func finished(seq: UInt32) -> [UInt8] {
        var m = self
        m.put32(UInt32(bytes.count), at: 0)
        m.put32(seq, at: 8)
        return m.bytes
    }
}

func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xff) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xff) } }
func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }

func read16(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt16 { UInt16(b[b.startIndex + i]) | UInt16(b[b.startIndex + i + 1]) << 8 }
func read32(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt32 {
    (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[b.startIndex + i + $1]) << (8 * UInt32($1)) }
}
func read64(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt64 {
    (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[b.startIndex + i + $1]) << (8 * UInt64($1)) }
}

/// The attributes in `b` from `offset` on, by type (nested flags cleared); the last one of a
/// type wins, except that `all` gathers repeats.
func parseAttributes(_ b: ArraySlice<UInt8>, from offset: Int = 0) -> [UInt16: ArraySlice<UInt8>] {
    var out: [UInt16: ArraySlice<UInt8>] = [:]
    var i = offset
    while i + 4 <= b.count {
        let len = Int(read16(b, i))
        let type = read16(b, i + 2) & 0x3fff
        guard len >= 4, i + len <= b.count else { break }
        out[type] = b[(b.startIndex + i + 4)..<(b.startIndex + i + len)]
        i += (len + 3) & ~3
    }
    return out
}

enum NetlinkError: Error {
    case system(String, Int32)
}

/// A NETLINK_ROUTE socket, opened in a network namespace (the caller's, or the one an fd names).
final class NetlinkSocket {
    private(set) var fd: Int32
    private var seq: UInt32 = 1

    /// Opens the socket; with `netns`, in that namespace: a socket keeps the namespace it was made
    /// in, so this process steps in for the socket(2) call and back (moonbox is single-threaded).
    init(netns: Int32?) throws {
        var home: Int32 = -1
        if let netns {
            home = mb_open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC, 0)
            if home < 0 { throw NetlinkError.system("open(/proc/self/ns/net)", errno) }
            if mb_setns(netns, 0x4000_0000) != 0 {
                let e = errno
                Glibc.close(home)
                throw NetlinkError.system("setns(net)", e)
            }
        }
        fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0 /* NETLINK_ROUTE */)
        let e = errno
        if home >= 0 {
            let back = mb_setns(home, 0x4000_0000)
            Glibc.close(home)
            if back != 0 { fatalError("moonbox: cannot return to its own network namespace") }
        }
        if fd < 0 { throw NetlinkError.system("socket(AF_NETLINK)", e) }
        // No bind(2): the kernel binds a netlink socket to a free port id on its first send.
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    private func send(_ msg: NetlinkMessage) throws -> UInt32 {
        seq &+= 1
        let bytes = msg.finished(seq: seq)
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
        if n != bytes.count { throw NetlinkError.system("send(netlink)", n < 0 ? errno : EIO) }
        return seq
    }

    /// Reads answers to `seq` until its ack (or NLMSG_DONE for a dump), handing every data message
    /// (type, payload) to `each`. Returns 0, or the errno the kernel's ack carried.
    private func receive(_ seq: UInt32, _ each: (UInt16, ArraySlice<UInt8>) throws -> Void) throws -> Int32 {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw NetlinkError.system("recv(netlink)", errno)
            }
            var i = 0
            while i + 16 <= n {
                let all = buffer[0..<n]
                let len = Int(read32(all, i))
                let type = read16(all, i + 4)
                let mseq = read32(all, i + 8)
                guard len >= 16, i + len <= n else { break }
                let payload = buffer[(i + 16)..<(i + len)]
                if mseq == seq {
                    if type == NLMSG_ERROR {
                        let code = Int32(bitPattern: read32(payload, 0))
                        return -code
                    }
                    if type == NLMSG_DONE { return 0 }
                    try each(type, payload)
                }
                i += (len + 3) & ~3
            }
        }
    }

    /// A request acknowledged by the kernel: nil, or its errno.
    func request(_ msg: NetlinkMessage) throws -> Int32? {
        let s = try send(msg)
        let e = try receive(s) { _, _ in }
        return e == 0 ? nil : e
    }

    /// A dump: every answer's payload to `each`; nil, or the errno.
    func dump(_ msg: NetlinkMessage, _ each: (ArraySlice<UInt8>) throws -> Void) throws -> Int32? {
        let s = try send(msg)
        let e = try receive(s) { _, payload in try each(payload) }
        return e == 0 ? nil : e
    }

    /// The index of the link called `name` in this socket's namespace; 0 when there is none.
    func index(of name: String) throws -> Int32 {
        var m = NetlinkMessage(type: 18 /* RTM_GETLINK */, flags: NLM_F_REQUEST | NLM_F_ACK)
        m.append([UInt8](repeating: 0, count: 16))  // ifinfomsg
        m.attr(3 /* IFLA_IFNAME */, string: name)
        var index: Int32 = 0
        let s = try send(m)
        let e = try receive(s) { type, payload in
            if type == 16 /* RTM_NEWLINK */ { index = Int32(bitPattern: read32(payload, 4)) }
        }
        if e != 0 && e != ENODEV { throw NetlinkError.system("link \(name)", e) }
        return index
    }
}
