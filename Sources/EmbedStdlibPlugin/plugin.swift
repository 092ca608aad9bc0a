import Foundation
import PackagePlugin

/// Embeds every stdlib/**/*.lua file into the MoonboxCore target as a Swift
/// source, so the binary finds its stdlib however and wherever it is started.
@main
struct EmbedStdlibPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directoryURL.appending(path: "stdlib")
        // The folders are inputs too: a new module changes its folder, so the command
        // runs again and the tool, which scans the tree itself, picks the module up.
        var inputs: [URL] = [root]
        if let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) {
            for case let url as URL in walker
            where url.pathExtension == "lua" || (try? url.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) == true {
                inputs.append(url)
            }
        }
        inputs.sort { $0.path < $1.path }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedStdlib.swift")
        return [
            .buildCommand(
                displayName: "Embedding stdlib",
                executable: try context.tool(named: "EmbedStdlib").url,
                arguments: [output.path, root.path],
                inputFiles: inputs,
                outputFiles: [output]
            ),
        ]
    }
}
