import VivariumCore
import VivariumEngine

/// `/v1/sandboxes/{name}/routes` and `/v1/routes`: published sandbox ports.
struct RouteRoutes {
    let exposures: Exposures

    func register(_ r: inout RouteRegistry) {
        let exposures = self.exposures
        r.add(Endpoints.routeCreate) { call in
            let req: ExposeRequest = try await call.body()
            return Self.info(
                try await exposures.expose(call.caller, name: try call.name("sandbox name"), req), exposures)
        }
        r.add(Endpoints.routeList) { call in
            Page(items: try await exposures.list(call.caller).map { Self.info($0, exposures) }, nextCursor: nil)
        }
        r.add(Endpoints.routeDelete) { call in
            try await exposures.remove(call.caller, key: try call.context.parameters.require("name"))
            return Empty()
        }
    }

    static func info(_ r: PortRoute, _ e: Exposures) -> RouteInfo {
        RouteInfo(
            key: r.key, sandbox: r.sandboxName.rawValue, port: r.port, access: r.access.rawValue,
            hostname: r.hostname, tcpPort: r.tcpPort, url: e.url(r), createdAt: r.createdAt)
    }
}
