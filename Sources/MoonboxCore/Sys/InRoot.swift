import CMoonbox
import Glibc

/// Paths inside an untrusted tree (a rootfs, an unpacked image or archive): every path is
/// resolved inside the tree's root fd with openat2(2) RESOLVE_IN_ROOT, so ".." and symlinks,
/// absolute ones included, cannot leave it, and magic links (/proc/PID/fd/N) are refused.
/// Nothing is ever made by joining strings on the host.

private let resolveInRoot: UInt64 = 0x10 | 0x02  // RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
private let oPath: Int32 = 0o10000000

enum CreateKind: String { case dir, file }

/// Makes what is missing of `path` inside `root`, the way securejoin's MkdirAllInRoot does: one
/// component at a time, each opened O_NOFOLLOW from the fd of its parent, so nothing swapped in
/// meanwhile is followed. A symlink is read and its target spliced into the rest of the path,
/// resolved against the root (an absolute target restarts at the root); ".." pops our own stack
/// of fds and never rises above the root. Missing folders are made (mode 0755), and the last
/// component as `create` with `mode`. Returns 0, or -1 with errno.
private func makeInRoot(_ root: Int32, _ path: String, create: CreateKind, mode: mode_t) -> Int32 {
    var stack: [Int32] = [Glibc.dup(root)]
    defer { stack.forEach { Glibc.close($0) } }
    var queue = path.split(separator: "/").map(String.init)
    var links = 0
    while !queue.isEmpty {
        let part = queue.removeFirst()
        if part == "." || part.isEmpty { continue }
        if part == ".." {
            if stack.count > 1 { Glibc.close(stack.removeLast()) }
            continue
        }
        let cur = stack.last!
        let isLast = queue.isEmpty
        var st = stat()
        if fstatat(cur, part, &st, AT_SYMLINK_NOFOLLOW) == 0 {
            if st.st_mode & S_IFMT == S_IFLNK {
                links += 1
                if links > 40 { errno = ELOOP; return -1 }
                var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlinkat(cur, part, &buf, Int(PATH_MAX))
                if n < 0 { return -1 }
                let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("/") {
                    stack.dropFirst().forEach { Glibc.close($0) }
                    stack = [stack[0]]
                }
                queue = target.split(separator: "/").map(String.init) + queue
                continue
            }
            if isLast { return 0 }
            guard st.st_mode & S_IFMT == S_IFDIR else { errno = ENOTDIR; return -1 }
            let next = mb_openat(cur, part, oPath | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            if next < 0 { return -1 }
            stack.append(next)
            continue
        }
        guard errno == ENOENT else { return -1 }
        if isLast && create == .file {
            let fd = mb_openat(cur, part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            if fd < 0 && errno != EEXIST { return -1 }
            if fd >= 0 { Glibc.close(fd) }
            return 0
        }
        if mkdirat(cur, part, isLast ? mode : 0o755) != 0 && errno != EEXIST { return -1 }
        queue.insert(part, at: 0)  // look again: now there (or made by someone else meanwhile)
    }
    return 0
}

/// Opens `path` inside `root` with `flags`; with `create`, what is missing is made first (see
/// makeInRoot). Returns the fd, or -1 with errno.
func openInRoot(_ root: Int32, _ given: String, flags: Int32, create: CreateKind?, mode: mode_t) -> Int32 {
    // "/x" inside the root is "x" from it.
    var trimmed = Substring(given)
    while trimmed.hasPrefix("/") { trimmed = trimmed.dropFirst() }
    let path = trimmed.isEmpty ? "." : String(trimmed)
    let fd = mb_openat2(root, path, flags | O_CLOEXEC, 0, resolveInRoot)
    guard fd < 0, errno == ENOENT, let create else { return fd }
    if makeInRoot(root, path, create: create, mode: mode) != 0 { return -1 }
    return mb_openat2(root, path, flags | O_CLOEXEC, 0, resolveInRoot)
}

extension Args {
    /// A single path component: no "/", and not "." or "..".
    func component(_ i: Int32, _ name: String) throws -> String {
        let s = try string(i, name)
        guard !s.isEmpty, !s.contains("/"), s != "..", s != "." else { throw error(i, name, "must be one path component") }
        return s
    }
}

let inRootFunctions: [(String, LuaFunction)] = [
    // open_in_root(root, path [, {create = "dir"|"file", mode = 0755, flags = {...}}]): an fd
    // for path as seen from inside the folder fd `root`, never outside it. flags are open's
    // (default {"path"}: an O_PATH fd to mount on or resolve from). With create, missing
    // components are made inside the root (as crun's safe_create_and_open_ref_at does).
    ("open_in_root", { lua in
        let a = Args(lua, "open_in_root")
        let root = try a.fd(1, "root")
        let path = try a.string(2, "path")
        var create: CreateKind?
        var mode: mode_t = 0o755
        var flags: Int32 = oPath
        if try a.optTable(3, "options") {
            try a.options(3, "options", allowed: ["create", "mode", "flags"])
            if let c = try a.stringField(3, "create") {
                guard let k = CreateKind(rawValue: c) else { throw a.error(3, "create", "must be \"dir\" or \"file\"") }
                create = k
                mode = k == .file ? 0o644 : 0o755
            }
            if let m = try a.integerField(3, "mode") {
                guard (0...0o7777).contains(m) else { throw a.error(3, "mode", "must be between 0 and 0o7777") }
                mode = mode_t(m)
            }
            flags = try a.field(3, "flags") { try Args(lua, "open_in_root").flags($0, "flags", openFlags) } ?? oPath
        }
        let fd = openInRoot(root, path, flags: flags, create: create, mode: mode)
        if fd < 0 { return lua.fail("open_in_root(\(path))") }
        FdObject.push(lua, fd)
        return 1
    }),
    // mknodat(dirfd, name, type, mode [, major, minor]): mknod(2) in a folder fd; type is
    // "char", "block", "fifo", "file" or "socket". The mode is exact: the umask does not apply.
    ("mknodat", { lua in
        let a = Args(lua, "mknodat")
        let dir = try a.fd(1, "dirfd")
        let name = try a.component(2, "name")
        let typeName = try a.string(3, "type")
        guard let type = mknodTypes[typeName] else { throw a.error(3, "type", "must be char, block, fifo, file or socket") }
        let mode = try a.mode(4, "mode", default: 0o666)
        let major = try a.optInteger(5, "major") ?? 0, minor = try a.optInteger(6, "minor") ?? 0
        guard major >= 0, minor >= 0, major < 1 << 12, minor < 1 << 20 else { throw a.error(5, "major", "device number out of range") }
        if mb_mknodat(dir, name, type | mode, UInt32(major), UInt32(minor)) != 0 { return lua.fail("mknodat(\(name))") }
        if fchmodat(dir, name, mode, 0) != 0 { return lua.fail("mknodat(\(name)): chmod") }
        return lua.ok()
    }),
    // symlinkat(target, dirfd, name): symlink(2) in a folder fd.
    ("symlinkat", { lua in
        let a = Args(lua, "symlinkat")
        let target = try a.string(1, "target")
        let dir = try a.fd(2, "dirfd")
        let name = try a.component(3, "name")
        return Glibc.symlinkat(target, dir, name) == 0 ? lua.ok() : lua.fail("symlinkat(\(name) -> \(target))")
    }),
    // unlinkat(dirfd, name [, "dir"]): unlink(2) (or rmdir with "dir") of a name in a folder fd.
    ("unlinkat", { lua in
        let a = Args(lua, "unlinkat")
        let dir = try a.fd(1, "dirfd")
        let name = try a.component(2, "name")
        var flags: Int32 = 0
        if let kind = try a.optString(3, "kind") {
            guard kind == "dir" else { throw a.error(3, "kind", "must be \"dir\"") }
            flags = AT_REMOVEDIR
        }
        return Glibc.unlinkat(dir, name, flags) == 0 ? lua.ok() : lua.fail("unlinkat(\(name))")
    }),
    // fchownat(dirfd, name, uid, gid): chown(2) of a name in a folder fd, not following a symlink.
    ("fchownat", { lua in
        let a = Args(lua, "fchownat")
        let dir = try a.fd(1, "dirfd")
        let name = try a.component(2, "name")
        let uid = try a.integer(3, "uid"), gid = try a.integer(4, "gid")
        guard (0...0xFFFF_FFFE).contains(uid), (0...0xFFFF_FFFE).contains(gid) else { throw a.error(3, "uid", "ids must be 0 to 4294967294") }
        return Glibc.fchownat(dir, name, uid_t(uid), gid_t(gid), AT_SYMLINK_NOFOLLOW) == 0 ? lua.ok() : lua.fail("fchownat(\(name))")
    }),
]
