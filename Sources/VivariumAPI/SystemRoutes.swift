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
            await HealthInfo(
                status: "ok", version: VivariumVersion.string, cgroupMode: engine.config.cgroupMode.rawValue,
                sandboxes: try engine.sandboxes.count())
        }
        r.document(Endpoints.openAPI, contentType: "application/json", openAPI)
    }
}
