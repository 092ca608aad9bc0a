import CMoonbox
import Glibc

/// Layer tarballs through libarchive (tar, tar+gzip, tar+zstd), and content digests.
/// Extraction is a security boundary: layers come from strangers.

struct ExtractFailure: Error {
    let message: String
    let errno: Int32
}

struct ExtractOptions {
    var allowDevices = false
    var allowSetuid = false
    var maxFiles = 1_000_000
    var maxBytes = 64 << 30
    var sameOwner = true
}

/// Splits an entry name into safe components: leading "/" and "./" go (absolute names are
/// inside the layer), "." components go, ".." anywhere is refused.
func safeComponents(_ name: String) -> [String]? {
    var parts: [String] = []
    for part in name.split(separator: "/", omittingEmptySubsequences: true) {
        if part == "." { continue }
        if part == ".." { return nil }
        parts.append(String(part))
    }
    return parts
}

/// O_PATH, a _GNU_SOURCE name.
private let oPath: Int32 = 0o10000000

private final class Extractor {
    let root: Int32
    let options: ExtractOptions
    var files = 0
    var bytes = 0
    var skipped: [String] = []
    /// Folder metadata is applied last, so writing into a folder does not undo it.
    var folders: [(path: String, mode: mode_t, uid: uid_t, gid: gid_t, mtime: Int64)] = []

    init(root: Int32, options: ExtractOptions) {
        self.root = root
        self.options = options
    }

    func fail(_ name: String, _ why: String, _ e: Int32 = EINVAL) -> ExtractFailure {
        ExtractFailure(message: "entry \(name): \(why)", errno: e)
    }

    /// Opens (making it when missing) the folder `parts` below the root, one component at a
    /// time without following any symlink: a layer never writes through a symlink, whether a
    /// layer made it or it was there before.
    func folder(_ parts: ArraySlice<String>, entry: String) throws -> Int32 {
        var cur = dup(root)
        for (i, part) in parts.enumerated() {
            var next = mb_openat(cur, part, oPath | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            if next < 0 && errno == ENOENT {
                if mkdirat(cur, part, 0o755) != 0 && errno != EEXIST {
                    let e = errno
                    Glibc.close(cur)
                    throw fail(entry, "cannot make folder \(parts.prefix(i + 1).joined(separator: "/")): \(errnoText(e))", e)
                }
                next = mb_openat(cur, part, oPath | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            }
            if next < 0 {
                let e = errno
                var st = stat()
                let isLink = fstatat(cur, part, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mode & S_IFMT == S_IFLNK
                Glibc.close(cur)
                let path = parts.prefix(i + 1).joined(separator: "/")
                if isLink { throw fail(entry, "\(path) is a symlink; refused (nothing is written through a symlink)", ELOOP) }
                throw fail(entry, "cannot open folder \(path): \(errnoText(e))", e)
            }
            Glibc.close(cur)
            cur = next
        }
        return cur
    }

    /// Clears the way for a new entry `name` in `dir`: anything there goes, except a folder
    /// that stays a folder.
    func clear(_ dir: Int32, _ name: String, keepFolder: Bool) {
        var st = stat()
        guard fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            if keepFolder { return }
            let fd = mb_openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            if fd >= 0 {
                removeAll(fd)
                Glibc.close(fd)
            }
            unlinkat(dir, name, AT_REMOVEDIR)
        } else {
            unlinkat(dir, name, 0)
        }
    }

    private func removeAll(_ dirfd: Int32) {
        for n in folderNames(dirfd) ?? [] { clear(dirfd, n, keepFolder: false) }
    }

    func owner(_ fd: Int32, _ entry: OpaquePointer) {
        guard options.sameOwner else { return }
        fchown(fd, uid_t(truncatingIfNeeded: archive_entry_uid(entry)), gid_t(truncatingIfNeeded: archive_entry_gid(entry)))
    }

    func mode(_ entry: OpaquePointer) -> mode_t {
        var m = mode_t(archive_entry_perm(entry)) & 0o7777
        if !options.allowSetuid { m &= ~mode_t(0o6000) }
        return m
    }

    func xattrs(_ fd: Int32, _ entry: OpaquePointer) {
        guard archive_entry_xattr_reset(entry) > 0 else { return }
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
            guard let name else { continue }
            // overlayfs's own attributes (redirects, metacopy) never come from a layer.
            if String(cString: name).hasPrefix("trusted.overlay.") { continue }
            _ = mb_fsetxattr(fd, name, value, size)
        }
    }

    func entry(_ a: OpaquePointer, _ e: OpaquePointer) throws {
        let name = archive_entry_pathname(e).map { String(cString: $0) } ?? ""
        guard let parts = safeComponents(name) else { throw fail(name, "'..' in the path; refused") }
        if parts.isEmpty { return }  // the root folder itself
        files += 1
        if files > options.maxFiles { throw fail(name, "more than \(options.maxFiles) entries; refused as a bomb", EFBIG) }
        let size = Int(archive_entry_size(e))
        bytes += max(size, 0)
        if bytes > options.maxBytes {
            throw fail(name, "the layer holds more than \(options.maxBytes) bytes; refused", EFBIG)
        }
        let last = parts.last!
        let dir = try folder(parts.dropLast(), entry: name)
        defer { Glibc.close(dir) }
        let mtime = Int64(archive_entry_mtime(e))

        // OCI whiteouts become overlayfs ones.
        if last == ".wh..wh..opq" {
            let fd = mb_openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
            defer { Glibc.close(fd) }
            if mb_fsetxattr(fd, "trusted.overlay.opaque", "y", 1) != 0 {
                throw fail(name, "cannot mark the folder opaque: \(errnoText(errno))", errno)
            }
            return
        }
        if last.hasPrefix(".wh.") {
            let target = String(last.dropFirst(4))
            guard !target.isEmpty, target != ".", target != ".." else { throw fail(name, "bad whiteout") }
            clear(dir, target, keepFolder: false)
            if mb_mknodat(dir, target, S_IFCHR | 0o000, 0, 0) != 0 {
                throw fail(name, "cannot make the whiteout: \(errnoText(errno))", errno)
            }
            return
        }

        if let link = archive_entry_hardlink(e).map({ String(cString: $0) }) {
            guard let target = safeComponents(link), !target.isEmpty else { throw fail(name, "hard link to \(link) leaves the layer; refused") }
            let src = mb_openat_in_root(root, target.joined(separator: "/"), oPath | O_NOFOLLOW, 0)
            if src < 0 { throw fail(name, "hard link target \(link) is not in the layer", errno) }
            defer { Glibc.close(src) }
            clear(dir, last, keepFolder: false)
            if mb_linkat_fd(src, dir, last) != 0 { throw fail(name, "cannot link to \(link): \(errnoText(errno))", errno) }
            return
        }

        switch archive_entry_filetype(e) {
        case S_IFDIR:
            clear(dir, last, keepFolder: true)
            if mkdirat(dir, last, 0o755) != 0 && errno != EEXIST { throw fail(name, "mkdir: \(errnoText(errno))", errno) }
            folders.append((parts.joined(separator: "/"), mode(e), uid_t(truncatingIfNeeded: archive_entry_uid(e)),
                            gid_t(truncatingIfNeeded: archive_entry_gid(e)), mtime))
            let fd = mb_openat(dir, last, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            if fd >= 0 {
                xattrs(fd, e)
                Glibc.close(fd)
            }
        case S_IFREG:
            clear(dir, last, keepFolder: false)
            let fd = mb_openat(dir, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd < 0 { throw fail(name, "create: \(errnoText(errno))", errno) }
            defer { Glibc.close(fd) }
            var block: UnsafeRawPointer?
            var length = 0
            var offset: la_int64_t = 0
            while true {
                let r = archive_read_data_block(a, &block, &length, &offset)
                if r == ARCHIVE_EOF { break }
                if r != ARCHIVE_OK && r != ARCHIVE_WARN {
                    throw fail(name, "reading data: " + (archive_error_string(a).map { String(cString: $0) } ?? "?"), EIO)
                }
                if length > 0, pwrite(fd, block, length, off_t(offset)) != length {
                    throw fail(name, "write: \(errnoText(errno))", errno)
                }
            }
            if ftruncate(fd, off_t(max(size, 0))) != 0 { throw fail(name, "truncate: \(errnoText(errno))", errno) }
            owner(fd, e)
            fchmod(fd, mode(e))
            xattrs(fd, e)
            _ = mb_utimens_fd(fd, mtime, 0)
        case S_IFLNK:
            let target = archive_entry_symlink(e).map { String(cString: $0) } ?? ""
            clear(dir, last, keepFolder: false)
            if symlinkat(target, dir, last) != 0 { throw fail(name, "symlink: \(errnoText(errno))", errno) }
            if options.sameOwner {
                fchownat(dir, last, uid_t(truncatingIfNeeded: archive_entry_uid(e)), gid_t(truncatingIfNeeded: archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW)
            }
            _ = mb_utimens_at(dir, last, mtime, 0)
        case S_IFIFO:
            clear(dir, last, keepFolder: false)
            if mkfifoat(dir, last, mode(e)) != 0 { throw fail(name, "mkfifo: \(errnoText(errno))", errno) }
        case S_IFCHR, S_IFBLK:
            guard options.allowDevices else {
                skipped.append(name)  // a device node from a layer takes no effect
                return
            }
            clear(dir, last, keepFolder: false)
            let kind = archive_entry_filetype(e) == Glibc.S_IFCHR ? Glibc.S_IFCHR : Glibc.S_IFBLK
            if mb_mknodat(dir, last, kind | mode(e), UInt32(archive_entry_rdevmajor(e)), UInt32(archive_entry_rdevminor(e))) != 0 {
                throw fail(name, "mknod: \(errnoText(errno))", errno)
            }
        default:
            skipped.append(name)
        }
    }

    func finishFolders() {
        for f in folders.reversed() {
            let fd = mb_openat_in_root(root, f.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0)
            guard fd >= 0 else { continue }
            if options.sameOwner { fchown(fd, f.uid, f.gid) }
            fchmod(fd, f.mode)
            _ = mb_utimens_fd(fd, f.mtime, 0)
            Glibc.close(fd)
        }
    }
}

private func archiveError(_ a: OpaquePointer?) -> String {
    a.flatMap { archive_error_string($0) }.map { String(cString: $0) } ?? "unknown libarchive error"
}

// MARK: creating layers from a folder

private final class Creator {
    let archive: OpaquePointer
    var links: [String: String] = [:]  // "dev:ino" -> first path, for hard links
    var count = 0

    init(archive: OpaquePointer) { self.archive = archive }

    func add(_ dirfd: Int32, _ prefix: String) throws {
        guard let names = folderNames(dirfd) else { throw ExtractFailure(message: "opendir \(prefix): \(errnoText(errno))", errno: errno) }
        for name in names.sorted() {
            let path = prefix.isEmpty ? name : prefix + "/" + name
            var st = stat()
            guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            // overlayfs whiteouts (0/0 character devices) become OCI ones.
            if type == S_IFCHR && st.st_rdev == 0 {
                try write(path: (prefix.isEmpty ? "" : prefix + "/") + ".wh." + name, st: st, type: S_IFREG, size: 0)
                continue
            }
            if type == S_IFDIR {
                try write(path: path, st: st, type: S_IFDIR, size: 0)
                let fd = mb_openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
                if fd < 0 { continue }
                var value = [UInt8](repeating: 0, count: 4)
                if fgetxattr(fd, "trusted.overlay.opaque", &value, 4) == 1 && value[0] == UInt8(ascii: "y") {
                    try write(path: path + "/.wh..wh..opq", st: st, type: S_IFREG, size: 0)
                }
                try add(fd, path)
                Glibc.close(fd)
                continue
            }
            if type == S_IFREG && st.st_nlink > 1 {
                let key = "\(st.st_dev):\(st.st_ino)"
                if let first = links[key] {
                    try write(path: path, st: st, type: S_IFREG, size: 0, hardlink: first)
                    continue
                }
                links[key] = path
            }
            if type == S_IFLNK {
                var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlinkat(dirfd, name, &buf, Int(PATH_MAX))
                let target = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
                try write(path: path, st: st, type: S_IFLNK, size: 0, symlink: target)
                continue
            }
            if type == S_IFREG {
                let fd = mb_openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0)
                if fd < 0 { throw ExtractFailure(message: "open \(path): \(errnoText(errno))", errno: errno) }
                defer { Glibc.close(fd) }
                try write(path: path, st: st, type: S_IFREG, size: Int(st.st_size), data: fd)
                continue
            }
            if type == S_IFCHR || type == S_IFBLK || type == S_IFIFO {
                try write(path: path, st: st, type: type, size: 0)
            }
        }
    }

    func write(path: String, st: stat, type: mode_t, size: Int, data: Int32 = -1, symlink: String? = nil, hardlink: String? = nil) throws {
        guard let e = archive_entry_new() else { throw ExtractFailure(message: "out of memory", errno: ENOMEM) }
        defer { archive_entry_free(e) }
        archive_entry_set_pathname(e, path)
        archive_entry_set_filetype(e, UInt32(type))
        archive_entry_set_perm(e, st.st_mode & 0o7777)
        archive_entry_set_uid(e, la_int64_t(st.st_uid))
        archive_entry_set_gid(e, la_int64_t(st.st_gid))
        archive_entry_set_mtime(e, st.st_mtim.tv_sec, st.st_mtim.tv_nsec)
        archive_entry_set_size(e, la_int64_t(size))
        if type == S_IFCHR || type == S_IFBLK { archive_entry_set_rdev(e, st.st_rdev) }
        if let symlink { archive_entry_set_symlink(e, symlink) }
        if let hardlink {
            archive_entry_set_hardlink(e, hardlink)
            archive_entry_set_size(e, 0)
        }
        if archive_write_header(archive, e) != ARCHIVE_OK {
            throw ExtractFailure(message: "\(path): \(archiveError(archive))", errno: EIO)
        }
        if data >= 0 {
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var left = size
            while left > 0 {
                let n = Glibc.read(data, &buffer, min(buffer.count, left))
                if n <= 0 { break }
                if archive_write_data(archive, buffer, n) < 0 {
                    throw ExtractFailure(message: "\(path): \(archiveError(archive))", errno: EIO)
                }
                left -= n
            }
        }
        count += 1
    }
}

let archiveFunctions: [(String, LuaFunction)] = [
    // archive_extract(archive, folder [, {allow_devices=, allow_setuid=, max_files=, max_bytes=, same_owner=}]):
    // unpacks a tar (plain, gzip or zstd) into folder: no '..', nothing written through a
    // symlink or outside the folder, no hard link out of it, no device or set-id bit unless
    // allowed, and OCI whiteouts made overlayfs ones. Returns {files=, bytes=, skipped={...}}.
    ("archive_extract", { lua in
        let a = Args(lua, "archive_extract")
        let path = try a.string(1, "archive"), dest = try a.string(2, "folder")
        var options = ExtractOptions()
        if try a.optTable(3, "options") {
            try a.options(3, "options", allowed: ["allow_devices", "allow_setuid", "max_files", "max_bytes", "same_owner"])
            options.allowDevices = try a.boolField(3, "allow_devices") ?? false
            options.allowSetuid = try a.boolField(3, "allow_setuid") ?? false
            options.sameOwner = try a.boolField(3, "same_owner") ?? (geteuid() == 0)
            options.maxFiles = try a.integerField(3, "max_files") ?? options.maxFiles
            options.maxBytes = try a.integerField(3, "max_bytes") ?? options.maxBytes
        } else {
            options.sameOwner = geteuid() == 0
        }
        if let problem = libarchiveProblem { return lua.fail(message: "archive_extract(\(path)): \(problem)", errnoName: "ENOSYS") }
        let root = mb_open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if root < 0 { return lua.fail("archive_extract(\(dest))") }
        defer { Glibc.close(root) }
        guard let ar = archive_read_new() else { return lua.fail("archive_extract(\(path))", errno: ENOMEM) }
        defer { archive_read_free(ar) }
        archive_read_support_filter_all(ar)
        archive_read_support_format_tar(ar)
        archive_read_support_format_gnutar(ar)
        if archive_read_open_filename(ar, path, 1 << 16) != ARCHIVE_OK {
            return lua.fail(message: "archive_extract(\(path)): \(archiveError(ar))", errnoName: "EINVAL")
        }
        let x = Extractor(root: root, options: options)
        var entry: OpaquePointer?
        do {
            while true {
                let r = archive_read_next_header(ar, &entry)
                if r == ARCHIVE_EOF { break }
                if r != ARCHIVE_OK && r != ARCHIVE_WARN {
                    throw ExtractFailure(message: archiveError(ar), errno: EINVAL)
                }
                try x.entry(ar, entry!)
            }
            x.finishFolders()
        } catch let f as ExtractFailure {
            return lua.fail(message: "archive_extract(\(path)): \(f.message)", errnoName: errnoName(f.errno))
        }
        lua.newTable()
        lua.set("files", x.files)
        lua.set("bytes", x.bytes)
        lua.set("skipped") { lua.push(list: x.skipped) }
        return 1
    }),
    // archive_create(folder, archive [, {compression="gzip"|"zstd"|"none"}]): a layer tar of the
    // folder, sorted, without following symlinks; overlayfs whiteouts become OCI ones.
    ("archive_create", { lua in
        let a = Args(lua, "archive_create")
        let src = try a.string(1, "folder"), path = try a.string(2, "archive")
        var compression = "none"
        if try a.optTable(3, "options") {
            try a.options(3, "options", allowed: ["compression"])
            compression = try a.stringField(3, "compression") ?? "none"
        }
        guard ["none", "gzip", "zstd"].contains(compression) else {
            throw a.error(3, "compression", "must be none, gzip or zstd")
        }
        if let problem = libarchiveProblem { return lua.fail(message: "archive_create(\(path)): \(problem)", errnoName: "ENOSYS") }
        let dir = mb_open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if dir < 0 { return lua.fail("archive_create(\(src))") }
        defer { Glibc.close(dir) }
        guard let ar = archive_write_new() else { return lua.fail("archive_create(\(path))", errno: ENOMEM) }
        defer { archive_write_free(ar) }
        archive_write_set_format_pax_restricted(ar)
        if compression == "gzip" { archive_write_add_filter_gzip(ar) }
        if compression == "zstd" { archive_write_add_filter_zstd(ar) }
        if archive_write_open_filename(ar, path) != ARCHIVE_OK {
            return lua.fail(message: "archive_create(\(path)): \(archiveError(ar))", errnoName: "EIO")
        }
        let c = Creator(archive: ar)
        do {
            try c.add(dir, "")
        } catch let f as ExtractFailure {
            return lua.fail(message: "archive_create(\(src)): \(f.message)", errnoName: errnoName(f.errno))
        }
        if archive_write_close(ar) != ARCHIVE_OK {
            return lua.fail(message: "archive_create(\(path)): \(archiveError(ar))", errnoName: "EIO")
        }
        lua.push(c.count)
        return 1
    }),
    // sha256(path): the file's SHA-256 as 64 hex digits.
    ("sha256", { lua in
        let path = try Args(lua, "sha256").string(1, "path")
        let fd = mb_open(path, O_RDONLY | O_CLOEXEC, 0)
        if fd < 0 { return lua.fail("sha256(\(path))") }
        defer { Glibc.close(fd) }
        var hash = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                return lua.fail("sha256(\(path))")
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        lua.push(hash.finish())
        return 1
    }),
    // sha256_string(data): the SHA-256 of a Lua string.
    ("sha256_string", { lua in
        let a = Args(lua, "sha256_string")
        guard lua.type(1) == LUA_TSTRING else { _ = try a.string(1, "data"); return 0 }
        var hash = SHA256()
        lua.withBytes(at: 1) { hash.update($0) }
        lua.push(hash.finish())
        return 1
    }),
]
