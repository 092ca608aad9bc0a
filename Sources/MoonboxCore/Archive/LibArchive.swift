import Glibc

/// libarchive, loaded with dlopen the first time a layer is read or written: linked normally it
/// brings libxml2 and ICU into every moonbox start-up, containers or not. The functions keep
/// libarchive's own names and signatures.

typealias la_int64_t = Int64
let ARCHIVE_OK: Int32 = 0
let ARCHIVE_EOF: Int32 = 1
let ARCHIVE_WARN: Int32 = -20

private let libarchive: UnsafeMutableRawPointer? =
    dlopen("libarchive.so.13", RTLD_NOW | RTLD_LOCAL) ?? dlopen("libarchive.so", RTLD_NOW | RTLD_LOCAL)

/// Why libarchive cannot be used, or nil when every function it needs is there.
let libarchiveProblem: String? = {
    guard let libarchive else { return "libarchive is not installed (Debian: libarchive13)" }
    for name in libarchiveNames where dlsym(libarchive, name) == nil { return "libarchive lacks \(name)" }
    return nil
}()

private func load<T>(_ name: String, _ type: T.Type) -> T {
    // Only reached after libarchiveProblem said every symbol is there.
    unsafeBitCast(dlsym(libarchive, name)!, to: type)
}

private let libarchiveNames = [
    "archive_read_new",
    "archive_read_free",
    "archive_read_support_filter_all",
    "archive_read_support_format_tar",
    "archive_read_support_format_gnutar",
    "archive_read_support_format_raw",
    "archive_read_open_fd",
    "archive_read_data",
    "archive_filter_code",
    "archive_entry_sparse_add_entry",
    "archive_entry_sparse_count",
    "archive_read_open_filename",
    "archive_read_next_header",
    "archive_read_data_block",
    "archive_error_string",
    "archive_entry_pathname",
    "archive_entry_hardlink",
    "archive_entry_symlink",
    "archive_entry_size",
    "archive_entry_mtime",
    "archive_entry_uid",
    "archive_entry_gid",
    "archive_entry_filetype",
    "archive_entry_perm",
    "archive_entry_rdevmajor",
    "archive_entry_rdevminor",
    "archive_entry_xattr_reset",
    "archive_entry_xattr_next",
    "archive_write_new",
    "archive_write_free",
    "archive_write_close",
    "archive_write_set_format_pax_restricted",
    "archive_write_add_filter_gzip",
    "archive_write_add_filter_zstd",
    "archive_write_open_filename",
    "archive_write_header",
    "archive_write_data",
    "archive_entry_new",
    "archive_entry_free",
    "archive_entry_set_pathname",
    "archive_entry_set_symlink",
    "archive_entry_set_hardlink",
    "archive_entry_set_filetype",
    "archive_entry_set_perm",
    "archive_entry_set_uid",
    "archive_entry_set_gid",
    "archive_entry_set_size",
    "archive_entry_set_mtime",
    "archive_entry_set_rdev",
]

let archive_read_new = load("archive_read_new", (@convention(c) () -> OpaquePointer?).self)
let archive_read_free = load("archive_read_free", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_read_support_filter_all = load("archive_read_support_filter_all", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_read_support_format_tar = load("archive_read_support_format_tar", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_read_support_format_gnutar = load("archive_read_support_format_gnutar", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_read_support_format_raw = load("archive_read_support_format_raw", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_read_open_fd = load("archive_read_open_fd", (@convention(c) (OpaquePointer?, Int32, Int) -> Int32).self)
let archive_read_data = load("archive_read_data", (@convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int) -> Int).self)
let archive_filter_code = load("archive_filter_code", (@convention(c) (OpaquePointer?, Int32) -> Int32).self)
let archive_entry_sparse_add_entry = load("archive_entry_sparse_add_entry", (@convention(c) (OpaquePointer?, Int64, Int64) -> Void).self)
let archive_entry_sparse_count = load("archive_entry_sparse_count", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_read_open_filename = load("archive_read_open_filename", (@convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int) -> Int32).self)
let archive_read_next_header = load("archive_read_next_header", (@convention(c) (OpaquePointer?, UnsafeMutablePointer<OpaquePointer?>?) -> Int32).self)
let archive_read_data_block = load("archive_read_data_block", (@convention(c) (OpaquePointer?, UnsafeMutablePointer<UnsafeRawPointer?>?, UnsafeMutablePointer<Int>?, UnsafeMutablePointer<Int64>?) -> Int32).self)
let archive_error_string = load("archive_error_string", (@convention(c) (OpaquePointer?) -> UnsafePointer<CChar>?).self)
let archive_entry_pathname = load("archive_entry_pathname", (@convention(c) (OpaquePointer?) -> UnsafePointer<CChar>?).self)
let archive_entry_hardlink = load("archive_entry_hardlink", (@convention(c) (OpaquePointer?) -> UnsafePointer<CChar>?).self)
let archive_entry_symlink = load("archive_entry_symlink", (@convention(c) (OpaquePointer?) -> UnsafePointer<CChar>?).self)
let archive_entry_size = load("archive_entry_size", (@convention(c) (OpaquePointer?) -> Int64).self)
let archive_entry_mtime = load("archive_entry_mtime", (@convention(c) (OpaquePointer?) -> Int).self)
let archive_entry_uid = load("archive_entry_uid", (@convention(c) (OpaquePointer?) -> Int64).self)
let archive_entry_gid = load("archive_entry_gid", (@convention(c) (OpaquePointer?) -> Int64).self)
let archive_entry_filetype = load("archive_entry_filetype", (@convention(c) (OpaquePointer?) -> UInt32).self)
let archive_entry_perm = load("archive_entry_perm", (@convention(c) (OpaquePointer?) -> UInt32).self)
let archive_entry_rdevmajor = load("archive_entry_rdevmajor", (@convention(c) (OpaquePointer?) -> UInt).self)
let archive_entry_rdevminor = load("archive_entry_rdevminor", (@convention(c) (OpaquePointer?) -> UInt).self)
let archive_entry_xattr_reset = load("archive_entry_xattr_reset", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_entry_xattr_next = load("archive_entry_xattr_next", (@convention(c) (OpaquePointer?, UnsafeMutablePointer<UnsafePointer<CChar>?>?, UnsafeMutablePointer<UnsafeRawPointer?>?, UnsafeMutablePointer<Int>?) -> Int32).self)
let archive_write_new = load("archive_write_new", (@convention(c) () -> OpaquePointer?).self)
let archive_write_free = load("archive_write_free", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_write_close = load("archive_write_close", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_write_set_format_pax_restricted = load("archive_write_set_format_pax_restricted", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_write_add_filter_gzip = load("archive_write_add_filter_gzip", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_write_add_filter_zstd = load("archive_write_add_filter_zstd", (@convention(c) (OpaquePointer?) -> Int32).self)
let archive_write_open_filename = load("archive_write_open_filename", (@convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Int32).self)
let archive_write_header = load("archive_write_header", (@convention(c) (OpaquePointer?, OpaquePointer?) -> Int32).self)
let archive_write_data = load("archive_write_data", (@convention(c) (OpaquePointer?, UnsafeRawPointer?, Int) -> Int).self)
let archive_entry_new = load("archive_entry_new", (@convention(c) () -> OpaquePointer?).self)
let archive_entry_free = load("archive_entry_free", (@convention(c) (OpaquePointer?) -> Void).self)
let archive_entry_set_pathname = load("archive_entry_set_pathname", (@convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Void).self)
let archive_entry_set_symlink = load("archive_entry_set_symlink", (@convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Void).self)
let archive_entry_set_hardlink = load("archive_entry_set_hardlink", (@convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Void).self)
let archive_entry_set_filetype = load("archive_entry_set_filetype", (@convention(c) (OpaquePointer?, UInt32) -> Void).self)
let archive_entry_set_perm = load("archive_entry_set_perm", (@convention(c) (OpaquePointer?, UInt32) -> Void).self)
let archive_entry_set_uid = load("archive_entry_set_uid", (@convention(c) (OpaquePointer?, Int64) -> Void).self)
let archive_entry_set_gid = load("archive_entry_set_gid", (@convention(c) (OpaquePointer?, Int64) -> Void).self)
let archive_entry_set_size = load("archive_entry_set_size", (@convention(c) (OpaquePointer?, Int64) -> Void).self)
let archive_entry_set_mtime = load("archive_entry_set_mtime", (@convention(c) (OpaquePointer?, Int, Int) -> Void).self)
let archive_entry_set_rdev = load("archive_entry_set_rdev", (@convention(c) (OpaquePointer?, UInt) -> Void).self)
