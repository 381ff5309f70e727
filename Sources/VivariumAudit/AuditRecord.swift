import Crypto
import Foundation
import Synchronization
import VivariumCore

/// Who did something: a principal (its id, name, tenant and the access token's `jti`), root over the
/// unix socket (`local-root`), the daemon itself (`system`) or an unauthenticated caller (`anonymous`).
public struct AuditActor: Sendable, Equatable {
    public var id: String
    public var name: String?
    public var tenant: String?
    public var tokenID: String?
    public init(id: String, name: String? = nil, tenant: String? = nil, tokenID: String? = nil) {
        self.id = id
        self.name = name
        self.tenant = tenant
        self.tokenID = tokenID
    }
    public static let system = AuditActor(id: "system")
    public static let anonymous = AuditActor(id: "anonymous")
}

public enum AuditOutcome: String, Sendable, CaseIterable {
    /// Done.
    case ok
    /// The intent record of a long action; its outcome follows in another record.
    case started
    /// Tried and failed (the details say why).
    case failed
    /// Refused by authentication or the policy table.
    case denied
    /// Refused by a quota or a limit.
    case refused
    /// Something that needs a human: a refresh token replayed, tampering found.
    case alert
}

/// Counts the records one request appended (so that the router can tell a mutation that left none).
public final class AuditTally: Sendable {
    private let n = Atomic<Int>(0)
    public init() {}
    public func add(_ k: Int) { n.add(k, ordering: .relaxed) }
    public var count: Int { n.load(ordering: .relaxed) }
}

/// The actor, source and request id of the work running in this task: set by the API for each request,
/// `system` for the daemon's own work.
public struct AuditContext: Sendable {
    public var actor: AuditActor
    public var source: String?
    public var requestID: String?
    public var tally: AuditTally?
    /// The tenant the work acts in when it is not the actor's own (an admin's `?tenant=`).
    public var tenant: String?
    /// The request and action a `Gate.perform` runs for (so that a nested one only authorizes).
    public var scope: String?
    public init(actor: AuditActor, source: String? = nil, requestID: String? = nil, tally: AuditTally? = nil) {
        self.actor = actor
        self.source = source
        self.requestID = requestID
        self.tally = tally
    }
    @TaskLocal public static var current = AuditContext(actor: .system)
}

/// What to record, before it gets its place in the chain. Actor, source and request id come from the
/// current `AuditContext`; `tenant` (whose records these are, for tenant auditors) defaults to the actor's,
/// and `global` events (key rotation, a revocation by token id) belong to no tenant: admins read them.
/// The store redacts target and details (`redacted()`) before it writes them.
public struct AuditEvent: Sendable {
    public var action: String
    public var target: String?
    public var tenant: String?
    public var outcome: AuditOutcome
    public var details: [String: String]
    public var context: AuditContext

    public init(
        _ action: String, target: String? = nil, tenant: String? = nil, global: Bool = false,
        outcome: AuditOutcome = .ok, details: [String: String] = [:], context: AuditContext = .current
    ) {
        self.action = action
        self.target = target
        self.tenant = global ? nil : tenant ?? context.tenant ?? context.actor.tenant
        self.outcome = outcome
        self.details = details
        self.context = context
    }

    /// This event with credentials removed from its target and details (`Redactor`).
    public func redacted() -> AuditEvent {
        var e = self
        e.target = target.map(Redactor.redact)
        e.details = Redactor.redact(details)
        return e
    }

    /// The record this event becomes at `seq`, chained to `previousHash`.
    public func seal(seq: Int64, timeMs: Int64, previousHash: [UInt8]) -> AuditRecord {
        var r = AuditRecord(
            seq: seq, timeMs: timeMs, actor: context.actor.id, actorName: context.actor.name,
            actorTenant: context.actor.tenant, tokenId: context.actor.tokenID, source: context.source,
            tenant: tenant, action: action, target: target, outcome: outcome.rawValue, requestId: context.requestID,
            details: details, hash: "")
        r.hash = AuditChain.hex(AuditChain.link(previous: previousHash, r))
        return r
    }
}

/// The hash chain. Record n carries `SHA-256(hash(n-1) || canonical(n))`, record 1 chains to 32 zero
/// bytes. The canonical encoding is length-prefixed, so no two different records encode the same:
///
///     canonical = field("vivarium-audit-v1")
///                 u64(seq) i64(time_ms)
///                 field(actor) opt(actor_name) opt(actor_tenant) opt(token_id) opt(source) opt(tenant)
///                 field(action) opt(target) field(outcome) opt(request_id)
///                 u32(count of details) then, by key in UTF-8 byte order, field(key) field(value)
///     field(s)  = u32(byte length of UTF-8 s) || UTF-8 s
///     opt(s)    = 0x00 when absent, else 0x01 || field(s)
///
/// All integers are big-endian.
public enum AuditChain {
    public static let genesis = [UInt8](repeating: 0, count: 32)

    public static func canonical(_ r: AuditRecord) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { out += $0 } }
        func field(_ s: String) {
            let b = Array(s.utf8)
            u32(UInt32(b.count))
            out += b
        }
        func opt(_ s: String?) {
            guard let s else { return out.append(0) }
            out.append(1)
            field(s)
        }
        field("vivarium-audit-v1")
        u64(UInt64(bitPattern: r.seq))
        u64(UInt64(bitPattern: r.timeMs))
        field(r.actor)
        opt(r.actorName)
        opt(r.actorTenant)
        opt(r.tokenId)
        opt(r.source)
        opt(r.tenant)
        field(r.action)
        opt(r.target)
        field(r.outcome)
        opt(r.requestId)
        u32(UInt32(r.details.count))
        for (k, v) in r.details.sorted(by: { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }) {
            field(k)
            field(v)
        }
        return out
    }

    public static func link(previous: [UInt8], _ r: AuditRecord) -> [UInt8] {
        var h = SHA256()
        h.update(data: previous)
        h.update(data: canonical(r))
        return Array(h.finalize())
    }

    public static func hex(_ b: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(b.count * 2)
        for x in b {
            out.append(digits[Int(x >> 4)])
            out.append(digits[Int(x & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func bytes(hex: String) -> [UInt8]? {
        let u = Array(hex.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nib(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let a = nib(u[i]), let b = nib(u[i + 1]) else { return nil }
            out.append(a << 4 | b)
            i += 2
        }
        return out
    }
}

/// What happens when a record cannot be written.
public enum AuditMode: String, Sendable, CaseIterable {
    /// The action is refused (the default).
    case required
    /// The action goes ahead and the failure is logged: an explicit operator choice, recorded at start.
    case failOpen = "fail-open"
    /// Nothing is recorded. For benchmarks; recorded at start like every weakened default.
    case off
}

extension AuditContext {
    /// This context with another actor: a credential exchange acts as the principal it authenticated.
    public func acting(as actor: AuditActor) -> AuditContext {
        var c = self
        c.actor = actor
        return c
    }
}
