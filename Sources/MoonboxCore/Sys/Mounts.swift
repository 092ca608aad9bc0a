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

/// Mounts an overlay through the new mount API, one fsconfig call per layer
/// ("lowerdir+", Linux 6.8+), so the number of layers is not bound by a page.
/// Returns nil or (step, errno).
private func overlayByFsconfig(lower: [String], upper: String?, work: String?, target: String, readonly: Bool) -> (String, Int32)? {
    let fsfd = mb_fsopen("overlay")
    if fsfd < 0 { return ("fsopen(overlay)", errno) }
    defer { Glibc.close(fsfd) }
    func set(_ key: String, _ value: String) -> Int32 { mb_fsconfig_string(fsfd, key, value) }
    for dir in lower where set("lowerdir+", dir) != 0 { return ("fsconfig(lowerdir+ \(dir))", errno) }
    if let upper, set("upperdir", upper) != 0 { return ("fsconfig(upperdir \(upper))", errno) }
    if let work, set("workdir", work) != 0 { return ("fsconfig(workdir \(work))", errno) }
    if mb_fsconfig_create(fsfd) != 0 {
        return ("fsconfig(create)", errno)
    }
    let mfd = mb_fsmount(fsfd, readonly ? 1 : 0)
    if mfd < 0 { return ("fsmount()", errno) }
    defer { Glibc.close(mfd) }
    if mb_move_mount_to(mfd, target) != 0 {
        return ("move_mount(\(target))", errno)
    }
    return nil
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
    ("chroot", { lua in
        let path = try Args(lua, "chroot").string(1, "path")
        return Glibc.chroot(path) == 0 ? lua.ok() : lua.fail("chroot(\(path))")
    }),
    // overlay{lower={top, ..., bottom}, upper=, work=, target=, flags=}: lower[1] is the top layer.
    ("overlay", { lua in
        let a = Args(lua, "overlay")
        try a.table(1, "spec")
        try a.options(1, "spec", allowed: ["lower", "upper", "work", "target", "flags", "options"])
        guard let target = try a.stringField(1, "target") else { throw a.error(1, "target", "is required") }
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
        let what = "overlay(\(target))"
        let explain = " (overlay needs upper and work on one filesystem, not on overlayfs, and at least 2 lowers without an upper)"
        if data.utf8.count < Int(getpagesize()) - 1 {
            if Glibc.mount("overlay", target, "overlay", flags, data) == 0 { return lua.ok() }
            let e = errno
            if e != EINVAL { return lua.fail(what, errno: e) }
            return lua.fail(message: "\(what): \(errnoText(e))\(explain)", errnoName: errnoName(e))
        }
        // Options longer than a page: one layer per fsconfig call.
        guard extra == nil, flags & ~UInt(1) == 0 else {
            throw a.error(1, "options", "extra options and flags other than 'ro' are not supported beyond one page of layers")
        }
        if let (step, e) = overlayByFsconfig(lower: lower, upper: upper, work: work, target: target, readonly: flags & 1 != 0) {
            let hint = e == EINVAL ? explain : ""
            return lua.fail(message: "\(what): \(step): \(errnoText(e))\(hint)", errnoName: errnoName(e))
        }
        return lua.ok()
    }),
]
