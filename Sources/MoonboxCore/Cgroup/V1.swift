import CMoonbox
import Glibc

/// cgroup v1: one hierarchy per controller (or a few controllers together); v2 keys are
/// translated to each controller's own files.
final class CgroupV1: CgroupBackend {
    let version = 1
    /// controller name -> folder of moonbox's parent cgroup in that hierarchy.
    let parents: [String: String]
    /// "controller group" pairs this process has made.
    private var created: Set<String> = []

    /// controller name -> the hierarchy's root folder (where absolute groups start).
    let roots: [String: String]

    init(parents: [String: String], roots: [String: String] = [:]) { self.parents = parents; self.roots = roots }

    /// A group's folder in one controller's hierarchy: below moonbox's parent, or below the
    /// hierarchy's root for an absolute group.
    private func folder(_ controller: String, _ group: String) -> String? {
        if group.hasPrefix("/") { return roots[controller].map { $0 + group } }
        return parents[controller].map { $0 + "/" + group }
    }

    /// The hierarchies every group is created in; cpuset and blkio only on demand.
    static let coreControllers = ["memory", "cpu", "cpuacct", "pids", "freezer", "devices"]
    static let onDemandControllers = ["cpuset", "blkio"]

    /// Every folder the group has or may get, one per mounted hierarchy moonbox uses.
    func directories(_ group: String) -> [String] {
        var seen = Set<String>()
        return (CgroupV1.coreControllers + CgroupV1.onDemandControllers).compactMap { c in
            guard let d = folder(c, group) else { return nil }
            return seen.insert(d).inserted ? d : nil
        }
    }

    func forget(_ group: String) {
        created = created.filter { !$0.hasSuffix(" " + group) }
    }

    private func dir(_ controller: String, _ group: String) throws(CgroupError) -> String {
        guard let d = folder(controller, group) else {
            throw .system("cgroup v1 controller '\(controller)' is not mounted", ENOENT)
        }
        return d
    }

    private func createIn(_ controller: String, _ group: String) throws(CgroupError) {
        guard let p = parents[controller], created.insert(controller + " " + group).inserted else { return }
        let base = String(p[..<p.lastIndex(of: "/")!])
        let copyCpuset: (String, String) -> Void = { parent, dir in
            guard controller == "cpuset" else { return }
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let v = readTextFile(parent + "/" + f).0 { _ = writeProcFile(dir + "/" + f, v.trimmingSpaces()) }
            }
        }
        if group.hasPrefix("/") {
            guard let root = roots[controller] else { throw .system("cgroup v1 controller '\(controller)' has no known root", ENOENT) }
            try makeCgroupBelow(root, String(group.dropFirst()), prepare: copyCpuset)
            return
        }
        try makeCgroupBelow(base, "moonbox", prepare: copyCpuset)
        try makeCgroupBelow(p, group, prepare: copyCpuset)
    }

    func create(_ group: String) throws(CgroupError) {
        try checkGroupName(group)
        for c in CgroupV1.coreControllers { try createIn(c, group) }
    }

    /// A v2 key as (controller, v1 file), for keys that map one to one.
    private static let direct: [String: (String, String)] = [
        "memory.max": ("memory", "memory.limit_in_bytes"),
        "memory.low": ("memory", "memory.soft_limit_in_bytes"),
        "memory.current": ("memory", "memory.usage_in_bytes"),
        "memory.peak": ("memory", "memory.max_usage_in_bytes"),
        "memory.stat": ("memory", "memory.stat"),
        "pids.max": ("pids", "pids.max"),
        "pids.current": ("pids", "pids.current"),
        "pids.peak": ("pids", "pids.peak"),
        "pids.events": ("pids", "pids.events"),
        "cpuset.cpus": ("cpuset", "cpuset.cpus"),
        "cpuset.mems": ("cpuset", "cpuset.mems"),
    ]
    private static let emulated: Set<String> = [
        "memory.swap.max", "memory.swap.current", "memory.events", "cpu.max", "cpu.weight", "cpu.stat",
        "cgroup.freeze", "cgroup.kill", "cgroup.procs", "cgroup.events", "io.weight", "io.stat",
    ]

    /// A v1-native key ("memory.limit_in_bytes") as (controller, file), when that file exists.
    private func native(_ group: String, _ key: String) -> (String, String)? {
        guard let controller = key.split(separator: ".").first.map(String.init), !key.contains("/"),
              let p = parents[controller] else { return nil }
        let inGroup = (folder(controller, group) ?? (p + "/" + group)) + "/" + key
        return fileExists(inGroup) || fileExists(p + "/" + key) || fileExists(String(p[..<p.lastIndex(of: "/")!]) + "/" + key)
            ? (controller, key) : nil
    }

    private func unknown(_ key: String) -> CgroupError {
        let hint = ["memory.high", "memory.min", "memory.oom.group", "io.max"].contains(key) ? " (it has no v1 equivalent)" : ""
        return .misuse("unknown key '\(key)' for cgroup v1\(hint)")
    }

    func set(_ group: String, _ key: String, _ value: String) throws(CgroupError) {
        try checkGroupName(group)
        let v = try normalizeCgroupSize(key, value)
        if let (c, file) = CgroupV1.direct[key] {
            try createIn(c, group)
            let d = try dir(c, group)
            if key == "memory.max" {
                let bytes = v == "max" ? "-1" : v
                // Lowering the limit below memsw is fine; raising it above memsw needs memsw first.
                if let e = writeProcFile(d + "/" + file, bytes) {
                    guard e == EINVAL, fileExists(d + "/memory.memsw.limit_in_bytes") else {
                        throw .system("cgroup_set(\(key)=\(value)): \(d)/\(file)", e)
                    }
                    try cgroupWrite(d, "memory.memsw.limit_in_bytes", bytes, key: key)
                    try cgroupWrite(d, file, bytes, key: key)
                }
                return
            }
            // Memory files take -1 for no limit; pids.max takes "max" on v1 too.
            return try cgroupWrite(d, file, v == "max" && c == "memory" ? "-1" : v, key: key)
        }
        if CgroupV1.emulated.contains(key) {
            try create(group)
            switch key {
            case "memory.swap.max":
                let d = try dir("memory", group)
                guard fileExists(d + "/memory.memsw.limit_in_bytes") else {
                    throw .system("cgroup_set(memory.swap.max): swap accounting is off (no memory.memsw.limit_in_bytes)", ENOENT)
                }
                if v == "max" { return try cgroupWrite(d, "memory.memsw.limit_in_bytes", "-1", key: key) }
                let limit = Int(try cgroupRead(d, "memory.limit_in_bytes", key: key)) ?? 0
                let swap = Int(v) ?? 0
                let (sum, overflow) = limit.addingReportingOverflow(swap)
                return try cgroupWrite(d, "memory.memsw.limit_in_bytes", overflow || limit >= 1 << 62 ? "-1" : String(sum), key: key)
            case "cpu.max":
                let parts = v.split(separator: " ").map(String.init)
                guard (1...2).contains(parts.count), parts[0] == "max" || Int(parts[0]) != nil,
                      parts.count == 1 || Int(parts[1]) != nil else {
                    throw .misuse("bad value '\(value)' for cpu.max (use \"QUOTA PERIOD\" in microseconds, or \"max\")")
                }
                let d = try dir("cpu", group)
                if parts.count == 2 { try cgroupWrite(d, "cpu.cfs_period_us", parts[1], key: key) }
                return try cgroupWrite(d, "cpu.cfs_quota_us", parts[0] == "max" ? "-1" : parts[0], key: key)
            case "cpu.weight":
                guard let w = Int(v), (1...10000).contains(w) else { throw .misuse("bad value '\(value)' for cpu.weight (1 to 10000)") }
                return try cgroupWrite(try dir("cpu", group), "cpu.shares", String(2 + ((w - 1) * 262142) / 9999), key: key)
            case "io.weight":
                guard let w = Int(v), (1...10000).contains(w) else { throw .misuse("bad value '\(value)' for io.weight (1 to 10000)") }
                try createIn("blkio", group)
                return try cgroupWrite(try dir("blkio", group), "blkio.weight", String(10 + ((w - 1) * 990) / 9999), key: key)
            case "cgroup.freeze":
                guard v == "0" || v == "1" else { throw .misuse("bad value '\(value)' for cgroup.freeze (0 or 1)") }
                return try cgroupWrite(try dir("freezer", group), "freezer.state", v == "1" ? "FROZEN" : "THAWED", key: key)
            case "cgroup.kill":
                if let (what, e) = killCgroup(directories(group).filter(fileExists)) { throw .system(what, e) }
                return
            case "cgroup.procs":
                guard let pid = Int(v) else { throw .misuse("bad pid '\(value)' for cgroup.procs") }
                return try attach(group, pid)
            default:
                throw .misuse("\(key) is read-only")
            }
        }
        if let (c, file) = native(group, key) {
            if c == "cpuset" { try createIn(c, group) } else { try create(group) }
            return try cgroupWrite(try dir(c, group), file, value, key: key)
        }
        throw unknown(key)
    }

    func get(_ group: String, _ key: String) throws(CgroupError) -> String {
        try checkGroupName(group)
        if let (c, file) = CgroupV1.direct[key] {
            let text = try cgroupRead(try dir(c, group), file, key: key)
            if key == "memory.max" || key == "memory.low", let n = Int(text), n >= 1 << 62 { return "max" }
            return text
        }
        switch key {
        case "memory.swap.max":
            let d = try dir("memory", group)
            let memsw = Int(try cgroupRead(d, "memory.memsw.limit_in_bytes", key: key)) ?? 0
            let limit = Int(try cgroupRead(d, "memory.limit_in_bytes", key: key)) ?? 0
            return memsw >= 1 << 62 ? "max" : String(max(0, memsw - limit))
        case "memory.swap.current":
            let d = try dir("memory", group)
            let memsw = Int(try cgroupRead(d, "memory.memsw.usage_in_bytes", key: key)) ?? 0
            let usage = Int(try cgroupRead(d, "memory.usage_in_bytes", key: key)) ?? 0
            return String(max(0, memsw - usage))
        case "memory.events":
            let d = try dir("memory", group)
            let control = try cgroupRead(d, "memory.oom_control", key: key)
            let fields = Dictionary(control.split(separator: "\n").compactMap { line -> (String, String)? in
                let p = line.split(separator: " ")
                return p.count == 2 ? (String(p[0]), String(p[1])) : nil
            }, uniquingKeysWith: { a, _ in a })
            let failcnt = try cgroupRead(d, "memory.failcnt", key: key)
            let kills = fields["oom_kill"] ?? "0"
            return "low 0\nhigh 0\nmax \(failcnt)\noom \(kills)\noom_kill \(kills)"
        case "cpu.max":
            let d = try dir("cpu", group)
            let quota = try cgroupRead(d, "cpu.cfs_quota_us", key: key)
            let period = try cgroupRead(d, "cpu.cfs_period_us", key: key)
            return "\(quota == "-1" ? "max" : quota) \(period)"
        case "cpu.weight":
            let shares = Int(try cgroupRead(try dir("cpu", group), "cpu.shares", key: key)) ?? 1024
            return String(1 + ((max(shares, 2) - 2) * 9999) / 262142)
        case "io.weight":
            let w = Int(try cgroupRead(try dir("blkio", group), "blkio.weight", key: key)) ?? 500
            return "default \(1 + ((max(w, 10) - 10) * 9999) / 990)"
        case "cpu.stat":
            let acct = try dir("cpuacct", group)
            let usage = (Int(try cgroupRead(acct, "cpuacct.usage", key: key)) ?? 0) / 1000
            let user = (Int(try cgroupRead(acct, "cpuacct.usage_user", key: key)) ?? 0) / 1000
            let sys = (Int(try cgroupRead(acct, "cpuacct.usage_sys", key: key)) ?? 0) / 1000
            var lines = ["usage_usec \(usage)", "user_usec \(user)", "system_usec \(sys)"]
            if let cpu = try? cgroupRead(try dir("cpu", group), "cpu.stat", key: key) {
                for line in cpu.split(separator: "\n") {
                    let p = line.split(separator: " ")
                    guard p.count == 2 else { continue }
                    switch p[0] {
                    case "nr_periods", "nr_throttled": lines.append("\(p[0]) \(p[1])")
                    case "throttled_time": lines.append("throttled_usec \((Int(p[1]) ?? 0) / 1000)")
                    default: break
                    }
                }
            }
            return lines.joined(separator: "\n")
        case "io.stat":
            // v2's shape ("MAJ:MIN rbytes= wbytes= rios= wios=") from blkio's throttle counters.
            let d = try dir("blkio", group)
            var devices: [String: [String: String]] = [:]
            for (file, read, write) in [("blkio.throttle.io_service_bytes_recursive", "rbytes", "wbytes"),
                                        ("blkio.throttle.io_serviced_recursive", "rios", "wios")] {
                guard let text = try? cgroupRead(d, file, key: key) else { continue }
                for line in text.split(separator: "\n") {
                    let p = line.split(separator: " ")
                    guard p.count == 3 else { continue }
                    if p[1] == "Read" { devices[String(p[0]), default: [:]][read] = String(p[2]) }
                    if p[1] == "Write" { devices[String(p[0]), default: [:]][write] = String(p[2]) }
                }
            }
            return devices.keys.sorted().map { dev in
                let f = devices[dev]!
                return "\(dev) rbytes=\(f["rbytes"] ?? "0") wbytes=\(f["wbytes"] ?? "0") rios=\(f["rios"] ?? "0") wios=\(f["wios"] ?? "0")"
            }.joined(separator: "\n")
        case "cgroup.freeze":
            return try cgroupRead(try dir("freezer", group), "freezer.state", key: key) == "FROZEN" ? "1" : "0"
        case "cgroup.procs":
            return try procs(group).map(String.init).joined(separator: "\n")
        case "cgroup.events":
            let populated = try procs(group).isEmpty ? 0 : 1
            let frozen = (try? get(group, "cgroup.freeze")) == "1" ? 1 : 0
            return "populated \(populated)\nfrozen \(frozen)"
        case "cgroup.kill":
            throw .misuse("cgroup.kill is write-only")
        default:
            if let (c, file) = native(group, key) { return try cgroupRead(try dir(c, group), file, key: key) }
            throw unknown(key)
        }
    }

    func attach(_ group: String, _ pid: Int) throws(CgroupError) {
        try create(group)
        for d in directories(group) where fileExists(d) {
            try cgroupWrite(d, "cgroup.procs", String(pid), key: "cgroup.procs")
        }
    }

    func procs(_ group: String) throws(CgroupError) -> [Int] {
        try checkGroupName(group)
        // Every group is in the pids hierarchy (or memory, where pids is missing).
        let c = parents["pids"] != nil ? "pids" : "memory"
        return try readCgroupPids(try dir(c, group), group: group)
    }
}
