import CMoonbox
import Glibc

/// `moonbox.netlink`: a NETLINK_ROUTE socket in one network namespace, as a Lua object whose
/// methods are the link, address, route and qdisc operations (closed by __gc and __close).
enum NetlinkObject {
    static let metatable = "moonbox.netlink"
    nonisolated(unsafe) static var live: [Int: NetlinkSocket] = [:]
    nonisolated(unsafe) static var nextID = 1

    static func get(_ lua: Lua, _ i: Int32, _ fname: String) throws -> NetlinkSocket {
        guard let p = luaL_testudata(lua.L, i, metatable) else {
            throw Args(lua, fname).error(i, "self", "netlink socket expected, got \(lua.typeName(i))")
        }
        guard let nl = live[p.load(as: Int.self)], nl.fd >= 0 else { throw Args(lua, fname).error(i, "self", "netlink socket is closed") }
        return nl
    }

    static func push(_ lua: Lua, _ nl: NetlinkSocket) {
        let id = nextID
        nextID += 1
        live[id] = nl
        let p = mb_lua_newuserdata(lua.L, MemoryLayout<Int>.size)!
        p.storeBytes(of: id, as: Int.self)
        if mb_luaL_getmetatable(lua.L, metatable) != LUA_TTABLE {
            lua.pop()
            luaL_newmetatable(lua.L, metatable)
            let close: LuaFunction = { lua in
                if let p = luaL_testudata(lua.L, 1, metatable), let nl = live.removeValue(forKey: p.load(as: Int.self)) { nl.close() }
                return 0
            }
            lua.set("__gc") { lua.push(function: close, name: "netlink.__gc") }
            lua.set("__close") { lua.push(function: close, name: "netlink.__close") }
            lua.set("__name", metatable)
            lua.set("__tostring") {
                lua.push(function: { lua in
                    let id = luaL_testudata(lua.L, 1, metatable)?.load(as: Int.self) ?? 0
                    lua.push(live[id].map { "netlink(fd \($0.fd))" } ?? "netlink(closed)")
                    return 1
                }, name: "netlink.__tostring")
            }
            lua.set("__index") {
                lua.push(module: linkMethods + addressMethods + routeMethods + qdiscMethods + [("close", close)])
            }
        }
        lua_setmetatable(lua.L, -2)
    }
}

let netlinkFunctions: [(String, LuaFunction)] = [
    // netlink([netns]): a NETLINK_ROUTE socket in this network namespace, or in the one the fd
    // `netns` names (/proc/PID/ns/net, or netns_create's). Its methods: link_add, link_del,
    // link_set, links, addr_add, addr_del, addrs, route_add, route_del, routes, qdisc_replace,
    // qdisc_del, class_replace, close.
    ("netlink", { lua in
        let a = Args(lua, "netlink")
        let netns = lua.isNoneOrNil(1) ? nil : try a.fd(1, "netns")
        do {
            NetlinkObject.push(lua, try NetlinkSocket(netns: netns))
            return 1
        } catch let NetlinkError.system(what, e) {
            return lua.fail(message: "netlink(): \(what): \(errnoText(e))", errnoName: errnoName(e))
        }
    }),
    // netns_create(): a new network namespace, held by the fd returned (it lives while some fd,
    // process or mount holds it). This process stays in its own.
    ("netns_create", { lua in
        let home = mb_open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC, 0)
        if home < 0 { return lua.fail("netns_create()") }
        defer { Glibc.close(home) }
        if mb_unshare(0x4000_0000) != 0 { return lua.fail("netns_create(): unshare") }
        let fd = mb_open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC, 0)
        let e = errno
        if mb_setns(home, 0x4000_0000) != 0 { fatalError("moonbox: cannot return to its own network namespace") }
        if fd < 0 { return lua.fail("netns_create()", errno: e) }
        FdObject.push(lua, fd)
        return 1
    }),
]
