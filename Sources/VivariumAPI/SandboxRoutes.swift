import VivariumCore
import VivariumEngine

/// `/v1/sandboxes`: lifecycle, exec and run.
struct SandboxRoutes {
    let sandboxes: Sandboxes

    func register(_ r: inout RouteRegistry) {
        let sandboxes = self.sandboxes
        r.add(Endpoints.sandboxList) { call in
            let limit = try call.int("limit", 1...500).map(Int.init)
            let page = try await sandboxes.list(call.caller, cursor: call.query("cursor"), limit: limit)
            return Page(items: page.items.map(Mapping.info), nextCursor: page.nextCursor)
        }
        r.add(Endpoints.sandboxCreate) { call in
            let (name, spec) = try Mapping.sandbox(try await call.body())
            return Mapping.info(try await sandboxes.create(call.caller, name: name, spec: spec))
        }
        r.add(Endpoints.sandboxRun) { call in
            let body: RunRequest = try await call.body()
            let (name, spec) = try Mapping.sandbox(body.sandbox)
            let remove = body.remove ?? false
            let (box, outcome) = try await sandboxes.run(
                call.caller, name: name, spec: spec, command: try Mapping.command(body.exec), remove: remove)
            return RunResult(sandbox: Mapping.info(box), result: Mapping.result(outcome), removed: remove)
        }
        r.add(Endpoints.sandboxGet) { call in
            Mapping.info(try await sandboxes.get(call.caller, name: try call.name("sandbox name")))
        }
        r.add(Endpoints.sandboxDelete) { call in
            try await sandboxes.delete(call.caller, name: try call.name("sandbox name"), force: try call.flag("force"))
            return Empty()
        }
        r.add(Endpoints.sandboxStart) { call in
            Mapping.info(try await sandboxes.start(call.caller, name: try call.name("sandbox name")))
        }
        r.add(Endpoints.sandboxStop) { call in
            Mapping.info(try await sandboxes.stop(call.caller, name: try call.name("sandbox name")))
        }
        r.add(Endpoints.sandboxNetwork) { call in
            let req: SetNetworkRequest = try await call.body()
            let policy = try Mapping.policy(req.egress, req.allow) ?? .none
            return Mapping.info(
                try await sandboxes.setNetwork(call.caller, name: try call.name("sandbox name"), policy))
        }
        r.add(Endpoints.sandboxExec) { call in
            let command = try Mapping.command(try await call.body())
            return Mapping.result(try await sandboxes.exec(call.caller, name: try call.name("sandbox name"), command))
        }
    }
}
