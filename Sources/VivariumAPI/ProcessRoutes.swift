import Foundation
import HummingbirdWebSocket
import NIOCore
import VivariumCore
import VivariumEngine

/// `/v1/sandboxes/{name}/processes`: detached commands, their kept output and their control.
struct ProcessRoutes {
    let sandboxes: Sandboxes

    static func id(_ call: Call) throws -> String {
        guard let id = call.query("id"), !id.isEmpty else { throw VivariumError(.invalidArgument, "id is required") }
        return id
    }

    func register(_ r: inout RouteRegistry) {
        let sandboxes = self.sandboxes
        r.add(Endpoints.processStart) { call in
            let req: StartProcessRequest = try await call.body()
            let command = try Mapping.command(
                ExecRequest(argv: req.argv, shell: req.shell, env: req.env, workdir: req.workdir, user: req.user))
            return try await sandboxes.startProcess(
                call.caller, name: try call.name("sandbox name"), command, stdin: req.stdin ?? false,
                maxOutput: req.maxOutputBytes)
        }
        r.add(Endpoints.processList) { call in
            Page(
                items: try await sandboxes.processes(call.caller, name: try call.name("sandbox name")), nextCursor: nil)
        }
        r.add(Endpoints.processLogs) { call in
            try await sandboxes.processLogs(call.caller, name: try call.name("sandbox name"), id: try Self.id(call))
        }
        r.add(Endpoints.processSignal) { call in
            let req: SignalProcessRequest = try await call.body()
            return try await sandboxes.signalProcess(
                call.caller, name: try call.name("sandbox name"), id: req.id, signal: req.signal)
        }
        r.add(Endpoints.processInput) { call in
            let req: ProcessInputRequest = try await call.body()
            return try await sandboxes.processInput(
                call.caller, name: try call.name("sandbox name"), id: req.id, req.data)
        }
        // The kept output, then new output as it comes (binary messages, first byte the stream), then an
        // `exit` message once the process ended and everything was sent.
        r.webSocket(
            Endpoints.processFollow,
            check: { call in
                try await sandboxes.checkProcess(
                    call.caller, name: try call.name("sandbox name"), id: try Self.id(call))
            }
        ) { call, inbound, outbound in
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The client only ever closes: reading its frames lets the close handshake finish.
                group.addTask { for try await _ in inbound {} }
                group.addTask {
                    let end = try await sandboxes.followProcess(
                        call.caller, name: try call.name("sandbox name"), id: try Self.id(call)
                    ) { frames in
                        for f in frames {
                            var buffer = ByteBuffer()
                            buffer.writeInteger(f.channel)
                            buffer.writeBytes(f.bytes)
                            try await outbound.write(.binary(buffer))
                        }
                    }
                    let exit = StreamControl(.exit, exitCode: end.exitCode ?? 137, timedOut: false)
                    try await ExecStreamRoutes.send(exit, outbound)
                    try await outbound.close(.normalClosure, reason: end.state)
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }
}
