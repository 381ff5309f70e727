import Foundation
import Logging
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumNetwork
import VivariumStore

/// Published sandbox ports: the routes (`expose`, `expose ls`, `expose rm`) and the ingress's decisions.
/// A route is an HTTP host name (public, or for callers whose token reaches the sandbox) or a TCP forward
/// from a host port (public: a byte stream carries no token). Besides named routes, `PORT-SANDBOXID.DOMAIN`
/// reaches any port of a sandbox for callers whose token reaches it (the host naming of e2b's SDKs).
/// Routes live in the store and go with their sandbox.
public final class Exposures: IngressResolver {
    public static let maxRoutesPerTenant = 256

    let config: EngineConfiguration
    let store: any Store
    let gate: Gate
    let logger: Logger
    let ingress = Mutex<Ingress?>(nil)
    /// The TCP forwards open, by host port: the sandbox each serves.
    let forwards = Mutex<[Int: SandboxID]>([:])

    init(config: EngineConfiguration, store: any Store, gate: Gate, logger: Logger) {
        self.config = config
        self.store = store
        self.gate = gate
        self.logger = logger
    }

    /// The domain of `PORT-SANDBOXID` host names.
    var domain: String { config.ingressDomain }

    /// Starts serving routes on `ingress` (bound already): the TCP forwards of the store are opened.
    public func serve(_ ingress: Ingress) async throws {
        self.ingress.withLock { $0 = ingress }
        for r in try await store.routes(tenant: nil) {
            guard let port = r.tcpPort else { continue }
            do {
                try await ingress.openForward(port: port)
                forwards.withLock { $0[port] = r.sandbox }
            } catch {
                logger.error("cannot reopen a TCP forward", metadata: ["route": "\(r.key)", "error": "\(error)"])
            }
        }
    }

    // MARK: Entry points

    public func expose(_ caller: Caller, name: ResourceName, _ req: ExposeRequest) async throws -> PortRoute {
        try await gate.perform(caller, .routeCreate, target: name.rawValue) {
            guard let ingress = ingress.withLock({ $0 }) else {
                throw VivariumError(.invalidArgument, "this daemon runs no ingress: set ingress = ADDRESS:PORT")
            }
            let box = try await Sandboxes.record(store, caller, name)
            let port = try PortRoute.port(req.port, what: "port")
            let access = try req.access.map {
                guard let a = RouteAccess(rawValue: $0) else {
                    throw VivariumError(.invalidArgument, "access must be public or token")
                }
                return a
            }
            var key: String
            if let tcp = req.tcpPort {
                guard req.hostname == nil, access != .token else {
                    throw VivariumError(
                        .invalidArgument,
                        "a TCP forward is public and has no host name (a byte stream carries no token)")
                }
                guard (1024...65535).contains(tcp) else {
                    throw VivariumError(.invalidArgument, "tcp_port must be 1024 to 65535")
                }
                key = PortRoute.tcpKey(tcp)
            } else {
                key =
                    try req.hostname.map(PortRoute.hostname)
                    ?? PortRoute.portHostname(port: port, sandbox: box.id, domain: domain)
                // Names under the ingress domain are the sandboxes' own: a route there is only this box's
                // PORT-SANDBOXID name (no tenant takes over another's sandbox name).
                if key == domain || key.hasSuffix("." + domain) {
                    guard let own = PortRoute.parsePortHostname(key, domain: domain), own.sandbox == box.id,
                        own.port == port
                    else {
                        throw VivariumError(
                            .invalidArgument,
                            "names under \(domain) are PORT-SANDBOXID.\(domain) of the sandbox and port they name")
                    }
                }
            }
            let route = PortRoute(
                key: key, tenant: box.tenant, sandbox: box.id, sandboxName: box.name, port: port,
                access: req.tcpPort != nil ? .public : access ?? .token, tcpPort: req.tcpPort, createdAt: Date())
            if let tcp = route.tcpPort {
                // Bound first, so that a port the host uses already is refused before anything is stored.
                try await ingress.openForward(port: tcp)
            }
            do {
                try await store.insertRoute(
                    route, maxPerTenant: Self.maxRoutesPerTenant,
                    audit: AuditEvent(
                        "route.create", target: key, tenant: box.tenant,
                        details: [
                            "sandbox": box.name.rawValue, "id": box.id.rawValue, "port": "\(port)",
                            "access": route.access.rawValue,
                        ]))
            } catch {
                if let tcp = route.tcpPort { await ingress.closeForward(port: tcp) }
                if let e = error as? VivariumError, e.code == .alreadyExists {
                    throw VivariumError(.alreadyExists, "route \(key) exists already")
                }
                throw error
            }
            if let tcp = route.tcpPort { forwards.withLock { $0[tcp] = box.id } }
            logger.info("port exposed", metadata: ["route": "\(key)", "sandbox": "\(name)", "port": "\(port)"])
            return route
        }
    }

    /// The routes of the caller's tenant, by key.
    public func list(_ caller: Caller) async throws -> [PortRoute] {
        try await gate.perform(caller, .routeList, target: nil) {
            try await store.routes(tenant: try Sandboxes.tenant(caller))
        }
    }

    public func remove(_ caller: Caller, key: String) async throws {
        try await gate.perform(caller, .routeDelete, target: key) {
            let key = key.lowercased()
            let tenant = try Sandboxes.tenant(caller)
            let r = try await store.deleteRoute(
                key: key, tenant: tenant, audit: AuditEvent("route.delete", target: key, tenant: tenant))
            if let tcp = r.tcpPort { await closeForward(tcp) }
        }
    }

    /// Where a route is reached.
    public func url(_ r: PortRoute) -> String {
        guard let ingress = ingress.withLock({ $0 }) else { return "" }
        let port = ingress.port.map(String.init) ?? "?"
        if let tcp = r.tcpPort { return "tcp://\(ingress.host):\(tcp)" }
        return "\(ingress.scheme)://\(r.key):\(port)"
    }

    /// A sandbox went: its routes went with its row; its TCP forwards close.
    func sandboxRemoved(_ id: SandboxID) async {
        let ports = forwards.withLock { f in f.filter { $0.value == id }.map(\.key) }
        for p in ports { await closeForward(p) }
    }

    func closeForward(_ port: Int) async {
        forwards.withLock { $0[port] = nil }
        await ingress.withLock { $0 }?.closeForward(port: port)
    }

    // MARK: The ingress's decisions

    public func resolve(_ request: IngressRequest) async -> IngressDecision {
        do {
            let route = try await store.route(key: request.host).flatMap { $0.tcpPort == nil ? $0 : nil }
            let id: SandboxID
            let port: Int
            if let route {
                (id, port) = (route.sandbox, route.port)
            } else if let named = PortRoute.parsePortHostname(request.host, domain: domain) {
                (id, port) = (named.sandbox, named.port)
            } else {
                throw VivariumError(.notFound, "no route for \(request.host)")
            }
            guard let box = try await store.sandbox(id: id) else {
                throw VivariumError(.notFound, "no route for \(request.host)")
            }
            if route?.access != .public { try await admit(request, to: box) }
            guard case .running = box.state, let network = config.network else {
                throw VivariumError(.unavailable, "sandbox \(box.name) is not running")
            }
            return .forward(
                Upstream(
                    namespace: network.config.namespace, address: try network.address(slot: box.uidSlot), port: port))
        } catch {
            let e = VivariumError.wrap(error, .internalError, "ingress")
            return .refuse(status: e.httpStatus, code: e.code.rawValue, message: e.message)
        }
    }

    /// A token request: the bearer's principal must reach `box` (its tenant, or an admin; a bound token
    /// its own sandbox only), decided and recorded as `sandbox.connect`.
    func admit(_ request: IngressRequest, to box: SandboxRecord) async throws {
        let requestID = randomHex(bytes: 8)
        let caller: Caller
        switch await gate.authenticate(
            bearer: request.bearer, source: request.source, requestID: requestID, requestedTenant: nil, door: .ingress)
        {
        case .success(let c): caller = c
        case .failure(let e):
            await gate.rejected(
                e, anonymous: .anonymous(source: request.source, requestID: requestID, door: .ingress),
                action: .sandboxConnect, target: box.name.rawValue)
            throw e
        }
        try await gate.perform(caller, .sandboxConnect, target: box.name.rawValue) {
            guard caller.role == .admin || caller.principal?.tenant == box.tenant,
                caller.boundSandbox == nil || caller.boundSandbox == box.id
            else { throw VivariumError(.notFound, "no route for \(request.host)") }
        }
    }

    public func upstream(tcpPort: Int) async -> Upstream? {
        guard let network = config.network, let r = try? await store.route(key: PortRoute.tcpKey(tcpPort)),
            let box = try? await store.sandbox(id: r.sandbox), case .running = box.state,
            let address = try? network.address(slot: box.uidSlot)
        else { return nil }
        return Upstream(namespace: network.config.namespace, address: address, port: r.port)
    }
}
