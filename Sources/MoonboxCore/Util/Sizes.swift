import CMoonbox
import Glibc

/// The one size grammar of moonbox (limits, tmpfs sizes, capture limits, sandbox options):
/// bytes ("1048576"), or a number with a binary unit K, M, G, T or P, optionally followed by
/// "B" or "iB" ("512M", "1.5G", "64MiB", "2kb"), or "max" for no limit (-1).
enum SizeParse: Equatable {
    case bytes(Int)
    case invalid(String)
}

func parseSize(_ text: String) -> SizeParse {
    let s = text.trimmingSpaces()
    if s.isEmpty { return .invalid("an empty string is not a size") }
    if s == "max" || s == "-1" { return .bytes(-1) }
    let usage = "use bytes or a number with K, M, G, T or P, like 512M or 1.5G"
    var chars = Array(s.lowercased().utf8)
    if chars.first == UInt8(ascii: "-") { return .invalid("'\(s)' is negative") }
    // The unit: [kmgtp] then an optional "b" or "ib"; or a bare "b".
    var shift = 0
    if chars.last == UInt8(ascii: "b") {
        chars.removeLast()
        if chars.last == UInt8(ascii: "i") { chars.removeLast() }
    }
    let units: [UInt8: Int] = [UInt8(ascii: "k"): 10, UInt8(ascii: "m"): 20, UInt8(ascii: "g"): 30,
                               UInt8(ascii: "t"): 40, UInt8(ascii: "p"): 50]
    if let last = chars.last, let u = units[last] {
        shift = u
        chars.removeLast()
    } else if s.lowercased().hasSuffix("ib") {
        return .invalid("'\(s)' has an unknown unit (\(usage))")
    }
    // The number: digits with at most one '.', nothing else (no "inf", "nan" or exponents).
    let dot = UInt8(ascii: ".")
    guard !chars.isEmpty, chars.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == dot }),
          chars.filter({ $0 == dot }).count <= 1, chars != [dot] else {
        return .invalid("'\(s)' is not a size (\(usage))")
    }
    let number = String(decoding: chars, as: UTF8.self)
    let limit = "'\(s)' is too large (the largest size is 8 EiB)"
    if !number.contains("."), let n = Int(number) {
        let (r, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? .invalid(limit) : .bytes(r)
    }
    guard let d = Double(number) else { return .invalid(limit) }
    let bytes = (d * Double(1 << shift)).rounded(.down)
    guard bytes < 9.2e18 else { return .invalid(limit) }
    return .bytes(Int(bytes))
}

let sizeFunctions: [(String, LuaFunction)] = [
    // parse_size(text or bytes): the size in bytes (-1 for "max"), or nil, why, "EINVAL".
    ("parse_size", { lua in
        let a = Args(lua, "parse_size")
        if lua.type(1) == LUA_TNUMBER {
            guard let n = lua.integer(at: 1) else { return lua.fail(message: "\(lua.number(at: 1) ?? 0) is not a whole number of bytes", errnoName: "EINVAL") }
            guard n >= 0 else { return lua.fail(message: "\(n) is negative", errnoName: "EINVAL") }
            lua.push(n)
            return 1
        }
        switch parseSize(try a.string(1, "size")) {
        case .bytes(let n): lua.push(n); return 1
        case .invalid(let why): return lua.fail(message: why, errnoName: "EINVAL")
        }
    }),
]
