import CMoonbox
import Glibc

/// Small whole-file reads and writes, for /proc, /sys and cgroup files.

func readTextFile(_ path: String) -> (String?, Int32) {
    let fd = mb_open(path, O_RDONLY | O_CLOEXEC, 0)
    if fd < 0 { return (nil, errno) }
    defer { Glibc.close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 8192)
    while true {
        let n = Glibc.read(fd, &buf, buf.count)
        if n < 0 {
            if errno == EINTR { continue }
            return (nil, errno)
        }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return (String(decoding: out, as: UTF8.self), 0)
}

func fileExists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
}

/// Writes `text` to a /proc or /sys file in one write(2), so the kernel's verdict is
/// seen at once. Returns nil or the errno.
func writeProcFile(_ path: String, _ text: String) -> Int32? {
    let fd = mb_open(path, O_WRONLY | O_TRUNC | O_CLOEXEC, 0)
    if fd < 0 { return errno }
    defer { Glibc.close(fd) }
    let n = text.withCString { Glibc.write(fd, $0, strlen($0)) }
    if n < 0 { return errno }
    if n != text.utf8.count { return EIO }
    return nil
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\n" || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\n" || c == "\t" { s.removeLast() }
        return String(s)
    }
}
