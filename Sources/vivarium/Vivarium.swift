import ArgumentParser
import Foundation
import VivariumClient
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
            Serve.self, ConfigCommand.self, Create.self, Run.self, List.self, Inspect.self, Start.self, Stop.self,
            Remove.self, Exec.self, ProcessList.self, ProcessLogsCommand.self, ProcessKill.self, ProcessInput.self,
            CopyCommand.self, FilesCommand.self, ImageCommand.self, VulnDBCommand.self,
            TenantCommand.self, PrincipalCommand.self,
            TokenCommand.self,
            Login.self, Logout.self, KeysCommand.self, AuditCommand.self, NetworkCommand.self, ExposeCommand.self,
            SecretCommand.self, KMSCommand.self, RegistryCommand.self,
        ])
}

/// A verb: every error it throws is reported the same way (a message with its stable code, exit 125); an
/// exit status it throws on purpose passes through.
protocol Verb: AsyncParsableCommand {
    func perform() async throws
}

extension Verb {
    func run() async throws {
        do {
            try await perform()
        } catch let e as ExitCode {
            throw e
        } catch {
            fail(error)
        }
    }
}

/// A verb that talks to the daemon.
protocol ClientCommand: Verb {
    var global: GlobalOptions { get }
    func run(_ client: APIClient) async throws
}

extension ClientCommand {
    func perform() async throws { try await run(try client(global)) }
}

/// The daemon to talk to: the unix socket (local root), or the remote daemon of `vivarium login`
/// when credentials exist and no socket was named explicitly.
func client(_ g: GlobalOptions) throws -> APIClient {
    let explicitSocket = g.socket != nil || ProcessInfo.processInfo.environment["VIVARIUM_SOCKET"] != nil
    if !explicitSocket && Credentials.exists() { return APIClient(transport: LoggedIn()) }
    return APIClient(socketPath: try Settings.resolve(g).socket)
}

/// Vivarium's own failures (the daemon unreachable or refusing) exit with this, as podman's do, so that
/// `exec` and `run`, which exit with the command's status, can be told apart from them.
let failureExitCode: Int32 = 125

/// Prints an error the way every verb does and exits with `failureExitCode`.
func fail(_ error: any Error) -> Never {
    if let e = error as? VivariumError {
        FileHandle.standardError.write(Data("vivarium: \(e.message) [\(e.code)]\n".utf8))
    } else {
        FileHandle.standardError.write(Data("vivarium: \(error)\n".utf8))
    }
    exit(failureExitCode)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let e = WireCoding.encoder(for: T.self)
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

/// `?tenant=NAME` for admin verbs that act in another tenant.
func tenantQuery(_ t: String?) -> [(String, String?)] { [("tenant", t)] }
