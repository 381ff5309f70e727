import Foundation
import PackagePlugin

/// Builds the static sandbox init from `init/vivarium-init.c` and the detached commands' shim from
/// `init/vivarium-shim.c`, and embeds them, with the OpenAPI document
/// `docs/openapi.json`, into the target as base64 constants, so that the vivarium binary carries both.
@main
struct EmbedAssets: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directoryURL
        let initSource = root.appending(path: "init/vivarium-init.c")
        let shimSource = root.appending(path: "init/vivarium-shim.c")
        let document = root.appending(path: "docs/openapi.json")
        let script = root.appending(path: "Plugins/EmbedAssets/embed.sh")
        let work = context.pluginWorkDirectoryURL
        let output = work.appending(path: "EmbeddedAssets.swift")
        return [
            .buildCommand(
                displayName: "Embedding vivarium-init, vivarium-shim and the OpenAPI document",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: [script.path, initSource.path, shimSource.path, document.path, work.path, output.path],
                inputFiles: [initSource, shimSource, document, script], outputFiles: [output])
        ]
    }
}
