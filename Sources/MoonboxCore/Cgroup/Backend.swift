import CMoonbox
import Glibc

/// cgroups behind one interface, with a v1 and a v2 backend. Keys are the v2 names;
/// the v1 backend translates them. The hierarchy root is a parameter, so the logic
/// can be tested on a plain folder tree. As youki's manager does, a group is created once
/// (per process) and then its keys are written, with no mkdir on every write.

enum CgroupError: Error {
    /// A misuse: raised as a Lua error.
    case misuse(String)
    /// A system failure: returned as nil, message, errno.
    case system(String, Int32)
}

protocol CgroupBackend: AnyObject {
    var version: Int { get }
    /// The folders of `group`, one per hierarchy moonbox uses, whether made yet or not.
    func directories(_ group: String) -> [String]
    /// Makes the group; once made by this process, a no-op.
    func create(_ group: String) throws(CgroupError)
    func set(_ group: String, _ key: String, _ value: String) throws(CgroupError)
    func get(_ group: String, _ key: String) throws(CgroupError) -> String
    func attach(_ group: String, _ pid: Int) throws(CgroupError)
    func procs(_ group: String) throws(CgroupError) -> [Int]
    /// Forgets that the group was made (after it was destroyed).
    func forget(_ group: String)
}

extension CgroupBackend {
    /// Writes several keys in order: memory.max before memory.swap.max (v1 computes memsw from
    /// it), devices.deny before devices.allow, the rest by name. A list value is written line
    /// by line (devices.allow rules).
    func apply(_ group: String, _ values: [(key: String, values: [String])]) throws(CgroupError) {
        try create(group)
        let first = ["memory.max", "memory.swap.max", "devices.deny", "devices.allow"]
        let ordered = values.sorted { a, b in
            let ia = first.firstIndex(of: a.key) ?? first.count, ib = first.firstIndex(of: b.key) ?? first.count
            return ia != ib ? ia < ib : a.key < b.key
        }
        for (key, list) in ordered {
            for v in list { try set(group, key, v) }
        }
    }

    /// Removes the group's folders (EBUSY while processes remain), then its empty parents.
    func remove(_ group: String) throws(CgroupError) {
        try checkGroupName(group)
        let dirs = directories(group)
        for d in dirs where Glibc.rmdir(d) != 0 && errno != ENOENT {
            throw .system("cgroup_remove(\(group)): rmdir \(d)", errno)
        }
        removeEmptyCgroupParents(dirs)
        forget(group)
    }

    /// Kills everything in the group and removes it (see destroyCgroupFolders).
    func destroy(_ group: String) throws(CgroupError) {
        try checkGroupName(group)
        if let (what, e) = destroyCgroupFolders(directories(group)) { throw .system(what, e) }
        forget(group)
    }
}

// MARK: shared helpers

/// A group is a relative path below moonbox's parent cgroup ("web", "jobs/1"), or an absolute
/// one below the hierarchy's root ("/libpod_parent/libpod-ID": an OCI cgroupsPath).
func checkGroupName(_ group: String) throws(CgroupError) {
    let relative = group.hasPrefix("/") ? String(group.dropFirst()) : group
    guard !relative.isEmpty, !relative.hasPrefix("/"), !relative.hasSuffix("/") else {
        throw .misuse("group '\(group)' must be a path like 'web', 'jobs/1' or '/machine/web'")
    }
    for part in relative.split(separator: "/", omittingEmptySubsequences: false) {
        guard !part.isEmpty, part != ".", part != "..",
              part.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }) else {
            throw .misuse("group '\(group)' has a bad component '\(part)' (letters, digits, '.', '_' and '-' only)")
        }
    }
}

func cgroupWrite(_ dir: String, _ file: String, _ value: String, key: String) throws(CgroupError) {
    if let e = writeProcFile(dir + "/" + file, value) {
        throw .system("cgroup_set(\(key)=\(value)): \(dir)/\(file)", e)
    }
}

func cgroupRead(_ dir: String, _ file: String, key: String) throws(CgroupError) -> String {
    let (text, e) = readTextFile(dir + "/" + file)
    guard let text else { throw .system("cgroup_get(\(key)): \(dir)/\(file)", e) }
    return text.trimmingSpaces()
}

/// Creates the folders of `relative` below `base` one level at a time, calling `prepare`
/// on each new one (v2 enables controllers, v1 cpuset copies cpus and mems).
func makeCgroupBelow(_ base: String, _ relative: String, prepare: (String, String) -> Void) throws(CgroupError) {
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

func readCgroupPids(_ dir: String, group: String) throws(CgroupError) -> [Int] {
    let (text, e) = readTextFile(dir + "/cgroup.procs")
    guard let text else { throw .system("cgroup_procs(\(group)): \(dir)/cgroup.procs", e) }
    return text.split(separator: "\n").compactMap { Int32($0).map(Int.init) }
}

/// memory keys take sizes ("512M"); everything else is written as given.
private let sizeKeys: Set<String> = ["memory.max", "memory.swap.max", "memory.high", "memory.low", "memory.min"]

func normalizeCgroupSize(_ key: String, _ value: String) throws(CgroupError) -> String {
    guard sizeKeys.contains(key) else { return value }
    switch parseSize(value) {
    case .bytes(let n): return n < 0 ? "max" : String(n)
    case .invalid(let why): throw .misuse("bad size '\(value)' for \(key): \(why)")
    }
}

// MARK: destroying groups by their folders

private let cgroupMagic: Int = 0x27e0eb, cgroup2Magic: Int = 0x63677270

/// True when `path` is a real cgroup folder (or lies in the folder tree MOONBOX_CGROUP_ROOT
/// names, for tests): an absolute path with no "." or ".." parts, not a symlink.
func isCgroupFolder(_ path: String) -> Bool {
    guard path.hasPrefix("/"), !path.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else { return false }
    var st = stat()
    if lstat(path, &st) == 0 && st.st_mode & S_IFMT != S_IFDIR { return false }
    if let root = getenv("MOONBOX_CGROUP_ROOT").map({ String(cString: $0) }), !root.isEmpty, path.hasPrefix(root + "/") {
        return true
    }
    // The folder, or the nearest existing parent when it is gone already, must be on cgroupfs.
    var probe = path
    while true {
        let type = mb_statfs_type(probe)
        if type >= 0 { return type == cgroupMagic || type == cgroup2Magic }
        guard errno == ENOENT, let slash = probe.lastIndex(of: "/"), slash != probe.startIndex else { return false }
        probe = String(probe[..<slash])
    }
}

/// Kills every process in `folders` (one group, seen in each hierarchy): cgroup.kill where
/// the kernel has it, else freeze, SIGKILL each process, thaw (so nothing forks meanwhile).
private func killCgroupProcesses(_ folders: [String]) {
    if let v2 = folders.first(where: { fileExists($0 + "/cgroup.kill") }) {
        _ = writeProcFile(v2 + "/cgroup.kill", "1")
        return
    }
    let freezer = folders.first { fileExists($0 + "/freezer.state") }
    let v2Freeze = folders.first { fileExists($0 + "/cgroup.freeze") }
    if let freezer { _ = writeProcFile(freezer + "/freezer.state", "FROZEN") }
    if let v2Freeze { _ = writeProcFile(v2Freeze + "/cgroup.freeze", "1") }
    for folder in folders {
        for pid in (readTextFile(folder + "/cgroup.procs").0 ?? "").split(separator: "\n").compactMap({ Int32($0) }) {
            Glibc.kill(pid, SIGKILL)
        }
    }
    if let freezer { _ = writeProcFile(freezer + "/freezer.state", "THAWED") }
    if let v2Freeze { _ = writeProcFile(v2Freeze + "/cgroup.freeze", "0") }
}

/// Kills every process in `folders` and waits, up to a second, until none is left (an exiting
/// process leaves its cgroup before it is reaped). Nil, or why the folders were refused.
func killCgroup(_ folders: [String]) -> (String, Int32)? {
    for f in folders where !isCgroupFolder(f) {
        return ("cgroup.kill(\(f)): not a cgroup folder", EINVAL)
    }
    let deadline = monotonicNow() + 1
    while monotonicNow() < deadline {
        let pids = folders.flatMap { (readTextFile($0 + "/cgroup.procs").0 ?? "").split(separator: "\n") }
        if pids.isEmpty { return nil }
        killCgroupProcesses(folders)
        var ts = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        nanosleep(&ts, nil)
    }
    return nil
}

/// Kills everything in a group and removes its folders, retrying while the kernel still
/// reaps the killed processes (EBUSY), for up to five seconds. Then the shared parent folder
/// named "moonbox" goes too when empty. Returns nil when every folder is gone, or what failed.
/// This is the one kill-and-remove loop: container removal and gc both come here.
func destroyCgroupFolders(_ folders: [String]) -> (String, Int32)? {
    for f in folders where !isCgroupFolder(f) {
        return ("cgroup_destroy(\(f)): not a cgroup folder", EINVAL)
    }
    var left = folders.filter { fileExists($0) }
    let deadline = monotonicNow() + 5
    while !left.isEmpty {
        killCgroupProcesses(left)
        var still: [String] = []
        for f in left where Glibc.rmdir(f) != 0 {
            let e = errno
            if e == ENOENT { continue }
            if e != EBUSY { return ("cgroup_destroy(\(f))", e) }
            still.append(f)
        }
        left = still
        if left.isEmpty { break }
        if monotonicNow() > deadline { return ("cgroup_destroy(\(left[0])): processes would not die", EBUSY) }
        var ts = timespec(tv_sec: 0, tv_nsec: 2_000_000)
        nanosleep(&ts, nil)
    }
    removeEmptyCgroupParents(folders)
    return nil
}

/// Empty parents of removed groups go, up to and including moonbox's own folder; a parent
/// still in use by another group stays.
func removeEmptyCgroupParents(_ folders: [String]) {
    for f in folders {
        var dir = f
        while let slash = dir.lastIndex(of: "/"), dir.contains("/moonbox/") {
            dir = String(dir[..<slash])
            if Glibc.rmdir(dir) != 0 { break }
        }
    }
}
