import CMoonbox
import Glibc

/// Layer extraction: a security boundary, since layers come from strangers.

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
    /// OCI whiteouts become overlayfs ones (a layer folder for overlay), or are applied:
    /// what they name, from earlier layers, is removed (a plain rootfs, layer after layer).
    var applyWhiteouts = false
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

final class Extractor {
    let root: Int32
    let options: ExtractOptions
    var files = 0
    /// Bytes actually written: a sparse entry's holes cost nothing and count nothing.
    var bytes = 0
    /// Entries that took no effect, by name, and why.
    var skipped: [String] = []
    var skippedWhy: [String: String] = [:]

    /// Paths this archive made, so an opaque whiteout spares them when applied.
    var madeHere: Set<String> = []

    func skip(_ name: String, _ why: String) {
        skipped.append(name)
        skippedWhy[name] = why
    }
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
        clear(dir, RawName(name.utf8), keepFolder: keepFolder)
    }

    func clear(_ dir: Int32, _ name: RawName, keepFolder: Bool) {
        var st = stat()
        guard name.withCName({ fstatat(dir, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            if keepFolder { return }
            let fd = name.withCName { mb_openat(dir, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0) }
            if fd >= 0 {
                for n in folderEntries(fd) ?? [] { clear(fd, n, keepFolder: false) }
                Glibc.close(fd)
            }
            _ = name.withCName { unlinkat(dir, $0, AT_REMOVEDIR) }
        } else {
            _ = name.withCName { unlinkat(dir, $0, 0) }
        }
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
        // Names are UTF-8 (pax) or the raw bytes of old headers; one that is not valid UTF-8
        // is skipped and reported, never written under a mangled name.
        guard let raw = archive_entry_pathname(e) else { return }
        guard let name = String(validatingCString: raw) else {
            skip(RawName(UnsafeBufferPointer(start: UnsafeRawPointer(raw).assumingMemoryBound(to: UInt8.self), count: strlen(raw))).printable, "its name is not UTF-8")
            return
        }
        guard let parts = safeComponents(name) else { throw fail(name, "'..' in the path; refused") }
        if parts.isEmpty { return }  // the root folder itself
        files += 1
        if files > options.maxFiles { throw fail(name, "more than \(options.maxFiles) entries; refused as a bomb", EFBIG) }
        let size = Int(archive_entry_size(e))
        // A dense entry's bytes will all be written: refuse it before writing any. A sparse
        // one is counted by what it really writes.
        if archive_entry_sparse_count(e) == 0 && bytes + max(size, 0) > options.maxBytes {
            throw fail(name, "the layer holds more than \(options.maxBytes) bytes; refused", EFBIG)
        }
        let last = parts.last!
        let dir = try folder(parts.dropLast(), entry: name)
        defer { Glibc.close(dir) }
        let mtime = Int64(archive_entry_mtime(e))

        if options.applyWhiteouts && last.hasPrefix(".wh.") {
            // What this layer made stays; what earlier layers left goes.
            if last == ".wh..wh..opq" {
                let prefix = parts.dropLast().joined(separator: "/")
                for n in folderEntries(dir) ?? [] {
                    let child = (prefix.isEmpty ? "" : prefix + "/") + (n.utf8Text ?? "")
                    if n.utf8Text == nil || !madeHere.contains(child) { clear(dir, n, keepFolder: false) }
                }
            } else {
                let target = String(last.dropFirst(4))
                guard !target.isEmpty, target != ".", target != ".." else { throw fail(name, "bad whiteout") }
                clear(dir, target, keepFolder: false)
            }
            return
        }
        madeHere.insert(parts.joined(separator: "/"))
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
                guard length > 0 else { continue }
                bytes += length
                if bytes > options.maxBytes {
                    throw fail(name, "the layer writes more than \(options.maxBytes) bytes; refused", EFBIG)
                }
                if pwrite(fd, block, length, off_t(offset)) != length {
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
                skip(name, "a device node")  // a device node from a layer takes no effect
                return
            }
            clear(dir, last, keepFolder: false)
            let kind = archive_entry_filetype(e) == Glibc.S_IFCHR ? Glibc.S_IFCHR : Glibc.S_IFBLK
            if mb_mknodat(dir, last, kind | mode(e), UInt32(archive_entry_rdevmajor(e)), UInt32(archive_entry_rdevminor(e))) != 0 {
                throw fail(name, "mknod: \(errnoText(errno))", errno)
            }
        default:
            skip(name, "a socket or an unknown file type")
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

