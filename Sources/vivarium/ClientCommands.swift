import ArgumentParser
import Foundation
import VivariumClient
import VivariumCore
import VivariumImages

/// The options of a new sandbox, shared by `create` and `run`.
struct SandboxOptions: ParsableArguments {
    @Option(help: "Image name.") var image: String?
    @Option(help: "Memory limit, e.g. 512M.") var memory: String?
    @Option(help: "CPU limit in CPUs, e.g. 1.5.") var cpus: Double?
    @Option(help: "Maximum number of processes.") var pids: Int64?
    @Option(
        help:
            "Disk quota of the writable layer, data and metadata (so also its file count), e.g. 2G. Default: the daemon's disk_default."
    )
    var disk: String?
    @Option(
        help:
            "Network: public (the internet, never private ranges, the host or other sandboxes), none (loopback only) or allowlist (only --allow). Default: public where the daemon runs a sandbox network."
    )
    var network: String?
    @Option(name: .customLong("allow"), help: "With allowlist: a destination ADDRESS[/PREFIX][:PORT] (repeatable).")
    var allow: [String] = []
    @Option(
        name: .customLong("allow-domain"),
        help: "With allowlist: a domain NAME[:PORT] or *.NAME[:PORT] the box may resolve and reach (repeatable).")
    var allowDomain: [String] = []
    @Option(name: .customLong("env"), help: "Environment variable K=V (repeatable).") var env: [String] = []
    @Option(name: .customLong("label"), help: "Label K=V (repeatable).") var labels: [String] = []
    @Option(help: "Delete the sandbox after this long, e.g. 30m.") var ttl: String?
    @Flag(help: "Make the root file system read-only.") var readOnly = false
    @Option(help: "Restart policy: always or never.") var restart: String?

    func request(name: String?) throws -> CreateSandboxRequest {
        var req = CreateSandboxRequest(name: name, image: image, pids: pids, restart: restart)
        if let memory { req.memoryBytes = try Quantity.parseBytes(memory) }
        if let disk { req.diskBytes = try Quantity.parseBytes(disk) }
        req.network = network
        let rules = try allowRules(allow, domains: allowDomain)
        req.allow = rules.isEmpty ? nil : rules
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
        return req
    }
}

/// The options of one command, shared by `exec` and `run`.
struct CommandOptions: ParsableArguments {
    @Option(help: "Kill the command after this many seconds (default 60; a streamed exec has none).")
    var timeout: Double?
    @Option(help: "Working directory inside the sandbox.") var workdir: String?
    @Option(help: "Run as this uid inside the sandbox.") var user: UInt32?

    func request(_ command: [String], env: [String] = []) throws -> ExecRequest {
        guard !command.isEmpty else { throw VivariumError(.invalidArgument, "give a command after --") }
        return ExecRequest(
            argv: command, env: env.isEmpty ? nil : try FieldRules.parsePairs(env, what: "--env"), workdir: workdir,
            user: user, timeoutSeconds: timeout)
    }
}

/// Writes a command's output, then exits with its status: 124 when its timeout fired.
func finish(_ result: ExecResult) throws {
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

struct Create: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create and start a sandbox.",
        discussion: "Sizes take K, M, G suffixes; durations take s, m, h, d (e.g. --ttl 30m).")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name (a DNS label). Generated when omitted.") var name: String?
    @OptionGroup var options: SandboxOptions
    @Flag(help: "Print JSON.") var json = false

    func run(_ client: APIClient) async throws {
        let info = try client.call(Endpoints.sandboxCreate, try options.request(name: name))
        if json { try printJSON(info) } else { print(info.name) }
    }
}

struct Run: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Create a sandbox, run one command in it, and with --rm delete it: one call to the daemon.",
        discussion: """
            Like `podman run --rm`: the command runs exactly as `vivarium exec` runs it (same hardening, timeout \
            and output caps, audit records), its output is written when it ends, and vivarium exits with its \
            status (124 when the timeout fired). With --rm the sandbox is deleted whatever the command did; \
            without it the sandbox keeps running. Example: vivarium run --rm --memory 256M -- python3 -c 'print(1)'
            """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Delete the sandbox when the command ends.") var rm = false
    @Option(help: "Sandbox name (a DNS label). Generated when omitted.") var name: String?
    @OptionGroup var options: SandboxOptions
    @OptionGroup var command: CommandOptions
    @Flag(help: "Print the JSON result instead of the output.") var json = false
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var argv: [String]

    func run(_ client: APIClient) async throws {
        let req = RunRequest(
            sandbox: try options.request(name: name), exec: try command.request(argv), remove: rm)
        let r = try client.call(Endpoints.sandboxRun, req)
        if json { return try printJSON(r) }
        if !rm && name == nil {
            FileHandle.standardError.write(Data("vivarium: sandbox \(r.sandbox.name) keeps running\n".utf8))
        }
        try finish(r.result)
    }
}

struct List: ClientCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List sandboxes.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run(_ client: APIClient) async throws {
        let all = try client.all(Endpoints.sandboxList, limit: 500)
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
    }
}

struct Inspect: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show one sandbox, with its disk usage.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run(_ client: APIClient) async throws {
        let i = try client.call(Endpoints.sandboxGet, name: name)
        if json { return try printJSON(i) }
        let rows: [(String, String)] = [
            ("name", i.name), ("id", i.id), ("state", i.state), ("pid", i.pid.map(String.init) ?? "-"),
            ("image", "\(i.image) (\(i.imageDigest))"), ("memory", Quantity.formatBytes(i.memoryBytes)),
            ("cpus", String(Double(i.milliCpus) / 1000)), ("pids", String(i.pids)),
            ("read_only", String(i.readOnly)), ("restart", i.restart),
            ("created", ISO8601DateFormatter().string(from: i.createdAt)),
            ("expires", i.expiresAt.map { ISO8601DateFormatter().string(from: $0) } ?? "-"),
            ("host_uid_base", String(i.hostUidBase)),
            ("network", i.network + (i.allow.map { " " + $0.joined(separator: ",") } ?? "")),
            ("address", i.address ?? "-"), ("denied", i.deniedPackets.map { "\($0) packets" } ?? "-"),
            (
                "disk",
                "\(i.diskUsageBytes.map { Quantity.formatBytes($0) } ?? "-") of \(Quantity.formatBytes(i.diskBytes))"
            ),
            ("labels", i.labels.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }.joined(separator: ",")),
            ("env", i.envNames.joined(separator: ",")),
        ]
        for (k, v) in rows { print("\(k.padding(toLength: 14, withPad: " ", startingAt: 0)) \(v)") }
    }
}

struct Start: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "start", abstract: "Start a stopped sandbox.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Flag(help: "Print JSON.") var json = false
    func run(_ client: APIClient) async throws {
        let i = try client.call(Endpoints.sandboxStart, name: name)
        if json { try printJSON(i) } else { print(i.name) }
    }
}

struct Stop: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Stop a sandbox (SIGTERM, then SIGKILL after the stop timeout). Its disk is kept.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Flag(help: "Print JSON.") var json = false
    func run(_ client: APIClient) async throws {
        let i = try client.call(Endpoints.sandboxStop, name: name)
        if json { try printJSON(i) } else { print(i.name) }
    }
}

struct Remove: ClientCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete sandboxes and their disks.")
    @OptionGroup var global: GlobalOptions
    @Flag(name: .shortAndLong, help: "Delete running sandboxes too.") var force = false
    @Argument(help: "Sandbox names.") var names: [String]
    func run(_ client: APIClient) async throws {
        var failed = false
        for n in names {
            do {
                _ = try client.call(Endpoints.sandboxDelete, name: n, query: [("force", force ? "true" : nil)])
                print(n)
            } catch {
                FileHandle.standardError.write(
                    Data("vivarium: \(n): \((error as? VivariumError)?.message ?? "\(error)")\n".utf8))
                failed = true
            }
        }
        if failed { throw ExitCode(failureExitCode) }
    }
}

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Manage images: local ones and pulls from registries.",
        subcommands: [
            Import.self, Upload.self, Pull.self, Push.self, Sign.self, Inspect.self, SBOMCommand.self, Scan.self,
            ImageList.self, ImageRemove.self,
        ])

    struct Push: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "push", abstract: "Publish a local image to a registry under a tag.",
            discussion: """
                IMAGE is a local image name (imported, uploaded) or a reference pulled before; DESTINATION \
                is a registry reference with a tag (registry.example.com/team/app:1.0; latest when none). \
                The blobs the repository lacks are uploaded, then the manifest byte for byte: the image \
                keeps its digest, so `vivarium image sign DESTINATION` and a later pull name the same \
                content. Uses the tenant's registry login (vivarium registry login HOST).
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The local image name or pulled reference.") var image: String
        @Argument(help: "The registry reference to push to.") var destination: String
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let d = try client.call(Endpoints.imagePush, PushImageRequest(image: image, destination: destination))
            if json { return try printJSON(d) }
            print("pushed \(d.pushedTo ?? destination) \(d.image.digest) (\(d.layers.count) layers)")
        }
    }

    struct Inspect: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "inspect", abstract: "Show an image's digest, config and layers.",
            discussion: "REF is a local image name or a reference pulled before.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The image name or reference.") var reference: String
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let d = try client.call(Endpoints.imageInspect, PullImageRequest(reference: reference))
            if json { return try printJSON(d) }
            var lines = [
                "name        \(d.image.name) (tenant \(d.image.tenant))",
                "reference   \(d.image.reference ?? "-")",
                "digest      \(d.image.digest)",
                "platform    \(d.os ?? "?")/\(d.architecture ?? "?")",
                "size        \(Quantity.formatBytes(d.image.sizeBytes)) unpacked",
                "config      \(d.configDigest)",
            ]
            if let e = d.entrypoint { lines.append("entrypoint  \(e.joined(separator: " "))") }
            if let c = d.cmd { lines.append("cmd         \(c.joined(separator: " "))") }
            if let w = d.workingDir, !w.isEmpty { lines.append("workdir     \(w)") }
            if let u = d.user, !u.isEmpty { lines.append("user        \(u)") }
            for e in d.env { lines.append("env         \(e)") }
            for (i, l) in d.layers.enumerated() {
                lines.append("layer \(i + 1)     \(l.digest) \(Quantity.formatBytes(l.sizeBytes)) \(l.mediaType)")
            }
            print(lines.joined(separator: "\n"))
        }
    }

    struct Pull: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "pull", abstract: "Pull an image from a registry and pin its reference to the digest.",
            discussion: """
                References follow Docker's grammar (`busybox` is docker.io/library/busybox:latest, or the \
                daemon's registry_default). Every manifest and blob is checked against its digest while it \
                streams; `create --image REF` then runs the pinned digest until the next pull. A private \
                registry's login is kept by the daemon: vivarium registry login HOST. On a terminal a status \
                line shows the phase, the blobs and bytes fetched and the rate; --quiet prints nothing but \
                errors.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The image reference.") var reference: String
        @Flag(help: "Print JSON.") var json = false
        @Flag(help: "Print nothing but errors.") var quiet = false

        func run(_ client: APIClient) async throws {
            let start = Date()
            let request = PullImageRequest(reference: reference)
            let i: ImageInfo
            if !quiet && isatty(2) != 0 {
                let pull = Task.detached { try client.call(Endpoints.imagePull, request) }
                i = try await Self.showProgress(of: reference, client, until: pull)
            } else {
                i = try client.call(Endpoints.imagePull, request)
            }
            if json { return try printJSON(i) }
            if quiet { return }
            print(
                "\(i.reference ?? i.name) \(i.digest) \(Quantity.formatBytes(i.sizeBytes)) in "
                    + String(format: "%.1f s", Date().timeIntervalSince(start)))
        }

        /// Redraws one status line on the terminal (phase, blobs, bytes, rate) from the daemon's view of
        /// the pull, four times a second, until it ends.
        static func showProgress(
            of reference: String, _ client: APIClient, until pull: Task<ImageInfo, any Error>
        ) async throws -> ImageInfo {
            let poll = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    guard !Task.isCancelled,
                        let pulls = try? client.call(Endpoints.imagePulls).items,
                        let s = pulls.first(where: {
                            $0.reference == reference || $0.reference.hasSuffix("/" + reference)
                        })
                            ?? (pulls.count == 1 ? pulls.first : nil)
                    else { continue }
                    var line = "pulling \(reference): \(s.phase)"
                    if s.blobs > 0 {
                        let rate = s.elapsedSeconds > 0 ? Int64(Double(s.bytes) / s.elapsedSeconds) : 0
                        line +=
                            ", \(s.blobsDone)/\(s.blobs) blobs, \(Quantity.formatBytes(s.bytes))"
                            + " of \(Quantity.formatBytes(s.totalBytes)), \(Quantity.formatBytes(rate))/s"
                    }
                    FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
                }
            }
            let result = await pull.result
            poll.cancel()
            await poll.value
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            return try result.get()
        }
    }

    struct Sign: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "sign", abstract: "Sign an image in its registry with your key, in cosign's format.",
            discussion: """
                The daemon resolves REF to the digest the registry holds now and hands back cosign's \
                simple-signing payload for it; this command signs the payload here (the key never leaves \
                this machine) and the daemon publishes the signature under the image's sha256-<hex>.sig \
                tag, with the tenant's registry login. `cosign verify --key` accepts it, and so does a \
                daemon whose image_policy trusts the public key. KEY is an unencrypted PEM private key: \
                ECDSA P-256 (openssl ecparam -name prime256v1 -genkey) or Ed25519 (openssl genpkey \
                -algorithm ed25519); cosign's own encrypted key file is not read.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The image reference.") var reference: String
        @Option(help: "The private key file (PEM).") var key: String
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            guard let data = FileManager.default.contents(atPath: key), data.count <= 16 << 10,
                let pem = String(data: data, encoding: .utf8)
            else { throw VivariumError(.invalidArgument, "cannot read the key \(key)") }
            let signer = try SigningKey(pem: pem, source: key)
            let toSign = try client.call(Endpoints.imageSigningPayload, PullImageRequest(reference: reference))
            let signed = try client.call(
                Endpoints.imageSign,
                PublishSignatureRequest(
                    reference: toSign.reference, payload: toSign.payload, signature: try signer.sign(toSign.payload)))
            if json { return try printJSON(signed) }
            print("signed \(signed.reference) \(signed.digest)")
        }
    }

    struct SBOMCommand: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "sbom", abstract: "Print the packages an image holds as a CycloneDX 1.5 SBOM (JSON).",
            discussion: """
                REF is a local image name or a reference pulled before. Read from the image's root: Debian's \
                dpkg status (with each binary package's source package), Alpine's apk database (with its \
                origin) and Python distributions (*.dist-info). --table prints one package per line instead.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The image name or reference.") var reference: String
        @Flag(help: "Print a table instead of CycloneDX JSON.") var table = false

        func run(_ client: APIClient) async throws {
            let bom = try client.call(Endpoints.imageSBOM, PullImageRequest(reference: reference))
            guard table else { return try printJSON(bom) }
            print("ECOSYSTEM  NAME  VERSION  SOURCE")
            for c in bom.components {
                let eco = c.properties.first { $0.name == "vivarium:ecosystem" }?.value ?? "-"
                let source = c.properties.first { $0.name == "vivarium:source" }?.value ?? "-"
                print("\(eco)  \(c.name)  \(c.version)  \(source)")
            }
        }
    }

    struct Scan: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "scan", abstract: "Match an image's packages against the imported advisories.",
            discussion: """
                REF is a local image name or a reference pulled before. The advisories are OSV records the \
                operator imported (vivarium vulndb import); versions compare in each ecosystem's own order \
                (dpkg, apk, PEP 440), distribution advisories against source packages. Severity is the \
                CVSS v3 base score, else the database's rating, else unknown. Exits 0 with or without \
                findings; the gate (image_policy [vulnerabilities]) decides at pull time.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The image name or reference.") var reference: String
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let report = try client.call(Endpoints.imageScan, PullImageRequest(reference: reference))
            if json { return try printJSON(report) }
            print("\(report.reference) \(report.digest) (advisory database \(report.vulndbVersion))")
            if report.findings.isEmpty { return print("no findings") }
            print("SEVERITY  ADVISORY  PACKAGE  VERSION  FIXED")
            for f in report.findings {
                print("\(f.severity.rawValue)  \(f.advisory)  \(f.package)  \(f.version)  \(f.fixed ?? "-")")
            }
        }
    }

    struct Import: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Import an image or a root file system from a path on the daemon's host.",
            discussion: """
                PATH is an OCI image layout (skopeo copy … oci:DIR, umoci), a docker-archive (docker save, \
                skopeo copy … docker-archive:FILE), or a root file system, each as a directory or a tar; \
                --format auto tells them apart by the layouts' marker files (oci-layout, manifest.json). \
                An image keeps its manifest and config (its digest, env, entrypoint); its blobs are checked \
                against their digests and its layers applied under the unpack rules, as a pull's are. For \
                local root on the unix socket only; the path must not be or hold the state directory. \
                Remote clients send an archive with `vivarium image upload`.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "A directory or a tar archive (gzip or zstd allowed for a root file system).") var path: String
        @Option(help: "Image name (a DNS label).") var name: String
        @Option(help: "auto, rootfs, oci or docker-archive.") var format: ImportFormat = .auto
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let abs = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
            FileHandle.standardError.write(Data("importing \(abs)…\n".utf8))
            let i = try client.call(Endpoints.imageImport, ImportImageRequest(path: abs, name: name, format: format))
            if json {
                try printJSON(i)
            } else {
                print("\(i.name) \(i.digest) \(Quantity.formatBytes(i.sizeBytes))")
            }
        }
    }

    struct Upload: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "upload",
            abstract: "Send a tar archive (gzip or zstd allowed) from this machine as an image of your tenant.",
            discussion: """
                The daemon unpacks it under its unpack rules: no device nodes, no setuid or setgid bits, ids
                above 65535 become 65534, bounded size, member count and expansion. Admins make an image
                every tenant sees with --shared.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "A tar archive, plain or gzip-compressed.") var file: String
        @Option(help: "Image name (a DNS label).") var name: String
        @Flag(help: "A shared image of the default tenant (admins only).") var shared = false
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped)
            } catch {
                throw VivariumError(.invalidArgument, "cannot read \(file): \(error.localizedDescription)")
            }
            FileHandle.standardError.write(
                Data("uploading \(file) (\(Quantity.formatBytes(Int64(data.count))))…\n".utf8))
            let i = try client.upload(
                Endpoints.imageUpload, data, query: [("name", name), ("shared", shared ? "true" : nil)])
            if json {
                try printJSON(i)
            } else {
                print("\(i.name) \(i.digest) \(Quantity.formatBytes(i.sizeBytes))")
            }
        }
    }

    struct ImageList: ClientCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List images.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let page = try client.call(Endpoints.imageList)
            if json { return try printJSON(page.items) }
            printTable(
                ["NAME", "REFERENCE", "DIGEST", "SIZE", "CREATED"],
                page.items.map {
                    [
                        $0.name, $0.reference ?? "", String($0.digest.prefix(19)), Quantity.formatBytes($0.sizeBytes),
                        ISO8601DateFormatter().string(from: $0.createdAt),
                    ]
                })
        }
    }

    struct ImageRemove: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove an image not used by any sandbox.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Image name.") var name: String
        func run(_ client: APIClient) async throws {
            _ = try client.call(Endpoints.imageDelete, name: name)
            print(name)
        }
    }
}

struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "A sandbox's network.", subcommands: [Set.self])

    struct Set: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Change a sandbox's egress policy; a running sandbox's changes at once.",
            discussion: """
                public: the internet, never private, link-local (cloud metadata), reserved or multicast ranges, \
                the host or other sandboxes. none: loopback only. allowlist: only the --allow destinations \
                (ADDRESS[/PREFIX][:PORT], TCP and UDP) and the addresses the box's resolver answered for the \
                --allow-domain names (for their TTL; never a private, link-local or reserved address), never \
                the host, other sandboxes, loopback or link-local; other names do not resolve. The change is \
                one nftables transaction and is audited.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Sandbox name.") var name: String
        @Option(help: "public, none or allowlist (the default when --allow is given).") var egress: String?
        @Option(name: .customLong("allow"), help: "An allowed destination, e.g. 1.2.3.0/24:443 (repeatable).")
        var allow: [String] = []
        @Option(
            name: .customLong("allow-domain"),
            help: "An allowed domain NAME[:PORT] or *.NAME[:PORT], resolved by the box (repeatable).")
        var allowDomain: [String] = []
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let allow = try allowRules(self.allow, domains: allowDomain)
            guard egress != nil || !allow.isEmpty else {
                throw VivariumError(.invalidArgument, "give --egress, --allow, --allow-domain or some of them")
            }
            let i = try client.call(
                Endpoints.sandboxNetwork,
                SetNetworkRequest(egress: egress ?? "allowlist", allow: allow.isEmpty ? nil : allow), name: name)
            if json { return try printJSON(i) }
            print("\(i.name): \(i.network)\(i.allow.map { " " + $0.joined(separator: ",") } ?? "")")
        }
    }
}

struct ExposeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "expose", abstract: "Publish a sandbox port through the daemon's ingress.",
        discussion: """
            The ingress (the daemon's `ingress` setting, TLS with its certificate) routes HTTP requests by \
            their Host header, passes WebSocket upgrades, and never forwards the caller's Authorization \
            header. Any port of a sandbox is also reached as PORT-SANDBOXID.DOMAIN with a token that reaches \
            the sandbox.
            """,
        subcommands: [Add.self, Ls.self, Rm.self], defaultSubcommand: Add.self)

    struct Add: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "add", abstract: "Publish a port (the default: vivarium expose NAME PORT).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Sandbox name.") var name: String
        @Argument(help: "The sandbox's port.") var port: Int
        @Option(help: "The route's host name (default: PORT-SANDBOXID.DOMAIN).") var hostname: String?
        @Flag(help: "Anyone who reaches the ingress may use it.") var `public` = false
        @Flag(help: "Only callers whose bearer token reaches the sandbox (the default).") var token = false
        @Option(help: "A plain TCP forward from this host port (1024-65535) instead; always public.")
        var tcp: Int?
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            guard !(self.public && token) else {
                throw VivariumError(.invalidArgument, "give --public or --token, not both")
            }
            let access = self.public || tcp != nil ? "public" : "token"
            let r = try client.call(
                Endpoints.routeCreate, ExposeRequest(port: port, hostname: hostname, access: access, tcpPort: tcp),
                name: name)
            if json { return try printJSON(r) }
            print("\(r.url) → \(r.sandbox):\(r.port) (\(r.access))")
        }
    }

    struct Ls: ClientCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List published ports.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let all = try client.call(Endpoints.routeList).items
            if json { return try printJSON(all) }
            printTable(
                ["ROUTE", "SANDBOX", "PORT", "ACCESS", "URL"],
                all.map { [$0.key, $0.sandbox, String($0.port), $0.access, $0.url] })
        }
    }

    struct Rm: ClientCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a published port.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The route: its host name, or tcp-HOSTPORT.") var route: String

        func run(_ client: APIClient) async throws {
            _ = try client.call(Endpoints.routeDelete, name: route)
        }
    }
}

/// `--allow` and `--allow-domain` as the API's `allow` rules (a domain must be a name, not an address).
func allowRules(_ allow: [String], domains: [String]) throws -> [String] {
    for d in domains where !d.contains(where: \.isLetter) {
        throw VivariumError(.invalidArgument, "--allow-domain \(d.prefix(300)) is not a domain name (use --allow)")
    }
    return allow + domains
}

struct VulnDBCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vulndb", abstract: "The advisory database the vulnerability gate matches against.",
        subcommands: [Import.self])

    struct Import: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "import", abstract: "Import OSV advisories from a file or directory on the daemon's host.",
            discussion: """
                Reads OSV records: JSON (one record or an array per file) and YAML files, a directory of \
                them, and OSV's zip exports (all.zip of an ecosystem, one record per member; stored or \
                deflated, each member bounded and CRC-checked). A record replaces an earlier one of the \
                same id unless it is older. For local root on the unix socket. \
                Prints the database's new version, which every admission decision records.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "An OSV JSON, YAML or zip file, or a directory of them.") var path: String
        @Flag(help: "Print JSON.") var json = false

        func run(_ client: APIClient) async throws {
            let abs = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
            let info = try client.call(Endpoints.vulndbImport, ImportVulnDBRequest(path: abs))
            if json { return try printJSON(info) }
            print("read \(info.read ?? 0) advisories; \(info.advisories) in all, version \(info.version)")
        }
    }
}

extension ImportFormat: ExpressibleByArgument {}
