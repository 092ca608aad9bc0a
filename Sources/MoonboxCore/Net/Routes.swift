import CMoonbox
import Glibc

/// Routes (rtnetlink RTM_*ROUTE) in the main table.

let RTM_NEWROUTE: UInt16 = 24, RTM_DELROUTE: UInt16 = 25, RTM_GETROUTE: UInt16 = 26
let RTA_DST: UInt16 = 1, RTA_OIF: UInt16 = 4, RTA_GATEWAY: UInt16 = 5, RTA_PRIORITY: UInt16 = 6

private struct RouteSpec {
    var dst: (family: Int32, bytes: [UInt8], prefix: Int)
    var gateway: [UInt8]?
    var dev: String?
    var metric: Int?
}

private func readRoute(_ a: Args, _ i: Int32) throws -> RouteSpec {
    try a.table(i, "route")
    try a.options(i, "route", allowed: ["dst", "gateway", "dev", "metric"])
    let dstText = try a.stringField(i, "dst") ?? "default"
    let gwText = try a.stringField(i, "gateway")
    var family: Int32 = AF_INET
    if let gwText, gwText.contains(":") { family = AF_INET6 }
    if dstText.contains(":") { family = AF_INET6 }
    let dst: (family: Int32, bytes: [UInt8], prefix: Int)
    if dstText == "default" {
        dst = (family, [UInt8](repeating: 0, count: family == AF_INET ? 4 : 16), 0)
    } else {
        guard let d = parseCIDR(dstText) else { throw a.error(i, "dst", "a prefix like 10.0.0.0/24, or \"default\", expected") }
        dst = d
    }
    var gateway: [UInt8]?
    if let gwText {
        guard let g = dst.family == AF_INET ? parseIPv4(gwText) : parseIPv6(gwText) else {
            throw a.error(i, "gateway", "an address of the route's family expected")
        }
        gateway = g
    }
    let dev = try a.stringField(i, "dev")
    if gateway == nil && dev == nil { throw a.error(i, "route", "needs a gateway or a dev") }
    return RouteSpec(dst: dst, gateway: gateway, dev: dev, metric: try a.integerField(i, "metric"))
}

private func routeMessage(_ nl: NetlinkSocket, _ type: UInt16, _ flags: UInt16, _ r: RouteSpec) throws -> NetlinkMessage {
    var m = NetlinkMessage(type: type, flags: flags)
    let scope: UInt8 = r.gateway == nil ? 253 /* RT_SCOPE_LINK */ : 0
    m.append([UInt8(r.dst.family), UInt8(r.dst.prefix), 0, 0, 254 /* main */, 3 /* RTPROT_BOOT */, scope, 1 /* RTN_UNICAST */] + le32(0))
    if r.dst.prefix > 0 { m.attr(RTA_DST, r.dst.bytes) }
    if let g = r.gateway { m.attr(RTA_GATEWAY, g) }
    if let dev = r.dev {
        let i = try nl.index(of: dev)
        if i == 0 { throw NetlinkError.system("no link named \(dev)", ENODEV) }
        m.attr(RTA_OIF, u32: UInt32(i))
    }
    if let metric = r.metric { m.attr(RTA_PRIORITY, u32: UInt32(metric)) }
    return m
}

let routeMethods: [(String, LuaFunction)] = [
    // nl:route_add{dst = "default"|"10.1.0.0/16", gateway=, dev=, metric=}
    ("route_add", { lua in
        let nl = try NetlinkObject.get(lua, 1, "netlink:route_add")
        let r = try readRoute(Args(lua, "netlink:route_add"), 2)
        return try netlinkCall(lua, "route_add()") {
            try nl.request(try routeMessage(nl, RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, r))
        }
    }),
    // nl:route_del{dst=, gateway=, dev=}
    ("route_del", { lua in
        let nl = try NetlinkObject.get(lua, 1, "netlink:route_del")
        let r = try readRoute(Args(lua, "netlink:route_del"), 2)
        return try netlinkCall(lua, "route_del()") {
            try nl.request(try routeMessage(nl, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, r))
        }
    }),
    // nl:routes() -> {{family=, dst=, gateway=, index=}, ...} of the main table
    ("routes", { lua in
        let nl = try NetlinkObject.get(lua, 1, "netlink:routes")
        var list: [[String: String]] = []
        do {
            var m = NetlinkMessage(type: RTM_GETROUTE, flags: NLM_F_REQUEST | NLM_F_DUMP)
            m.append([UInt8](repeating: 0, count: 8) + le32(0))
            if let e = try nl.dump(m, { payload in
                let family = Int32(payload[payload.startIndex]), prefix = Int(payload[payload.startIndex + 1])
                guard payload[payload.startIndex + 4] == 254 else { return }  // the main table
                let attrs = parseAttributes(payload, from: 12)
                var r: [String: String] = ["family": family == AF_INET ? "inet" : "inet6"]
                r["dst"] = attrs[RTA_DST].map { formatIP(family, $0) + "/\(prefix)" } ?? "default"
                if let g = attrs[RTA_GATEWAY] { r["gateway"] = formatIP(family, g) }
                if let oif = attrs[RTA_OIF] { r["index"] = String(read32(oif, 0)) }
                list.append(r)
            }) { return lua.fail("routes()", errno: e) }
        } catch let NetlinkError.system(step, e) {
            return lua.fail(message: "routes(): \(step): \(errnoText(e))", errnoName: errnoName(e))
        }
        lua.newTable(array: Int32(list.count))
        for (k, r) in list.enumerated() {
            lua.append(k + 1) {
                lua.newTable()
                for (key, v) in r { if key == "index" { lua.set(key, Int(v) ?? 0) } else { lua.set(key, v) } }
            }
        }
        return 1
    }),
]
