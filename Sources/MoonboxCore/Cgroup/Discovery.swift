import CMoonbox
import Glibc

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
            if fileExists(root + "/cgroup.controllers") { return CgroupV2(parent: root + "/moonbox", root: root) }
            guard let names = folderNames(path: root) else { throw .system("MOONBOX_CGROUP_ROOT=\(root)", errno) }
            var parents: [String: String] = [:], roots: [String: String] = [:]
            for name in names where !name.hasPrefix(".") { parents[name] = root + "/" + name + "/moonbox"; roots[name] = root + "/" + name }
            return CgroupV1(parents: parents, roots: roots)
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
        var v1: [String: String] = [:], v1Roots: [String: String] = [:]
        var v2Mount: (root: String, point: String)?
        for m in parseMountinfo(mountText) {
            if m.fstype == "cgroup2" && v2Mount == nil { v2Mount = (m.root, m.target) }
            guard m.fstype == "cgroup" else { continue }
            for opt in m.superOptions.split(separator: ",") {
                let c = String(opt)
                guard let path = selfPath[c] else { continue }
                v1[c] = joinCgroupPath(m.target, mountRoot: m.root, path) + "/moonbox"
                v1Roots[c] = m.target
            }
        }
        if v1["memory"] != nil || v1["pids"] != nil { return CgroupV1(parents: v1, roots: v1Roots) }
        if let v2Mount, let path = selfPath[""] {
            return CgroupV2(parent: joinCgroupPath(v2Mount.point, mountRoot: v2Mount.root, path) + "/moonbox", root: v2Mount.point)
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
