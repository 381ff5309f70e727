import ArgumentParser
import Foundation
import VivariumAudit
import VivariumClient
import VivariumCore

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Read, verify and export the tamper-evident audit trail.",
        discussion: """
            Every mutating call, authentication failure, policy denial, token event, exec and daemon action is a \
            record in a SHA-256 hash chain. The daemon signs the chain's head (Ed25519, a key of its own) at least \
            every audit_checkpoint_seconds, every audit_checkpoint_records records and at shutdown, and appends each \
            checkpoint to audit_export outside the database. Reading needs the audit:read scope (tenant auditors \
            and tenant admins see their tenant's records); verify needs an admin.
            """,
        subcommands: [AuditList.self, AuditVerify.self, AuditExport.self])
}

/// Filters shared by `audit ls` and `audit export`.
struct AuditFilters: ParsableArguments {
    @Option(help: "Principal id or name, local-root, system or anonymous.") var actor: String?
    @Option(help: "Action, e.g. sandbox.create, sandbox.exec, auth.failure, policy.denied.") var action: String?
    @Option(help: "Target, e.g. a sandbox or principal name.") var target: String?
    @Option(help: "Outcome: ok, started, failed, denied, refused or alert.") var outcome: String?
    @Option(help: "Only this tenant's records (admins; others always see their own tenant only).")
    var tenant: String?

    func query(after: Int64?, limit: Int, since: String? = nil, until: String? = nil) throws -> [(String, String?)] {
        [
            ("limit", String(limit)), ("cursor", after.map(String.init)),
            ("since_ms", try since.map { String(try Self.milliseconds($0)) }),
            ("until_ms", try until.map { String(try Self.milliseconds($0)) }), ("actor", actor), ("action", action),
            ("target", target), ("outcome", outcome), ("tenant", tenant),
        ]
    }

    static func milliseconds(_ s: String) throws -> Int64 {
        if let d = ISO8601DateFormatter().date(from: s) { return Int64(d.timeIntervalSince1970 * 1000) }
        if let age = try? Quantity.parseSeconds(s) { return Int64((Date().timeIntervalSince1970 - Double(age)) * 1000) }
        throw VivariumError(.invalidArgument, "'\(s.prefix(64))' is neither an ISO 8601 time nor an age like 30m")
    }
}

/// Pages through `GET /v1/audit` from `after` (`query` gives a page's query for a cursor), handing each
/// page to `body`.
func forEachAuditPage(
    _ c: APIClient, after: Int64?, query: (Int64?) throws -> [(String, String?)], _ body: ([AuditRecord]) throws -> Void
) throws {
    var cursor = after
    while true {
        let page = try c.call(Endpoints.auditList, query: try query(cursor))
        try body(page.items)
        guard let next = page.nextCursor, let n = Int64(next) else { return }
        cursor = n
    }
}

struct AuditList: ClientCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List audit records, oldest first.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filters: AuditFilters
    @Option(help: "Records at or after this time: ISO 8601 (2026-11-22T10:00:00Z) or an age (30m, 2h, 7d).")
    var since: String?
    @Option(help: "Records before this time (same forms as --since).") var until: String?
    @Option(help: "Start after this sequence number.") var after: Int64?
    @Option(help: "At most this many records (1-1000).") var limit = 100
    @Flag(help: "Print JSON.") var json = false

    func run(_ client: APIClient) async throws {
        guard (1...1000).contains(limit) else { throw VivariumError(.invalidArgument, "--limit must be 1-1000") }
        let page = try client.call(
            Endpoints.auditList, query: try filters.query(after: after, limit: limit, since: since, until: until))
        if json { return try printJSON(page) }
        let time = ISO8601DateFormatter()
        printTable(
            ["SEQ", "TIME", "ACTOR", "SOURCE", "ACTION", "TARGET", "OUTCOME", "DETAILS"],
            page.items.map { r in
                [
                    String(r.seq), time.string(from: r.time),
                    (r.actorName ?? r.actor) + (r.actorTenant.map { "@" + $0 } ?? ""), r.source ?? "-", r.action,
                    r.target ?? "-", r.outcome,
                    r.details.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
                ]
            })
        if let next = page.nextCursor { print("more: --after \(next)") }
    }
}

struct AuditVerify: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the whole chain and every checkpoint signature; name the first bad record.",
        discussion: """
            Fetches every record and the daemon's checkpoints and verifies them here: each record's hash, the \
            sequence (nothing missing or reordered), each checkpoint's Ed25519 signature, and that every checkpoint's \
            record still carries the hash that was signed. Checkpoints from --checkpoints (the export file, ideally \
            a copy kept elsewhere) are what make deleting the newest records detectable; on the daemon's host the \
            configured export file is used when readable. Exits 0 when the trail verifies, 1 otherwise.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "A checkpoint export file (JSON lines) to check against.") var checkpoints: String?
    @Option(help: "The audit public key (base64) to trust, instead of the one the daemon reports.")
    var publicKey: String?

    func run(_ c: APIClient) async throws {
        let list = try c.call(Endpoints.auditCheckpoints)
        guard let key = AuditKey.publicKey(base64: publicKey ?? list.publicKey) else {
            throw VivariumError(.invalidArgument, "the audit public key is not a base64 Ed25519 key")
        }
        var file = checkpoints
        if file == nil, let s = try? Settings.resolve(global) {
            let path = s.auditExport ?? s.stateDir + "/audit/checkpoints.jsonl"
            if FileManager.default.isReadableFile(atPath: path) { file = path }
        }
        let (external, unreadable) = try file.map { try JSONLinesCheckpointFile.read($0) } ?? ([], [])
        if let file, !unreadable.isEmpty {
            FileHandle.standardError.write(
                Data("warning: \(file): lines \(unreadable.prefix(10)) are not checkpoints\n".utf8))
        }
        if file == nil {
            FileHandle.standardError.write(
                Data(
                    "warning: no checkpoint export file checked: deleting the newest records goes unnoticed without one (--checkpoints)\n"
                        .utf8))
        }
        var verifier = AuditVerifier(publicKey: key, checkpoints: list.checkpoints + external)
        try forEachAuditPage(c, after: nil, query: { [("limit", "1000"), ("cursor", $0.map(String.init))] }) {
            page in page.forEach { verifier.add($0) }
        }
        let result = verifier.finish()
        let source = file.map { " (\(external.count) from \($0))" } ?? ""
        if let problem = result.problem {
            var text = "audit trail FAILED verification: first bad \(problem)\n"
            for p in result.problems.dropFirst().prefix(9) { text += "  also \(p)\n" }
            if result.problems.count > 10 { text += "  and \(result.problems.count - 10) more problems\n" }
            text += "  records up to \(result.signedThrough) match a signed checkpoint\n"
            FileHandle.standardError.write(Data(text.utf8))
            throw ExitCode(1)
        }
        print(
            "audit trail verified: \(result.records) records (last \(result.lastSeq)), "
                + "\(result.checkpoints) checkpoints\(source), key \(AuditKey.keyID(key))")
    }
}

struct AuditExport: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write audit records as JSON lines, oldest first.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filters: AuditFilters
    @Option(help: "First sequence number to export.") var since: Int64 = 1
    @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") var output: String?

    func run(_ client: APIClient) async throws {
        guard since >= 1 else { throw VivariumError(.invalidArgument, "--since must be at least 1") }
        let out: FileHandle
        if let output {
            guard
                FileManager.default.createFile(atPath: output, contents: nil, attributes: [.posixPermissions: 0o600]),
                let h = FileHandle(forWritingAtPath: output)
            else { throw VivariumError(.invalidArgument, "cannot write \(output)") }
            out = h
        } else {
            out = FileHandle.standardOutput
        }
        let encoder = WireCoding.encoder()
        var n = 0
        try forEachAuditPage(client, after: since - 1, query: { try filters.query(after: $0, limit: 1000) }) { page in
            var chunk = Data()
            for r in page {
                chunk.append(try encoder.encode(r))
                chunk.append(UInt8(ascii: "\n"))
            }
            try out.write(contentsOf: chunk)
            n += page.count
            if output != nil { FileHandle.standardError.write(Data("\rexported \(n) records".utf8)) }
        }
        if output != nil { FileHandle.standardError.write(Data("\n".utf8)) }
        try out.close()
    }
}
