import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import VivariumCore

/// The request context of every API call: its request id, where it came from, and (once the
/// authentication middleware ran) its caller.
public struct APIRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<APIRequestContext>
    public let requestID: String
    /// The peer address; a unix socket for local callers.
    public let remote: SocketAddress?
    /// The source a trusted proxy announced in a PROXY protocol header on this connection.
    public let proxied: String?
    /// The connection (its channel), for what a request leaves for the connection's handlers.
    let connection: ObjectIdentifier
    /// The client address as the source middleware determined it ("local" for the unix socket).
    public var source = "unknown"
    /// Set by the authentication middleware: the caller, or why there is none.
    public var authentication: Result<Caller, VivariumError>?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        requestID = randomHex(bytes: 8)
        remote = source.channel.remoteAddress
        proxied = ProxiedSources.get(source.channel)
        connection = ObjectIdentifier(source.channel)
    }

    public var maxUploadSize: Int { API.maxBodyBytes }

    /// Root on the host: the caller came through the unix socket (in its 0700 directory).
    public var isLocal: Bool {
        if case .unixDomainSocket = remote { return true }
        return false
    }

    /// The caller the authentication middleware established; throws why there is none.
    public func requireCaller() throws -> Caller {
        switch authentication {
        case .success(let c): return c
        case .failure(let e): throw e
        case nil: throw VivariumError(.internalError, "the route has no authentication middleware")
        }
    }

    /// The caller as far as it is known before authentication: for records of refused requests.
    var anonymous: Caller { .anonymous(source: source, requestID: requestID, door: .rest) }
}
