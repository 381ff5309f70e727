import Foundation
import HTTPTypes
import Hummingbird

/// Where a bearer token may come from: the Authorization header, or for WebSocket upgrades the
/// `Sec-WebSocket-Protocol: vivarium.bearer, <token>` pair (browsers cannot set headers there).
public enum Bearer {
    static let maxLength = 8192

    public static func fromAuthorization(_ header: String) -> String? {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        guard !token.isEmpty, token.utf8.count <= maxLength, !token.contains(" ") else { return nil }
        return token
    }

    public static func fromWebSocketProtocol(_ header: String) -> String? {
        let items = header.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let i = items.firstIndex(of: "vivarium.bearer"), i + 1 < items.count else { return nil }
        let token = items[i + 1]
        guard !token.isEmpty, token.utf8.count <= maxLength else { return nil }
        return token
    }

    /// The bearer token of a request, from either place.
    static func of(_ request: Request) -> String? {
        if let h = request.headers[.authorization] { return fromAuthorization(h) }
        return request.headers[.secWebSocketProtocol].flatMap(fromWebSocketProtocol)
    }
}
