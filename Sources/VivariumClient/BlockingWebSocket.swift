import Foundation
import Synchronization
import VivariumCore

#if canImport(Glibc)
    import Glibc
#endif

/// A small blocking WebSocket client (RFC 6455) over the socket client's connection (the unix socket or
/// loopback TCP), for the CLI's streamed exec. One thread receives; any thread may send (sends are
/// serialized). Frames it sends are masked, as a client's must be; pings are answered; messages larger
/// than `maxMessageBytes` end the connection.
public final class BlockingWebSocket: Sendable {
    public enum Message: Sendable, Equatable {
        case text(String)
        case binary([UInt8])
    }

    let fd: Int32
    let sending = Mutex(())
    let receiving: Mutex<Reader>
    let closed = Atomic<Bool>(false)
    public static let maxMessageBytes = 16 << 20

    init(fd: Int32, pending: [UInt8]) {
        self.fd = fd
        receiving = Mutex(Reader(fd: fd, buffer: pending, limit: Self.maxMessageBytes))
    }

    deinit { Glibc.close(fd) }

    /// Opens `path` on the client's daemon and upgrades it; an HTTP answer other than 101 is thrown as
    /// the daemon's error (its code and message).
    public static func connect(_ http: SocketHTTPClient, path: String) throws -> BlockingWebSocket {
        let fd = try http.connect()
        do {
            var keyBytes = [UInt8](repeating: 0, count: 16)
            for i in keyBytes.indices { keyBytes[i] = UInt8.random(in: 0...255) }
            let key = Data(keyBytes).base64EncodedString()
            var head =
                "GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
            if let bearer = http.bearer { head += "Authorization: Bearer \(bearer)\r\n" }
            for (k, v) in http.extraHeaders { head += "\(k): \(v)\r\n" }
            try SocketHTTPClient.writeAll(fd, http.rawPrefix + Array((head + "\r\n").utf8))
            var reader = Reader(fd: fd, buffer: [], limit: 1 << 20)
            let (answer, _) = try reader.readAnswer(requestMethod: "GET")
            guard answer.status == 101 else {
                try APIClient.check(answer)
                throw VivariumError(.unavailable, "the daemon answered HTTP \(answer.status) to the upgrade")
            }
            guard answer.headers["sec-websocket-accept"] == WebSocketHandshake.accept(key: key) else {
                throw VivariumError(.unavailable, "the daemon's WebSocket handshake is wrong")
            }
            return BlockingWebSocket(fd: fd, pending: reader.rest)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    public func send(_ message: Message) throws {
        switch message {
        case .text(let t): try sendFrame(opcode: 1, Array(t.utf8))
        case .binary(let b): try sendFrame(opcode: 2, b)
        }
    }

    /// Sends a close frame (1000, normal closure); the connection closes when the peer answers.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? sendFrame(opcode: 8, [0x03, 0xE8])
    }

    func sendFrame(opcode: UInt8, _ payload: [UInt8]) throws {
        var frame: [UInt8] = [0x80 | opcode]
        let n = payload.count
        if n < 126 {
            frame.append(0x80 | UInt8(n))
        } else if n <= 0xFFFF {
            frame += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) {
                frame.append(UInt8((UInt64(n) >> UInt64(shift)) & 0xFF))
            }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame.reserveCapacity(frame.count + n)
        for (i, b) in payload.enumerated() { frame.append(b ^ mask[i & 3]) }
        try sending.withLock { _ in try SocketHTTPClient.writeAll(fd, frame) }
    }

    /// The next message; nil when the server closed the connection (its close frame, or the end of the
    /// socket).
    public func receive() throws -> Message? {
        try receiving.withLock { reader -> Message? in
            var message: [UInt8] = []
            var messageOpcode: UInt8 = 0
            while true {
                guard try reader.available(2) else { return nil }
                let head = try reader.take(2)
                let fin = head[0] & 0x80 != 0
                let opcode = head[0] & 0x0F
                guard head[1] & 0x80 == 0 else { throw VivariumError(.unavailable, "the daemon sent a masked frame") }
                var length = UInt64(head[1] & 0x7F)
                if length == 126 {
                    length = try reader.take(2).reduce(0) { $0 << 8 | UInt64($1) }
                } else if length == 127 {
                    length = try reader.take(8).reduce(0) { $0 << 8 | UInt64($1) }
                }
                guard length <= UInt64(Self.maxMessageBytes), message.count + Int(length) <= Self.maxMessageBytes else {
                    throw VivariumError(
                        .payloadTooLarge, "the daemon sent a message over \(Self.maxMessageBytes) bytes")
                }
                let payload = try reader.take(Int(length))
                switch opcode {
                case 8:
                    close()
                    return nil
                case 9:
                    try sendFrame(opcode: 10, payload)
                case 10:
                    break
                case 0, 1, 2:
                    if opcode != 0 { messageOpcode = opcode }
                    message += payload
                    if fin {
                        return messageOpcode == 1 ? .text(String(decoding: message, as: UTF8.self)) : .binary(message)
                    }
                default:
                    throw VivariumError(.unavailable, "the daemon sent an unknown WebSocket frame (\(opcode))")
                }
            }
        }
    }
}

extension Reader {
    /// Whether `n` bytes can be had before the connection ends (false at a clean end between frames).
    mutating func available(_ n: Int) throws -> Bool {
        while buffer.count < n {
            guard try fill() else {
                if buffer.isEmpty { return false }
                throw VivariumError(.unavailable, "the daemon closed the connection mid-frame")
            }
        }
        return true
    }
}

/// A streamed exec as a client runs it: the request, then output as it arrives, input from a descriptor
/// (read on a thread of its own, ended with `close_stdin`), until the daemon's `exit`.
public enum StreamedExec {
    /// Runs `request` in sandbox `name`; `output` gets each chunk as it arrives, `opened` the socket once
    /// the request is sent (to send resizes and signals). Returns the `exit` message; an `error` message
    /// is thrown as the daemon's error.
    public static func run(
        _ http: SocketHTTPClient, name: String, _ request: StreamExecRequest, input: Int32?,
        opened: (BlockingWebSocket) -> Void = { _ in }, output: (StreamChannel, [UInt8]) throws -> Void
    ) throws -> StreamControl {
        let ws = try BlockingWebSocket.connect(http, path: Endpoints.sandboxExecStream.path(["name": name]))
        defer { ws.close() }
        try ws.send(.text(String(decoding: try WireCoding.encoder().encode(request), as: UTF8.self)))
        opened(ws)
        if let input {
            let reader = Thread {
                var buffer = [UInt8](repeating: 0, count: 1 + (64 << 10))
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress! + 1, $0.count - 1) }
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { break }
                    buffer[0] = StreamChannel.stdin.rawValue
                    guard (try? ws.send(.binary(Array(buffer[0...n])))) != nil else { return }
                }
                try? ws.send(.text(#"{"type":"close_stdin"}"#))
            }
            reader.start()
        }
        return try receive(ws, output: output)
    }

    /// Delivers a stream's output frames until its `exit` message, which it returns; an `error` message
    /// is thrown as the daemon's error.
    public static func receive(_ ws: BlockingWebSocket, output: (StreamChannel, [UInt8]) throws -> Void) throws
        -> StreamControl
    {
        while let message = try ws.receive() {
            switch message {
            case .binary(let b):
                guard let first = b.first, let channel = StreamChannel(rawValue: first) else { continue }
                try output(channel, Array(b.dropFirst()))
            case .text(let t):
                let c = try WireCoding.decoder().decode(StreamControl.self, from: Data(t.utf8))
                switch c.type {
                case .exit: return c
                case .error:
                    throw VivariumError(
                        VivariumError.Code(rawValue: c.code ?? "unavailable"), c.message ?? "the stream failed")
                default: continue
                }
            }
        }
        throw VivariumError(.unavailable, "the stream ended before the command's exit")
    }
}
