import Crypto
import Foundation
import VivariumCore

/// Checks a whole trail: every record in sequence from 1, every link of the chain, every checkpoint's
/// signature, and that every checkpoint's record still exists with the hash that was signed. Records
/// are fed in sequence order, so a trail of any length streams through.
public struct AuditVerifier {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        /// The first record that is missing, altered or out of place (for a checkpoint problem: its seq).
        public var seq: Int64
        public var reason: String
        /// A checkpoint that does not verify, as opposed to a record.
        public var checkpoint = false
        public init(seq: Int64, reason: String, checkpoint: Bool = false) {
            self.seq = seq
            self.reason = reason
            self.checkpoint = checkpoint
        }
        public var description: String { (checkpoint ? "checkpoint " : "record ") + "\(seq): \(reason)" }
    }

    public struct Result: Sendable {
        public var records: Int64
        public var checkpoints: Int
        public var lastSeq: Int64
        /// Every problem: records in sequence order, then checkpoints.
        public var problems: [Problem]
        /// The highest checkpoint whose record still has the signed hash (0: none): the records up to
        /// it are as they were signed, even where a later break cannot say exactly where it starts.
        public var signedThrough: Int64
        /// The first bad record, or failing that the first bad checkpoint; nil when the trail verifies.
        public var problem: Problem? { problems.first }
    }

    var checkpoints: [Int64: [AuditCheckpoint]] = [:]
    var problems: [Problem] = []
    var checkpointProblems: [Problem] = []
    var previous = AuditChain.genesis
    var expected: Int64 = 1
    var count: Int64 = 0
    var hashes: [Int64: String] = [:]
    var checkpointCount = 0

    /// `checkpoints` may come from several places (the store, an export file) and overlap. To check only
    /// the records after a known-good point, give its sequence number and hash as `start`.
    public init(
        publicKey: Curve25519.Signing.PublicKey, checkpoints: [AuditCheckpoint],
        start: (seq: Int64, hash: String)? = nil
    ) {
        if let start {
            expected = start.seq + 1
            previous = AuditChain.bytes(hex: start.hash) ?? AuditChain.genesis
        }
        var seen = Set<String>()
        for c in checkpoints where seen.insert("\(c.seq)/\(c.hash)/\(c.timeMs)/\(c.signature)").inserted {
            checkpointCount += 1
            if !c.isValid(under: publicKey) {
                checkpointProblems.append(
                    Problem(
                        seq: c.seq, reason: "signature is not valid (key \(c.keyId.prefix(16)))", checkpoint: true))
            } else {
                self.checkpoints[c.seq, default: []].append(c)
            }
        }
    }

    public mutating func add(_ r: AuditRecord) {
        count += 1
        if r.seq != expected {
            problems.append(
                Problem(
                    seq: expected,
                    reason: r.seq > expected
                        ? "missing (the next record present is \(r.seq))"
                        : "a record numbered \(r.seq) is out of place after \(expected &- 1)"))
        } else if AuditChain.hex(AuditChain.link(previous: previous, r)) != r.hash {
            problems.append(Problem(seq: r.seq, reason: "altered: its hash does not match its content and chain"))
        }
        guard r.seq >= expected else { return }
        // Follow the stored hashes past a break, so that later checks still mean something.
        previous = AuditChain.bytes(hex: r.hash) ?? AuditChain.genesis
        if checkpoints[r.seq] != nil { hashes[r.seq] = r.hash }
        expected = r.seq < Int64.max ? r.seq + 1 : r.seq
    }

    public func finish() -> Result {
        var all = problems
        let last = expected &- 1
        var lastGood: Int64 = 0
        for seq in checkpoints.keys.sorted() {
            for c in checkpoints[seq]! {
                if seq > last {
                    all.append(
                        Problem(
                            seq: last &+ 1,
                            reason: "missing: a checkpoint signed the trail up to record \(seq), which ends at \(last)")
                    )
                } else if let h = hashes[seq], h != c.hash,
                    // A break the chain itself shows in this stretch names the record more precisely.
                    !problems.contains(where: { $0.seq > lastGood && $0.seq <= seq })
                {
                    all.append(
                        Problem(
                            seq: lastGood &+ 1,
                            reason:
                                "rewritten: records \(lastGood &+ 1)…\(seq) differ from what checkpoint \(seq) signed"
                        ))
                }
            }
            if seq <= last, let h = hashes[seq], checkpoints[seq]!.allSatisfy({ $0.hash == h }),
                all.allSatisfy({ $0.seq > seq })
            {
                lastGood = seq
            }
        }
        return Result(
            records: count, checkpoints: checkpointCount, lastSeq: last,
            problems: all.sorted { $0.seq < $1.seq } + checkpointProblems.sorted { $0.seq < $1.seq },
            signedThrough: lastGood)
    }
}
