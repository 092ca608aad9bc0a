import CMoonbox
import Glibc

/// Mounts: mount(2), umount2(2), pivot_root(2), chroot(2), open_tree(2), move_mount(2) and
/// overlayfs. A source or target may be an fd (from open_in_root): the mount lands on what
/// the fd resolved to, through its /proc/self/fd link, as crun mounts into a rootfs.

extension Args {
    /// A path, or an fd object / integer standing for what it refers to.
    func pathOrFd(_ i: Int32, _ name: String) throws -> String {
        if lua.type(i) == LUA_TSTRING { return try string(i, name) }
        guard lua.type(i) == LUA_TNUMBER || FdObject.slot(lua, i) != nil else {
            throw error(i, name, "string or fd expected, got \(lua.type(i) == LUA_TNONE ? "no value" : lua.typeName(i))")
        }
        return "/proc/self/fd/\(try fd(i, name))"
    }
    func optPathOrFd(_ i: Int32, _ name: String) throws -> String? {
        lua.isNoneOrNil(i) ? nil : try pathOrFd(i, name)
    }
}

let mountFlags: [String: UInt] = [
    "ro": 1, "rdonly": 1, "rw": 0, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "remount": 32,
    "mandlock": 64, "dirsync": 128, "nosymfollow": 256, "noatime": 1024, "nodiratime": 2048,
    "bind": 4096, "rbind": 4096 | 16384, "move": 8192, "rec": 16384, "silent": 32768,
    "unbindable": 1 << 17, "runbindable": 1 << 17 | 16384, "private": 1 << 18, "rprivate": 1 << 18 | 16384,
    "slave": 1 << 19, "rslave": 1 << 19 | 16384, "shared": 1 << 20, "rshared": 1 << 20 | 16384,
    "relatime": 1 << 21, "strictatime": 1 << 24, "lazytime": 1 << 25,
]

let umountFlags: [String: Int32] = ["force": 1, "detach": 2, "expire": 4, "nofollow": 8]

/// overlayfs takes ':' and ',' as separators in its options, so escape them in paths.
private func overlayEscape(_ path: String) -> String {
    var out = ""
    for c in path {
        if c == "\\" || c == ":" || c == "," { out.append("\\") }
        out.append(c)
    }
    return out
}

/// A detached mount made with the new mount API (fsopen, fsconfig, fsmount): in no mount
/// namespace until move_mount attaches it, so a parent can make it and a child in namespaces of
/// its own can attach it. `params` are applied in order (overlayfs's "lowerdir+" repeats);
/// a nil value is a flag. Returns the mount fd, or (-1, step, errno).
func detachedMount(_ fstype: String, _ params: [(String, String?)], attr: UInt32) -> (Int32, String, Int32) {
    let fsfd = mb_fsopen(fstype)
    if fsfd < 0 { return (-1, "fsopen(\(fstype))", errno) }
    defer { Glibc.close(fsfd) }
    for (key, value) in params {
        let r = value.map { mb_fsconfig_string(fsfd, key, $0) } ?? mb_fsconfig_flag(fsfd, key)
        if r != 0 { return (-1, "fsconfig(\(key)\(value.map { " " + $0 } ?? ""))", errno) }
    }
    if mb_fsconfig_create(fsfd) != 0 { return (-1, "fsconfig(create)", errno) }
    let mfd = mb_fsmount(fsfd, attr)
    if mfd < 0 { return (-1, "fsmount()", errno) }
    return (mfd, "", 0)
}

/// MOUNT_ATTR_* bits by mount flag name.
private let mountAttrs: [String: UInt32] = ["ro": 1, "rdonly": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "rw": 0]

/// Mounts an overlay through the new mount API, one fsconfig call per layer ("lowerdir+",
/// Linux 6.8+), so the number of layers is not bound by a page. With a target it is attached
/// there; without, the detached mount's fd is returned. Returns (fd or 0, nil) or (-1, (step, errno)).
private func overlayByFsconfig(lower: [String], upper: String?, work: String?, target: String?, readonly: Bool) -> (Int32, (String, Int32)?) {
    var params: [(String, String?)] = lower.map { ("lowerdir+", $0) }
    if let upper { params.append(("upperdir", upper)) }
    if let work { params.append(("workdir", work)) }
    let (mfd, step, e) = detachedMount("overlay", params, attr: readonly ? 1 : 0)
    if mfd < 0 { return (-1, (step, e)) }
    guard let target else { return (mfd, nil) }
    defer { Glibc.close(mfd) }
    if mb_move_mount_to(mfd, target) != 0 { return (-1, ("move_mount(\(target))", errno)) }
    return (0, nil)
}

let mountFunctions: [(String, LuaFunction)] = [
    // mount(source, target [, fstype [, flags [, data]]])
    ("mount", { lua in
        let a = Args(lua, "mount")
        let source = try a.optPathOrFd(1, "source")
        let target = try a.pathOrFd(2, "target")
        let fstype = try a.optString(3, "fstype")
        let flags = try a.flags(4, "flags", mountFlags)
        let data = try a.optString(5, "data")
        let r = Glibc.mount(source, target, fstype, flags, data)
        if r == 0 { return lua.ok() }
        return lua.fail(source.map { "mount(\($0) on \(target))" } ?? "mount(\(target))")
    }),
    ("umount", { lua in
        let a = Args(lua, "umount")
        let target = try a.pathOrFd(1, "target")
        let flags = try a.flags(2, "flags", umountFlags)
        return umount2(target, flags) == 0 ? lua.ok() : lua.fail("umount(\(target))")
    }),
    ("pivot_root", { lua in
        let a = Args(lua, "pivot_root")
        let newRoot = try a.string(1, "new_root")
        let putOld = try a.string(2, "put_old")
        return mb_pivot_root(newRoot, putOld) == 0 ? lua.ok() : lua.fail("pivot_root(\(newRoot), \(putOld))")
    }),
    // open_tree(path_or_fd [, flags]): an fd for a mount; with "clone" a detached copy of it
    // (a bind mount not yet attached anywhere), "recursive" with the mounts below it.
    ("open_tree", { lua in
        let a = Args(lua, "open_tree")
        let flags = try a.flags(2, "flags", ["clone": UInt32(1), "recursive": UInt32(0x8000)])
        let fd: Int32
        if lua.type(1) == LUA_TSTRING {
            fd = mb_open_tree(AT_FDCWD, try a.string(1, "path"), flags | UInt32(O_CLOEXEC))
        } else {
            fd = mb_open_tree(try a.fd(1, "path"), "", flags | UInt32(O_CLOEXEC) | UInt32(mb_AT_EMPTY_PATH()))
        }
        if fd < 0 { return lua.fail("open_tree(\(lua.type(1) == LUA_TSTRING ? try a.string(1, "path") : "fd"))") }
        FdObject.push(lua, fd)
        return 1
    }),
    // move_mount(mount_fd, target): attaches (or moves) the mount an open_tree or fsmount fd
    // holds onto target, a path or an fd.
    ("move_mount", { lua in
        let a = Args(lua, "move_mount")
        let from = try a.fd(1, "mount_fd")
        let fEmpty: UInt32 = 0x04, tEmpty: UInt32 = 0x40
        let r: Int32
        if lua.type(2) == LUA_TSTRING {
            r = mb_move_mount(from, "", AT_FDCWD, try a.string(2, "target"), fEmpty)
        } else {
            r = mb_move_mount(from, "", try a.fd(2, "target"), "", fEmpty | tEmpty)
        }
        return r == 0 ? lua.ok() : lua.fail("move_mount()")
    }),
    // fsmount(fstype, params [, flags]): a new filesystem as a detached mount fd (fsopen,
    // fsconfig, fsmount), for move_mount to attach elsewhere, in another namespace too. params
    // is a list of {key, value} (value omitted for a flag), applied in order; flags are
    // "ro", "nosuid", "nodev", "noexec".
    ("fsmount", { lua in
        let a = Args(lua, "fsmount")
        let fstype = try a.string(1, "fstype")
        try a.table(2, "params")
        var params: [(String, String?)] = []
        for k in 0..<lua.rawLength(2) {
            lua.rawGet(2, k + 1)
            defer { lua.pop() }
            let item = lua.top
            guard lua.type(item) == LUA_TTABLE else { throw a.error(2, "params", "item \(k + 1) must be {key, value}") }
            lua.rawGet(item, 1)
            let key = lua.type(-1) == LUA_TSTRING ? lua.string(at: -1) : nil
            lua.pop()
            lua.rawGet(item, 2)
            let value = lua.isNoneOrNil(-1) ? nil : lua.string(at: -1)
            let bad = !lua.isNoneOrNil(-1) && lua.type(-1) != LUA_TSTRING && lua.type(-1) != LUA_TNUMBER
            lua.pop()
            guard let key, !bad else { throw a.error(2, "params", "item \(k + 1) must be {key, value} with strings") }
            params.append((key, value))
        }
        let attr = try a.flags(3, "flags", mountAttrs)
        let (fd, step, e) = detachedMount(fstype, params, attr: attr)
        if fd < 0 { return lua.fail("fsmount(\(fstype)): \(step)", errno: e) }
        FdObject.push(lua, fd)
        return 1
    }),
    ("chroot", { lua in
        let path = try Args(lua, "chroot").string(1, "path")
        return Glibc.chroot(path) == 0 ? lua.ok() : lua.fail("chroot(\(path))")
    }),
    // overlay{lower={top, ..., bottom}, upper=, work=, target=, flags=}: lower[1] is the top layer.
    ("overlay", { lua in
        let a = Args(lua, "overlay")
        try a.table(1, "spec")
        try a.options(1, "spec", allowed: ["lower", "upper", "work", "target", "flags", "options"])
        let target = try a.stringField(1, "target")
        let lower: [String] = try a.field(1, "lower") { try Args(lua, "overlay").stringList($0, "lower") } ?? []
        guard !lower.isEmpty else { throw a.error(1, "lower", "needs at least one folder") }
        let upper = try a.stringField(1, "upper")
        let work = try a.stringField(1, "work")
        if (upper == nil) != (work == nil) { throw a.error(1, upper == nil ? "upper" : "work", "upper and work go together") }
        let flags: UInt = try a.field(1, "flags") { idx in try Args(lua, "overlay").flags(idx, "flags", mountFlags) } ?? 0
        let extra = try a.stringField(1, "options")
        var data = "lowerdir=" + lower.map(overlayEscape).joined(separator: ":")
        if let upper, let work { data += ",upperdir=\(overlayEscape(upper)),workdir=\(overlayEscape(work))" }
        if let extra { data += "," + extra }
        let what = "overlay(\(target ?? "detached"))"
        let explain = " (overlay needs upper and work on one filesystem, not on overlayfs, and at least 2 lowers without an upper)"
        if let target, data.utf8.count < Int(getpagesize()) - 1 {
            if Glibc.mount("overlay", target, "overlay", flags, data) == 0 { return lua.ok() }
            let e = errno
            if e != EINVAL { return lua.fail(what, errno: e) }
            return lua.fail(message: "\(what): \(errnoText(e))\(explain)", errnoName: errnoName(e))
        }
        // Options longer than a page, or a detached mount: one layer per fsconfig call.
        guard extra == nil, flags & ~UInt(1) == 0 else {
            throw a.error(1, "options", "extra options and flags other than 'ro' need a target and at most one page of layers")
        }
        let (fd, failure) = overlayByFsconfig(lower: lower, upper: upper, work: work, target: target, readonly: flags & 1 != 0)
        if let (step, e) = failure {
            let hint = e == EINVAL ? explain : ""
            return lua.fail(message: "\(what): \(step): \(errnoText(e))\(hint)", errnoName: errnoName(e))
        }
        if target == nil {
            FdObject.push(lua, fd)
            return 1
        }
        return lua.ok()
    }),
]
