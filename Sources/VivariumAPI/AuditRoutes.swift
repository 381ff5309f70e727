import Foundation
import HummingbirdWebSocket
import NIOCore
import VivariumAudit
import VivariumCore
import VivariumEngine

/// `/v1/audit`: reading, following and verifying the trail.
struct AuditRoutes {
    let audit: AuditTrail
    let gate: Gate

    func register(_ r: inout RouteRegistry) {
        let audit = self.audit
        r.add(Endpoints.auditList) { call in try await audit.records(call.caller, try Self.query(call)) }
        r.add(Endpoints.auditCheckpoints) { call in try await audit.checkpoints(call.caller) }
        // New records as JSON text messages, for as long as the caller's token stays valid.
        let gate = self.gate
        r.webSocket(Endpoints.auditFollow) { call, inbound, outbound in
            let cursor = try call.int("cursor", 0...Int64.max)
            let bearer = Bearer.of(call.request)
            let feed = try await audit.follow(call.caller, after: cursor) {
                await gate.stillAuthenticated(call.caller, bearer: bearer)
            }
            let encoder = WireCoding.encoder()
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The client only ever closes: reading its frames lets the close handshake finish.
                group.addTask { for try await _ in inbound {} }
                group.addTask {
                    while let record = try await feed.next() {
                        try await outbound.write(.text(String(decoding: try encoder.encode(record), as: UTF8.self)))
                    }
                    try await outbound.close(.normalClosure, reason: "credentials no longer valid")
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    static func query(_ call: Call) throws -> AuditQuery {
        func text(_ name: String) throws -> String? {
            guard let v = call.query(name) else { return nil }
            guard v.utf8.count <= 256 else { throw VivariumError(.invalidArgument, "\(name) is too long") }
            return v
        }
        if let o = try text("outcome"), AuditOutcome(rawValue: o) == nil {
            throw VivariumError(
                .invalidArgument,
                "outcome must be one of \(AuditOutcome.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return AuditQuery(
            after: try call.int("cursor", 0...Int64.max), sinceMs: try call.int("since_ms", 0...Int64.max),
            untilMs: try call.int("until_ms", 0...Int64.max), actor: try text("actor"), action: try text("action"),
            target: try text("target"), outcome: try text("outcome"),
            limit: Int(try call.int("limit", 1...1000) ?? 100))
    }
}
