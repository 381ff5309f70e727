import ArgumentParser
import Foundation
import VivariumClient
import VivariumCore

struct SecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secret", abstract: "Write-only secrets, delivered to sandboxes as files.",
        discussion: """
            A secret's value is sealed under its own data key and never shown again: not by the API, the CLI, \
            the logs or the audit trail. A sandbox it is bound to (by name or by labels) sees it as \
            /run/secrets/NAME, mode 0440, owned by its root and the group --gid names; a new value replaces the \
            file atomically in running sandboxes.
            """,
        subcommands: [Set.self, Ls.self, Rm.self])

    struct Set: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "set", abstract: "Store a new version of a secret (the value from a file or stdin).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The secret's name (its file name in /run/secrets).") var name: String
        @Option(name: .customLong("from-file"), help: "Read the value from this file.") var file: String?
        @Flag(name: .customLong("from-stdin"), help: "Read the value from standard input, to its end.")
        var stdin = false
        @Option(name: .customLong("sandbox"), help: "Deliver it to this sandbox (repeatable).") var sandboxes:
            [String] = []
        @Option(
            name: .customLong("label"),
            help: "Deliver it to sandboxes with this label K=V (repeatable; all must match).")
        var labels: [String] = []
        @Option(help: "The group inside the box that may read the file (default 0).") var gid: Int = 0
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            guard (file != nil) != stdin else {
                throw VivariumError(
                    .invalidArgument, "give the value with --from-file F or --from-stdin (never on the command line)")
            }
            let limit = SecretBinding.maxValueBytes
            let data: Data
            if let file {
                guard let d = FileManager.default.contents(atPath: file) else {
                    throw VivariumError(.invalidArgument, "cannot read \(file)")
                }
                data = d
            } else {
                data = FileHandle.standardInput.readData(ofLength: limit + 1)
            }
            guard data.count <= limit else {
                throw VivariumError(.payloadTooLarge, "a secret's value is at most \(limit >> 20) MiB")
            }
            _ = try FieldRules.parsePairs(labels, what: "--label")
            let query: [(String, String?)] =
                sandboxes.map { ("sandbox", $0) } + labels.map { ("label", $0) } + [
                    ("gid", gid == 0 ? nil : String(gid))
                ]
            let s = try client.upload(Endpoints.secretSet, data, name: name, query: query)
            if json { return try printJSON(s) }
            print("\(s.name) version \(s.version)")
        }
    }

    struct Ls: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List secrets (never their values).")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let all = try client.call(Endpoints.secretList).items
            if json { return try printJSON(all) }
            printTable(
                ["NAME", "VERSION", "KEPT", "SANDBOXES", "LABELS", "GID", "CREATED"],
                all.map {
                    [
                        $0.name, String($0.version), String($0.versions), $0.sandboxes.joined(separator: ","),
                        $0.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
                        String($0.gid), ISO8601DateFormatter().string(from: $0.createdAt),
                    ]
                })
        }
    }

    struct Rm: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Delete a secret (its file leaves every sandbox), or prune its old versions.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The secret's name.") var name: String
        @Flag(help: "Delete only the versions older than the newest.") var prune = false

        func run(_ client: APIClient) async throws {
            _ = try client.call(Endpoints.secretDelete, name: name, query: [("prune", prune ? "true" : nil)])
        }
    }
}

struct KMSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kms", abstract: "The key-encryption keys that wrap secrets' data keys (admins).",
        discussion: """
            The daemon's kms setting picks the provider: local (a keyring file, by default \
            <state_dir>/kms/keyring.json: back it up) or transit (a Vault or OpenBao Transit key).
            """,
        subcommands: [Ls.self, Rotate.self, Retire.self])

    static func show(_ k: KMSInfo) {
        print("provider \(k.provider)")
        printTable(
            ["KEY", "CURRENT", "DATA KEYS"], k.keys.map { [$0.id, $0.current ? "yes" : "", String($0.wrapped)] })
    }

    struct Ls: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List the keys and how many data keys each still wraps.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let k = try client.call(Endpoints.kmsShow)
            json ? try printJSON(k) : KMSCommand.show(k)
        }
    }

    struct Rotate: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate",
            abstract: "Add a key and make it current; every data key is re-wrapped by it in the background.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let k = try client.call(Endpoints.kmsRotate)
            json ? try printJSON(k) : KMSCommand.show(k)
        }
    }

    struct Retire: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "retire", abstract: "Remove a key; refused while any data key is still wrapped by it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key's id (kms ls).") var key: String
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let k = try client.call(Endpoints.kmsRetire, name: key)
            json ? try printJSON(k) : KMSCommand.show(k)
        }
    }
}

struct RegistryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry", abstract: "Registry logins for image pulls, kept by the daemon.",
        discussion: """
            A login is a secret of your tenant (registry-HOST, delivered to no sandbox) that only pulls read; it \
            is never shown again.
            """,
        subcommands: [Login.self, Logout.self])

    struct Login: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "login", abstract: "Store a registry login (the password from standard input).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The registry, host[:port].") var registry: String
        @Option(name: [.short, .customLong("username")], help: "The user name.") var username: String
        @Flag(name: .customLong("password-stdin"), help: "Read the password from standard input (required).")
        var passwordStdin = false

        func run(_ client: APIClient) async throws {
            guard passwordStdin else {
                throw VivariumError(.invalidArgument, "give the password on standard input with --password-stdin")
            }
            let raw = FileHandle.standardInput.readData(ofLength: 64 << 10)
            let password = String(decoding: raw, as: UTF8.self).trimmingCharacters(in: .newlines)
            guard !password.isEmpty else { throw VivariumError(.invalidArgument, "the password is empty") }
            let login = try JSONEncoder().encode(["username": username, "password": password])
            let name = try SecretName.registryLogin(registry)
            _ = try client.upload(Endpoints.secretSet, login, name: name.rawValue, query: [])
            print("login for \(registry) stored")
        }
    }

    struct Logout: ClientCommand {
        static let configuration = CommandConfiguration(commandName: "logout", abstract: "Forget a registry login.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The registry, host[:port].") var registry: String

        func run(_ client: APIClient) async throws {
            _ = try client.call(Endpoints.secretDelete, name: try SecretName.registryLogin(registry).rawValue)
        }
    }
}
