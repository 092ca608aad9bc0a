import CMoonbox
import Glibc

/// cgroups behind one interface, with a v1 and a v2 backend. Keys are the v2 names;
/// the v1 backend translates them. The hierarchy root is a parameter, so the logic
/// can be tested on a plain folder tree.

enum CgroupError: Error {
    /// A misuse: raised as a Lua error.
    case misuse(String)
    /// A system failure: returned as nil, message, errno.
    case system(String, Int32)
}

protocol CgroupBackend {
    var version: Int { get }
    /// The folders of `group`, one per hierarchy it lives in.
    func directories(_ group: String) -> [String]
    func create(_ group: String) throws(CgroupError)
    func set(_ group: String, _ key: String, _ value: String) throws(CgroupError)
    func get(_ group: String, _ key: String) throws(CgroupError) -> String
    func attach(_ group: String, _ pid: Int) throws(CgroupError)
    func procs(_ group: String) throws(CgroupError) -> [Int]
    func remove(_ group: String) throws(CgroupError)
}

// MARK: shared helpers

func readTextFile(_ path: String) -> (String?, Int32) {
    let fd = mb_open(path, O_RDONLY | O_CLOEXEC, 0)
    if fd < 0 { return (nil, errno) }
    defer { Glibc.close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 8192)
    while true {
        let n = Glibc.read(fd, &buf, buf.count)
        if n < 0 {
            if errno == EINTR { continue }
            return (nil, errno)
        }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return (String(decoding: out, as: UTF8.self), 0)
}

func fileExists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
}

/// "512M" -> 536870912. Accepts K, M, G, T with an optional B or iB, "max", and plain numbers.
func parseSize(_ text: String) -> Int? {
    let s = text.trimmingSpaces()
    if s == "max" || s == "-1" { return -1 }
    var digits = s
    var unit = 1
    let suffixes: [(String, Int)] = [("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40)]
    for suffix in ["ib", "b"] where digits.lowercased().hasSuffix(suffix) && digits.count > suffix.count {
        let stem = String(digits.dropLast(suffix.count))
        if let last = stem.last, last.isLetter { digits = stem }
        break
    }
    if let last = digits.last?.lowercased(), let m = suffixes.first(where: { $0.0 == last }) {
        unit = m.1
        digits.removeLast()
    }
    if let n = Int(digits), n >= 0 {
        let (r, overflow) = n.multipliedReportingOverflow(by: unit)
        return overflow ? nil : r
    }
    if let d = Double(digits), d >= 0, d.isFinite, d * Double(unit) < 9.0e18 { return Int(d * Double(unit)) }
    return nil
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\n" || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\n" || c == "\t" { s.removeLast() }
        return String(s)
    }
}

private func checkGroupName(_ group: String) throws(CgroupError) {
    guard !group.isEmpty, !group.hasPrefix("/"), !group.hasSuffix("/") else {
        throw .misuse("group '\(group)' must be a relative path like 'web' or 'jobs/1'")
    }
    for part in group.split(separator: "/", omittingEmptySubsequences: false) {
        guard !part.isEmpty, part != ".", part != "..",
              part.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }) else {
            throw .misuse("group '\(group)' has a bad component '\(part)' (letters, digits, '.', '_' and '-' only)")
        }
    }
}

private func write(_ dir: String, _ file: String, _ value: String, key: String) throws(CgroupError) {
    if let e = writeProcFile(dir + "/" + file, value) {
        throw .system("cgroup_set(\(key)=\(value)): \(dir)/\(file)", e)
    }
}

private func read(_ dir: String, _ file: String, key: String) throws(CgroupError) -> String {
    let (text, e) = readTextFile(dir + "/" + file)
    guard let text else { throw .system("cgroup_get(\(key)): \(dir)/\(file)", e) }
    return text.trimmingSpaces()
}

/// Creates the folders of `path` below `base` one level at a time, calling `prepare`
/// on each new one (v2 enables controllers, v1 cpuset copies cpus and mems).
private func makeBelow(_ base: String, _ relative: String, prepare: (String, String) -> Void) throws(CgroupError) {
    var dir = base
    for part in relative.split(separator: "/") {
        let parent = dir
        dir += "/" + part
        if Glibc.mkdir(dir, 0o755) == 0 {
            prepare(parent, dir)
        } else if errno != EEXIST {
            throw .system("cgroup_create(\(relative)): mkdir \(dir)", errno)
        }
    }
}

/// Removes `group` below `parent` deepest first, then any moonbox folders left empty.
private func removeBelow(_ parent: String, _ group: String) throws(CgroupError) {
    var parts = group.split(separator: "/").map(String.init)
    while !parts.isEmpty {
        let dir = parent + "/" + parts.joined(separator: "/")
        if Glibc.rmdir(dir) != 0 && errno != ENOENT {
            if parts.count == group.split(separator: "/").count {
                throw .system("cgroup_remove(\(group)): rmdir \(dir)", errno)
            }
            return  // an ancestor still in use by another group
        }
        parts.removeLast()
    }
    // The shared moonbox parent goes too once empty; while another group uses it, it stays.
    _ = Glibc.rmdir(parent)
}

/// Kills every process of a group the v1 way: freeze, signal, thaw.
private func killByFreezing(_ backend: CgroupBackend, _ group: String) throws(CgroupError) {
    let frozen = (try? backend.set(group, "cgroup.freeze", "1")) != nil
    for _ in 0..<100 {
        let pids = try backend.procs(group)
        if pids.isEmpty { break }
        for pid in pids { Glibc.kill(pid_t(pid), SIGKILL) }
        if frozen { try? backend.set(group, "cgroup.freeze", "0") }
        var ts = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        nanosleep(&ts, nil)
    }
    if frozen { try? backend.set(group, "cgroup.freeze", "0") }
}

private func readPids(_ dir: String, group: String) throws(CgroupError) -> [Int] {
    let (text, e) = readTextFile(dir + "/cgroup.procs")
    guard let text else { throw .system("cgroup_procs(\(group)): \(dir)/cgroup.procs", e) }
    return text.split(separator: "\n").compactMap { Int32($0).map(Int.init) }
}

/// memory keys take sizes ("512M"); everything else is written as given.
private let sizeKeys: Set<String> = ["memory.max", "memory.swap.max", "memory.high", "memory.low", "memory.min"]

private func normalizeSize(_ key: String, _ value: String) throws(CgroupError) -> String {
    guard sizeKeys.contains(key) else { return value }
    guard let n = parseSize(value) else { throw .misuse("bad size '\(value)' for \(key) (use bytes, \"512M\", \"1G\" or \"max\")") }
    return n < 0 ? "max" : String(n)
}

// MARK: v2

struct CgroupV2: CgroupBackend {
    let version = 2
    /// The folder of moonbox's parent cgroup, below the caller's own cgroup.
    let parent: String

    static let knownKeys: Set<String> = [
        "memory.max", "memory.swap.max", "memory.high", "memory.low", "memory.min", "memory.current",
        "memory.peak", "memory.swap.current", "memory.swap.peak", "memory.events", "memory.stat", "memory.oom.group",
        "pids.max", "pids.current", "pids.peak", "pids.events", "cpu.max", "cpu.weight", "cpu.stat",
        "cpuset.cpus", "cpuset.mems", "io.max", "io.weight", "io.stat", "cgroup.freeze", "cgroup.kill",
        "cgroup.procs", "cgroup.events", "cgroup.stat", "cgroup.controllers", "cgroup.subtree_control",
    ]

    func directories(_ group: String) -> [String] { [parent + "/" + group] }

    private func enableControllers(in dir: String) {
        let (available, _) = readTextFile(dir + "/cgroup.controllers")
        for c in (available ?? "").split(separator: " ") where ["cpu", "memory", "pids", "io", "cpuset"].contains(String(c).trimmingSpaces()) {
            _ = writeProcFile(dir + "/cgroup.subtree_control", "+" + String(c).trimmingSpaces())
        }
    }

    func create(_ group: String) throws(CgroupError) {
        try checkGroupName(group)
        let base = String(parent[..<parent.lastIndex(of: "/")!])
        enableControllers(in: base)
        try makeBelow(base, "moonbox", prepare: { _, _ in })
        enableControllers(in: parent)
        try makeBelow(parent, group, prepare: { _, dir in enableControllers(in: dir) })
        // A nested group's parents need their controllers delegated too.
        var dir = parent
        for part in group.split(separator: "/").dropLast() {
            dir += "/" + part
            enableControllers(in: dir)
        }
    }

    private func checkKey(_ group: String, _ key: String) throws(CgroupError) {
        if CgroupV2.knownKeys.contains(key) || (fileExists(parent + "/" + group + "/" + key) && !key.contains("/")) { return }
        throw .misuse("unknown key '\(key)' for cgroup v2")
    }

    func set(_ group: String, _ key: String, _ value: String) throws(CgroupError) {
        try checkGroupName(group)
        try checkKey(group, key)
        try create(group)
        let dir = parent + "/" + group
        if key == "cgroup.kill" && !fileExists(dir + "/cgroup.kill") {
            try killByFreezing(self, group)
            return
        }
        if key == "cgroup.procs" { return try attach(group, Int(value) ?? -1) }
        let v = try normalizeSize(key, value)
        if !fileExists(dir + "/" + key) {
            let controller = key.split(separator: ".").first.map(String.init) ?? key
            throw .system("cgroup_set(\(key)=\(value)): controller '\(controller)' is not enabled in \(dir) (delegate it through cgroup.subtree_control)", ENOENT)
        }
        try write(dir, key, v, key: key)
    }

    func get(_ group: String, _ key: String) throws(CgroupError) -> String {
        try checkGroupName(group)
        try checkKey(group, key)
        return try read(parent + "/" + group, key, key: key)
    }

    func attach(_ group: String, _ pid: Int) throws(CgroupError) {
        try create(group)
        try write(parent + "/" + group, "cgroup.procs", String(pid), key: "cgroup.procs")
    }

    func procs(_ group: String) throws(CgroupError) -> [Int] {
        try checkGroupName(group)
        return try readPids(parent + "/" + group, group: group)
    }

    func remove(_ group: String) throws(CgroupError) {
        try checkGroupName(group)
        try removeBelow(parent, group)
    }
}

// MARK: v1

struct CgroupV1: CgroupBackend {
    let version = 1
    /// controller name -> folder of moonbox's parent cgroup in that hierarchy.
    let parents: [String: String]

    /// The hierarchies every group is created in; cpuset only on demand (it needs cpus and mems).
    static let coreControllers = ["memory", "cpu", "cpuacct", "pids", "freezer", "devices"]

    func directories(_ group: String) -> [String] {
        var seen = Set<String>()
        return parents.keys.sorted().compactMap { c in
            let d = parents[c]! + "/" + group
            return seen.insert(d).inserted && fileExists(d) ? d : nil
        }
    }

    private func dir(_ controller: String, _ group: String) throws(CgroupError) -> String {
        guard let p = parents[controller] else {
            throw .system("cgroup v1 controller '\(controller)' is not mounted", ENOENT)
        }
        return p + "/" + group
    }

    private func createIn(_ controller: String, _ group: String) throws(CgroupError) {
        guard let p = parents[controller] else { return }
        let base = String(p[..<p.lastIndex(of: "/")!])
        let copyCpuset: (String, String) -> Void = { parent, dir in
            guard controller == "cpuset" else { return }
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let v = readTextFile(parent + "/" + f).0 { _ = writeProcFile(dir + "/" + f, v.trimmingSpaces()) }
            }
        }
        try makeBelow(base, "moonbox", prepare: copyCpuset)
        try makeBelow(p, group, prepare: copyCpuset)
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
        "cgroup.freeze", "cgroup.kill", "cgroup.procs", "cgroup.events", "io.weight",
    ]

    /// A v1-native key ("memory.limit_in_bytes") as (controller, file), when that file exists.
    private func native(_ group: String, _ key: String) -> (String, String)? {
        guard let controller = key.split(separator: ".").first.map(String.init), !key.contains("/"),
              let p = parents[controller] else { return nil }
        let inGroup = p + "/" + group + "/" + key
        return fileExists(inGroup) || fileExists(p + "/" + key) || fileExists(String(p[..<p.lastIndex(of: "/")!]) + "/" + key)
            ? (controller, key) : nil
    }

    private func unknown(_ key: String) -> CgroupError {
        let hint = ["memory.high", "memory.min", "memory.oom.group", "io.max"].contains(key) ? " (it has no v1 equivalent)" : ""
        return .misuse("unknown key '\(key)' for cgroup v1\(hint)")
    }

    func set(_ group: String, _ key: String, _ value: String) throws(CgroupError) {
        try checkGroupName(group)
        let v = try normalizeSize(key, value)
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
                    try write(d, "memory.memsw.limit_in_bytes", bytes, key: key)
                    try write(d, file, bytes, key: key)
                }
                return
            }
            // Memory files take -1 for no limit; pids.max takes "max" on v1 too.
            return try write(d, file, v == "max" && c == "memory" ? "-1" : v, key: key)
        }
        if CgroupV1.emulated.contains(key) {
            try create(group)
            switch key {
            case "memory.swap.max":
                let d = try dir("memory", group)
                guard fileExists(d + "/memory.memsw.limit_in_bytes") else {
                    throw .system("cgroup_set(memory.swap.max): swap accounting is off (no memory.memsw.limit_in_bytes)", ENOENT)
                }
                if v == "max" { return try write(d, "memory.memsw.limit_in_bytes", "-1", key: key) }
                let limit = Int(try read(d, "memory.limit_in_bytes", key: key)) ?? 0
                let swap = Int(v) ?? 0
                let (sum, overflow) = limit.addingReportingOverflow(swap)
                return try write(d, "memory.memsw.limit_in_bytes", overflow || limit >= 1 << 62 ? "-1" : String(sum), key: key)
            case "cpu.max":
                let parts = v.split(separator: " ").map(String.init)
                guard (1...2).contains(parts.count), parts[0] == "max" || Int(parts[0]) != nil,
                      parts.count == 1 || Int(parts[1]) != nil else {
                    throw .misuse("bad value '\(value)' for cpu.max (use \"QUOTA PERIOD\" in microseconds, or \"max\")")
                }
                let d = try dir("cpu", group)
                if parts.count == 2 { try write(d, "cpu.cfs_period_us", parts[1], key: key) }
                return try write(d, "cpu.cfs_quota_us", parts[0] == "max" ? "-1" : parts[0], key: key)
            case "cpu.weight":
                guard let w = Int(v), (1...10000).contains(w) else { throw .misuse("bad value '\(value)' for cpu.weight (1 to 10000)") }
                return try write(try dir("cpu", group), "cpu.shares", String(2 + ((w - 1) * 262142) / 9999), key: key)
            case "io.weight":
                guard let w = Int(v), (1...10000).contains(w) else { throw .misuse("bad value '\(value)' for io.weight (1 to 10000)") }
                try createIn("blkio", group)
                return try write(try dir("blkio", group), "blkio.weight", String(10 + ((w - 1) * 990) / 9999), key: key)
            case "cgroup.freeze":
                guard v == "0" || v == "1" else { throw .misuse("bad value '\(value)' for cgroup.freeze (0 or 1)") }
                return try write(try dir("freezer", group), "freezer.state", v == "1" ? "FROZEN" : "THAWED", key: key)
            case "cgroup.kill":
                return try killByFreezing(self, group)
            case "cgroup.procs":
                guard let pid = Int(v) else { throw .misuse("bad pid '\(value)' for cgroup.procs") }
                return try attach(group, pid)
            default:
                throw .misuse("\(key) is read-only")
            }
        }
        if let (c, file) = native(group, key) {
            if c == "cpuset" { try createIn(c, group) } else { try create(group) }
            return try write(try dir(c, group), file, value, key: key)
        }
        throw unknown(key)
    }

    func get(_ group: String, _ key: String) throws(CgroupError) -> String {
        try checkGroupName(group)
        if let (c, file) = CgroupV1.direct[key] {
            let text = try read(try dir(c, group), file, key: key)
            if key == "memory.max" || key == "memory.low", let n = Int(text), n >= 1 << 62 { return "max" }
            return text
        }
        switch key {
        case "memory.swap.max":
            let d = try dir("memory", group)
            let memsw = Int(try read(d, "memory.memsw.limit_in_bytes", key: key)) ?? 0
            let limit = Int(try read(d, "memory.limit_in_bytes", key: key)) ?? 0
            return memsw >= 1 << 62 ? "max" : String(max(0, memsw - limit))
        case "memory.swap.current":
            let d = try dir("memory", group)
            let memsw = Int(try read(d, "memory.memsw.usage_in_bytes", key: key)) ?? 0
            let usage = Int(try read(d, "memory.usage_in_bytes", key: key)) ?? 0
            return String(max(0, memsw - usage))
        case "memory.events":
            let d = try dir("memory", group)
            let control = try read(d, "memory.oom_control", key: key)
            let fields = Dictionary(control.split(separator: "\n").compactMap { line -> (String, String)? in
                let p = line.split(separator: " ")
                return p.count == 2 ? (String(p[0]), String(p[1])) : nil
            }, uniquingKeysWith: { a, _ in a })
            let failcnt = try read(d, "memory.failcnt", key: key)
            let kills = fields["oom_kill"] ?? "0"
            return "low 0\nhigh 0\nmax \(failcnt)\noom \(kills)\noom_kill \(kills)"
        case "cpu.max":
            let d = try dir("cpu", group)
            let quota = try read(d, "cpu.cfs_quota_us", key: key)
            let period = try read(d, "cpu.cfs_period_us", key: key)
            return "\(quota == "-1" ? "max" : quota) \(period)"
        case "cpu.weight":
            let shares = Int(try read(try dir("cpu", group), "cpu.shares", key: key)) ?? 1024
            return String(1 + ((max(shares, 2) - 2) * 9999) / 262142)
        case "io.weight":
            let w = Int(try read(try dir("blkio", group), "blkio.weight", key: key)) ?? 500
            return "default \(1 + ((max(w, 10) - 10) * 9999) / 990)"
        case "cpu.stat":
            let acct = try dir("cpuacct", group)
            let usage = (Int(try read(acct, "cpuacct.usage", key: key)) ?? 0) / 1000
            let user = (Int(try read(acct, "cpuacct.usage_user", key: key)) ?? 0) / 1000
            let sys = (Int(try read(acct, "cpuacct.usage_sys", key: key)) ?? 0) / 1000
            var lines = ["usage_usec \(usage)", "user_usec \(user)", "system_usec \(sys)"]
            if let cpu = try? read(try dir("cpu", group), "cpu.stat", key: key) {
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
        case "cgroup.freeze":
            return try read(try dir("freezer", group), "freezer.state", key: key) == "FROZEN" ? "1" : "0"
        case "cgroup.procs":
            return try procs(group).map(String.init).joined(separator: "\n")
        case "cgroup.events":
            let populated = try procs(group).isEmpty ? 0 : 1
            let frozen = (try? get(group, "cgroup.freeze")) == "1" ? 1 : 0
            return "populated \(populated)\nfrozen \(frozen)"
        case "cgroup.kill":
            throw .misuse("cgroup.kill is write-only")
        default:
            if let (c, file) = native(group, key) { return try read(try dir(c, group), file, key: key) }
            throw unknown(key)
        }
    }

    func attach(_ group: String, _ pid: Int) throws(CgroupError) {
        try create(group)
        for d in directories(group) {
            try write(d, "cgroup.procs", String(pid), key: "cgroup.procs")
        }
    }

    func procs(_ group: String) throws(CgroupError) -> [Int] {
        try checkGroupName(group)
        // Every group is in the pids hierarchy (or memory, where pids is missing).
        let c = parents["pids"] != nil ? "pids" : "memory"
        return try readPids(try dir(c, group), group: group)
    }

    func remove(_ group: String) throws(CgroupError) {
        try checkGroupName(group)
        var seen = Set<String>()
        for (_, p) in parents.sorted(by: { $0.key < $1.key }) where seen.insert(p).inserted {
            try removeBelow(p, group)
        }
    }
}

// MARK: discovery

enum Cgroups {
    /// The backend for this process, found once. MOONBOX_CGROUP_ROOT points it at a folder
    /// tree instead (a v2 tree when it has cgroup.controllers, else one folder per v1 controller).
    nonisolated(unsafe) static var cached: CgroupBackend?

    static func backend() throws(CgroupError) -> CgroupBackend {
        if let cached { return cached }
        let b = try discover()
        cached = b
        return b
    }

    private static func discover() throws(CgroupError) -> CgroupBackend {
        if let root = getenv("MOONBOX_CGROUP_ROOT").map({ String(cString: $0) }), !root.isEmpty {
            if fileExists(root + "/cgroup.controllers") { return CgroupV2(parent: root + "/moonbox") }
            guard let names = folderNames(path: root) else { throw .system("MOONBOX_CGROUP_ROOT=\(root)", errno) }
            var parents: [String: String] = [:]
            for name in names where !name.hasPrefix(".") { parents[name] = root + "/" + name + "/moonbox" }
            return CgroupV1(parents: parents)
        }
        // Which hierarchy holds which controller, and where this process sits in each.
        let (cgroupText, e1) = readTextFile("/proc/self/cgroup")
        let (mountText, e2) = readTextFile("/proc/self/mountinfo")
        guard let cgroupText else { throw .system("read /proc/self/cgroup", e1) }
        guard let mountText else { throw .system("read /proc/self/mountinfo", e2) }
        var selfPath: [String: String] = [:]  // controller ("" for v2) -> path
        for line in cgroupText.split(separator: "\n") {
            let f = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard f.count == 3 else { continue }
            for c in f[1].split(separator: ",", omittingEmptySubsequences: false) { selfPath[String(c)] = String(f[2]) }
        }
        var v1: [String: String] = [:]
        var v2Mount: (root: String, point: String)?
        for m in parseMountinfo(mountText) {
            if m.fstype == "cgroup2" && v2Mount == nil { v2Mount = (m.root, m.target) }
            guard m.fstype == "cgroup" else { continue }
            for opt in m.superOptions.split(separator: ",") {
                let c = String(opt)
                guard let path = selfPath[c] else { continue }
                v1[c] = joinCgroupPath(m.target, mountRoot: m.root, path) + "/moonbox"
            }
        }
        if v1["memory"] != nil || v1["pids"] != nil { return CgroupV1(parents: v1) }
        if let v2Mount, let path = selfPath[""] {
            return CgroupV2(parent: joinCgroupPath(v2Mount.point, mountRoot: v2Mount.root, path) + "/moonbox")
        }
        throw .system("no cgroup hierarchy is mounted", ENOENT)
    }

    private static func joinCgroupPath(_ mountPoint: String, mountRoot: String, _ path: String) -> String {
        var rel = path
        if mountRoot != "/" && rel.hasPrefix(mountRoot) { rel = String(rel.dropFirst(mountRoot.count)) }
        if rel == "/" { rel = "" }
        return mountPoint + rel
    }
}
