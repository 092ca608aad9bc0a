import CMoonbox
import Glibc

/// cgroup v2: one unified hierarchy; keys are file names.
final class CgroupV2: CgroupBackend {
    let version = 2
    /// The folder of moonbox's parent cgroup, below the caller's own cgroup.
    let parent: String
    private var created: Set<String> = []
    private var parentReady = false

    /// The hierarchy's root folder, where absolute groups start.
    let root: String

    init(parent: String, root: String? = nil) {
        self.parent = parent
        self.root = root ?? String(parent[..<(parent.lastIndex(of: "/") ?? parent.endIndex)])
    }

    /// A group's folder: below moonbox's parent, or below the root for an absolute group.
    private func folder(_ group: String) -> String { group.hasPrefix("/") ? root + group : parent + "/" + group }

    static let knownKeys: Set<String> = [
        "memory.max", "memory.swap.max", "memory.high", "memory.low", "memory.min", "memory.current",
        "memory.peak", "memory.swap.current", "memory.swap.peak", "memory.events", "memory.stat", "memory.oom.group",
        "pids.max", "pids.current", "pids.peak", "pids.events", "cpu.max", "cpu.weight", "cpu.stat",
        "cpuset.cpus", "cpuset.mems", "io.max", "io.weight", "io.stat", "cgroup.freeze", "cgroup.kill",
        "cgroup.procs", "cgroup.events", "cgroup.stat", "cgroup.controllers", "cgroup.subtree_control",
    ]

    func directories(_ group: String) -> [String] { [folder(group)] }

    private func enableControllers(in dir: String) {
        let (available, _) = readTextFile(dir + "/cgroup.controllers")
        for c in (available ?? "").split(separator: " ") where ["cpu", "memory", "pids", "io", "cpuset"].contains(String(c).trimmingSpaces()) {
            _ = writeProcFile(dir + "/cgroup.subtree_control", "+" + String(c).trimmingSpaces())
        }
    }

    func create(_ group: String) throws(CgroupError) {
        try checkGroupName(group)
        if created.contains(group) { return }
        if group.hasPrefix("/") {
            // an absolute group: made from the root down, each level delegating its controllers
            enableControllers(in: root)
            var dir = root
            for part in group.dropFirst().split(separator: "/").dropLast() {
                dir += "/" + part
                try makeCgroupBelow(String(dir[..<dir.lastIndex(of: "/")!]), String(part), prepare: { _, _ in })
                enableControllers(in: dir)
            }
            try makeCgroupBelow(root, String(group.dropFirst()), prepare: { _, _ in })
            created.insert(group)
            return
        }
        if !parentReady || !fileExists(parent) {
            let base = String(parent[..<parent.lastIndex(of: "/")!])
            enableControllers(in: base)
            try makeCgroupBelow(base, "moonbox", prepare: { _, _ in })
            enableControllers(in: parent)
            parentReady = true
        }
        try makeCgroupBelow(parent, group, prepare: { _, dir in self.enableControllers(in: dir) })
        // A nested group's parents need their controllers delegated too.
        var dir = parent
        for part in group.split(separator: "/").dropLast() {
            dir += "/" + part
            enableControllers(in: dir)
        }
        created.insert(group)
    }

    func forget(_ group: String) {
        created.remove(group)
        parentReady = false  // the shared parent may have gone with it
    }

    private func checkKey(_ group: String, _ key: String) throws(CgroupError) {
        if CgroupV2.knownKeys.contains(key) || (fileExists(folder(group) + "/" + key) && !key.contains("/")) { return }
        throw .misuse("unknown key '\(key)' for cgroup v2")
    }

    func set(_ group: String, _ key: String, _ value: String) throws(CgroupError) {
        try checkGroupName(group)
        try checkKey(group, key)
        try create(group)
        let dir = folder(group)
        if key == "cgroup.kill" {
            if let (what, e) = killCgroup([dir]) { throw .system(what, e) }
            return
        }
        if key == "cgroup.procs" { return try attach(group, Int(value) ?? -1) }
        let v = try normalizeCgroupSize(key, value)
        if !fileExists(dir + "/" + key) {
            let controller = key.split(separator: ".").first.map(String.init) ?? key
            throw .system("cgroup_set(\(key)=\(value)): controller '\(controller)' is not enabled in \(dir) (delegate it through cgroup.subtree_control)", ENOENT)
        }
        try cgroupWrite(dir, key, v, key: key)
    }

    func get(_ group: String, _ key: String) throws(CgroupError) -> String {
        try checkGroupName(group)
        try checkKey(group, key)
        return try cgroupRead(folder(group), key, key: key)
    }

    func attach(_ group: String, _ pid: Int) throws(CgroupError) {
        try create(group)
        try cgroupWrite(folder(group), "cgroup.procs", String(pid), key: "cgroup.procs")
    }

    func procs(_ group: String) throws(CgroupError) -> [Int] {
        try checkGroupName(group)
        return try readCgroupPids(folder(group), group: group)
    }
}
