import Foundation
import VivariumCore
import VivariumEngine

/// Health, the API document.
struct SystemRoutes {
    let engine: Engine
    let openAPI: Data

    func register(_ r: inout RouteRegistry) {
        let engine = self.engine
        r.add(Endpoints.health) { _ in
            // Up means the store answers (a failure is a 503); what it holds is nobody's business here.
            _ = try await engine.sandboxes.count()
            return HealthInfo(status: "ok")
        }
        r.document(Endpoints.openAPI, contentType: "application/json", openAPI)
    }
}
