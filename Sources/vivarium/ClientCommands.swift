import ArgumentParser
import Foundation
import VivariumCore

/// The daemon to talk to: the unix socket (local root), or the remote daemon of `vivarium login`
/// when credentials exist and no socket was named explicitly.
func client(_ g: GlobalOptions) throws -> APIClient {
    let explicitSocket = g.socket != nil || ProcessInfo.processInfo.environment["VIVARIUM_SOCKET"] != nil
    if !explicitSocket && Credentials.exists() { return APIClient(transport: LoggedIn()) }
    return APIClient(socketPath: try Settings.resolve(g).socket)
}

func sandboxPath(_ name: String) -> String { "/v1/sandboxes/" + name.urlComponentEncoded }

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and start a sandbox.",
        discussion: "Sizes take K, M, G suffixes; durations take s, m, h, d (e.g. --ttl 30m).")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name (a DNS label). Generated when omitted.") var name: String?
    @Option(help: "Image name.") var image: String?
    @Option(help: "Memory limit, e.g. 512M.") var memory: String?
    @Option(help: "CPU limit in CPUs, e.g. 1.5.") var cpus: Double?
    @Option(help: "Maximum number of processes.") var pids: Int64?
    @Option(name: .customLong("env"), help: "Environment variable K=V (repeatable).") var env: [String] = []
    @Option(name: .customLong("label"), help: "Label K=V (repeatable).") var labels: [String] = []
    @Option(help: "Delete the sandbox after this long, e.g. 30m.") var ttl: String?
    @Flag(help: "Make the root file system read-only.") var readOnly = false
    @Option(help: "Restart policy: always or never.") var restart: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        do {
            var req = CreateSandboxRequest(name: name, image: image, pids: pids, restart: restart)
            if let memory { req.memoryBytes = try Quantity.parseBytes(memory) }
            if let cpus {
                guard cpus.isFinite, cpus > 0, cpus <= 256 else {
                    throw VivariumError(.invalidArgument, "--cpus must be in (0, 256]")
                }
                req.milliCpus = Int64((cpus * 1000).rounded())
            }
            if !env.isEmpty { req.env = try FieldRules.parsePairs(env, what: "--env") }
            if !labels.isEmpty { req.labels = try FieldRules.parsePairs(labels, what: "--label") }
            if let ttl { req.ttlSeconds = try Quantity.parseSeconds(ttl) }
            if readOnly { req.readOnly = true }
            let info: SandboxInfo = try client(global).call("POST", "/v1/sandboxes", body: req)
            if json { try printJSON(info) } else { print(info.name) }
        } catch { fail(error) }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List sandboxes.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        do {
            let c = try client(global)
            var all: [SandboxInfo] = []
            var cursor: String?
            repeat {
                let q = "?limit=500" + (cursor.map { "&cursor=" + $0.urlComponentEncoded } ?? "")
                let page: Page<SandboxInfo> = try c.call("GET", "/v1/sandboxes" + q)
                all += page.items
                cursor = page.nextCursor
            } while cursor != nil
            if json { return try printJSON(all) }
            printTable(
                ["NAME", "STATE", "IMAGE", "MEMORY", "CPUS", "PIDS", "EXPIRES"],
                all.map {
                    [
                        $0.name, $0.state, $0.image, Quantity.formatBytes($0.memoryBytes),
                        String(Double($0.milliCpus) / 1000), String($0.pids),
                        $0.expiresAt.map { ISO8601DateFormatter().string(from: $0) } ?? "-",
                    ]
                })
        } catch { fail(error) }
    }
}

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one sandbox, with its disk usage.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        do {
            let i: SandboxInfo = try client(global).call("GET", sandboxPath(name))
            if json { return try printJSON(i) }
            let rows: [(String, String)] = [
                ("name", i.name), ("id", i.id), ("state", i.state), ("pid", i.pid.map(String.init) ?? "-"),
                ("image", "\(i.image) (\(i.imageDigest))"), ("memory", Quantity.formatBytes(i.memoryBytes)),
                ("cpus", String(Double(i.milliCpus) / 1000)), ("pids", String(i.pids)),
                ("read_only", String(i.readOnly)), ("restart", i.restart),
                ("created", ISO8601DateFormatter().string(from: i.createdAt)),
                ("expires", i.expiresAt.map { ISO8601DateFormatter().string(from: $0) } ?? "-"),
                ("host_uid_base", String(i.hostUidBase)),
                ("disk_usage", i.diskUsageBytes.map { Quantity.formatBytes($0) } ?? "-"),
                ("labels", i.labels.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }.joined(separator: ",")),
                ("env", i.env.keys.sorted().joined(separator: ",")),
            ]
            for (k, v) in rows { print("\(k.padding(toLength: 14, withPad: " ", startingAt: 0)) \(v)") }
        } catch { fail(error) }
    }
}

struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start a stopped sandbox.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Flag(help: "Print JSON.") var json = false
    func run() async throws {
        do {
            let i: SandboxInfo = try client(global).call("POST", sandboxPath(name) + "/start")
            if json { try printJSON(i) } else { print(i.name) }
        } catch { fail(error) }
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop a sandbox (SIGTERM, then SIGKILL after the stop timeout). Its disk is kept.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Flag(help: "Print JSON.") var json = false
    func run() async throws {
        do {
            let i: SandboxInfo = try client(global).call("POST", sandboxPath(name) + "/stop")
            if json { try printJSON(i) } else { print(i.name) }
        } catch { fail(error) }
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete sandboxes and their disks.")
    @OptionGroup var global: GlobalOptions
    @Flag(name: .shortAndLong, help: "Delete running sandboxes too.") var force = false
    @Argument(help: "Sandbox names.") var names: [String]
    func run() async throws {
        let c: APIClient
        do { c = try client(global) } catch { fail(error) }
        var failed: (any Error)?
        for n in names {
            do {
                try c.callNoContent("DELETE", sandboxPath(n) + (force ? "?force=true" : ""))
                print(n)
            } catch {
                FileHandle.standardError.write(
                    Data("vivarium: \(n): \((error as? VivariumError)?.message ?? "\(error)")\n".utf8))
                failed = error
            }
        }
        if failed != nil { throw ExitCode(1) }
    }
}

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in a sandbox and exit with its status.",
        discussion: """
            Output is collected and written when the command ends (streaming comes later). On a timeout every \
            process the command started is killed and vivarium exits 124.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Kill the command after this many seconds (default 60).") var timeout: Double?
    @Option(name: .customLong("env"), help: "Environment variable K=V (repeatable).") var env: [String] = []
    @Option(help: "Working directory inside the sandbox.") var workdir: String?
    @Option(help: "Run as this uid inside the sandbox.") var user: UInt32?
    @Flag(help: "Print the JSON result instead of the output.") var json = false
    @Argument(help: "Sandbox name.") var name: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String]

    func run() async throws {
        let result: ExecResult
        do {
            guard !command.isEmpty else { throw VivariumError(.invalidArgument, "give a command after --") }
            let req = ExecRequest(
                argv: command, env: env.isEmpty ? nil : try FieldRules.parsePairs(env, what: "--env"), workdir: workdir,
                user: user, timeoutSeconds: timeout)
            result = try client(global).call("POST", sandboxPath(name) + "/exec", body: req)
        } catch { fail(error) }
        if json {
            try printJSON(result)
            return
        }
        FileHandle.standardOutput.write(result.stdout)
        FileHandle.standardError.write(result.stderr)
        if result.stdoutTruncated || result.stderrTruncated {
            FileHandle.standardError.write(Data("vivarium: output truncated\n".utf8))
        }
        if result.timedOut {
            FileHandle.standardError.write(Data("vivarium: timed out; every process of the command was killed\n".utf8))
            throw ExitCode(124)
        }
        if result.exitCode != 0 { throw ExitCode(result.exitCode) }
    }
}

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Manage local images.",
        subcommands: [Import.self, ImageList.self, ImageRemove.self])

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import a root file system from a directory or a tar archive on the daemon's host.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Directory or tar archive (gzip allowed).") var path: String
        @Option(help: "Image name (a DNS label).") var name: String
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            do {
                let abs = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
                FileHandle.standardError.write(Data("importing \(abs)…\n".utf8))
                let i: ImageInfo = try client(global).call(
                    "POST", "/v1/images", body: ImportImageRequest(path: abs, name: name))
                if json {
                    try printJSON(i)
                } else {
                    print("\(i.name) \(i.digest) \(Quantity.formatBytes(i.sizeBytes))")
                }
            } catch { fail(error) }
        }
    }

    struct ImageList: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List images.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            do {
                let page: Page<ImageInfo> = try client(global).call("GET", "/v1/images")
                if json { return try printJSON(page.items) }
                printTable(
                    ["NAME", "DIGEST", "SIZE", "CREATED"],
                    page.items.map {
                        [
                            $0.name, String($0.digest.prefix(19)), Quantity.formatBytes($0.sizeBytes),
                            ISO8601DateFormatter().string(from: $0.createdAt),
                        ]
                    })
            } catch { fail(error) }
        }
    }

    struct ImageRemove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove an image not used by any sandbox.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Image name.") var name: String
        func run() async throws {
            do {
                try client(global).callNoContent("DELETE", "/v1/images/" + name.urlComponentEncoded)
                print(name)
            } catch { fail(error) }
        }
    }
}
