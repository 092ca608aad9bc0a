// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "moonbox",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "moonbox", targets: ["moonbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Lua API macros as inline functions, the error trampoline, and the
        // syscalls Swift cannot call directly (variadic or _GNU_SOURCE).
        .target(
            name: "CMoonbox",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("lua5.4"), .linkedLibrary("seccomp"), .linkedLibrary("m"), .linkedLibrary("dl")]
        ),
        // Generates the embedded copy of stdlib/ so the binary runs from anywhere.
        .executableTarget(name: "EmbedStdlib", dependencies: ["CMoonbox"], path: "Sources/EmbedStdlib"),
        .plugin(
            name: "EmbedStdlibPlugin",
            capability: .buildTool(),
            dependencies: ["EmbedStdlib"],
            path: "Sources/EmbedStdlibPlugin"
        ),
        .target(
            name: "MoonboxCore",
            dependencies: ["CMoonbox"],
            plugins: ["EmbedStdlibPlugin"]
        ),
        .executableTarget(
            name: "moonbox",
            dependencies: [
                "MoonboxCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "MoonboxTests", dependencies: ["MoonboxCore"]),
    ],
    swiftLanguageModes: [.v5]
)
