import Foundation
import HummingbirdWebSocket
import NIOCore
import VivariumCore
import VivariumEngine

/// `/v1/sandboxes/{name}/exec/stream`: a command's input and output over a WebSocket. The caller sends
/// a `StreamExecRequest` as its first (text) message; then output arrives as binary messages whose
/// first byte is the `StreamChannel` (1 stdout, 2 stderr), input goes the other way on channel 0, and
/// `StreamControl` text messages resize the terminal, send signals and close stdin. The daemon ends
/// with an `exit` message once every output byte was sent, then closes. A caller that goes away takes
/// its command with it.
struct ExecStreamRoutes {
    let sandboxes: Sandboxes
    let gate: Gate

    /// Longest wait for the first message after the upgrade.
    static let requestTimeout = Duration.seconds(10)
    /// Largest message a caller may send (input is chunked by the caller).
    static let maxMessageBytes = 1 << 20

    func register(_ r: inout RouteRegistry) {
        let (sandboxes, gate) = (self.sandboxes, self.gate)
        r.webSocket(
            Endpoints.sandboxExecStream,
            check: { call in try await sandboxes.checkExec(call.caller, name: try call.name("sandbox name")) }
        ) { call, inbound, outbound in
            let input = Inbound(inbound.messages(maxSize: Self.maxMessageBytes).makeAsyncIterator())
            do {
                let name = try call.name("sandbox name")
                let request = try await Self.firstMessage(input)
                let command = try Mapping.streamCommand(request)
                let terminal = try Self.terminal(request)
                let bearer = Bearer.of(call.request)
                let end = try await sandboxes.execStream(
                    call.caller, name: name, command, terminal: terminal, stdin: request.stdin ?? false,
                    stillValid: { await gate.stillAuthenticated(call.caller, bearer: bearer) },
                    pump: { session in await Self.pump(session, input, outbound) })
                try? await Self.send(
                    StreamControl(.exit, exitCode: end.exitCode, timedOut: end.reason == .timedOut), outbound)
                let reason = end.reason == .revoked ? "credentials no longer valid" : nil
                try? await outbound.close(.normalClosure, reason: reason)
            } catch {
                let e = VivariumError.wrap(error, .internalError, "the stream failed")
                try? await Self.send(StreamControl(.error, code: e.code.rawValue, message: e.message), outbound)
                try? await outbound.close(.policyViolation, reason: String(e.message.prefix(100)))
            }
        }
    }

    /// The caller's messages: one iterator, used by one task at a time (the first message is read before
    /// the pump takes it over).
    final class Inbound: @unchecked Sendable {
        var iterator: WebSocketInboundMessageStream.AsyncIterator
        init(_ iterator: WebSocketInboundMessageStream.AsyncIterator) { self.iterator = iterator }
        func next() async throws -> WebSocketMessage? { try await iterator.next() }
    }

    static func firstMessage(_ input: Inbound) async throws -> StreamExecRequest {
        let first = try await withThrowingTaskGroup(of: WebSocketMessage?.self) { tasks in
            tasks.addTask { try await input.next() }
            tasks.addTask {
                try await Task.sleep(for: requestTimeout)
                throw VivariumError(.badRequest, "no request arrived within \(requestTimeout) of the upgrade")
            }
            defer { tasks.cancelAll() }
            return try await tasks.next() ?? nil
        }
        guard case .text(let text) = first else {
            throw VivariumError(.badRequest, "the first message must be the request, as JSON text")
        }
        return try StrictJSON.decode(StreamExecRequest.self, from: Data(text.utf8))
    }

    static func terminal(_ r: StreamExecRequest) throws -> (rows: UInt16, columns: UInt16)? {
        guard r.tty ?? false else {
            guard r.rows == nil, r.columns == nil else {
                throw VivariumError(.invalidArgument, "rows and columns need tty")
            }
            return nil
        }
        let size = (rows: r.rows ?? 24, columns: r.columns ?? 80)
        guard (1...1000).contains(size.rows), (1...1000).contains(size.columns) else {
            throw VivariumError(.invalidArgument, "rows and columns must be in 1...1000")
        }
        return size
    }

    static func send(_ control: StreamControl, _ outbound: WebSocketOutboundWriter) async throws {
        try await outbound.write(.text(String(decoding: try WireCoding.encoder().encode(control), as: UTF8.self)))
    }

    enum Part: Sendable {
        case output(StreamChannel, Int64)
        case exited
        case input(Int64)
    }

    /// Moves bytes until the command has exited and both output streams ended (everything it wrote was
    /// sent), or until the caller goes away or breaks the protocol.
    static func pump(_ io: ExecStreamIO, _ input: Inbound, _ outbound: WebSocketOutboundWriter) async
        -> StreamTally
    {
        await withTaskGroup(of: Part.self) { tasks in
            var pending = 1
            for channel in io.outputs {
                pending += 1
                tasks.addTask {
                    var sent: Int64 = 0
                    while let chunk = await io.next(channel) {
                        var buffer = ByteBuffer()
                        buffer.reserveCapacity(chunk.count + 1)
                        buffer.writeInteger(channel.rawValue)
                        buffer.writeBytes(chunk)
                        // A caller that went away stops the copy; the command is killed after the pump.
                        guard (try? await outbound.write(.binary(buffer))) != nil else { break }
                        sent += Int64(chunk.count)
                    }
                    return .output(channel, sent)
                }
            }
            tasks.addTask {
                await io.exited()
                return .exited
            }
            tasks.addTask { .input(await Self.feed(io, input, outbound)) }
            var tally = StreamTally()
            var fedAll = false
            while pending > 0, let part = await tasks.next() {
                switch part {
                case .output(.stderr, let n):
                    tally.stderrBytes = n
                    pending -= 1
                case .output(_, let n):
                    tally.stdoutBytes = n
                    pending -= 1
                case .exited:
                    pending -= 1
                case .input(let n):
                    tally.stdinBytes = n
                    fedAll = true
                    // The caller is gone (or broke the protocol): the command goes too.
                    pending = 0
                }
            }
            tasks.cancelAll()
            // The input's count, once its reader stops.
            while !fedAll, let part = await tasks.next() {
                if case .input(let n) = part {
                    tally.stdinBytes = n
                    fedAll = true
                }
            }
            return tally
        }
    }

    /// Feeds the caller's input and controls to the session until the caller goes away; the bytes fed.
    static func feed(_ io: ExecStreamIO, _ input: Inbound, _ outbound: WebSocketOutboundWriter) async -> Int64 {
        var fed: Int64 = 0
        do {
            while let message = try await input.next() {
                switch message {
                case .binary(var buffer):
                    guard buffer.readInteger(as: UInt8.self) == StreamChannel.stdin.rawValue else {
                        throw VivariumError(.badRequest, "input goes on channel 0")
                    }
                    let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
                    try await io.write(bytes)
                    fed += Int64(bytes.count)
                case .text(let text):
                    try await control(try StrictJSON.decode(StreamControl.self, from: Data(text.utf8)), io)
                }
            }
        } catch is CancellationError {
        } catch {
            let e = VivariumError.wrap(error, .badRequest, "bad input")
            try? await send(StreamControl(.error, code: e.code.rawValue, message: e.message), outbound)
        }
        return fed
    }

    static func control(_ c: StreamControl, _ io: ExecStreamIO) async throws {
        switch c.type {
        case .resize:
            guard let rows = c.rows, let columns = c.columns, (1...1000).contains(rows), (1...1000).contains(columns)
            else { throw VivariumError(.invalidArgument, "resize needs rows and columns in 1...1000") }
            try io.resize(rows: rows, columns: columns)
        case .signal:
            guard let s = c.signal, let n = StreamControl.signalNumber(s) else {
                throw VivariumError(
                    .invalidArgument,
                    "signal must be one of \(StreamControl.signals.keys.sorted().joined(separator: ", ")) or 1...64")
            }
            io.signal(n)
        case .closeStdin:
            try await io.closeInput()
        case .exit, .error:
            throw VivariumError(.badRequest, "\(c.type.rawValue) is sent by the daemon, not to it")
        }
    }
}
