import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumStore

/// Signs the head of the audit trail every `interval`, and sooner once `everyRecords` records have been
/// appended since the last checkpoint; the daemon signs once more at shutdown. Each checkpoint goes to the
/// store and to every sink (an export file outside the database by default). Before signing, it checks
/// that the records since the last checkpoint still chain onto it, so it never signs over tampering.
public final class AuditCheckpointer: Service, Sendable {
    let store: any AuditStore
    let key: AuditKey
    let sinks: [any CheckpointSink]
    let interval: Duration
    let everyRecords: Int64
    let logger: Logger
    /// The last checkpoint signed (sequence number and hash).
    let last: Mutex<(seq: Int64, hash: String)?>
    let wake: AsyncStream<Void>
    let wakeUp: AsyncStream<Void>.Continuation
    /// Serialises checkpoints (the timer, the record count and shutdown may ask at once).
    let signing = KeyedLock()
    /// The first bad record already reported, so that one break raises one alert.
    let reported = Mutex<Int64?>(nil)
    /// Sinks whose last write failed (one alert per failure streak).
    let failing = Mutex<Set<String>>([])

    public init(
        store: any AuditStore, key: AuditKey, sinks: [any CheckpointSink], interval: Duration, everyRecords: Int64,
        logger: Logger
    ) async throws {
        self.store = store
        self.key = key
        self.sinks = sinks
        self.interval = interval
        self.everyRecords = everyRecords
        self.logger = logger
        // Only a checkpoint this key signed counts: rows in the table are as forgeable as records.
        last = Mutex(
            try await store.auditCheckpoints().last { $0.isValid(under: key.publicKey) }.map { ($0.seq, $0.hash) })
        (wake, wakeUp) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        store.onAppend { [weak self] head in self?.appended(head) }
    }

    func appended(_ head: Int64) {
        if head - (last.withLock { $0?.seq } ?? 0) >= everyRecords { wakeUp.yield() }
    }

    public func run() async throws {
        let (interval, wakeUp) = (self.interval, self.wakeUp)
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while (try? await Task.sleep(for: interval)) != nil { wakeUp.yield() }
                }
                for await _ in wake { await checkpoint() }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            wakeUp.finish()
        }
    }

    /// Signs the current head if it moved since the last checkpoint. Returns the checkpoint, or nil when
    /// there was nothing new or it could not be made (logged).
    @discardableResult
    public func checkpoint() async -> AuditCheckpoint? {
        // The body handles its errors: the lock has none of its own.
        (try? await signing.withLock("checkpoint") { () async -> AuditCheckpoint? in
            do {
                guard var head = try await store.auditHead() else { return nil }
                let prior = last.withLock { $0 }
                if let prior, prior.seq == head.seq, prior.hash == head.hash { return nil }
                if let problem = try await verifySince(prior, upTo: head.seq),
                    reported.withLock({ r in
                        defer { r = problem.seq }
                        return r != problem.seq
                    })
                {
                    // Alert once, then sign the head anyway: what follows stays protected, and `audit
                    // verify` still names the break.
                    logger.critical("the audit trail was altered", metadata: ["problem": "\(problem)"])
                    try? await store.append([
                        AuditEvent(
                            "audit.tamper_detected", outcome: .alert, details: ["problem": problem.description],
                            context: AuditContext(actor: .system))
                    ])
                    head = try await store.auditHead() ?? head
                }
                try await store.syncAudit()
                let cp = try key.sign(
                    seq: head.seq, hash: head.hash, timeMs: Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))
                try await store.insertCheckpoint(cp)
                for sink in sinks {
                    do {
                        try sink.write(cp)
                        _ = failing.withLock { $0.remove(sink.name) }
                    } catch {
                        // Until the export works again, the window of undetectable loss grows: say so once
                        // in the trail, and in the log every time.
                        logger.error(
                            "cannot export an audit checkpoint",
                            metadata: ["sink": "\(sink.name)", "error": "\(error)"])
                        if failing.withLock({ $0.insert(sink.name).inserted }) {
                            try? await store.append([
                                AuditEvent(
                                    "audit.export_failed", target: sink.name, outcome: .alert,
                                    details: ["error": "\(error)", "checkpoint": String(cp.seq)],
                                    context: AuditContext(actor: .system))
                            ])
                        }
                    }
                }
                last.withLock { $0 = (cp.seq, cp.hash) }
                return cp
            } catch {
                logger.error("cannot make an audit checkpoint", metadata: ["error": "\(error)"])
                return nil
            }
        }) ?? nil
    }

    /// Checks that the record `prior` signed is still there as signed, and that the records after it up to
    /// `head` follow on from it in sequence and chain.
    func verifySince(_ prior: (seq: Int64, hash: String)?, upTo head: Int64) async throws -> AuditVerifier.Problem? {
        if let prior, try await store.auditRecords(AuditQuery(after: prior.seq - 1, limit: 1)).first?.hash != prior.hash
        {
            return .init(seq: prior.seq, reason: "rewritten or missing since checkpoint \(prior.seq) signed it")
        }
        var verifier = AuditVerifier(publicKey: key.publicKey, checkpoints: [], start: prior)
        var after = prior?.seq ?? 0
        while after < head {
            let page = try await store.auditRecords(AuditQuery(after: after, limit: Int(min(head - after, 1000))))
            guard let lastOfPage = page.last else { break }
            page.forEach { verifier.add($0) }
            after = lastOfPage.seq
        }
        let result = verifier.finish()
        if let problem = result.problem { return problem }
        return after < head ? .init(seq: after + 1, reason: "missing") : nil
    }
}
