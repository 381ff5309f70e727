import Logging
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumNetwork
import VivariumStore

/// Denied egress as a stream of events: at every look, each sandbox whose veth dropped packets since the
/// last look gets one `network.denied` audit record (outcome denied, the packets since then and in all),
/// so that the audit feed (`audit follow`, the export) carries what a later alerting issue needs, at
/// most one record per sandbox per look however hard a box knocks.
final class DeniedEgress: Sendable {
    let network: BridgeNetwork
    let store: any Store
    let audit: any AuditStore
    let logger: Logger
    let seen = Mutex<[String: Int64]>([:])

    init(network: BridgeNetwork, store: any Store, audit: any AuditStore, logger: Logger) {
        self.network = network
        self.store = store
        self.audit = audit
        self.logger = logger
    }

    func look() async {
        let counts = network.deniedCounts()
        let grown = seen.withLock { seen in
            defer { seen = counts }
            return counts.compactMap { veth, n in n > (seen[veth] ?? 0) ? (veth, n, n - (seen[veth] ?? 0)) : nil }
        }
        guard !grown.isEmpty, let boxes = try? await store.allSandboxes() else { return }
        let byVeth = Dictionary(boxes.map { (BridgeNetwork.veth($0.id), $0) }, uniquingKeysWith: { a, _ in a })
        let events = grown.compactMap { veth, total, delta -> AuditEvent? in
            guard let box = byVeth[veth] else { return nil }
            return AuditEvent(
                "network.denied", target: box.name.rawValue, tenant: box.tenant, outcome: .denied,
                details: [
                    "id": box.id.rawValue, "packets": String(delta), "total": String(total),
                    "egress": (box.spec.network ?? .none).egress.rawValue,
                ])
        }
        do { try await audit.append(events) } catch {
            logger.error("cannot record denied egress", metadata: ["error": "\(error)"])
        }
    }
}
