import Foundation
import VivariumCore

/// Wire types to domain values (validated) and back: the only place the two meet.
enum Mapping {
    static func sandbox(_ req: CreateSandboxRequest) throws -> (ResourceName?, SandboxSpec) {
        let name = try req.name.map { try ResourceName.parse($0, what: "sandbox name") }
        let image = try ImageReference.parse(req.image ?? "base")
        var limits = ResourceLimits.default
        if let m = req.memoryBytes { limits.memoryBytes = m }
        if let c = req.milliCpus { limits.milliCPUs = c }
        if let p = req.pids { limits.pids = p }
        limits.diskBytes = req.diskBytes ?? ResourceLimits.unsetDiskBytes
        let restart =
            try req.restart.map {
                guard let r = RestartPolicy(rawValue: $0) else {
                    throw VivariumError(.invalidArgument, "restart must be 'always' or 'never'")
                }
                return r
            } ?? .never
        let spec = SandboxSpec(
            image: image, limits: limits, env: req.env ?? [:], labels: req.labels ?? [:],
            readOnly: req.readOnly ?? false,
            restart: restart, ttlSeconds: req.ttlSeconds, network: try policy(req.network, req.allow))
        return (name, try spec.validated())
    }

    /// An egress policy and its rules; nil when neither is given (the daemon's default).
    static func policy(_ egress: String?, _ allow: [String]?) throws -> NetworkPolicy? {
        guard egress != nil || allow != nil else { return nil }
        let rules = try (allow ?? []).map(AllowRule.parse)
        return try NetworkPolicy(egress: try egress.map(EgressPolicy.parse) ?? .allowlist, allow: rules).validated()
    }

    static func command(_ req: ExecRequest) throws -> ExecCommand {
        let timeout = try req.timeoutSeconds.map { t -> Duration in
            guard t.isFinite, t > 0, t <= Double(ExecCommand.maxTimeout.components.seconds) else {
                throw VivariumError(
                    .invalidArgument,
                    "timeout must be between 0 and \(ExecCommand.maxTimeout.components.seconds) seconds")
            }
            return .milliseconds(Int64((t * 1000).rounded(.up)))
        }
        return try ExecCommand(
            argv: req.argv, shell: req.shell ?? false, env: req.env ?? [:], workdir: req.workdir, user: req.user,
            timeout: timeout, maxOutputBytes: req.maxOutputBytes)
    }

    /// A streamed command: no output cap (nothing is kept), 24 h unless a timeout is given.
    static func streamCommand(_ req: StreamExecRequest) throws -> ExecCommand {
        try command(
            ExecRequest(
                argv: req.argv, shell: req.shell, env: req.env, workdir: req.workdir, user: req.user,
                timeoutSeconds: req.timeoutSeconds ?? Double(ExecCommand.maxTimeout.components.seconds)))
    }

    static func info(_ s: Sandbox) -> SandboxInfo {
        SandboxInfo(
            id: s.id.rawValue, name: s.name.rawValue, tenant: s.tenant, image: s.spec.image.description,
            imageDigest: s.imageDigest.rawValue, state: s.state.name, pid: s.state.pid,
            memoryBytes: s.spec.limits.memoryBytes, milliCpus: s.spec.limits.milliCPUs, pids: s.spec.limits.pids,
            envNames: s.spec.env.keys.sorted(), labels: s.spec.labels, readOnly: s.spec.readOnly,
            restart: s.spec.restart.rawValue,
            createdAt: s.createdAt, expiresAt: s.expiresAt, hostUidBase: s.hostUIDBase,
            diskUsageBytes: s.diskUsageBytes, diskBytes: s.spec.limits.diskBytes,
            network: (s.spec.network ?? .none).egress.rawValue, address: s.address,
            allow: s.spec.network.flatMap { $0.allow.isEmpty ? nil : $0.allow.map(\.description) },
            deniedPackets: s.deniedPackets)
    }

    static func result(_ o: ExecOutcome) -> ExecResult {
        ExecResult(
            exitCode: o.exitCode, stdout: Data(o.stdout), stderr: Data(o.stderr), stdoutTruncated: o.stdoutTruncated,
            stderrTruncated: o.stderrTruncated, timedOut: o.timedOut, durationMs: o.duration.milliseconds)
    }

    static func info(_ i: ImageRecord) -> ImageInfo { i.info }

    static func info(_ t: TenantRecord) -> TenantInfo {
        TenantInfo(name: t.name.rawValue, createdAt: t.createdAt, intraTenant: t.intraTenant ? "allow" : "deny")
    }

    static func info(_ p: PrincipalRecord) -> PrincipalInfo {
        PrincipalInfo(
            id: p.id, name: p.name.rawValue, tenant: p.tenant, kind: p.kind.rawValue, role: p.role.rawValue,
            disabled: p.disabled, createdAt: p.createdAt)
    }

    static func info(_ k: NewAPIKey) -> APIKeyInfo {
        APIKeyInfo(
            apiKey: k.key, principal: k.principal.rawValue, scopes: k.scopes.map(\.rawValue).sorted(),
            expiresAt: k.expiresAt)
    }

    static func scopes(_ list: [String]) throws -> Set<Scope> { try Scope.parseList(list.joined(separator: ",")) }

    /// Seconds from the wire as a duration (no overflow: the use case bounds it).
    static func seconds(_ s: Int64?) -> Duration? { s.map { .seconds($0) } }
}
