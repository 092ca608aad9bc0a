import CMoonbox
import Glibc

/// Layer creation: a folder (often an overlay upper) as a tar, sorted, without following
/// symlinks. overlayfs whiteouts become OCI ones, sparse files stay sparse, and what a tar
/// layer cannot carry (sockets, names that are not UTF-8) is skipped and reported.
final class Creator {
    let archive: OpaquePointer
    var links: [String: String] = [:]  // "dev:ino" -> first path, for hard links
    var count = 0
    var skipped: [String] = []
    var skippedWhy: [String: String] = [:]
    private var zeros = [UInt8](repeating: 0, count: 1 << 20)

    init(archive: OpaquePointer) { self.archive = archive }

    private func skip(_ path: String, _ why: String) {
        skipped.append(path)
        skippedWhy[path] = why
    }

    func add(_ dirfd: Int32, _ prefix: String) throws {
        guard let entries = folderEntries(dirfd) else {
            throw ExtractFailure(message: "opendir \(prefix): \(errnoText(errno))", errno: errno)
        }
        for raw in entries.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            guard let name = raw.utf8Text else {
                skip((prefix.isEmpty ? "" : prefix + "/") + raw.printable, "its name is not UTF-8")
                continue
            }
            let path = prefix.isEmpty ? name : prefix + "/" + name
            var st = stat()
            guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            // overlayfs whiteouts (0/0 character devices) become OCI ones.
            if type == S_IFCHR && st.st_rdev == 0 {
                try write(path: (prefix.isEmpty ? "" : prefix + "/") + ".wh." + name, st: st, type: S_IFREG, size: 0)
                continue
            }
            switch type {
            case S_IFDIR:
                try write(path: path, st: st, type: S_IFDIR, size: 0)
                let fd = mb_openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
                if fd < 0 { continue }
                defer { Glibc.close(fd) }
                var value = [UInt8](repeating: 0, count: 4)
                if fgetxattr(fd, "trusted.overlay.opaque", &value, 4) == 1 && value[0] == UInt8(ascii: "y") {
                    try write(path: path + "/.wh..wh..opq", st: st, type: S_IFREG, size: 0)
                }
                try add(fd, path)
            case S_IFLNK:
                var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlinkat(dirfd, name, &buf, Int(PATH_MAX))
                guard n >= 0, let target = String(validating: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) else {
                    skip(path, "its link target is not UTF-8")
                    continue
                }
                try write(path: path, st: st, type: S_IFLNK, size: 0, symlink: target)
            case S_IFREG:
                if st.st_nlink > 1 {
                    let key = "\(st.st_dev):\(st.st_ino)"
                    if let first = links[key] {
                        try write(path: path, st: st, type: S_IFREG, size: 0, hardlink: first)
                        continue
                    }
                    links[key] = path
                }
                let fd = mb_openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0)
                if fd < 0 { throw ExtractFailure(message: "open \(path): \(errnoText(errno))", errno: errno) }
                defer { Glibc.close(fd) }
                try write(path: path, st: st, type: S_IFREG, size: Int(st.st_size), data: fd)
            case S_IFCHR, S_IFBLK, S_IFIFO:
                try write(path: path, st: st, type: type, size: 0)
            default:
                skip(path, "a socket: a layer cannot carry it")
            }
        }
    }

    /// The data regions of a file with holes, as (offset, length); nil for a dense file.
    private func dataRegions(_ fd: Int32, size: Int, blocks: Int) -> [(Int, Int)]? {
        guard size > 0, blocks * 512 < size else { return nil }
        var regions: [(Int, Int)] = []
        var offset = 0
        while offset < size {
            let data = lseek(fd, off_t(offset), 3 /* SEEK_DATA */)
            if data < 0 { break }  // ENXIO: only a hole is left
            var hole = Int(lseek(fd, data, 4 /* SEEK_HOLE */))
            if hole < 0 { hole = size }
            regions.append((Int(data), min(hole, size) - Int(data)))
            offset = hole
        }
        // A file that ends in a hole (or is all hole) says so with an empty region at its end,
        // as GNU tar does; without any region the writer would store it dense.
        if regions.last.map({ $0.0 + $0.1 < size }) ?? true { regions.append((size, 0)) }
        return regions
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
        let regions = data >= 0 ? dataRegions(data, size: size, blocks: Int(st.st_blocks)) : nil
        for (offset, length) in regions ?? [] { archive_entry_sparse_add_entry(e, la_int64_t(offset), la_int64_t(length)) }
        if archive_write_header(archive, e) != ARCHIVE_OK {
            throw ExtractFailure(message: "\(path): \(archiveError(archive))", errno: EIO)
        }
        if data >= 0 {
            // The writer drops what falls in a hole: holes are passed as zeros, never read.
            let plan = regions ?? [(0, size)]
            var position = 0
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            for (offset, length) in plan {
                try skipHole(offset - position, path)
                var left = length
                var at = offset
                while left > 0 {
                    let n = pread(data, &buffer, min(buffer.count, left), off_t(at))
                    if n <= 0 { break }
                    if archive_write_data(archive, buffer, n) < 0 {
                        throw ExtractFailure(message: "\(path): \(archiveError(archive))", errno: EIO)
                    }
                    left -= n
                    at += n
                }
                position = offset + length
            }
            try skipHole(size - position, path)
        }
        count += 1
    }

    private func skipHole(_ length: Int, _ path: String) throws {
        var left = length
        while left > 0 {
            let n = min(left, zeros.count)
            if archive_write_data(archive, zeros, n) < 0 {
                throw ExtractFailure(message: "\(path): \(archiveError(archive))", errno: EIO)
            }
            left -= n
        }
    }
}
