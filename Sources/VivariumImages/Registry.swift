import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL
import Synchronization
import VivariumCore
import VivariumOCI
import VivariumOS

import struct Crypto.SHA256

/// A registry login: the daemon keeps it (sealed, in the secret store) and never shows it again.
public struct RegistryLogin: Sendable, Codable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
}

/// What the registry client trusts and whom it may speak plain HTTP to.
public struct RegistryOptions: Sendable {
    /// PEM CA certificates trusted besides the system's.
    public var caFile: String?
    /// `host:port` registries reached over plain HTTP: loopback addresses only.
    public var plainHTTP: Set<String>
    /// Pull mirrors by registry: tried in order, anonymously, for manifests and blobs; the registry
    /// itself answers when none does. Every answer is checked against its digest as the registry's is.
    public var mirrors: [String: [String]]
    public var maxManifestBytes = 4 << 20
    public var maxLayers = 128

    public init(caFile: String? = nil, plainHTTP: Set<String> = [], mirrors: [String: [String]] = [:]) {
        self.caFile = caFile
        self.plainHTTP = plainHTTP
        self.mirrors = mirrors
    }

    /// Whether a registry host is a loopback address (the only kind plain HTTP may reach).
    public static func isLoopback(_ host: String) -> Bool {
        var h = Substring(host)
        if h.hasPrefix("[") {
            h = h.dropFirst().prefix { $0 != "]" }
        } else if let c = h.lastIndex(of: ":") {
            h = h[..<c]
        }
        return h == "localhost" || h == "::1" || h.hasPrefix("127.")
    }
}

/// A client of the OCI distribution API (async-http-client): anonymous, basic and bearer-token auth
/// through the `WWW-Authenticate` challenge, TLS with operator CAs, manifests and blobs checked
/// against their digests while they stream.
public final class RegistryClient: Sendable {
    let http: HTTPClient
    public let options: RegistryOptions
    /// The `Authorization` header that answered a challenge, by registry, repository and scope.
    let authorizations = Mutex<[String: String]>([:])

    public static let manifestTypes = [
        MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest,
    ]

    public init(options: RegistryOptions) throws {
        self.options = options
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca = options.caFile { tls.additionalTrustRoots = [.file(ca)] }
        var c = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .follow(max: 5, allowCycles: false))
        c.timeout = .init(connect: .seconds(10), read: .seconds(60))
        // A registry that refuses connections is reported at once; the caller pulls again.
        c.connectionPool.retryConnectionEstablishment = false
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: c)
    }

    public func shutdown() async throws { try await http.shutdown() }

    func base(_ registry: String) -> String {
        let plain = options.plainHTTP.contains(registry) && RegistryOptions.isLoopback(registry)
        return (plain ? "http://" : "https://")
            + (registry == ImageReference.dockerHub ? "registry-1.docker.io" : registry)
    }

    /// Sends a request, answering an authentication challenge once: basic with the login, or a bearer
    /// token from the challenge's realm (with the login when there is one).
    func send(
        _ method: NIOHTTP1.HTTPMethod, registry: String, repository: String, path: String, accept: [String] = [],
        login: RegistryLogin?, body: HTTPClientRequest.Body? = nil, contentType: String? = nil,
        scope: String = "pull"
    ) async throws -> HTTPClientResponse {
        // A pull asks the registry's mirrors first; the first that has what is asked for answers.
        if method == .GET && scope == "pull" {
            for mirror in options.mirrors[registry] ?? [] {
                do {
                    let r = try await sendTo(
                        mirror, .GET, repository: repository, path: path, accept: accept, login: nil, body: nil,
                        contentType: nil, scope: scope)
                    if r.status == .ok { return r }
                    _ = try? await r.body.collect(upTo: 1 << 16)
                } catch {
                    continue
                }
            }
        }
        return try await sendTo(
            registry, method, repository: repository, path: path, accept: accept, login: login, body: body,
            contentType: contentType, scope: scope)
    }

    func sendTo(
        _ registry: String, _ method: NIOHTTP1.HTTPMethod, repository: String, path: String, accept: [String],
        login: RegistryLogin?, body: HTTPClientRequest.Body?, contentType: String?, scope: String
    ) async throws -> HTTPClientResponse {
        let url = base(registry) + path
        // Per login: one tenant's credentials never answer for another tenant's request.
        let who = login.map { Digest.of(Array("\($0.username)\u{0}\($0.password)".utf8)).hex } ?? "anonymous"
        let key = "\(registry) repository:\(repository):\(scope) \(who)"
        func request(_ auth: String?) -> HTTPClientRequest {
            var r = HTTPClientRequest(url: url)
            r.method = method
            if !accept.isEmpty { r.headers.add(name: "Accept", value: accept.joined(separator: ", ")) }
            if let auth { r.headers.add(name: "Authorization", value: auth) }
            if let contentType { r.headers.add(name: "Content-Type", value: contentType) }
            r.body = body
            return r
        }
        // The header that answered the last challenge goes with the first attempt (an upload is sent once).
        let cached = authorizations.withLock { $0[key] }
        let first = try await execute(request(cached), registry)
        guard first.status == .unauthorized, let challenge = first.headers.first(name: "WWW-Authenticate") else {
            return first
        }
        _ = try? await first.body.collect(upTo: 1 << 16)
        let auth: String
        let c = Challenge.parse(challenge)
        switch c.scheme {
        case "basic":
            guard let login else {
                throw VivariumError(
                    .registryFailure, "registry \(registry) needs a login: vivarium registry login \(registry)")
            }
            auth = "Basic " + Data("\(login.username):\(login.password)".utf8).base64EncodedString()
        case "bearer":
            auth =
                "Bearer "
                + (try await bearerToken(c, registry: registry, repository: repository, scope: scope, login: login))
        default:
            throw VivariumError(
                .registryFailure, "registry \(registry) asks for an unsupported authentication: \(c.scheme)")
        }
        let second = try await execute(request(auth), registry)
        guard second.status != .unauthorized && second.status != .forbidden else {
            throw VivariumError(
                .registryFailure,
                login == nil
                    ? "registry \(registry) refused anonymous access to \(repository): vivarium registry login \(registry)"
                    : "registry \(registry) refused the credentials for \(repository)")
        }
        authorizations.withLock { $0[key] = auth }
        return second
    }

    func execute(_ r: HTTPClientRequest, _ registry: String) async throws -> HTTPClientResponse {
        do { return try await http.execute(r, timeout: .seconds(300)) } catch {
            throw VivariumError(.registryFailure, "registry \(registry) does not answer: \(error)")
        }
    }

    /// A token from the challenge's realm (`token` or `access_token` of its JSON answer).
    func bearerToken(_ c: Challenge, registry: String, repository: String, scope: String, login: RegistryLogin?)
        async throws -> String
    {
        guard let realm = c.params["realm"], var url = URLComponents(string: realm),
            url.scheme == "https" || (url.scheme == "http" && RegistryOptions.isLoopback(url.host ?? ""))
        else { throw VivariumError(.registryFailure, "registry \(registry) names no usable token realm") }
        var items = url.queryItems ?? []
        if let service = c.params["service"] { items.append(URLQueryItem(name: "service", value: service)) }
        items.append(URLQueryItem(name: "scope", value: c.params["scope"] ?? "repository:\(repository):\(scope)"))
        url.queryItems = items
        var r = HTTPClientRequest(url: url.string ?? realm)
        if let login {
            r.headers.add(
                name: "Authorization",
                value: "Basic " + Data("\(login.username):\(login.password)".utf8).base64EncodedString())
        }
        let answer = try await execute(r, registry)
        let body = try await answer.body.collect(upTo: 1 << 20)
        guard answer.status == .ok else {
            throw VivariumError(
                .registryFailure,
                login == nil
                    ? "registry \(registry) gave no token for \(repository) (\(answer.status.code)): a login may be needed"
                    : "registry \(registry) refused the credentials for \(repository) (\(answer.status.code))")
        }
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any]
        guard let token = (json?["token"] ?? json?["access_token"]) as? String, !token.isEmpty else {
            throw VivariumError(.registryFailure, "registry \(registry)'s token answer holds no token")
        }
        return token
    }

    /// A manifest or index, checked against the digest it was asked by, or the one the registry names.
    public struct Fetched: Sendable {
        public var data: Data
        public var mediaType: String
        public var digest: Digest
    }

    public func manifest(_ ref: ImageReference, reference: String, login: RegistryLogin?) async throws -> Fetched {
        guard let registry = ref.registry else { throw VivariumError(.invalidArgument, "\(ref) names no registry") }
        let r = try await send(
            .GET, registry: registry, repository: ref.repository,
            path: "/v2/\(ref.repository)/manifests/\(reference)", accept: Self.manifestTypes, login: login)
        if r.status == .notFound {
            throw VivariumError(.imageNotFound, "\(registry)/\(ref.repository):\(reference) is not in the registry")
        }
        guard r.status == .ok else { throw try await failure(r, "manifest \(reference)", registry) }
        let body: ByteBuffer
        do { body = try await r.body.collect(upTo: options.maxManifestBytes) } catch {
            throw VivariumError(
                .registryFailure, "the manifest of \(ref) is larger than \(options.maxManifestBytes) bytes")
        }
        let data = Data(buffer: body)
        let digest = Digest.of(data)
        let expected =
            Digest(rawValue: reference)
            ?? r.headers.first(name: "Docker-Content-Digest").flatMap(Digest.init(rawValue:))
        if let expected, expected != digest {
            throw VivariumError(
                .digestMismatch, "the manifest of \(ref) is \(digest), not the \(expected) it was asked by or named")
        }
        var type = r.headers.first(name: "Content-Type") ?? ""
        if let semi = type.firstIndex(of: ";") { type = String(type[..<semi]) }
        if !Self.manifestTypes.contains(type),
            let m = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let t = m["mediaType"] as? String
        {
            type = t
        }
        return Fetched(data: data, mediaType: type, digest: digest)
    }

    /// Streams a blob into `path` (created exclusively, removed on failure), hashing it on the way; it is
    /// kept only when its digest and size are the descriptor's.
    public func blob(
        _ ref: ImageReference, _ d: Descriptor, to path: String, login: RegistryLogin?,
        progress: @Sendable (Int) -> Void = { _ in }
    ) async throws {
        guard let registry = ref.registry else { throw VivariumError(.invalidArgument, "\(ref) names no registry") }
        let r = try await send(
            .GET, registry: registry, repository: ref.repository, path: "/v2/\(ref.repository)/blobs/\(d.digest)",
            login: login)
        guard r.status == .ok else { throw try await failure(r, "blob \(d.digest)", registry) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VivariumError(.internalError, "cannot create \(path): errno \(errno)") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(path) }
        }
        var hash = SHA256()
        var size: Int64 = 0
        for try await chunk in r.body {
            size += Int64(chunk.readableBytes)
            guard size <= d.size else {
                throw VivariumError(.digestMismatch, "blob \(d.digest) of \(ref) is larger than its \(d.size) bytes")
            }
            try chunk.withUnsafeReadableBytes { raw in
                hash.update(bufferPointer: raw)
                try Unpacker.writeAll(fd, raw, path)
            }
            progress(chunk.readableBytes)
        }
        let got = Digest(sha256: hash.finalize())
        guard got == d.digest, size == d.size else {
            throw VivariumError(
                .digestMismatch, "blob \(d.digest) of \(ref) arrived as \(got) (\(size) bytes): it is refused")
        }
        guard fsync(fd) == 0 else { throw VivariumError(.unavailable, "cannot sync \(path): errno \(errno)") }
        ok = true
    }

    /// A small blob into memory (at most `limit` bytes), checked against its digest.
    public func blobData(_ ref: ImageReference, _ d: Descriptor, limit: Int, login: RegistryLogin?) async throws -> Data
    {
        guard let registry = ref.registry else { throw VivariumError(.invalidArgument, "\(ref) names no registry") }
        guard d.size <= limit else {
            throw VivariumError(.registryFailure, "blob \(d.digest) of \(ref) is larger than \(limit) bytes")
        }
        let r = try await send(
            .GET, registry: registry, repository: ref.repository, path: "/v2/\(ref.repository)/blobs/\(d.digest)",
            login: login)
        guard r.status == .ok else { throw try await failure(r, "blob \(d.digest)", registry) }
        let body: ByteBuffer
        do { body = try await r.body.collect(upTo: limit) } catch {
            throw VivariumError(.digestMismatch, "blob \(d.digest) of \(ref) is larger than its \(d.size) bytes")
        }
        let data = Data(buffer: body)
        guard Digest.of(data) == d.digest, data.count == d.size else {
            throw VivariumError(
                .digestMismatch, "blob \(d.digest) of \(ref) arrived as \(Digest.of(data)): it is refused")
        }
        return data
    }

    /// The referrers of `digest` (OCI 1.1), or nil when the registry does not offer the API.
    public func referrers(_ ref: ImageReference, of digest: Digest, login: RegistryLogin?) async throws -> Index? {
        guard let registry = ref.registry else { throw VivariumError(.invalidArgument, "\(ref) names no registry") }
        let r = try await send(
            .GET, registry: registry, repository: ref.repository, path: "/v2/\(ref.repository)/referrers/\(digest)",
            accept: [MediaType.ociIndex], login: login)
        guard r.status == .ok else {
            _ = try? await r.body.collect(upTo: 1 << 16)
            return nil
        }
        let body: ByteBuffer
        do { body = try await r.body.collect(upTo: options.maxManifestBytes) } catch {
            throw VivariumError(
                .registryFailure, "the referrers of \(digest) are more than \(options.maxManifestBytes) bytes")
        }
        var type = r.headers.first(name: "Content-Type") ?? ""
        if let semi = type.firstIndex(of: ";") { type = String(type[..<semi]) }
        guard type == MediaType.ociIndex, let index = try? JSONDecoder().decode(Index.self, from: Data(buffer: body))
        else { return nil }
        return index
    }

    /// Uploads a blob unless the repository has it (monolithic upload: POST, then PUT with the digest).
    public func pushBlob(_ ref: ImageReference, _ data: Data, login: RegistryLogin?) async throws -> Descriptor {
        let d = Descriptor(mediaType: "application/octet-stream", digest: Digest.of(data), size: Int64(data.count))
        try await pushBlob(ref, d, data, login: login)
        return d
    }

    /// Uploads a stored blob (mapped from its file, not read into memory) unless the repository has it.
    public func pushBlob(_ ref: ImageReference, file: String, _ d: Descriptor, login: RegistryLogin?) async throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped) } catch {
            throw VivariumError(.internalError, "cannot read blob \(d.digest) from the store: \(error)")
        }
        guard data.count == d.size else {
            throw VivariumError(.internalError, "the stored blob \(d.digest) is not \(d.size) bytes")
        }
        try await pushBlob(ref, d, data, login: login)
    }

    func pushBlob(_ ref: ImageReference, _ d: Descriptor, _ data: Data, login: RegistryLogin?) async throws {
        guard let registry = ref.registry else { throw VivariumError(.invalidArgument, "\(ref) names no registry") }
        let digest = d.digest
        let head = try await send(
            .HEAD, registry: registry, repository: ref.repository, path: "/v2/\(ref.repository)/blobs/\(digest)",
            login: login, scope: "pull,push")
        if head.status == .ok { return }
        let start = try await send(
            .POST, registry: registry, repository: ref.repository, path: "/v2/\(ref.repository)/blobs/uploads/",
            login: login, scope: "pull,push")
        _ = try? await start.body.collect(upTo: 1 << 16)
        guard start.status == .accepted, let location = start.headers.first(name: "Location") else {
            throw VivariumError(
                .registryFailure, "registry \(registry) refused an upload to \(ref.repository) (\(start.status.code))")
        }
        // The location is absolute or a path on the registry, with or without a query.
        var path = location
        if let u = URLComponents(string: location), u.host != nil {
            guard u.host == URLComponents(string: base(registry))?.host else {
                throw VivariumError(.registryFailure, "registry \(registry) sent an upload location on another host")
            }
            path = u.percentEncodedPath + (u.percentEncodedQuery.map { "?" + $0 } ?? "")
        }
        path += (path.contains("?") ? "&" : "?") + "digest=" + digest.rawValue
        let put = try await send(
            .PUT, registry: registry, repository: ref.repository, path: path, login: login,
            body: .bytes(ByteBuffer(data: data)), contentType: "application/octet-stream", scope: "pull,push")
        guard put.status == .created else { throw try await failure(put, "the upload of \(digest)", registry) }
    }

    /// Puts a manifest under a tag (or digest).
    public func pushManifest(
        _ ref: ImageReference, reference: String, _ data: Data, mediaType: String, login: RegistryLogin?
    ) async throws {
        guard let registry = ref.registry else { throw VivariumError(.invalidArgument, "\(ref) names no registry") }
        let r = try await send(
            .PUT, registry: registry, repository: ref.repository, path: "/v2/\(ref.repository)/manifests/\(reference)",
            login: login, body: .bytes(ByteBuffer(data: data)), contentType: mediaType, scope: "pull,push")
        guard r.status == .created else { throw try await failure(r, "manifest \(reference)", registry) }
    }

    func failure(_ r: HTTPClientResponse, _ what: String, _ registry: String) async throws -> VivariumError {
        let body = (try? await r.body.collect(upTo: 1 << 16)).map { String(buffer: $0) } ?? ""
        return VivariumError(
            .registryFailure, "registry \(registry) answered \(r.status.code) for \(what): \(body.prefix(300))")
    }
}

/// A `WWW-Authenticate` challenge: its scheme (lower-cased) and its parameters.
struct Challenge: Equatable {
    var scheme: String
    var params: [String: String]

    static func parse(_ header: String) -> Challenge {
        let s = header.trimmingCharacters(in: .whitespaces)
        let scheme = String(s.prefix { $0 != " " }).lowercased()
        var params: [String: String] = [:]
        var rest = s.dropFirst(scheme.count)[...]
        while let eq = rest.firstIndex(of: "=") {
            let key = rest[..<eq].trimmingCharacters(in: CharacterSet(charactersIn: ", ")).lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let c = rest.first, c != "\"" {
                    if c == "\\" { rest = rest.dropFirst() }
                    if let c = rest.first { value.append(c) }
                    rest = rest.dropFirst()
                }
                rest = rest.dropFirst()
            } else {
                value = String(rest.prefix { $0 != "," })
                rest = rest.dropFirst(value.count)
            }
            params[key] = value.trimmingCharacters(in: .whitespaces)
        }
        return Challenge(scheme: scheme, params: params)
    }
}
