import CMoonbox
import Glibc

/// Block devices: loop(4).
let loopFunctions: [(String, LuaFunction)] = [
    // loop_attach(file [, {readonly = false}]): the file (a path or an fd) on a free loop
    // device, which goes away by itself when its last user (a mount) does. Returns the
    // device's path and an fd holding it (close it once the device is mounted).
    ("loop_attach", { lua in
        let a = Args(lua, "loop_attach")
        var readonly = false
        if try a.optTable(2, "options") {
            try a.options(2, "options", allowed: ["readonly"])
            readonly = try a.boolField(2, "readonly") ?? false
        }
        let backing: Int32
        var owned = false
        if lua.type(1) == LUA_TSTRING {
            let path = try a.string(1, "file")
            backing = mb_open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0)
            if backing < 0 { return lua.fail("loop_attach(\(path))") }
            owned = true
        } else {
            backing = try a.fd(1, "file")
        }
        defer { if owned { Glibc.close(backing) } }
        var name = [CChar](repeating: 0, count: 64)
        let fd = mb_loop_attach(backing, readonly ? 1 : 0, &name, name.count)
        if fd < 0 { return lua.fail("loop_attach()") }
        lua.push(String(cString: name))
        FdObject.push(lua, fd)
        return 2
    }),
]
