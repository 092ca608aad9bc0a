import CMoonbox
import Glibc

/// Network devices through the netdevice(7) ioctls.
let networkDeviceFunctions: [(String, LuaFunction)] = [
    // netdev_up(name [, up]): set a network device up (or down), like `ip link set lo up`.
    ("netdev_up", { lua in
        let a = Args(lua, "netdev_up")
        let name = try a.string(1, "name")
        let up = lua.isNoneOrNil(2) ? true : try a.boolean(2, "up")
        return mb_netdev_set_up(name, up ? 1 : 0) == 0 ? lua.ok() : lua.fail("netdev_up(\(name))")
    }),
]
