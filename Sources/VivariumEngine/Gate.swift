import Foundation
import Logging
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumStore

/// Abuse limits of every door: failed authentications per source address, requests per principal, and
/// the sources from which admin actions and admin credentials are accepted.
public struct AbuseLimits: Sendable {
    public let failedAuth: RateLimiter
    public let perPrincipal: RateLimiter
    /// Admin actions and admin credentials are accepted only from these sources; empty: any source.
    public let adminAllowlist: [CIDR]

    public init(
        authFailuresPerMinute: Double = 10, requestsPerSecond: Double = 100, requestBurst: Double = 200,
        adminAllowlist: [CIDR] = []
    ) {
        failedAuth = RateLimiter(rate: authFailuresPerMinute / 60, burst: authFailuresPerMinute)
        perPrincipal = RateLimiter(rate: requestsPerSecond, burst: requestBurst)
        self.adminAllowlist = adminAllowlist
    }

    /// The key a source is rate-limited under: the address, or its /64 for IPv6 (one host holds many).
    public static func limitKey(_ ip: String) -> String {
        guard let b = CIDR.parseAddress(ip), b.count == 16 else { return ip }
        return b.prefix(8).map { String($0, radix: 16) }.joined(separator: ".") + "/64"
    }
}

/// Where every request, whichever door it came through, meets the policy table and the audit trail.
/// A door turns its credentials into a `Caller` with `authenticate`, and every use case runs inside
/// `perform`, which decides through the table, gives the work its audit context, and records denials,
/// refusals and failures the same way for every door.
public final class Gate: Sendable {
    let tokens: TokenService
    let audit: any AuditStore
    let limits: AbuseLimits
    let logger: Logger

    public init(tokens: TokenService, audit: any AuditStore, limits: AbuseLimits, logger: Logger) {
        self.tokens = tokens
        self.audit = audit
        self.limits = limits
        self.logger = logger
    }

    // MARK: Authentication

    /// The caller behind a bearer token (nil: none was presented). Failed attempts count against the
    /// source address, and a source that failed too often gets 429 for its next failures; a valid token
    /// is never refused because of its address (one rule for every door). Every principal is held to
    /// its request rate. Local callers are never limited.
    public func authenticate(
        bearer: String?, source: String, requestID: String, requestedTenant: ResourceName?, door: Caller.Door
    ) async -> Result<Caller, VivariumError> {
        do {
            guard let bearer else {
                try throttle(source: source)
                throw VivariumError(.unauthenticated, "authentication required")
            }
            let principal: Principal
            do {
                principal = try await tokens.verify(bearer)
            } catch {
                // Failures are throttled per address; a valid token never is, whatever its address did.
                try throttle(source: source)
                throw error
            }
            if let wait = limits.perPrincipal.take(principal.id) {
                throw VivariumError(.rateLimited, "request rate limit reached", retryAfterSeconds: wait)
            }
            return .success(
                Caller(
                    principal: principal, requestedTenant: requestedTenant, source: source, requestID: requestID,
                    door: door))
        } catch let e as VivariumError {
            return .failure(e)
        } catch {
            return .failure(VivariumError(.unauthenticated, "invalid or expired credentials"))
        }
    }

    /// Whether the credentials a long session started with still hold (not revoked, not expired, the
    /// same principal): a stream asks before it sends more.
    public func stillAuthenticated(_ caller: Caller, bearer: String?) async -> Bool {
        if caller.isLocal { return true }
        guard let bearer, let p = try? await tokens.verify(bearer) else { return false }
        return p.id == caller.principal?.id
    }

    /// Refuses a source that failed authentication too often (429 with the seconds to wait).
    func throttle(source: String) throws {
        if let wait = limits.failedAuth.exhausted(AbuseLimits.limitKey(source)) {
            throw VivariumError(
                .rateLimited, "too many failed authentications from this address", retryAfterSeconds: wait)
        }
    }

    /// A door could not establish a caller for `action`: the refusal is recorded as the action would be.
    public func rejected(_ error: VivariumError, anonymous: Caller, action: Action, target: String?) async {
        await recordFailure(error, caller: anonymous, action: action, target: target, recorded: 0)
    }

    // MARK: Authorization

    /// The decision of the policy table, then the source rule for admin actions and admin credentials.
    public func authorize(_ caller: Caller, _ action: Action) throws {
        switch PolicyTable.decide(action, for: caller) {
        case .allow: break
        case .unauthenticated: throw VivariumError(.unauthenticated, "authentication required")
        case .forbidden(let why): throw VivariumError(.forbidden, why)
        }
        guard !caller.isLocal, !limits.adminAllowlist.isEmpty,
            !limits.adminAllowlist.contains(where: { $0.contains(caller.source) })
        else { return }
        if PolicyTable.policy(action).ownership == .admin {
            throw VivariumError(.forbidden, "admin actions are not served to this address")
        }
        // An admin token reaches every tenant: from outside the allowlist it gets nowhere.
        if caller.role == .admin {
            throw VivariumError(.forbidden, "admin credentials are not accepted from this address")
        }
    }

    /// Runs a use case for `caller`: authorizes `action`, gives the work its audit context (actor,
    /// source, request id, the tenant it acts in), and leaves a record of every denial, refusal and
    /// failure, and of a mutation that changed nothing. A `perform` for the same request and action
    /// inside another (a door wrapping its own parsing around a use case) only authorizes. A check that
    /// precedes the use case (`check: true`: a door's test before it commits to a stream) records only
    /// its failures.
    public func perform<T: Sendable>(
        _ caller: Caller, _ action: Action, target: String?, check: Bool = false, _ body: () async throws -> T
    ) async throws -> T {
        let scope = "\(caller.requestID)/\(action.rawValue)"
        if AuditContext.current.scope == scope {
            try authorize(caller, action)
            return try await body()
        }
        let context = Self.context(caller, scope: scope)
        let policy = PolicyTable.policy(action)
        do {
            let value = try await AuditContext.$current.withValue(context) {
                try authorize(caller, action)
                guard action == .tokenExchange, !caller.isLocal else { return try await body() }
                // A registered key is never refused for its address's failures; a wrong one from a
                // throttled address is told to wait.
                do { return try await body() } catch let e as VivariumError where e.code == .unauthenticated {
                    try throttle(source: caller.source)
                    throw e
                }
            }
            if policy.mutating, !check, context.tally?.count == 0 {
                try await audit.append([
                    AuditEvent(action.rawValue, target: target, details: ["changed": "false"], context: context)
                ])
            }
            return value
        } catch let e as VivariumError {
            await recordFailure(e, caller: caller, action: action, target: target, recorded: context.tally?.count ?? 0)
            throw e
        } catch {
            let e = VivariumError.wrap(error, .internalError, "\(action.rawValue) failed")
            await recordFailure(e, caller: caller, action: action, target: target, recorded: context.tally?.count ?? 0)
            throw e
        }
    }

    /// The audit context of a caller's work.
    static func context(_ caller: Caller, scope: String? = nil) -> AuditContext {
        let actor =
            caller.principal.map { AuditActor(id: $0.id, name: $0.name, tenant: $0.tenant, tokenID: $0.tokenID) }
            ?? .anonymous
        var c = AuditContext(actor: actor, source: caller.source, requestID: caller.requestID, tally: AuditTally())
        // Only an admin acts in a tenant other than its own.
        c.tenant = caller.role == .admin ? caller.tenant : caller.principal?.tenant
        c.scope = scope
        return c
    }

    /// Authentication failures, policy denials and quota refusals are recorded for every action; other
    /// failures of mutating actions when nothing else was recorded. Rate-limit refusals are not (they
    /// would let a flood write the trail); the authentication failures before them were. Failed
    /// authentications count against the source, except on public actions other than the token exchange.
    func recordFailure(_ e: VivariumError, caller: Caller, action: Action, target: String?, recorded: Int) async {
        let policy = PolicyTable.policy(action)
        let context = Self.context(caller)
        let details = ["code": e.code.rawValue, "message": e.message]
        let event: AuditEvent
        switch e.code {
        case .unauthenticated:
            if !caller.isLocal && (policy.ownership != .publicAction || action == .tokenExchange) {
                _ = limits.failedAuth.take(AbuseLimits.limitKey(caller.source))
            }
            event = AuditEvent(
                "auth.failure", target: action.rawValue, outcome: .denied, details: details, context: context)
        case .forbidden:
            event = AuditEvent(
                "policy.denied", target: target, outcome: .denied,
                details: details.merging(["action": action.rawValue, "door": caller.door.rawValue]) { a, _ in a },
                context: context)
        case .quotaExceeded, .imageRefused:
            event = AuditEvent(action.rawValue, target: target, outcome: .refused, details: details, context: context)
        case .rateLimited:
            return
        default:
            guard policy.mutating, recorded == 0 else { return }
            event = AuditEvent(action.rawValue, target: target, outcome: .failed, details: details, context: context)
        }
        do { try await audit.append([event]) } catch {
            logger.error(
                "cannot record a refused request", metadata: ["request_id": "\(caller.requestID)", "error": "\(error)"])
        }
    }
}
