import CMoonbox
import Glibc

/// Addresses (rtnetlink RTM_*ADDR), IPv4 and IPv6.

let RTM_NEWADDR: UInt16 = 20, RTM_DELADDR: UInt16 = 21, RTM_GETADDR: UInt16 = 22
let IFA_ADDRESS: UInt16 = 1, IFA_LOCAL: UInt16 = 2, IFA_FLAGS: UInt16 = 8
let IFA_F_NODAD: UInt32 = 0x02

func parseIPv4(_ s: String) -> [UInt8]? {
    var a = in_addr()
    return inet_pton(AF_INET, s, &a) == 1 ? withUnsafeBytes(of: a) { Array($0) } : nil
}

func parseIPv6(_ s: String) -> [UInt8]? {
    var a = in6_addr()
    return inet_pton(AF_INET6, s, &a) == 1 ? withUnsafeBytes(of: a) { Array($0) } : nil
}

/// "10.0.0.1/24" or "fd00::1/64" (or a bare address: /32, /128) as family, bytes and prefix.
func parseCIDR(_ s: String) -> (family: Int32, bytes: [UInt8], prefix: Int)? {
    let parts = s.split(separator: "/", maxSplits: 1).map(String.init)
    guard let first = parts.first else { return nil }
    if let b = parseIPv4(first) {
        let p = parts.count == 2 ? Int(parts[1]) : 32
        guard let p, (0...32).contains(p) else { return nil }
        return (AF_INET, b, p)
    }
    if let b = parseIPv6(first) {
        let p = parts.count == 2 ? Int(parts[1]) : 128
        guard let p, (0...128).contains(p) else { return nil }
        return (AF_INET6, b, p)
    }
    return nil
}

func formatIP(_ family: Int32, _ b: ArraySlice<UInt8>) -> String {
    var buf = [CChar](repeating: 0, count: 64)
    let bytes = Array(b)
    _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) }
    return String(cString: buf)
}

private func addressMessage(_ type: UInt16, _ flags: UInt16, _ index: Int32, _ cidr: (family: Int32, bytes: [UInt8], prefix: Int), nodad: Bool) -> NetlinkMessage {
    var m = NetlinkMessage(type: type, flags: flags)
    m.append([UInt8(cidr.family), UInt8(cidr.prefix), nodad ? UInt8(IFA_F_NODAD) : 0, 0] + le32(UInt32(bitPattern: index)))
    if cidr.family == AF_INET { m.attr(IFA_LOCAL, cidr.bytes) }
    m.attr(IFA_ADDRESS, cidr.bytes)
    if nodad { m.attr(IFA_FLAGS, u32: IFA_F_NODAD) }
    return m
}

let addressMethods: [(String, LuaFunction)] = [
    // nl:addr_add(link, "10.0.0.2/24" [, {nodad = true}]): nodad skips IPv6's duplicate address
    // detection, so the address works at once.
    ("addr_add", { lua in
        let a = Args(lua, "netlink:addr_add")
        let nl = try NetlinkObject.get(lua, 1, "netlink:addr_add")
        let link = try a.string(2, "link"), text = try a.string(3, "address")
        guard let cidr = parseCIDR(text) else { throw a.error(3, "address", "an address like 10.0.0.2/24 or fd00::2/64 expected") }
        var nodad = false
        if try a.optTable(4, "options") {
            try a.options(4, "options", allowed: ["nodad"])
            nodad = try a.boolField(4, "nodad") ?? false
        }
        return try netlinkCall(lua, "addr_add(\(link), \(text))") {
            let i = try nl.index(of: link)
            if i == 0 { return ENODEV }
            return try nl.request(addressMessage(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, i, cidr, nodad: nodad))
        }
    }),
    // nl:addr_del(link, "10.0.0.2/24")
    ("addr_del", { lua in
        let a = Args(lua, "netlink:addr_del")
        let nl = try NetlinkObject.get(lua, 1, "netlink:addr_del")
        let link = try a.string(2, "link"), text = try a.string(3, "address")
        guard let cidr = parseCIDR(text) else { throw a.error(3, "address", "an address like 10.0.0.2/24 or fd00::2/64 expected") }
        return try netlinkCall(lua, "addr_del(\(link), \(text))") {
            let i = try nl.index(of: link)
            if i == 0 { return ENODEV }
            return try nl.request(addressMessage(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, i, cidr, nodad: false))
        }
    }),
    // nl:addrs() -> {{index=, family="inet"|"inet6", address=, prefix=}, ...}
    ("addrs", { lua in
        let nl = try NetlinkObject.get(lua, 1, "netlink:addrs")
        var list: [(Int32, Int32, String, Int)] = []
        do {
            var m = NetlinkMessage(type: RTM_GETADDR, flags: NLM_F_REQUEST | NLM_F_DUMP)
            m.append([0, 0, 0, 0] + le32(0))
            if let e = try nl.dump(m, { payload in
                let family = Int32(payload[payload.startIndex]), prefix = Int(payload[payload.startIndex + 1])
                let index = Int32(bitPattern: read32(payload, 4))
                let attrs = parseAttributes(payload, from: 8)
                if let addr = attrs[IFA_LOCAL] ?? attrs[IFA_ADDRESS] { list.append((index, family, formatIP(family, addr), prefix)) }
            }) { return lua.fail("addrs()", errno: e) }
        } catch let NetlinkError.system(step, e) {
            return lua.fail(message: "addrs(): \(step): \(errnoText(e))", errnoName: errnoName(e))
        }
        lua.newTable(array: Int32(list.count))
        for (k, x) in list.enumerated() {
            lua.append(k + 1) {
                lua.newTable()
                lua.set("index", Int(x.0))
                lua.set("family", x.1 == AF_INET ? "inet" : "inet6")
                lua.set("address", x.2)
                lua.set("prefix", x.3)
            }
        }
        return 1
    }),
]
