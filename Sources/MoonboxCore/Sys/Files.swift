import CMoonbox
import Glibc

/// Files and folders. Contents go through Lua's io library; this is the rest.

private func fileType(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: return "file"
    case S_IFDIR: return "dir"
    case S_IFLNK: return "link"
    case S_IFCHR: return "char"
    case S_IFBLK: return "block"
    case S_IFIFO: return "fifo"
    case S_IFSOCK: return "socket"
    default: return "unknown"
    }
}

/// A file name as the kernel keeps it: bytes, which need not be UTF-8. Names read from
/// untrusted trees stay raw, so a name Swift cannot decode can still be removed or skipped.
typealias RawName = [UInt8]

extension Array where Element == UInt8 {
    /// The name as a String when it is valid UTF-8.
    var utf8Text: String? { String(validating: self, as: UTF8.self) }
    /// A printable form for messages: invalid bytes as \xNN.
    var printable: String {
        if let t = utf8Text { return t }
        return map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
    }
    /// Calls body with the name as a C string.
    func withCName<R>(_ body: (UnsafePointer<CChar>) -> R) -> R {
        (self + [0]).withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) } }
    }
}

/// The names in an open DIR stream (not . and ..), in directory order, as raw bytes.
private func rawNames(of dir: OpaquePointer) -> [RawName] {
    var names: [RawName] = []
    while let entry = readdir(dir) {
        let name: RawName = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: UInt8.self, capacity: 256) { p in Array(UnsafeBufferPointer(start: p, count: strlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self)))) }
        }
        if name != [46] && name != [46, 46] { names.append(name) }
    }
    return names
}

/// The raw names in an open folder fd; nil when it cannot be read.
func folderEntries(_ fd: Int32) -> [RawName]? {
    guard let dir = fdopendir(dup(fd)) else { return nil }
    defer { closedir(dir) }
    return rawNames(of: dir)
}

/// The raw names in the folder at `path`; nil with errno set when it cannot be opened.
func folderEntries(path: String) -> [RawName]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    return rawNames(of: dir)
}

/// The names in a folder moonbox made or trusts (UTF-8 names only).
func folderNames(path: String) -> [String]? {
    folderEntries(path: path)?.compactMap(\.utf8Text)
}

private func pushStat(_ lua: Lua, _ st: stat) {
    lua.newTable(records: 14)
    lua.set("type", fileType(st.st_mode))
    lua.set("mode", Int(st.st_mode & 0o7777))
    lua.set("uid", Int(st.st_uid))
    lua.set("gid", Int(st.st_gid))
    lua.set("size", Int(st.st_size))
    lua.set("major", Int(mb_major(st.st_rdev)))
    lua.set("minor", Int(mb_minor(st.st_rdev)))
    lua.set("dev", Int(st.st_dev))
    lua.set("ino", Int(st.st_ino))
    lua.set("nlink", Int(st.st_nlink))
    lua.set("blocks", Int(st.st_blocks))
    lua.set("mtime", Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
}

/// mkdir -p: creates `path` and its missing parents. An existing folder is fine.
func makeDirectories(_ path: String, mode: mode_t) -> Int32? {
    if Glibc.mkdir(path, mode) == 0 { return nil }
    var e = errno
    if e == EEXIST {
        var st = stat()
        return stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR ? nil : EEXIST
    }
    guard e == ENOENT else { return e }
    let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
    guard let slash = trimmed.lastIndex(of: "/"), slash != trimmed.startIndex else { return e }
    if let pe = makeDirectories(String(trimmed[..<slash]), mode: 0o755) { return pe }
    if Glibc.mkdir(path, mode) == 0 { return nil }
    e = errno
    if e == EEXIST {
        var st = stat()
        return stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR ? nil : EEXIST
    }
    return e
}

/// Removes everything below the open folder `dirfd` without following symlinks and
/// without entering another mount. Returns the paths it refused to cross, or the first error.
private func removeContents(_ dirfd: Int32, _ path: String, _ mountID: Int64, _ skipped: inout [String]) -> (String, Int32)? {
    guard let names = folderEntries(dirfd) else { return (path, errno) }
    for name in names {
        let child = path + "/" + name.printable
        var st = stat()
        if name.withCName({ fstatat(dirfd, $0, &st, AT_SYMLINK_NOFOLLOW) }) != 0 {
            if errno == ENOENT { continue }
            return (child, errno)
        }
        if st.st_mode & S_IFMT == S_IFDIR {
            if name.withCName({ mb_mount_id_at(dirfd, $0, AT_SYMLINK_NOFOLLOW) }) != mountID {
                skipped.append(child)
                continue
            }
            let fd = name.withCName { mb_openat(dirfd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0) }
            if fd < 0 { return (child, errno) }
            let failure = removeContents(fd, child, mountID, &skipped)
            Glibc.close(fd)
            if let failure { return failure }
            if skipped.contains(where: { $0.hasPrefix(child + "/") }) { continue }
            if name.withCName({ unlinkat(dirfd, $0, AT_REMOVEDIR) }) != 0 { return (child, errno) }
        } else if name.withCName({ unlinkat(dirfd, $0, 0) }) != 0, errno != ENOENT {
            return (child, errno)
        }
    }
    return nil
}

let mknodTypes: [String: mode_t] = ["file": S_IFREG, "char": S_IFCHR, "block": S_IFBLK, "fifo": S_IFIFO, "socket": S_IFSOCK]

let fileFunctions: [(String, LuaFunction)] = [
    ("mkdir", { lua in
        let a = Args(lua, "mkdir")
        let path = try a.string(1, "path")
        let mode = try a.mode(2, "mode", default: 0o755)
        if let e = makeDirectories(path, mode: mode) { return lua.fail("mkdir(\(path))", errno: e) }
        return lua.ok()
    }),
    ("rmdir", { lua in
        let path = try Args(lua, "rmdir").string(1, "path")
        return Glibc.rmdir(path) == 0 ? lua.ok() : lua.fail("rmdir(\(path))")
    }),
    ("unlink", { lua in
        let path = try Args(lua, "unlink").string(1, "path")
        return Glibc.unlink(path) == 0 ? lua.ok() : lua.fail("unlink(\(path))")
    }),
    ("rename", { lua in
        let a = Args(lua, "rename")
        let from = try a.string(1, "from"), to = try a.string(2, "to")
        return Glibc.rename(from, to) == 0 ? lua.ok() : lua.fail("rename(\(from), \(to))")
    }),
    ("symlink", { lua in
        let a = Args(lua, "symlink")
        let target = try a.string(1, "target"), path = try a.string(2, "linkpath")
        return Glibc.symlink(target, path) == 0 ? lua.ok() : lua.fail("symlink(\(path) -> \(target))")
    }),
    ("readlink", { lua in
        let path = try Args(lua, "readlink").string(1, "path")
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = Glibc.readlink(path, &buf, Int(PATH_MAX))
        if n < 0 { return lua.fail("readlink(\(path))") }
        buf.withUnsafeBytes { lua.push(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        return 1
    }),
    ("link", { lua in
        let a = Args(lua, "link")
        let from = try a.string(1, "target"), to = try a.string(2, "linkpath")
        return Glibc.link(from, to) == 0 ? lua.ok() : lua.fail("link(\(to) -> \(from))")
    }),
    ("chmod", { lua in
        let a = Args(lua, "chmod")
        let path = try a.string(1, "path")
        _ = try a.integer(2, "mode")
        let mode = try a.mode(2, "mode", default: 0)
        return Glibc.chmod(path, mode) == 0 ? lua.ok() : lua.fail("chmod(\(path))")
    }),
    ("chown", { lua in
        let a = Args(lua, "chown")
        let path = try a.string(1, "path")
        let uid = try a.id(2, "uid"), gid = try a.id(3, "gid")
        return Glibc.lchown(path, uid, gid) == 0 ? lua.ok() : lua.fail("chown(\(path))")
    }),
    // stat(path or fd): an fd (O_PATH ones too) is fstat(2)ed.
    ("stat", { lua in
        let a = Args(lua, "stat")
        var st = stat()
        if lua.type(1) != LUA_TSTRING {
            let fd = try a.fd(1, "path")
            if fstat(fd, &st) != 0 { return lua.fail("stat(fd \(fd))") }
            pushStat(lua, st)
            return 1
        }
        let path = try a.string(1, "path")
        if stat(path, &st) != 0 { return lua.fail("stat(\(path))") }
        pushStat(lua, st)
        return 1
    }),
    ("lstat", { lua in
        let path = try Args(lua, "lstat").string(1, "path")
        var st = stat()
        if Glibc.lstat(path, &st) != 0 { return lua.fail("lstat(\(path))") }
        pushStat(lua, st)
        return 1
    }),
    // listdir(path): the names in a folder, sorted, without . and ..
    ("listdir", { lua in
        let path = try Args(lua, "listdir").string(1, "path")
        guard let names = folderEntries(path: path) else { return lua.fail("listdir(\(path))") }
        let sorted = names.sorted { $0.lexicographicallyPrecedes($1) }
        lua.newTable(array: Int32(sorted.count))
        for (i, n) in sorted.enumerated() { lua.append(i + 1) { n.withUnsafeBytes { lua.push(bytes: $0) } } }
        return 1
    }),
    // mknod(path, type, mode [, major, minor]): type is "char", "block", "fifo", "file" or "socket".
    ("mknod", { lua in
        let a = Args(lua, "mknod")
        let path = try a.string(1, "path")
        let typeName = try a.string(2, "type")
        guard let type = mknodTypes[typeName] else { throw a.error(2, "type", "must be char, block, fifo, file or socket") }
        let mode = try a.mode(3, "mode", default: 0o666)
        let major = try a.optInteger(4, "major") ?? 0, minor = try a.optInteger(5, "minor") ?? 0
        guard major >= 0, minor >= 0, major < 1 << 12, minor < 1 << 20 else { throw a.error(4, "major", "device number out of range") }
        let dev = mb_makedev(UInt32(major), UInt32(minor))
        return Glibc.mknod(path, type | mode, dev) == 0 ? lua.ok() : lua.fail("mknod(\(path))")
    }),
    ("chdir", { lua in
        let path = try Args(lua, "chdir").string(1, "path")
        return Glibc.chdir(path) == 0 ? lua.ok() : lua.fail("chdir(\(path))")
    }),
    ("fchdir", { lua in
        let fd = try Args(lua, "fchdir").fd(1, "fd")
        return Glibc.fchdir(fd) == 0 ? lua.ok() : lua.fail("fchdir(fd \(fd))")
    }),
    // statvfs(path): {flags={"ro", "nosuid", ...}, block_size=, blocks=, blocks_free=, files=, files_free=}.
    // The flags are what a bind remount must keep in a user namespace.
    ("statvfs", { lua in
        let a = Args(lua, "statvfs")
        var sv = statvfs()
        if lua.type(1) == LUA_TSTRING {
            let path = try a.string(1, "path")
            if statvfs(path, &sv) != 0 { return lua.fail("statvfs(\(path))") }
        } else {
            let fd = try a.fd(1, "path")
            if fstatvfs(fd, &sv) != 0 { return lua.fail("statvfs(fd \(fd))") }
        }
        let names: [(UInt, String)] = [(1, "ro"), (2, "nosuid"), (4, "nodev"), (8, "noexec"), (16, "sync"),
                                       (1024, "noatime"), (2048, "nodiratime"), (4096, "relatime")]
        lua.newTable()
        lua.set("flags") { lua.push(list: names.filter { sv.f_flag & $0.0 != 0 }.map(\.1)) }
        lua.set("block_size", Int(sv.f_bsize))
        lua.set("blocks", Int(sv.f_blocks))
        lua.set("blocks_free", Int(sv.f_bfree))
        lua.set("files", Int(sv.f_files))
        lua.set("files_free", Int(sv.f_ffree))
        return 1
    }),
    // truncate(path or fd, size): sets a file's size; growing it leaves a hole (no disk used).
    ("truncate", { lua in
        let a = Args(lua, "truncate")
        let size = try a.integer(2, "size")
        guard size >= 0 else { throw a.error(2, "size", "must be >= 0") }
        if lua.type(1) == LUA_TSTRING {
            let path = try a.string(1, "path")
            return Glibc.truncate(path, off_t(size)) == 0 ? lua.ok() : lua.fail("truncate(\(path))")
        }
        let fd = try a.fd(1, "path")
        return ftruncate(fd, off_t(size)) == 0 ? lua.ok() : lua.fail("truncate(fd \(fd))")
    }),
    // umask(mask): sets the file mode creation mask; returns the old one.
    ("umask", { lua in
        let mask = try Args(lua, "umask").mode(1, "mask", default: 0o022)
        lua.push(Int(Glibc.umask(mask)))
        return 1
    }),
    ("getcwd", { lua in
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard Glibc.getcwd(&buf, buf.count) != nil else { return lua.fail("getcwd()") }
        lua.push(String(cString: buf))
        return 1
    }),
    // mkdtemp([prefix]): a new private folder; "XXXXXX" is appended unless the prefix ends with it.
    ("mkdtemp", { lua in
        let a = Args(lua, "mkdtemp")
        var template = try a.optString(1, "prefix") ?? "/tmp/moonbox-"
        if !template.hasSuffix("XXXXXX") { template += "XXXXXX" }
        var buf = Array(template.utf8CString)
        guard Glibc.mkdtemp(&buf) != nil else { return lua.fail("mkdtemp(\(template))") }
        lua.push(String(cString: buf))
        return 1
    }),
    ("getxattr", { lua in
        let a = Args(lua, "getxattr")
        let path = try a.string(1, "path"), name = try a.string(2, "name")
        let nofollow = try a.optTable(3, "options") ? try a.boolField(3, "nofollow") ?? false : false
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = nofollow ? lgetxattr(path, name, &buf, buf.count) : getxattr(path, name, &buf, buf.count)
        if n < 0 { return lua.fail("getxattr(\(path), \(name))") }
        buf.withUnsafeBytes { lua.push(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        return 1
    }),
    ("setxattr", { lua in
        let a = Args(lua, "setxattr")
        let path = try a.string(1, "path"), name = try a.string(2, "name")
        guard lua.type(3) == LUA_TSTRING else { _ = try a.string(3, "value"); return 0 }
        let nofollow = try a.optTable(4, "options") ? try a.boolField(4, "nofollow") ?? false : false
        let r = lua.withBytes(at: 3) { v in
            nofollow ? lsetxattr(path, name, v.baseAddress, v.count, 0) : setxattr(path, name, v.baseAddress, v.count, 0)
        } ?? -1
        return r == 0 ? lua.ok() : lua.fail("setxattr(\(path), \(name))")
    }),
    // remove_tree(path): rm -rf that never follows a symlink and never crosses into another mount.
    ("remove_tree", { lua in
        let path = try Args(lua, "remove_tree").string(1, "path")
        var st = stat()
        if Glibc.lstat(path, &st) != 0 {
            return errno == ENOENT ? lua.ok() : lua.fail("remove_tree(\(path))")
        }
        if st.st_mode & S_IFMT != S_IFDIR {
            return Glibc.unlink(path) == 0 ? lua.ok() : lua.fail("remove_tree(\(path))")
        }
        let fd = mb_open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 { return lua.fail("remove_tree(\(path))") }
        let mountID = mb_mount_id_at(fd, "", mb_AT_EMPTY_PATH())
        if mountID >= 0, mountID != mb_mount_id_at(AT_FDCWD, path + "/..", 0) {
            Glibc.close(fd)
            return lua.fail(message: "remove_tree(\(path)): is a mount point; unmount it first", errnoName: "EBUSY")
        }
        var skipped: [String] = []
        let failure = mountID < 0 ? (path, errno) : removeContents(fd, path, mountID, &skipped)
        Glibc.close(fd)
        if let (where_, e) = failure { return lua.fail("remove_tree(\(where_))", errno: e) }
        if let first = skipped.first {
            return lua.fail(message: "remove_tree(\(path)): \(first) is another mount; not crossed", errnoName: "EBUSY")
        }
        return Glibc.rmdir(path) == 0 ? lua.ok() : lua.fail("remove_tree(\(path))")
    }),
]
