import CMoonbox
import Glibc

/// Links (rtnetlink RTM_*LINK): veth pairs with the peer made straight in another namespace,
/// bridges, macvlan, vxlan, dummy; up and down, master, MTU, name, MAC, namespace; and the list
/// of links with their counters (IFLA_STATS64).

let RTM_NEWLINK: UInt16 = 16, RTM_DELLINK: UInt16 = 17, RTM_GETLINK: UInt16 = 18
let IFLA_ADDRESS: UInt16 = 1, IFLA_IFNAME: UInt16 = 3, IFLA_MTU: UInt16 = 4, IFLA_LINK: UInt16 = 5
let IFLA_MASTER: UInt16 = 10, IFLA_OPERSTATE: UInt16 = 16, IFLA_LINKINFO: UInt16 = 18
let IFLA_STATS64: UInt16 = 23, IFLA_NET_NS_FD: UInt16 = 28, IFLA_GSO_MAX_SEGS: UInt16 = 40
let IFLA_INFO_KIND: UInt16 = 1, IFLA_INFO_DATA: UInt16 = 2
let IFF_UP: UInt32 = 1

/// struct ifinfomsg: family, type, index, flags, change.
func ifinfomsg(index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) -> [UInt8] {
    [0, 0] + le16(0) + le32(UInt32(bitPattern: index)) + le32(flags) + le32(change)
}

/// "aa:bb:cc:dd:ee:ff" as bytes.
func parseMAC(_ s: String) -> [UInt8]? {
    let parts = s.split(separator: ":")
    guard parts.count == 6 else { return nil }
    var out: [UInt8] = []
    for p in parts {
        guard p.count == 2, let b = UInt8(p, radix: 16) else { return nil }
        out.append(b)
    }
    return out
}

func formatMAC(_ b: ArraySlice<UInt8>) -> String {
    let digits = Array("0123456789abcdef")
    return b.map { String([digits[Int($0 >> 4)], digits[Int($0 & 0xf)]]) }.joined(separator: ":")
}

struct LinkOptions {
    var up: Bool?
    var mtu: Int?
    var address: [UInt8]?
    var master: String??  // .some(nil): no master
    var name: String?
    var netns: Int32?
    var gsoMaxSegs: Int?
}

extension NetlinkSocket {
    /// Appends what LinkOptions name to a link message (not up: that is in the ifinfomsg).
    func addLinkOptions(_ m: inout NetlinkMessage, _ o: LinkOptions) throws {
        if let name = o.name { m.attr(IFLA_IFNAME, string: name) }
        if let mtu = o.mtu { m.attr(IFLA_MTU, u32: UInt32(mtu)) }
        if let address = o.address { m.attr(IFLA_ADDRESS, address) }
        if let master = o.master {
            if let master {
                let i = try index(of: master)
                if i == 0 { throw NetlinkError.system("no link named \(master)", ENODEV) }
                m.attr(IFLA_MASTER, u32: UInt32(i))
            } else {
                m.attr(IFLA_MASTER, u32: 0)
            }
        }
        if let ns = o.netns { m.attr(IFLA_NET_NS_FD, u32: UInt32(ns)) }
        if let segs = o.gsoMaxSegs { m.attr(IFLA_GSO_MAX_SEGS, u32: UInt32(segs)) }
    }
}

/// Reads a link options table (up=, mtu=, address=, master=, name=, netns=) at `i`.
func readLinkOptions(_ a: Args, _ i: Int32, allowName: Bool) throws -> LinkOptions {
    var o = LinkOptions()
    o.up = try a.boolField(i, "up")
    if let mtu = try a.integerField(i, "mtu") {
        guard (68...65535).contains(mtu) else { throw a.error(i, "mtu", "must be 68 to 65535") }
        o.mtu = mtu
    }
    if let mac = try a.stringField(i, "address") {
        guard let b = parseMAC(mac) else { throw a.error(i, "address", "a MAC like 02:00:00:00:00:01 expected") }
        o.address = b
    }
    let lua = a.lua
    lua.rawGet(i, "master")
    if lua.type(-1) == LUA_TBOOLEAN && !lua.bool(at: -1) {
        o.master = .some(nil)
    } else if lua.type(-1) == LUA_TSTRING {
        o.master = .some(lua.string(at: -1))
    } else if !lua.isNoneOrNil(-1) {
        lua.pop()
        throw a.error(i, "master", "a link name or false expected")
    }
    lua.pop()
    if allowName { o.name = try a.stringField(i, "name") }
    if let segs = try a.integerField(i, "gso_max_segs") {
        guard (1...65535).contains(segs) else { throw a.error(i, "gso_max_segs", "must be 1 to 65535") }
        o.gsoMaxSegs = segs
    }
    o.netns = try a.field(i, "netns") { try a.fd($0, "netns") }
    return o
}

let linkMethods: [(String, LuaFunction)] = [
    // nl:link_add{name=, type="veth"|"bridge"|"macvlan"|"vxlan"|"dummy", up=, mtu=, address=,
    //   master=, netns=, peer={name=, netns=, mtu=, address=} (veth; set it up afterwards), link= (the parent
    //   link of a macvlan or vxlan), mode= (macvlan: "bridge", "private", "vepa", "passthru"),
    //   id=, remote=, local=, port= (vxlan)}
    ("link_add", { lua in
        let a = Args(lua, "netlink:link_add")
        let nl = try NetlinkObject.get(lua, 1, "netlink:link_add")
        try a.table(2, "link")
        try a.options(2, "link", allowed: ["name", "type", "up", "mtu", "address", "master", "netns", "peer", "link",
                                          "mode", "id", "remote", "local", "port", "gso_max_segs"])
        guard let name = try a.stringField(2, "name"), !name.isEmpty, name.utf8.count < 16, !name.contains("/") else {
            throw a.error(2, "name", "is required: 1 to 15 characters, no '/'")
        }
        guard let kind = try a.stringField(2, "type"), ["veth", "bridge", "macvlan", "vxlan", "dummy"].contains(kind) else {
            throw a.error(2, "type", "must be veth, bridge, macvlan, vxlan or dummy")
        }
        var o = try readLinkOptions(a, 2, allowName: false)
        o.name = name
        var peer: LinkOptions?
        if kind == "veth" {
            guard lua.rawGet(2, "peer") == LUA_TTABLE else { lua.pop(); throw a.error(2, "peer", "a veth needs peer = {name = ...}") }
            let pa = Args(lua, "netlink:link_add")
            // No "up": the kernel opens a veth end only once its peer exists (ENOTCONN).
            try pa.options(lua.top, "peer", allowed: ["name", "netns", "mtu", "address", "gso_max_segs"])
            var po = try readLinkOptions(pa, lua.top, allowName: true)
            lua.pop()
            guard let pn = po.name, !pn.isEmpty, pn.utf8.count < 16 else { throw a.error(2, "peer", "needs a name of 1 to 15 characters") }
            po.master = nil
            peer = po
        }
        let parent = try a.stringField(2, "link")
        let id = try a.integerField(2, "id")
        let modeName = try a.stringField(2, "mode")
        let modes: [String: UInt32] = ["private": 1, "vepa": 2, "bridge": 4, "passthru": 8]
        if let modeName, modes[modeName] == nil { throw a.error(2, "mode", "must be bridge, private, vepa or passthru") }
        let remote = try a.stringField(2, "remote").map { s -> [UInt8] in
            guard let ip = parseIPv4(s) else { return [] }
            return ip
        }
        let local = try a.stringField(2, "local").map { parseIPv4($0) ?? [] }
        let port = try a.integerField(2, "port")
        return try netlinkCall(lua, "link_add(\(name))") {
            let up = o.up ?? false
            var m = NetlinkMessage(type: RTM_NEWLINK, flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            m.append(ifinfomsg(flags: up ? IFF_UP : 0, change: up ? IFF_UP : 0))
            try nl.addLinkOptions(&m, o)
            if let parent {
                let i = try nl.index(of: parent)
                if i == 0 { throw NetlinkError.system("no link named \(parent)", ENODEV) }
                m.attr(IFLA_LINK, u32: UInt32(i))
            }
            // The peer's attributes are built first: building them may look names up.
            var peerBytes = NetlinkMessage(type: 0, flags: 0)
            if let peer {
                let pup = peer.up ?? false
                peerBytes.append(ifinfomsg(flags: pup ? IFF_UP : 0, change: pup ? IFF_UP : 0))
                try nl.addLinkOptions(&peerBytes, peer)
            }
            m.nested(IFLA_LINKINFO) { li in
                li.attr(IFLA_INFO_KIND, string: kind)
                switch kind {
                case "veth":
                    li.nested(IFLA_INFO_DATA) { d in d.attr(1 /* VETH_INFO_PEER */, Array(peerBytes.bytes.dropFirst(16))) }
                case "macvlan":
                    li.nested(IFLA_INFO_DATA) { d in d.attr(1 /* IFLA_MACVLAN_MODE */, u32: modes[modeName ?? "bridge"]!) }
                case "vxlan":
                    li.nested(IFLA_INFO_DATA) { d in
                        d.attr(1 /* IFLA_VXLAN_ID */, u32: UInt32(id ?? 1))
                        if let remote, remote.count == 4 { d.attr(2 /* IFLA_VXLAN_GROUP */, remote) }
                        if let local, local.count == 4 { d.attr(4 /* IFLA_VXLAN_LOCAL */, local) }
                        d.attr(15 /* IFLA_VXLAN_PORT */, be16(UInt16(port ?? 4789)))
                    }
                default: break
                }
            }
            return try nl.request(m)
        }
    }),
    // nl:link_del(name)
    ("link_del", { lua in
        let a = Args(lua, "netlink:link_del")
        let nl = try NetlinkObject.get(lua, 1, "netlink:link_del")
        let name = try a.string(2, "name")
        return try netlinkCall(lua, "link_del(\(name))") {
            let i = try nl.index(of: name)
            if i == 0 { return ENODEV }
            var m = NetlinkMessage(type: RTM_DELLINK, flags: NLM_F_REQUEST | NLM_F_ACK)
            m.append(ifinfomsg(index: i))
            return try nl.request(m)
        }
    }),
    // nl:link_set(name, {up=, mtu=, address=, master= (a name, or false), name= (a new one), netns=,
    //   gso_max_segs= (1: what the link sends is segmented to its MTU first)})
    ("link_set", { lua in
        let a = Args(lua, "netlink:link_set")
        let nl = try NetlinkObject.get(lua, 1, "netlink:link_set")
        let name = try a.string(2, "name")
        try a.table(3, "changes")
        try a.options(3, "changes", allowed: ["up", "mtu", "address", "master", "name", "netns", "gso_max_segs"])
        let o = try readLinkOptions(a, 3, allowName: true)
        return try netlinkCall(lua, "link_set(\(name))") {
            let i = try nl.index(of: name)
            if i == 0 { return ENODEV }
            var m = NetlinkMessage(type: RTM_NEWLINK, flags: NLM_F_REQUEST | NLM_F_ACK)
            let up = o.up ?? false
            m.append(ifinfomsg(index: i, flags: up ? IFF_UP : 0, change: o.up == nil ? 0 : IFF_UP))
            try nl.addLinkOptions(&m, o)
            return try nl.request(m)
        }
    }),
    // nl:links() -> {{index=, name=, type=, up=, running=, mtu=, address=, master=,
    //   stats = {rx_bytes=, tx_bytes=, rx_packets=, tx_packets=, rx_errors=, tx_errors=, rx_dropped=, tx_dropped=}}, ...}
    ("links", { lua in
        let nl = try NetlinkObject.get(lua, 1, "netlink:links")
        struct Link { var index: Int32; var flags: UInt32; var attrs: [UInt16: ArraySlice<UInt8>] }
        var list: [Link] = []
        do {
            var m = NetlinkMessage(type: RTM_GETLINK, flags: NLM_F_REQUEST | NLM_F_DUMP)
            m.append(ifinfomsg())
            if let e = try nl.dump(m, { payload in
                list.append(Link(index: Int32(bitPattern: read32(payload, 4)), flags: read32(payload, 8),
                                 attrs: parseAttributes(payload, from: 16)))
            }) { return lua.fail("links()", errno: e) }
        } catch let NetlinkError.system(step, e) {
            return lua.fail(message: "links(): \(step): \(errnoText(e))", errnoName: errnoName(e))
        }
        func text(_ b: ArraySlice<UInt8>?) -> String? { b.map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } }
        var names: [Int32: String] = [:]
        for l in list { names[l.index] = text(l.attrs[IFLA_IFNAME]) }
        lua.newTable(array: Int32(list.count))
        for (k, l) in list.enumerated() {
            lua.append(k + 1) {
                lua.newTable()
                lua.set("index", Int(l.index))
                lua.set("up", l.flags & IFF_UP != 0)
                lua.set("running", l.flags & 0x40 != 0)
                if let n = names[l.index] { lua.set("name", n) }
                if let mtu = l.attrs[IFLA_MTU], mtu.count >= 4 { lua.set("mtu", Int(read32(mtu, 0))) }
                if let mac = l.attrs[IFLA_ADDRESS], mac.count == 6 { lua.set("address", formatMAC(mac)) }
                if let master = l.attrs[IFLA_MASTER], master.count >= 4, let mn = names[Int32(bitPattern: read32(master, 0))] {
                    lua.set("master", mn)
                }
                if let info = l.attrs[IFLA_LINKINFO], let kind = text(parseAttributes(info)[IFLA_INFO_KIND]) { lua.set("type", kind) }
                if let st = l.attrs[IFLA_STATS64], st.count >= 64 {
                    lua.set("stats") {
                        lua.newTable()
                        for (i, key) in ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped"].enumerated() {
                            lua.set(key, Int(bitPattern: UInt(read64(st, 8 * i))))
                        }
                    }
                }
            }
        }
        return 1
    }),
]

/// Runs a netlink operation that answers nil (done) or an errno, as ok, or nil, msg, errno.
func netlinkCall(_ lua: Lua, _ what: String, _ body: () throws -> Int32?) throws -> Int32 {
    do {
        if let e = try body() { return lua.fail(what, errno: e) }
        return lua.ok()
    } catch let NetlinkError.system(step, e) {
        return lua.fail(message: "\(what): \(step): \(errnoText(e))", errnoName: errnoName(e))
    }
}
