import Crypto
import Foundation

/// Checks a whole trail: every record in sequence from 1, every link of the chain, every checkpoint's
/// signature, and that every checkpoint's record still exists with the hash that was signed. Records
/// are fed in sequence order, so a trail of any length streams through.
public struct AuditVerifier {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        /// The first record that is missing, altered or out of place.
        public var seq: Int64
        public var reason: String
        public init(seq: Int64, reason: String) {
            self.seq = seq
            self.reason = reason
        }
        public var description: String { "record \(seq): \(reason)" }
    }

    public struct Result: Sendable {
        public var records: Int64
        public var checkpoints: Int
        public var lastSeq: Int64
        /// The earliest problem; nil when the trail verifies.
        public var problem: Problem?
    }

    let key: Curve25519.Signing.PublicKey
    var checkpoints: [Int64: [AuditCheckpoint]] = [:]
    var problems: [Problem] = []
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
        key = publicKey
        if let start {
            expected = start.seq + 1
            previous = AuditChain.bytes(hex: start.hash) ?? AuditChain.genesis
        }
        var seen = Set<String>()
        for c in checkpoints where seen.insert("\(c.seq)/\(c.hash)/\(c.timeMs)/\(c.signature)").inserted {
            checkpointCount += 1
            if !c.isValid(under: publicKey) {
                problems.append(Problem(seq: c.seq, reason: "checkpoint signature is not valid (key \(c.keyId))"))
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
                    seq: min(r.seq, expected),
                    reason: r.seq > expected
                        ? "missing (the next record present is \(r.seq))" : "out of order (found \(r.seq))"))
        } else if AuditChain.hex(AuditChain.link(previous: previous, r)) != r.hash {
            problems.append(Problem(seq: r.seq, reason: "altered: its hash does not match its content and chain"))
        }
        // Follow the stored hashes past a break, so that later checks still mean something.
        previous = AuditChain.bytes(hex: r.hash) ?? AuditChain.genesis
        if checkpoints[r.seq] != nil { hashes[r.seq] = r.hash }
        if r.seq >= expected { expected = r.seq + 1 }
    }

    public func finish() -> Result {
        var all = problems
        let last = expected - 1
        var lastGood: Int64 = 0
        for seq in checkpoints.keys.sorted() {
            for c in checkpoints[seq]! {
                if seq > last {
                    all.append(
                        Problem(
                            seq: last + 1,
                            reason: "missing: a checkpoint signed the trail up to record \(seq), which ends at \(last)")
                    )
                } else if let h = hashes[seq], h != c.hash,
                    // A break the chain itself shows in this stretch names the record more precisely.
                    !problems.contains(where: { $0.seq > lastGood && $0.seq <= seq })
                {
                    all.append(
                        Problem(
                            seq: lastGood + 1,
                            reason:
                                "rewritten: records \(lastGood + 1)…\(seq) differ from what checkpoint \(seq) signed"
                        ))
                }
            }
            if seq <= last, hashes[seq] != nil, checkpoints[seq]!.allSatisfy({ $0.hash == hashes[seq] }) {
                lastGood = seq
            }
        }
        return Result(
            records: count, checkpoints: checkpointCount, lastSeq: last, problem: all.min { $0.seq < $1.seq })
    }
}
