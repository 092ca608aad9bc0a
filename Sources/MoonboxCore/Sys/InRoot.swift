import CMoonbox
import Glibc

/// Paths inside an untrusted tree (a rootfs, an unpacked image or archive): every path is
/// resolved inside the tree's root fd with openat2(2) RESOLVE_IN_ROOT, so ".." and symlinks,
/// absolute ones included, cannot leave it, and magic links (/proc/PID/fd/N) are refused.
/// Nothing is ever made by joining strings on the host.

private let resolveInRoot: UInt64 = 0x08 | 0x02  // RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
private let oPath: Int32 = 0o10000000

enum CreateKind: String { case dir, file }

/// The components of a path inside a root: "" and "." dropped; nil when ".." appears, which
/// creation never needs (resolution alone clamps it at the root).
private func components(_ path: String) -> [String]? {
    var parts: [String] = []
    for p in path.split(separator: "/") where p != "." {
        if p == ".." { return nil }
        parts.append(String(p))
    }
    return parts
}

/// Opens `path` inside `root` with `flags`; with `create`, missing components are made first,
/// one at a time, each in its parent as resolved inside the root: folders, and a file or
/// folder (`create`) last. A component that exists as a symlink is followed inside the root;
/// a dangling one is not replaced. Returns the fd, or -1 with errno.
func openInRoot(_ root: Int32, _ path: String, flags: Int32, create: CreateKind?, mode: mode_t) -> Int32 {
    let fd = mb_openat2(root, path, flags | O_CLOEXEC, 0, resolveInRoot)
    if fd >= 0 || errno != ENOENT || create == nil { return fd }
    guard let parts = components(path), !parts.isEmpty else { errno = EINVAL; return -1 }
    for i in 0..<parts.count {
        let prefix = parts[0...i].joined(separator: "/")
        let probe = mb_openat2(root, prefix, oPath | O_CLOEXEC, 0, resolveInRoot)
        if probe >= 0 { Glibc.close(probe); continue }
        if errno != ENOENT { return -1 }
        let parent = i == 0 ? Glibc.dup(root)
            : mb_openat2(root, parts[0..<i].joined(separator: "/"), oPath | O_DIRECTORY | O_CLOEXEC, 0, resolveInRoot)
        if parent < 0 { return -1 }
        var r: Int32
        if i == parts.count - 1 && create == .file {
            r = mb_openat(parent, parts[i], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            if r >= 0 { Glibc.close(r); r = 0 }
        } else {
            r = mkdirat(parent, parts[i], i == parts.count - 1 ? mode : 0o755)
        }
        let e = errno
        Glibc.close(parent)
        if r < 0 && e != EEXIST { errno = e; return -1 }
    }
    return mb_openat2(root, path, flags | O_CLOEXEC, 0, resolveInRoot)
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
        let name = try a.string(2, "name")
        guard !name.contains("/"), name != "..", name != "." else { throw a.error(2, "name", "must be one path component") }
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
        let name = try a.string(3, "name")
        guard !name.contains("/"), name != "..", name != "." else { throw a.error(3, "name", "must be one path component") }
        return Glibc.symlinkat(target, dir, name) == 0 ? lua.ok() : lua.fail("symlinkat(\(name) -> \(target))")
    }),
]
