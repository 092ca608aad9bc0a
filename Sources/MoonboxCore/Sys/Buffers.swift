import CMoonbox
import Glibc

/// `moonbox.buffer`: bytes read from fds into one growing block, for captured output. Reading
/// goes straight from the fd into the block (no Lua string per chunk), bytes past the limit are
/// counted and dropped, and take() makes one Lua string and frees the block: the peak stays near
/// twice the captured size, not a multiple of it.
final class ByteBuffer {
    private(set) var storage: UnsafeMutableRawPointer?
    private(set) var count = 0
    private var capacity = 0
    let limit: Int
    var total = 0
    init(limit: Int) { self.limit = limit }
    deinit { free(storage) }

    /// Room for `more` bytes after the kept ones; false when memory ran out.
    func reserve(_ more: Int) -> Bool {
        if count + more <= capacity { return true }
        let want = max(count + more, capacity * 2, 4096)
        guard let p = realloc(storage, want) else { return false }
        storage = p
        capacity = want
        return true
    }
    func appended(_ n: Int) { count += n }
    func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, reserve(bytes.count) else { return }
        storage!.advanced(by: count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage, count: count) }
    func clear() {
        free(storage)
        storage = nil
        count = 0
        capacity = 0
    }
}

enum BufferObject {
    static let metatable = "moonbox.buffer"
    nonisolated(unsafe) static var live: [Int: ByteBuffer] = [:]
    nonisolated(unsafe) static var nextID = 1

    static func get(_ lua: Lua, _ i: Int32, _ fname: String) throws -> (Int, ByteBuffer) {
        guard let p = luaL_testudata(lua.L, i, metatable) else {
            throw Args(lua, fname).error(i, "self", "buffer expected, got \(lua.typeName(i))")
        }
        let id = p.load(as: Int.self)
        guard let b = live[id] else { throw Args(lua, fname).error(i, "self", "buffer is freed") }
        return (id, b)
    }

    static func push(_ lua: Lua, _ buffer: ByteBuffer) {
        let id = nextID
        nextID += 1
        live[id] = buffer
        let p = mb_lua_newuserdata(lua.L, MemoryLayout<Int>.size)!
        p.storeBytes(of: id, as: Int.self)
        if mb_luaL_getmetatable(lua.L, metatable) != LUA_TTABLE {
            lua.pop()
            luaL_newmetatable(lua.L, metatable)
            let free: LuaFunction = { lua in
                if let p = luaL_testudata(lua.L, 1, metatable) { live[p.load(as: Int.self)] = nil }
                return 0
            }
            lua.set("__gc") { lua.push(function: free, name: "buffer.__gc") }
            lua.set("__close") { lua.push(function: free, name: "buffer.__close") }
            lua.set("__name", metatable)
            lua.set("__tostring") {
                lua.push(function: { lua in
                    let id = luaL_testudata(lua.L, 1, metatable)?.load(as: Int.self) ?? 0
                    lua.push(live[id].map { "buffer(\($0.count) of \($0.total) bytes)" } ?? "buffer(freed)")
                    return 1
                }, name: "buffer.__tostring")
            }
            lua.set("__index") { lua.push(module: methods) }
        }
        lua_setmetatable(lua.L, -2)
    }

    static let methods: [(String, LuaFunction)] = [
        // buf:read(fd [, max]): reads once (up to max, 1 MiB by default); the number of bytes
        // read, 0 at the end of the stream, or nil, msg, errno (EAGAIN on a non-blocking fd).
        ("read", { lua in
            let a = Args(lua, "buffer:read")
            let (_, b) = try get(lua, 1, "buffer:read")
            let fd = try a.fd(2, "fd")
            let most = try a.optInteger(3, "max") ?? (1 << 20)
            guard most > 0, most <= 1 << 30 else { throw a.error(3, "max", "must be between 1 and 1 GiB") }
            // Read straight into the buffer while the limit leaves room; past it, into scratch
            // space that is only counted.
            let room = b.limit - b.count
            var n: Int
            if room > 0 && b.reserve(min(most, room)) {
                let want = min(most, room)
                repeat { n = Glibc.read(fd, b.storage!.advanced(by: b.count), want) } while n < 0 && errno == EINTR && !signalWasCaught()
                if n > 0 { b.appended(n) }
            } else {
                var scratch = [UInt8](repeating: 0, count: 65536)
                repeat { n = Glibc.read(fd, &scratch, scratch.count) } while n < 0 && errno == EINTR && !signalWasCaught()
            }
            if n < 0 { return lua.fail("read(fd \(fd))") }
            b.total += n
            lua.push(n)
            return 1
        }),
        // buf:append(string): adds bytes (past the limit they are only counted).
        ("append", { lua in
            let (_, b) = try get(lua, 1, "buffer:append")
            guard lua.type(2) == LUA_TSTRING else { _ = try Args(lua, "buffer:append").string(2, "data"); return 0 }
            lua.withBytes(at: 2) { data in
                let keep = min(data.count, max(0, b.limit - b.count))
                b.append(UnsafeRawBufferPointer(rebasing: data[0..<keep]))
                b.total += data.count
            }
            return 0
        }),
        // buf:size(): bytes kept; buf:total(): bytes seen, kept or not.
        ("size", { lua in lua.push(try get(lua, 1, "buffer:size").1.count); return 1 }),
        ("total", { lua in lua.push(try get(lua, 1, "buffer:total").1.total); return 1 }),
        // buf:peek([from]): the bytes kept from byte `from` (1-based, default 1), left in place:
        // what a wait for a log line scans while the container keeps writing.
        ("peek", { lua in
            let (_, b) = try get(lua, 1, "buffer:peek")
            let a = Args(lua, "buffer:peek")
            let from = try a.optInteger(2, "from") ?? 1
            guard from >= 1 else { throw a.error(2, "from", "must be >= 1") }
            let all = b.bytes
            lua.push(bytes: UnsafeRawBufferPointer(rebasing: all[min(from - 1, all.count)...]))
            return 1
        }),
        // buf:take(): the bytes kept, as one string; the buffer is empty afterwards.
        ("take", { lua in
            let (_, b) = try get(lua, 1, "buffer:take")
            lua.push(bytes: b.bytes)
            b.clear()
            return 1
        }),
    ]
}

let bufferFunctions: [(String, LuaFunction)] = [
    // buffer([limit]): a new capture buffer keeping at most limit bytes (default: no limit).
    ("buffer", { lua in
        let a = Args(lua, "buffer")
        let limit = try a.optInteger(1, "limit") ?? Int.max
        guard limit >= 0 else { throw a.error(1, "limit", "must be >= 0") }
        BufferObject.push(lua, ByteBuffer(limit: limit))
        return 1
    }),
]
