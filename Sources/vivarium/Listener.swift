import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import VivariumAPI
import VivariumCore

/// The TCP listener: TLS, or plain HTTP on a loopback address when explicitly asked for.
struct Listener {
    let host: String
    let port: Int
    let insecure: Bool

    static func parse(_ s: String, insecure: Bool) throws -> Listener {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port)
        else { throw VivariumError(.invalidArgument, "listen must be HOST:PORT") }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let l = Listener(host: host, port: port, insecure: insecure)
        if insecure && !l.isLoopback {
            throw VivariumError(
                .invalidArgument, "plain HTTP is served only on a loopback address (127.0.0.0/8 or ::1), not \(host)")
        }
        return l
    }

    var isLoopback: Bool {
        if host == "::1" || host == "localhost" { return true }
        let octets = host.split(separator: ".")
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    func application(router: Router<APIRequestContext>, tls: TLSIdentity?, trust: SourceTrust, logger: Logger) throws
        -> any Service
    {
        if !insecure {
            guard let tls else { throw VivariumError(.invalidArgument, "the TLS listener needs a certificate") }
            let (h, p) = (host, port)
            return Application(
                router: router,
                server: try Self.server(router: router, tls: try tls.serverConfiguration(), trust: trust),
                configuration: .init(address: .hostname(host, port: port), serverName: nil),
                onServerRunning: { channel in
                    let banner = """
                        vivarium: TLS on https://\(h):\(channel.localAddress?.port ?? p)
                          certificate SHA-256 fingerprint \(tls.fingerprint)

                        """
                    FileHandle.standardOutput.write(Data(banner.utf8))
                }, logger: logger)
        }
        return Application(
            router: router, server: try Self.server(router: router, tls: nil, trust: trust),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                let banner =
                    "vivarium: plain HTTP on http://\(host):\(channel.localAddress?.port ?? port) (loopback only)\n"
                FileHandle.standardOutput.write(Data(banner.utf8))
            }, logger: logger)
    }

    /// The API's server: under TLS unless plain HTTP was asked for.
    static func server(router: Router<APIRequestContext>, tls: TLSConfiguration?, trust: SourceTrust) throws
        -> HTTPServerBuilder
    {
        guard let tls else { return API.server(router: router, trust: trust) }
        return API.server(router: router, trust: trust) { try TLSChannel($0, tlsConfiguration: tls) }
    }
}
