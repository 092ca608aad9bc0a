import CMoonbox
import Glibc

/// What lsns and findmnt show: namespace ids and the mount table.

struct MountEntry {
    var id = 0, parent = 0, major = 0, minor = 0
    var root = "", target = "", options = "", optional: [String] = []
    var fstype = "", source = "", superOptions = ""
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
private func unescapeOctal(_ s: Substring) -> String {
    guard s.contains("\\") else { return String(s) }
    var bytes: [UInt8] = []
    let u = Array(s.utf8)
    var i = 0
    while i < u.count {
        if u[i] == UInt8(ascii: "\\"), i + 3 < u.count,
           let v = UInt8(String(decoding: u[(i + 1)..<(i + 4)], as: UTF8.self), radix: 8) {
            bytes.append(v)
            i += 4
        } else {
            bytes.append(u[i])
            i += 1
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

func parseMountinfo(_ text: String) -> [MountEntry] {
    text.split(separator: "\n").compactMap { line in
        let halves = String(line).components(separatedBy: " - ")
        guard halves.count >= 2 else { return nil }
        let a = halves[0].split(separator: " ")
        let b = halves[1...].joined(separator: " - ").split(separator: " ")
        guard a.count >= 6, b.count >= 3 else { return nil }
        var m = MountEntry()
        m.id = Int(a[0]) ?? 0
        m.parent = Int(a[1]) ?? 0
        let dev = a[2].split(separator: ":")
        m.major = dev.count == 2 ? Int(dev[0]) ?? 0 : 0
        m.minor = dev.count == 2 ? Int(dev[1]) ?? 0 : 0
        m.root = unescapeOctal(a[3])
        m.target = unescapeOctal(a[4])
        m.options = String(a[5])
        m.optional = a.dropFirst(6).map(String.init)
        m.fstype = String(b[0])
        m.source = unescapeOctal(b[1])
        m.superOptions = String(b[2])
        return m
    }
}

private extension String {
    func components(separatedBy sep: String) -> [String] {
        var parts: [String] = []
        var rest = Substring(self)
        while let r = rest.range(of: sep) {
            parts.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        parts.append(String(rest))
        return parts
    }
}

private extension Substring {
    func range(of needle: String) -> Range<Index>? {
        let n = needle.count
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: n) }
            i = index(after: i)
        }
        return nil
    }
}

let introspectionFunctions: [(String, LuaFunction)] = [
    // namespaces([pid]): {mnt=4026531840, pid=..., ...}, the ids lsns shows.
    ("namespaces", { lua in
        let a = Args(lua, "namespaces")
        let pid = try a.optInteger(1, "pid").map(String.init) ?? "self"
        var buf = [CChar](repeating: 0, count: 256)
        lua.newTable()
        var found = 0
        for kind in ["cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts"] {
            let n = Glibc.readlink("/proc/\(pid)/ns/\(kind)", &buf, 255)
            guard n > 0 else { continue }
            let text = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // "mnt:[4026531840]"
            guard let open = text.firstIndex(of: "["), let id = Int(text[text.index(after: open)...].dropLast()) else { continue }
            lua.set(kind, id)
            found += 1
        }
        if found == 0 {
            lua.pop()
            return lua.fail("namespaces(\(pid))", errno: errno == 0 ? ENOENT : errno)
        }
        return 1
    }),
    // mounts([pid]): /proc/PID/mountinfo as a list of tables.
    ("mounts", { lua in
        let a = Args(lua, "mounts")
        let pid = try a.optInteger(1, "pid").map(String.init) ?? "self"
        let (text, e) = readTextFile("/proc/\(pid)/mountinfo")
        guard let text else { return lua.fail("mounts(\(pid))", errno: e) }
        let entries = parseMountinfo(text)
        lua.newTable(array: Int32(entries.count))
        for (i, m) in entries.enumerated() {
            lua.append(i + 1) {
                lua.newTable(records: 11)
                lua.set("id", m.id)
                lua.set("parent", m.parent)
                lua.set("major", m.major)
                lua.set("minor", m.minor)
                lua.set("root", m.root)
                lua.set("target", m.target)
                lua.set("options", m.options)
                lua.set("fstype", m.fstype)
                lua.set("source", m.source)
                lua.set("super_options", m.superOptions)
                lua.set("propagation") { lua.push(list: m.optional) }
            }
        }
        return 1
    }),
]
