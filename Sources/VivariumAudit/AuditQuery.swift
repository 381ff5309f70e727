import Foundation
import VivariumCore

/// Filters of an audit query; every one is optional. Results are in sequence order after `after`.
public struct AuditQuery: Sendable {
    public var tenant: String?
    public var after: Int64?
    public var sinceMs: Int64?
    public var untilMs: Int64?
    /// A principal id or name, `local-root`, `system` or `anonymous`.
    public var actor: String?
    public var action: String?
    public var target: String?
    public var outcome: String?
    public var limit: Int
    public init(
        tenant: String? = nil, after: Int64? = nil, sinceMs: Int64? = nil, untilMs: Int64? = nil,
        actor: String? = nil, action: String? = nil, target: String? = nil, outcome: String? = nil, limit: Int = 100
    ) {
        self.tenant = tenant
        self.after = after
        self.sinceMs = sinceMs
        self.untilMs = untilMs
        self.actor = actor
        self.action = action
        self.target = target
        self.outcome = outcome
        self.limit = limit
    }
}
