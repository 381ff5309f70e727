/// The HTTP methods the API uses.
public enum HTTPMethod: String, Sendable, CaseIterable, Codable {
    case get = "GET"
    case post = "POST"
    case put = "PUT"
    case delete = "DELETE"
}

/// An empty request or response body.
public struct Empty: Codable, Sendable, Equatable {
    public init() {}
}

/// One route of the REST API, untyped: its method, path pattern (`{name}` placeholders, as in the
/// OpenAPI document) and the action it asks for. The server registers these and the client builds its
/// requests from them, so the two cannot drift apart.
public struct Route: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// JSON request and response bodies.
        case json
        /// A WebSocket upgrade (GET).
        case webSocket
        /// A document served as is.
        case document
        /// Raw bytes answered (a file's content), not JSON.
        case bytes
    }

    public let method: HTTPMethod
    public let path: String
    public let action: Action
    /// The status of a successful answer (101 for a WebSocket upgrade).
    public let status: Int
    public let kind: Kind

    public init(_ method: HTTPMethod, _ path: String, _ action: Action, status: Int = 200, kind: Kind = .json) {
        self.method = method
        self.path = path
        self.action = action
        self.status = status
        self.kind = kind
    }

    public var description: String { "\(method.rawValue) \(path)" }

    /// Whether a concrete path (no query) is this route's path, a placeholder standing for one segment.
    public func matches(path concrete: Substring) -> Bool {
        let a = path.split(separator: "/", omittingEmptySubsequences: false)
        let b = concrete.split(separator: "/", omittingEmptySubsequences: false)
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { t, c in (t.hasPrefix("{") && t.hasSuffix("}") && !c.isEmpty) || t == c }
    }

    /// The names of the path's `{placeholders}`, in order.
    public var parameters: [String] {
        path.split(separator: "/").compactMap { part in
            part.hasPrefix("{") && part.hasSuffix("}") ? String(part.dropFirst().dropLast()) : nil
        }
    }

    /// The concrete path: placeholders replaced by percent-encoded values, then the query (pairs with a
    /// nil value are left out).
    public func path(_ values: [String: String] = [:], query: [(String, String?)] = []) -> String {
        var out = path.split(separator: "/", omittingEmptySubsequences: false).map { part -> String in
            guard part.hasPrefix("{"), part.hasSuffix("}") else { return String(part) }
            return (values[String(part.dropFirst().dropLast())] ?? "").percentEncoded
        }.joined(separator: "/")
        let q = query.compactMap { k, v in v.map { "\(k)=\($0.percentEncoded)" } }
        if !q.isEmpty { out += "?" + q.joined(separator: "&") }
        return out
    }
}

/// A JSON route with its request and response types.
public struct Endpoint<Request: Codable & Sendable, Response: Codable & Sendable>: Sendable {
    public let route: Route
    public init(_ method: HTTPMethod, _ path: String, _ action: Action, status: Int = 200) {
        route = Route(method, path, action, status: status)
    }
}

/// Every route of the API. The OpenAPI document (`docs/openapi.json`) describes exactly these.
public enum Endpoints {
    public static let health = Endpoint<Empty, HealthInfo>(.get, "/healthz", .health)
    public static let openAPI = Route(.get, "/v1/openapi.json", .apiDescribe, kind: .document)
    public static let jwks = Endpoint<Empty, JWKSet>(.get, "/.well-known/jwks.json", .jwks)

    public static let tokenExchange = Endpoint<TokenRequest, TokenPair>(.post, "/v1/tokens", .tokenExchange)
    public static let tokenIssue = Endpoint<IssueTokenRequest, TokenPair>(
        .post, "/v1/tokens/issue", .tokenIssue, status: 201)
    public static let tokenRevoke = Endpoint<RevokeRequest, Empty>(
        .post, "/v1/tokens/revoke", .tokenRevoke, status: 204)
    public static let keysRotate = Endpoint<Empty, JWKSet>(.post, "/v1/keys/rotate", .keysRotate)

    public static let tenantList = Endpoint<Empty, Page<TenantInfo>>(.get, "/v1/tenants", .tenantList)
    public static let tenantCreate = Endpoint<CreateTenantRequest, TenantInfo>(
        .post, "/v1/tenants", .tenantCreate, status: 201)
    public static let tenantDelete = Endpoint<Empty, Empty>(
        .delete, "/v1/tenants/{name}", .tenantDelete, status: 204)
    public static let tenantUpdate = Endpoint<UpdateTenantRequest, TenantInfo>(
        .post, "/v1/tenants/{name}", .tenantUpdate)

    public static let principalList = Endpoint<Empty, Page<PrincipalInfo>>(.get, "/v1/principals", .principalList)
    public static let principalCreate = Endpoint<CreatePrincipalRequest, PrincipalInfo>(
        .post, "/v1/principals", .principalCreate, status: 201)
    public static let principalDelete = Endpoint<Empty, Empty>(
        .delete, "/v1/principals/{name}", .principalDelete, status: 204)
    public static let principalDisable = Endpoint<Empty, PrincipalInfo>(
        .post, "/v1/principals/{name}/disable", .principalDisable)
    public static let apiKeyCreate = Endpoint<CreateAPIKeyRequest, APIKeyInfo>(
        .post, "/v1/principals/{name}/keys", .apiKeyCreate, status: 201)

    public static let sandboxList = Endpoint<Empty, Page<SandboxInfo>>(.get, "/v1/sandboxes", .sandboxList)
    public static let sandboxCreate = Endpoint<CreateSandboxRequest, SandboxInfo>(
        .post, "/v1/sandboxes", .sandboxCreate, status: 201)
    public static let sandboxRun = Endpoint<RunRequest, RunResult>(.post, "/v1/sandboxes/run", .sandboxRun)
    public static let sandboxGet = Endpoint<Empty, SandboxInfo>(.get, "/v1/sandboxes/{name}", .sandboxGet)
    public static let sandboxDelete = Endpoint<Empty, Empty>(
        .delete, "/v1/sandboxes/{name}", .sandboxDelete, status: 204)
    public static let sandboxStart = Endpoint<Empty, SandboxInfo>(
        .post, "/v1/sandboxes/{name}/start", .sandboxStart)
    public static let sandboxStop = Endpoint<Empty, SandboxInfo>(.post, "/v1/sandboxes/{name}/stop", .sandboxStop)
    public static let sandboxExec = Endpoint<ExecRequest, ExecResult>(
        .post, "/v1/sandboxes/{name}/exec", .sandboxExec)
    /// A streamed exec over a WebSocket: `StreamExecRequest` first, then `StreamChannel` frames and
    /// `StreamControl` messages.
    public static let sandboxExecStream = Route(
        .get, "/v1/sandboxes/{name}/exec/stream", .sandboxExec, status: 101, kind: .webSocket)
    /// Detached processes: started, listed, their output read (`id` in the query) or followed, signalled,
    /// fed input.
    public static let processStart = Endpoint<StartProcessRequest, ProcessSummary>(
        .post, "/v1/sandboxes/{name}/processes", .sandboxExec, status: 201)
    public static let processList = Endpoint<Empty, Page<ProcessSummary>>(
        .get, "/v1/sandboxes/{name}/processes", .processList)
    public static let processLogs = Endpoint<Empty, ProcessLogs>(
        .get, "/v1/sandboxes/{name}/processes/logs", .processList)
    public static let processFollow = Route(
        .get, "/v1/sandboxes/{name}/processes/follow", .processList, status: 101, kind: .webSocket)
    public static let processSignal = Endpoint<SignalProcessRequest, ProcessSummary>(
        .post, "/v1/sandboxes/{name}/processes/signal", .processControl)
    public static let processInput = Endpoint<ProcessInputRequest, ProcessSummary>(
        .post, "/v1/sandboxes/{name}/processes/input", .processControl)
    /// A file's bytes (`GET`, answered as `application/octet-stream`), or written from the request's
    /// bytes (`PUT`); `path` in the query.
    public static let fileRead = Route(.get, "/v1/sandboxes/{name}/files", .filesRead, kind: .bytes)
    public static let fileWrite = Endpoint<Empty, FileInfo>(
        .put, "/v1/sandboxes/{name}/files", .filesWrite, status: 201)
    public static let fileDelete = Endpoint<Empty, Empty>(
        .delete, "/v1/sandboxes/{name}/files", .filesWrite, status: 204)
    public static let fileStat = Endpoint<Empty, FileInfo>(.get, "/v1/sandboxes/{name}/files/stat", .filesRead)
    public static let fileList = Endpoint<Empty, Page<FileInfo>>(.get, "/v1/sandboxes/{name}/files/list", .filesRead)
    public static let fileMkdir = Endpoint<MakeDirectoryRequest, FileInfo>(
        .post, "/v1/sandboxes/{name}/files/mkdir", .filesWrite, status: 201)
    public static let fileMove = Endpoint<MoveRequest, FileInfo>(.post, "/v1/sandboxes/{name}/files/move", .filesWrite)
    public static let sandboxNetwork = Endpoint<SetNetworkRequest, SandboxInfo>(
        .post, "/v1/sandboxes/{name}/network", .sandboxNetwork)
    public static let routeCreate = Endpoint<ExposeRequest, RouteInfo>(
        .post, "/v1/sandboxes/{name}/routes", .routeCreate, status: 201)
    public static let routeList = Endpoint<Empty, Page<RouteInfo>>(.get, "/v1/routes", .routeList)
    /// `{name}` is the route's key: its host name, or `tcp-HOSTPORT`.
    public static let routeDelete = Endpoint<Empty, Empty>(.delete, "/v1/routes/{name}", .routeDelete, status: 204)

    public static let imageList = Endpoint<Empty, Page<ImageInfo>>(.get, "/v1/images", .imageList)
    /// The caller's tenant's pulls in flight, with their progress.
    public static let imagePulls = Endpoint<Empty, Page<PullStatus>>(.get, "/v1/images/pulls", .imageList)
    public static let imageImport = Endpoint<ImportImageRequest, ImageInfo>(
        .post, "/v1/images", .imageImport, status: 201)
    /// The body is the archive itself (`application/x-tar`, gzip or plain): `?name=` and `?shared=true`.
    public static let imageUpload = Endpoint<Empty, ImageInfo>(
        .post, "/v1/images/upload", .imageUpload, status: 201)
    public static let imagePull = Endpoint<PullImageRequest, ImageInfo>(
        .post, "/v1/images/pull", .imagePull, status: 201)
    public static let imageDelete = Endpoint<Empty, Empty>(.delete, "/v1/images/{name}", .imageDelete, status: 204)
    public static let imageSBOM = Endpoint<PullImageRequest, CycloneDX>(.post, "/v1/images/sbom", .imageSBOM)
    public static let imageScan = Endpoint<PullImageRequest, ScanReport>(.post, "/v1/images/scan", .imageScan)
    public static let imageInspect = Endpoint<PullImageRequest, ImageDetails>(
        .post, "/v1/images/inspect", .imageInspect)
    public static let imagePush = Endpoint<PushImageRequest, ImageDetails>(.post, "/v1/images/push", .imagePush)
    public static let vulndbImport = Endpoint<ImportVulnDBRequest, VulnDBInfo>(
        .post, "/v1/vulndb", .vulndbImport, status: 201)
    public static let imageSigningPayload = Endpoint<PullImageRequest, SigningPayload>(
        .post, "/v1/images/signing-payload", .imageSigningPayload)
    public static let imageSign = Endpoint<PublishSignatureRequest, SigningPayload>(
        .post, "/v1/images/signatures", .imageSign, status: 201)

    /// The body is the value itself (raw bytes, up to 4 MiB): `?sandbox=NAME` and `?label=K=V`
    /// (repeatable) bind it, `?gid=N` names the group that may read its file. Each call is a new version.
    public static let secretSet = Endpoint<Empty, SecretInfo>(.post, "/v1/secrets/{name}", .secretSet, status: 201)
    public static let secretList = Endpoint<Empty, Page<SecretInfo>>(.get, "/v1/secrets", .secretList)
    /// `?prune=true` deletes the older versions only.
    public static let secretDelete = Endpoint<Empty, Empty>(.delete, "/v1/secrets/{name}", .secretDelete, status: 204)
    public static let kmsShow = Endpoint<Empty, KMSInfo>(.get, "/v1/kms", .kmsShow)
    public static let kmsRotate = Endpoint<Empty, KMSInfo>(.post, "/v1/kms/rotate", .kmsRotate)
    /// `{name}` is the key's id.
    public static let kmsRetire = Endpoint<Empty, KMSInfo>(.post, "/v1/kms/keys/{name}/retire", .kmsRetire)

    public static let auditList = Endpoint<Empty, Page<AuditRecord>>(.get, "/v1/audit", .auditList)
    /// New records as they are appended: one JSON text message per record.
    public static let auditFollow = Route(.get, "/v1/audit/follow", .auditFollow, status: 101, kind: .webSocket)
    public static let auditCheckpoints = Endpoint<Empty, AuditCheckpointList>(
        .get, "/v1/audit/checkpoints", .auditCheckpoints)

    /// Every route, in the order of the OpenAPI document.
    public static let all: [Route] = [
        health.route, openAPI, jwks.route, tokenExchange.route, tokenIssue.route, tokenRevoke.route,
        keysRotate.route, tenantList.route, tenantCreate.route, tenantDelete.route, tenantUpdate.route,
        principalList.route,
        principalCreate.route, principalDelete.route, principalDisable.route, apiKeyCreate.route, sandboxList.route,
        sandboxCreate.route, sandboxRun.route, sandboxGet.route, sandboxDelete.route, sandboxStart.route,
        sandboxStop.route, sandboxExec.route, sandboxExecStream, processStart.route, processList.route,
        processLogs.route, processFollow, processSignal.route, processInput.route, sandboxNetwork.route, fileRead,
        fileWrite.route,
        fileDelete.route,
        fileStat.route, fileList.route, fileMkdir.route, fileMove.route, routeCreate.route,
        routeList.route, routeDelete.route, imageList.route, imagePulls.route, imageImport.route,
        imageUpload.route, imagePull.route, imageSigningPayload.route, imageSign.route,
        imageSBOM.route, imageScan.route, imageInspect.route, imagePush.route, vulndbImport.route,
        imageDelete.route, secretSet.route, secretList.route, secretDelete.route, kmsShow.route, kmsRotate.route,
        kmsRetire.route,
        auditList.route, auditFollow, auditCheckpoints.route,
    ]
}

extension String {
    /// Percent-encodes a path segment or query value (RFC 3986 unreserved characters stay).
    public var percentEncoded: String {
        var out = ""
        out.reserveCapacity(utf8.count)
        for b in utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(hex[Int(b >> 4)])
                out.unicodeScalars.append(hex[Int(b & 15)])
            }
        }
        return out
    }
}
