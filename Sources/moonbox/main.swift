import ArgumentParser
import Glibc
import MoonboxCore

/// The command line: a thin layer over the Lua runtime. Subcommands that are policy
/// (box, test, gc, ...) are Lua modules of the stdlib, run through `runStdlib`.
struct Moonbox: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moonbox",
        abstract: "A container and sandbox runtime scripted in Lua.",
        discussion: """
        Examples:
          moonbox run hello.lua a b        run a script; arg[1] == "a"
          moonbox hello.lua                the same (so #!/usr/bin/env moonbox works)
          moonbox run -e 'print(require("moonbox.sys").getpid())'
          moonbox repl                     an interactive prompt with the stdlib
          moonbox box --rootfs ./rootfs --memory 256M -- /bin/sh -c 'echo hi'
          moonbox sandbox --rootfs ./rootfs --time 1 --mem 64M --meta meta.txt -- ./prog
          moonbox test Tests/lua           run *_test.lua files
          moonbox network create lab --subnet 10.89.0.0/24
          moonbox box --rootfs ./rootfs --network lab -p 8080:80 -- httpd -f
          moonbox gc                       remove what killed runs left behind
        Errors are one line; `moonbox --debug COMMAND ...` (or MOONBOX_DEBUG=1) adds tracebacks.
        """,
        version: moonboxVersion,
        subcommands: [Run.self, Repl.self, Box.self, Sandbox.self, Images.self, Image.self, Build.self, Pull.self, Push.self, Network.self, Experiment.self, Oci.self, Gc.self, Test.self],
        defaultSubcommand: Run.self
    )
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Lua script (or a chunk given with -e).",
        discussion: """
        The script sees its arguments in `arg` and `...`, as with the lua program.
        The exit status is the script's os.exit(n), 0 when it ends normally, and 1
        after an uncaught error, which is printed with a traceback.
        """
    )

    @Option(name: .customShort("e"), help: "Run this chunk instead of a script.")
    var chunk: String?

    @Argument(parsing: .captureForPassthrough, help: "SCRIPT [ARG...]")
    var arguments: [String] = []

    func validate() throws {
        if chunk == nil && arguments.isEmpty { throw ValidationError("give a SCRIPT to run, or -e CHUNK") }
    }

    func run() throws { runScript(chunk: chunk, arguments: arguments) }
}

struct Repl: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "An interactive Lua prompt with moonbox loaded.")
    func run() throws {
        Runtime().repl()
    }
}

/// Runs the stdlib module `module`'s `main(args)` with the command's arguments:
/// the command line for policy written in Lua.
func runStdlib(_ module: String, _ arguments: [String]) -> Never {
    let runtime = Runtime()
    let chunk = "local m = require(...); return m.main({select(2, ...)})"
    let status = runtime.run(script: nil, chunk: chunk, arguments: [module] + arguments, program: CommandLine.arguments[0])
    runtime.close()
    fflush(nil)
    Glibc.exit(status)
}

struct Test: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Lua test files (*_test.lua) written with moonbox.test.",
        discussion: "Options: --tap, --junit FILE, --filter PATTERN, --verbose. PATH defaults to the current folder."
    )
    @Argument(parsing: .captureForPassthrough, help: "[--tap] [--junit FILE] [--filter PATTERN] [PATH...]")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.test", arguments) }
}

struct Box: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one container from the command line, like docker run on a folder.",
        discussion: """
        moonbox box --rootfs DIR [--memory 512M] [--pids N] [--cpus X] [--hostname H]
                    [--net none|host] [-v SRC:DST[:ro]] [--timeout S] [-it] -- CMD...
        Exit status: the command's, 128+signal, 125 for runtime errors, 126/127 when the
        command cannot be run. `moonbox box --help` inside lists every option.
        """
    )
    @Argument(parsing: .captureForPassthrough, help: "OPTIONS -- CMD [ARG...]")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.box", arguments) }
}

struct Sandbox: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one untrusted job in a strict box, with isolate-style verdicts.",
        discussion: """
        moonbox sandbox --rootfs DIR [--time S] [--wall-time S] [--mem SIZE] [--pids N]
                        [--output-limit BYTES] [--dir SRC:DST] [--out DIR] [--meta FILE] [--json] -- CMD...
        `moonbox sandbox --help` inside lists every option.
        """
    )
    @Argument(parsing: .captureForPassthrough, help: "OPTIONS -- CMD [ARG...]")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.sandbox", arguments) }
}

struct Images: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the images in the store ($MOONBOX_ROOT, /var/lib/moonbox by default).")
    func run() throws { runStdlib("moonbox.image", ["ls"]) }
}

struct Image: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage images: import, export, inspect, rm.",
        discussion: """
        moonbox image import SOURCE NAME   a rootfs folder, a rootfs tarball, or an OCI layout folder
        moonbox image export NAME FOLDER   as an OCI image layout
        moonbox image inspect NAME
        moonbox image rm NAME
        """
    )
    @Argument(parsing: .captureForPassthrough, help: "import|export|inspect|rm ...")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.image", arguments) }
}

struct Build: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build an image from a Lua recipe, step by step, with a layer cache.",
        discussion: "moonbox build RECIPE.lua [-t NAME:TAG] [--arg NAME=VALUE]..."
    )
    @Argument(parsing: .captureForPassthrough, help: "RECIPE.lua [-t NAME:TAG] [--arg NAME=VALUE]")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.recipe", arguments) }
}

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull an image from a registry (OCI distribution API).",
        discussion: "moonbox pull HOST[:PORT]/REPO[:TAG] [NAME]"
    )
    @Argument(parsing: .captureForPassthrough, help: "REF [NAME]")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.registry", ["pull"] + arguments) }
}

struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push an image to a registry (OCI distribution API).",
        discussion: "moonbox push NAME HOST[:PORT]/REPO[:TAG]"
    )
    @Argument(parsing: .captureForPassthrough, help: "NAME REF")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.registry", ["push"] + arguments) }
}

struct Gc: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove cgroups and folders left by runs whose moonbox was killed.",
        discussion: "Reads the state folder ($MOONBOX_STATE, /run/moonbox by default). --dry-run shows what would go."
    )
    @Argument(parsing: .captureForPassthrough, help: "[--dry-run]")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.gc", arguments) }
}

struct Network: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and remove networks that outlive one moonbox process.",
        discussion: """
        moonbox network create NAME [--subnet CIDR] [--subnet6 CIDR] [--host] [--masquerade] [--mtu N]
        moonbox network ls [--json]
        moonbox network rm NAME... [--force]
        """
    )
    @Argument(parsing: .captureForPassthrough, help: "create|ls|rm ...")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.net.cli", arguments) }
}

struct Experiment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an experiment file: its trials in parallel, resumable, with a report.",
        discussion: """
        moonbox experiment FILE.lua [--param NAME=V1,V2]... [--jobs N] [--out DIR] [--only PATTERN]
                                    [--resume] [--fresh] [--retry] [--quiet] [-- ARG...]
        """
    )
    @Argument(parsing: .captureForPassthrough, help: "FILE.lua [options]")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.experiment", arguments) }
}

struct Oci: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The OCI runtime command line (runc's): for podman, containerd and CRI-O.",
        discussion: """
        moonbox oci [--root DIR] [--log FILE] [--log-format text|json] COMMAND ...
        COMMAND: create, start, state, kill, delete, exec, run, ps, pause, resume, update, list, features, spec.
        Installed as runc or moonbox-runc (a link to moonbox), it takes the same arguments without `oci`.
        """
    )
    @Argument(parsing: .captureForPassthrough, help: "[GLOBAL] COMMAND ...")
    var arguments: [String] = []
    func run() throws { runStdlib("moonbox.oci.cli", arguments) }
}

// Run as `runc` or `moonbox-runc` (podman --runtime, containerd's BinaryName): the OCI runtime.
let invokedAs = CommandLine.arguments[0].split(separator: "/").last.map(String.init) ?? ""
if invokedAs == "runc" || invokedAs == "moonbox-runc" {
    runStdlib("moonbox.oci.cli", Array(CommandLine.arguments.dropFirst()))
}

/// Runs a script or a chunk (`moonbox run`, and the fast path below).
func runScript(chunk: String?, arguments: [String]) -> Never {
    let runtime = Runtime()
    let status: Int32
    if let chunk {
        status = runtime.run(script: nil, chunk: chunk, arguments: arguments, program: CommandLine.arguments[0])
    } else {
        status = runtime.run(script: arguments[0], chunk: nil, arguments: Array(arguments.dropFirst()), program: CommandLine.arguments[0])
    }
    runtime.close()
    fflush(nil)
    Glibc.exit(status)
}

// --debug, before the command, shows tracebacks for every error (as MOONBOX_DEBUG=1 does).
var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "--debug" {
    arguments.removeFirst()
    setenv("MOONBOX_DEBUG", "1", 1)
}
// The commands that only hand their arguments to Lua skip ArgumentParser, whose reflection over
// every subcommand costs about a millisecond at each start; --help still goes through it.
let passthrough: [String: String] = [
    "box": "moonbox.box", "sandbox": "moonbox.sandbox", "test": "moonbox.test", "gc": "moonbox.gc",
    "network": "moonbox.net.cli", "experiment": "moonbox.experiment", "oci": "moonbox.oci.cli",
    "build": "moonbox.recipe", "image": "moonbox.image",
]
if let first = arguments.first, !arguments.contains("--help"), !arguments.contains("-h") {
    if let module = passthrough[first] { runStdlib(module, Array(arguments.dropFirst())) }
    if first == "run", arguments.count >= 3, arguments[1] == "-e" {
        runScript(chunk: arguments[2], arguments: Array(arguments.dropFirst(3)))
    }
    if first == "run", arguments.count >= 2, !arguments[1].hasPrefix("-") {
        runScript(chunk: nil, arguments: Array(arguments.dropFirst()))
    }
}
Moonbox.main(arguments)
