import CMoonbox
import Glibc

/// Layer tarballs through libarchive (tar, tar+gzip, tar+zstd), and content digests.
/// Extraction is a security boundary: layers come from strangers.

func archiveError(_ a: OpaquePointer?) -> String {
    a.flatMap { archive_error_string($0) }.map { String(cString: $0) } ?? "unknown libarchive error"
}

/// libarchive converts names between an archive's charset and the current locale; in the C
/// locale any non-ASCII name fails ("Can't translate pathname"). Archives are read and written
/// in C.UTF-8, for this thread only (uselocale), so the rest of moonbox keeps its locale.
private let utf8Locale: locale_t? = newlocale(LC_CTYPE_MASK, "C.UTF-8", nil)

func withUTF8Locale<R>(_ body: () throws -> R) rethrows -> R {
    guard let utf8Locale else { return try body() }
    let old = uselocale(utf8Locale)
    defer { uselocale(old) }
    return try body()
}

extension Args {
    /// An archive or file to read: a path, or an open fd (one opened inside an untrusted tree).
    func readable(_ i: Int32, _ name: String) throws -> (path: String?, fd: Int32, label: String) {
        if lua.type(i) == LUA_TSTRING {
            let path = try string(i, name)
            return (path, -1, path)
        }
        let fd = try fd(i, name)
        return (nil, fd, "fd \(fd)")
    }
}

/// Opens `source` for reading through libarchive with every filter, in `format`s.
private func openArchive(_ source: (path: String?, fd: Int32, label: String), raw: Bool) -> (OpaquePointer?, String?) {
    guard let ar = archive_read_new() else { return (nil, "out of memory") }
    archive_read_support_filter_all(ar)
    if raw {
        archive_read_support_format_raw(ar)
    } else {
        archive_read_support_format_tar(ar)
        archive_read_support_format_gnutar(ar)
    }
    let r = source.path.map { archive_read_open_filename(ar, $0, 1 << 16) } ?? archive_read_open_fd(ar, source.fd, 1 << 16)
    if r != ARCHIVE_OK {
        let msg = archiveError(ar)
        archive_read_free(ar)
        return (nil, msg)
    }
    return (ar, nil)
}

/// Sets `skipped` (names) and `skipped_why` (name -> reason) on the table at the top.
private func pushSkipped(_ lua: Lua, _ names: [String], _ why: [String: String]) {
    lua.set("skipped") { lua.push(list: names) }
    lua.set("skipped_why") {
        lua.newTable()
        for (k, v) in why { lua.set(k, v) }
    }
}

private let compressionNames: [Int32: String] = [0: "none", 1: "gzip", 2: "bzip2", 6: "xz", 14: "zstd", 5: "lzma", 9: "lz4"]

let archiveFunctions: [(String, LuaFunction)] = [
    // archive_extract(archive, folder [, {allow_devices=, allow_setuid=, max_files=, max_bytes=, same_owner=,
    //                 whiteouts = "overlay"|"apply"}]):
    // unpacks a tar (plain, gzip or zstd; a path or an fd) into folder: no '..', nothing written
    // through a symlink or outside the folder, no hard link out of it, no device or set-id bit
    // unless allowed, and OCI whiteouts made overlayfs ones. max_bytes counts bytes actually
    // written (a sparse file's holes are free and stay holes). Returns {files=, bytes=,
    // skipped={names...}, skipped_why={name = reason}}.
    ("archive_extract", { lua in
        let a = Args(lua, "archive_extract")
        let source = try a.readable(1, "archive")
        let dest = try a.string(2, "folder")
        var options = ExtractOptions()
        if try a.optTable(3, "options") {
            try a.options(3, "options", allowed: ["allow_devices", "allow_setuid", "max_files", "max_bytes", "same_owner", "whiteouts"])
            if let w = try a.stringField(3, "whiteouts") {
                guard w == "overlay" || w == "apply" else { throw a.error(3, "whiteouts", "must be \"overlay\" or \"apply\"") }
                options.applyWhiteouts = w == "apply"
            }
            options.allowDevices = try a.boolField(3, "allow_devices") ?? false
            options.allowSetuid = try a.boolField(3, "allow_setuid") ?? false
            options.sameOwner = try a.boolField(3, "same_owner") ?? (geteuid() == 0)
            options.maxFiles = try a.integerField(3, "max_files") ?? options.maxFiles
            options.maxBytes = try a.integerField(3, "max_bytes") ?? options.maxBytes
        } else {
            options.sameOwner = geteuid() == 0
        }
        if let problem = libarchiveProblem { return lua.fail(message: "archive_extract(\(source.label)): \(problem)", errnoName: "ENOSYS") }
        let root = mb_open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if root < 0 { return lua.fail("archive_extract(\(dest))") }
        defer { Glibc.close(root) }
        let x = Extractor(root: root, options: options)
        let failure: (String, Int32)? = withUTF8Locale {
            let (opened, problem) = openArchive(source, raw: false)
            guard let ar = opened else { return ("archive_extract(\(source.label)): \(problem ?? "?")", EINVAL) }
            defer { archive_read_free(ar) }
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
                return ("archive_extract(\(source.label)): \(f.message)", f.errno)
            } catch {
                return ("archive_extract(\(source.label)): \(error)", EIO)
            }
            return nil
        }
        if let (message, e) = failure { return lua.fail(message: message, errnoName: errnoName(e)) }
        lua.newTable()
        lua.set("files", x.files)
        lua.set("bytes", x.bytes)
        pushSkipped(lua, x.skipped, x.skippedWhy)
        return 1
    }),
    // archive_create(folder, archive [, {compression="gzip"|"zstd"|"none"}]): a layer tar of the
    // folder, sorted, without following symlinks; overlayfs whiteouts become OCI ones and sparse
    // files stay sparse. Returns {entries=, skipped={paths...}, skipped_why={path = reason}}:
    // sockets and names that are not UTF-8 cannot go into a layer.
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
        let c = Creator(archive: ar)
        let failure: String? = withUTF8Locale {
            if archive_write_open_filename(ar, path) != ARCHIVE_OK { return "archive_create(\(path)): \(archiveError(ar))" }
            do {
                try c.add(dir, "")
            } catch let f as ExtractFailure {
                return "archive_create(\(src)): \(f.message)"
            } catch {
                return "archive_create(\(src)): \(error)"
            }
            if archive_write_close(ar) != ARCHIVE_OK { return "archive_create(\(path)): \(archiveError(ar))" }
            return nil
        }
        if let failure { return lua.fail(message: failure, errnoName: "EIO") }
        lua.newTable()
        lua.set("entries", c.count)
        pushSkipped(lua, c.skipped, c.skippedWhy)
        return 1
    }),
    // archive_diff_id(archive): the sha256 of the archive's uncompressed stream (an OCI diff_id)
    // and the compression found ("none", "gzip", "zstd", ...), whatever the file is called.
    ("archive_diff_id", { lua in
        let a = Args(lua, "archive_diff_id")
        let source = try a.readable(1, "archive")
        if let problem = libarchiveProblem { return lua.fail(message: "archive_diff_id(\(source.label)): \(problem)", errnoName: "ENOSYS") }
        var hash = SHA256()
        var compression = "none"
        let failure: String? = withUTF8Locale {
            let (opened, problem) = openArchive(source, raw: true)
            guard let ar = opened else { return problem ?? "?" }
            defer { archive_read_free(ar) }
            var entry: OpaquePointer?
            let r = archive_read_next_header(ar, &entry)
            if r == ARCHIVE_EOF { return nil }  // an empty stream
            if r != ARCHIVE_OK && r != ARCHIVE_WARN { return archiveError(ar) }
            compression = compressionNames[archive_filter_code(ar, 0)] ?? "other"
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = archive_read_data(ar, &buffer, buffer.count)
                if n < 0 { return archiveError(ar) }
                if n == 0 { break }
                buffer.withUnsafeBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
            return nil
        }
        if let failure { return lua.fail(message: "archive_diff_id(\(source.label)): \(failure)", errnoName: "EINVAL") }
        lua.push("sha256:" + hash.finish())
        lua.push(compression)
        return 2
    }),
    // archive_load(): loads libarchive now (it is loaded on first use), so that archive functions
    // keep working where the library cannot be found any more: after pivot_root, inside a
    // container. Returns true, or nil, why, "ENOSYS".
    ("archive_load", { lua in
        if let problem = libarchiveProblem { return lua.fail(message: "archive_load(): \(problem)", errnoName: "ENOSYS") }
        return lua.ok()
    }),
    // sha256(path or fd): the file's SHA-256 as 64 hex digits.
    ("sha256", { lua in
        let a = Args(lua, "sha256")
        let source = try a.readable(1, "path")
        let fd = source.path.map { mb_open($0, O_RDONLY | O_CLOEXEC, 0) } ?? source.fd
        if fd < 0 { return lua.fail("sha256(\(source.label))") }
        defer { if source.path != nil { Glibc.close(fd) } }
        var hash = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            let n = pread(fd, &buffer, buffer.count, offset)
            if n < 0 {
                if errno == EINTR { continue }
                return lua.fail("sha256(\(source.label))")
            }
            if n == 0 { break }
            offset += off_t(n)
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
