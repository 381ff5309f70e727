import ArgumentParser
import Foundation
import VivariumCore

@main
struct Vivarium: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vivarium",
        abstract: "Hardened Linux sandboxes on crun, driven through a local daemon.",
        discussion: """
            `vivarium serve` runs the daemon (as root). Every other verb is a client of its API: on the unix socket \
            (default /run/vivarium/vivarium.sock; --socket or VIVARIUM_SOCKET), or, after `vivarium login`, on a \
            remote daemon over TLS.
            """,
        version: VivariumVersion.string,
        subcommands: [
            Serve.self, ConfigCommand.self, Create.self, List.self, Inspect.self, Start.self, Stop.self, Remove.self,
            Exec.self, ImageCommand.self, TenantCommand.self, PrincipalCommand.self, TokenCommand.self, Login.self,
            Logout.self,
            KeysCommand.self, AuditCommand.self,
        ])
}

/// Prints an error the way every verb does and exits non-zero.
func fail(_ error: any Error) -> Never {
    if let e = error as? VivariumError {
        FileHandle.standardError.write(Data("vivarium: \(e.message) [\(e.code)]\n".utf8))
    } else {
        FileHandle.standardError.write(Data("vivarium: \(error)\n".utf8))
    }
    exit(1)
}

func printJSON(_ value: some Encodable) throws {
    let e = WireCoding.encoder()
    e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    FileHandle.standardOutput.write(try e.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Left-aligned columns for human output.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0)
        }
        .joined()
    }
    print(line(header))
    for r in rows { print(line(r)) }
}
