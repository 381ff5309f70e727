/// The one error type of Vivarium. `code` is stable snake_case and part of the API contract.
public struct VivariumError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible, Codable {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let invalidArgument = Code(rawValue: "invalid_argument")
        public static let invalidName = Code(rawValue: "invalid_name")
        public static let notFound = Code(rawValue: "not_found")
        public static let imageNotFound = Code(rawValue: "image_not_found")
        public static let alreadyExists = Code(rawValue: "already_exists")
        public static let imageInUse = Code(rawValue: "image_in_use")
        public static let invalidState = Code(rawValue: "invalid_state")
        public static let payloadTooLarge = Code(rawValue: "payload_too_large")
        public static let resourceExhausted = Code(rawValue: "resource_exhausted")
        public static let unavailable = Code(rawValue: "unavailable")
        public static let runtimeFailure = Code(rawValue: "runtime_failure")
        public static let internalError = Code(rawValue: "internal")
        public static let unsupportedMediaType = Code(rawValue: "unsupported_media_type")
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        public static let badRequest = Code(rawValue: "bad_request")
        public static let unauthenticated = Code(rawValue: "unauthenticated")
        public static let forbidden = Code(rawValue: "forbidden")
        public static let rateLimited = Code(rawValue: "rate_limited")
        public static let quotaExceeded = Code(rawValue: "quota_exceeded")
        /// A sealed value that does not decrypt: changed, moved to another name, or its key is gone.
        public static let secretUnreadable = Code(rawValue: "secret_unreadable")
        /// A registry refused, failed or could not be reached.
        public static let registryFailure = Code(rawValue: "registry_failure")
        /// Content that is not what its digest says (a blob, a manifest): refused, nothing stored.
        public static let digestMismatch = Code(rawValue: "digest_mismatch")
        /// An image the admission policy refuses: unsigned or badly signed where signatures are enforced,
        /// or named by tag where a digest is required.
        public static let imageRefused = Code(rawValue: "image_refused")
    }

    public let code: Code
    public let message: String
    public let cause: String?
    /// For `rate_limited`: when to try again (sent as Retry-After).
    public let retryAfterSeconds: Int?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil, retryAfterSeconds: Int? = nil) {
        self.code = code
        self.message = message
        self.cause = cause.map { String(describing: $0) }
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// The one mapping from error codes to HTTP statuses, for every door that speaks HTTP.
    public var httpStatus: Int {
        switch code {
        case .badRequest: 400
        case .invalidArgument, .invalidName: 422
        case .notFound, .imageNotFound: 404
        case .alreadyExists, .imageInUse, .invalidState: 409
        case .payloadTooLarge: 413
        case .unsupportedMediaType: 415
        case .methodNotAllowed: 405
        case .resourceExhausted, .unavailable: 503
        case .unauthenticated: 401
        case .forbidden, .quotaExceeded, .imageRefused: 403
        case .rateLimited: 429
        case .registryFailure, .digestMismatch: 502
        default: 500
        }
    }

    public var description: String {
        if let cause { return "\(code): \(message) (\(cause))" }
        return "\(code): \(message)"
    }

    /// Wraps any error into a VivariumError, keeping an existing one as is.
    public static func wrap(_ error: any Error, _ code: Code = .internalError, _ message: String) -> VivariumError {
        if let e = error as? VivariumError { return e }
        return VivariumError(code, message, cause: error)
    }
}
