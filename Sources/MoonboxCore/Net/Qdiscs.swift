import CMoonbox
import Glibc

/// Queueing disciplines (rtnetlink RTM_*QDISC, RTM_*TCLASS): tbf and htb for rate, netem for
/// delay, jitter, loss, duplication, reordering, corruption and rate, built as iproute2's tc
/// builds them (netem byte for byte: Tests/lua/fixtures/tc-netem.hex).

let RTM_NEWQDISC: UInt16 = 36, RTM_DELQDISC: UInt16 = 37, RTM_NEWTCLASS: UInt16 = 40
let TCA_KIND: UInt16 = 1, TCA_OPTIONS: UInt16 = 2

/// "root", "ingress", or tc's hex "MAJ:MIN" ("1:", "1:1", "ffff:").
func parseTCHandle(_ s: String) -> UInt32? {
    if s == "root" { return 0xFFFF_FFFF }
    if s == "ingress" { return 0xFFFF_FFF1 }
    let parts = s.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    guard parts.count == 2, let major = UInt32(parts[0], radix: 16), major <= 0xffff else { return nil }
    let minor = parts[1].isEmpty ? 0 : UInt32(parts[1], radix: 16)
    guard let minor, minor <= 0xffff else { return nil }
    return major << 16 | minor
}

/// struct tcmsg: family, ifindex, handle, parent, info.
func tcmsg(index: Int32, handle: UInt32, parent: UInt32) -> [UInt8] {
    [0, 0, 0, 0] + le32(UInt32(bitPattern: index)) + le32(handle) + le32(parent) + le32(0)
}

/// A probability as netem wants it: rint(p × UINT32_MAX), as tc's get_percent does.
func netemProbability(_ p: Double) -> UInt32 { UInt32((p * 4294967295.0).rounded(.toNearestOrEven)) }

/// Seconds as psched ticks (64 ns each), as tc's time2tick does.
func pschedTicks(_ seconds: Double) -> UInt64 { UInt64((seconds * 1e9 / 64).rounded(.toNearestOrEven)) }

/// struct tc_ratespec for a rate in bytes per second, link layer Ethernet (no rate table needed).
func ratespec(_ bytesPerSecond: UInt64) -> [UInt8] {
    [0, 1 /* TC_LINKLAYER_ETHERNET */] + le16(0) + le16(0xffff) + le16(0) + le32(UInt32(min(bytesPerSecond, 0xffff_ffff)))
}

struct QdiscSpec {
    var kind: String
    var values: [String: Double] = [:]
    func has(_ k: String) -> Bool { values[k] != nil }
    func get(_ k: String, _ d: Double = 0) -> Double { values[k] ?? d }
}

private let numericKeys: [String: Set<String>] = [
    "netem": ["delay", "jitter", "delay_correlation", "loss", "loss_correlation", "duplicate", "duplicate_correlation",
              "reorder", "reorder_correlation", "gap", "corrupt", "corrupt_correlation", "rate", "limit"],
    "tbf": ["rate", "burst", "latency", "limit"],
    "htb": ["default"],
]

/// The options of a qdisc of `kind`, appended to `m` (TCA_KIND and TCA_OPTIONS).
func appendQdiscOptions(_ m: inout NetlinkMessage, _ q: QdiscSpec) {
    m.attr(TCA_KIND, string: q.kind)
    switch q.kind {
    case "netem":
        let reorder = q.has("reorder")
        var qopt = le32(UInt32(min(pschedTicks(q.get("delay")), 0xffff_ffff)))
        qopt += le32(UInt32(q.get("limit", 1000)))
        qopt += le32(netemProbability(q.get("loss")))
        qopt += le32(UInt32(q.get("gap", reorder ? 1 : 0)))
        qopt += le32(netemProbability(q.get("duplicate")))
        qopt += le32(UInt32(min(pschedTicks(q.get("jitter")), 0xffff_ffff)))
        var body = NetlinkMessage(type: 0, flags: 0)
        body.append(qopt)
        if q.has("delay_correlation") || q.has("loss_correlation") || q.has("duplicate_correlation") {
            body.attr(1 /* TCA_NETEM_CORR */, le32(netemProbability(q.get("delay_correlation")))
                + le32(netemProbability(q.get("loss_correlation"))) + le32(netemProbability(q.get("duplicate_correlation"))))
        }
        if reorder {
            body.attr(3 /* TCA_NETEM_REORDER */, le32(netemProbability(q.get("reorder"))) + le32(netemProbability(q.get("reorder_correlation"))))
        }
        if q.has("corrupt") {
            body.attr(4 /* TCA_NETEM_CORRUPT */, le32(netemProbability(q.get("corrupt"))) + le32(netemProbability(q.get("corrupt_correlation"))))
        }
        if q.has("rate") {
            body.attr(6 /* TCA_NETEM_RATE */, le32(UInt32(min(q.get("rate") / 8, 4294967295))) + le32(0) + le32(0) + le32(0))
        }
        if pschedTicks(q.get("delay")) > 0xffff_ffff { body.attr(10 /* TCA_NETEM_LATENCY64 */, le64(UInt64(q.get("delay") * 1e9))) }
        if pschedTicks(q.get("jitter")) > 0xffff_ffff { body.attr(11 /* TCA_NETEM_JITTER64 */, le64(UInt64(q.get("jitter") * 1e9))) }
        m.attr(TCA_OPTIONS, Array(body.bytes.dropFirst(16)))
    case "tbf":
        let rate = UInt64(q.get("rate") / 8)
        let burst = UInt32(q.get("burst", max(Double(rate) / 100, 1600)))
        let limit = UInt32(q.has("limit") ? q.get("limit") : Double(rate) * q.get("latency", 0.05) + Double(burst))
        let buffer = UInt32(min(pschedTicks(Double(burst) / Double(max(rate, 1))), 0xffff_ffff))
        m.nested(TCA_OPTIONS) { o in
            o.attr(1 /* TCA_TBF_PARMS */, ratespec(rate) + [UInt8](repeating: 0, count: 12) + le32(limit) + le32(buffer) + le32(0))
            if rate > 0xffff_ffff { o.attr(4 /* TCA_TBF_RATE64 */, le64(rate)) }
            o.attr(6 /* TCA_TBF_BURST */, u32: burst)
        }
    case "htb":
        m.nested(TCA_OPTIONS) { o in
            o.attr(2 /* TCA_HTB_INIT */, le32(3) + le32(10) + le32(UInt32(q.get("default"))) + le32(0) + le32(0))
        }
    default:
        break  // kinds without options (pfifo_fast, fq_codel, ...)
    }
}

private func readQdisc(_ a: Args, _ i: Int32, kinds: Set<String>, extra: Set<String>) throws -> QdiscSpec {
    try a.table(i, "qdisc")
    guard let kind = try a.stringField(i, "kind"), kinds.contains(kind) else {
        throw a.error(i, "kind", "must be one of " + kinds.sorted().joined(separator: ", "))
    }
    let numeric = numericKeys[kind] ?? []
    try a.options(i, "qdisc", allowed: numeric.union(["kind"]).union(extra))
    var q = QdiscSpec(kind: kind)
    for k in numeric {
        if let v = try a.numberField(i, k) {
            guard v.isFinite, v >= 0 else { throw a.error(i, k, "must be a finite number >= 0") }
            if k.hasSuffix("correlation") || ["loss", "duplicate", "reorder", "corrupt"].contains(k) {
                guard v <= 1 else { throw a.error(i, k, "is a probability: 0 to 1") }
            }
            q.values[k] = v
        }
    }
    if kind == "tbf" && q.values["rate"] == nil { throw a.error(i, "rate", "tbf needs a rate (bits per second)") }
    return q
}

let qdiscMethods: [(String, LuaFunction)] = [
    // nl:qdisc_replace(link, {kind = "netem"|"tbf"|"htb"|..., parent = "root", handle = "1:", ...} [, {dry_run = true}])
    //   netem: delay, jitter (seconds), delay_correlation, loss, loss_correlation, duplicate,
    //          duplicate_correlation, reorder, reorder_correlation, gap, corrupt,
    //          corrupt_correlation (0 to 1), rate (bits per second), limit (packets)
    //   tbf:   rate (bits per second), burst (bytes), latency (seconds) or limit (bytes)
    //   htb:   default (the default class's minor number)
    // dry_run returns the request's bytes (sequence number 0, ifindex 0) instead of sending it.
    ("qdisc_replace", { lua in
        let a = Args(lua, "netlink:qdisc_replace")
        let nl = try NetlinkObject.get(lua, 1, "netlink:qdisc_replace")
        let link = try a.string(2, "link")
        let q = try readQdisc(a, 3, kinds: ["netem", "tbf", "htb", "pfifo_fast", "fq_codel", "pfifo", "noqueue"], extra: ["parent", "handle"])
        guard let parent = parseTCHandle(try a.stringField(3, "parent") ?? "root") else { throw a.error(3, "parent", "\"root\" or MAJ:MIN expected") }
        guard let handle = parseTCHandle(try a.stringField(3, "handle") ?? "0:") else { throw a.error(3, "handle", "MAJ:MIN expected") }
        var dry = false
        if try a.optTable(4, "options") {
            try a.options(4, "options", allowed: ["dry_run"])
            dry = try a.boolField(4, "dry_run") ?? false
        }
        func message(_ index: Int32) -> NetlinkMessage {
            var m = NetlinkMessage(type: RTM_NEWQDISC, flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
            m.append(tcmsg(index: index, handle: handle, parent: parent))
            appendQdiscOptions(&m, q)
            return m
        }
        if dry {
            message(0).finished(seq: 0).withUnsafeBytes { lua.push(bytes: $0) }
            return 1
        }
        return try netlinkCall(lua, "qdisc_replace(\(link), \(q.kind))") {
            let i = try nl.index(of: link)
            if i == 0 { return ENODEV }
            return try nl.request(message(i))
        }
    }),
    // nl:qdisc_del(link [, {parent = "root"}])
    ("qdisc_del", { lua in
        let a = Args(lua, "netlink:qdisc_del")
        let nl = try NetlinkObject.get(lua, 1, "netlink:qdisc_del")
        let link = try a.string(2, "link")
        var parentText = "root"
        if try a.optTable(3, "options") {
            try a.options(3, "options", allowed: ["parent"])
            parentText = try a.stringField(3, "parent") ?? "root"
        }
        guard let parent = parseTCHandle(parentText) else { throw a.error(3, "parent", "\"root\" or MAJ:MIN expected") }
        return try netlinkCall(lua, "qdisc_del(\(link))") {
            let i = try nl.index(of: link)
            if i == 0 { return ENODEV }
            var m = NetlinkMessage(type: RTM_DELQDISC, flags: NLM_F_REQUEST | NLM_F_ACK)
            m.append(tcmsg(index: i, handle: 0, parent: parent))
            return try nl.request(m)
        }
    }),
    // nl:class_replace(link, {kind = "htb", parent = "1:", classid = "1:1", rate=, ceil=, burst=, cburst=})
    // rate and ceil in bits per second; burst and cburst in bytes.
    ("class_replace", { lua in
        let a = Args(lua, "netlink:class_replace")
        let nl = try NetlinkObject.get(lua, 1, "netlink:class_replace")
        let link = try a.string(2, "link")
        try a.table(3, "class")
        try a.options(3, "class", allowed: ["kind", "parent", "classid", "rate", "ceil", "burst", "cburst"])
        guard try a.stringField(3, "kind") ?? "htb" == "htb" else { throw a.error(3, "kind", "only htb classes") }
        guard let parent = parseTCHandle(try a.stringField(3, "parent") ?? "1:") else { throw a.error(3, "parent", "MAJ:MIN expected") }
        guard let classid = parseTCHandle(try a.stringField(3, "classid") ?? "1:1") else { throw a.error(3, "classid", "MAJ:MIN expected") }
        guard let rateBits = try a.numberField(3, "rate"), rateBits > 0, rateBits.isFinite else { throw a.error(3, "rate", "bits per second > 0 expected") }
        let ceilBits = try a.numberField(3, "ceil") ?? rateBits
        let rate = UInt64(rateBits / 8), ceil = UInt64(ceilBits / 8)
        let burst = try a.numberField(3, "burst") ?? 1600, cburst = try a.numberField(3, "cburst") ?? 1600
        return try netlinkCall(lua, "class_replace(\(link))") {
            let i = try nl.index(of: link)
            if i == 0 { return ENODEV }
            var m = NetlinkMessage(type: RTM_NEWTCLASS, flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
            m.append(tcmsg(index: i, handle: classid, parent: parent))
            m.attr(TCA_KIND, string: "htb")
            let buffer = UInt32(min(pschedTicks(burst / Double(rate)), 0xffff_ffff))
            let cbuffer = UInt32(min(pschedTicks(cburst / Double(max(ceil, 1))), 0xffff_ffff))
            m.nested(TCA_OPTIONS) { o in
                o.attr(1 /* TCA_HTB_PARMS */, ratespec(rate) + ratespec(ceil) + le32(buffer) + le32(cbuffer) + le32(0) + le32(0) + le32(0))
                if rate > 0xffff_ffff { o.attr(6 /* TCA_HTB_RATE64 */, le64(rate)) }
                if ceil > 0xffff_ffff { o.attr(7 /* TCA_HTB_CEIL64 */, le64(ceil)) }
            }
            return try nl.request(m)
        }
    }),
]
