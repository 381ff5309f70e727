import Crypto
import Foundation
import Logging
import Testing
import VivariumAudit
import VivariumCore
import VivariumStore
import VivariumTestSupport

@testable import VivariumAuth

/// Tokens forged the wrong way, each refused (THREATS.md T8).
@Suite struct TokenTests {
    struct Fixture {
        let dir: String
        let store: SQLiteStore
        let tokens: TokenService
        let member: PrincipalRecord

        static func make(_ config: TokenService.Configuration = .init()) async throws -> Fixture {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
                "vivarium-tok-\(randomHex(bytes: 6))"
            ).path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let store = try SQLiteStore(path: dir + "/v.db")
            let keys = try await SigningKeys(dir: dir + "/keys", maxTokenLifetime: config.maxAccessLifetime)
            let tokens = TokenService(config: config, keys: keys, store: store, logger: Logger(label: "test"))
            await tokens.refreshRevocations()
            let member = PrincipalRecord(
                id: "p-" + randomHex(bytes: 4), tenant: "default", name: ResourceName(rawValue: "ann")!, kind: .user,
                role: .member, disabled: false, createdAt: Date())
            try await store.insertPrincipal(member, audit: AuditEvent("test"))
            return Fixture(dir: dir, store: store, tokens: tokens, member: member)
        }

        func cleanup() { try? FileManager.default.removeItem(atPath: dir) }

        func access(now: Date = Date(), ttl: TimeInterval? = nil) async throws -> (String, AccessClaims) {
            try await tokens.issueAccess(
                member, scopes: [.exec, .sandboxesRead], boundSandbox: nil, family: nil, ttl: ttl, now: now)
        }
    }

    func expectRefused(
        _ f: Fixture, _ token: String, now: Date = Date(), sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        do {
            _ = try await f.tokens.verify(token, now: now)
            Issue.record("forged token accepted", sourceLocation: sourceLocation)
        } catch let e as VivariumError {
            #expect(e.code == .unauthenticated, sourceLocation: sourceLocation)
            #expect(e.message == "invalid or expired credentials", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    static func b64(_ d: Data) -> String {
        d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
    static func b64(_ json: [String: Any]) -> String { b64(try! JSONSerialization.data(withJSONObject: json)) }
    static func payload(of token: String) -> [String: Any] { part(token, 1) }
    /// A JSON part of a token: 0 the header, 1 the claims.
    static func part(_ token: String, _ i: Int) -> [String: Any] {
        var s = String(token.split(separator: ".")[i]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(
            of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return try! JSONSerialization.jsonObject(with: Data(base64Encoded: s)!) as! [String: Any]
    }

    @Test func aValidTokenNamesItsPrincipalAndScopes() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let (token, claims) = try await f.access()
        let p = try await f.tokens.verify(token)
        #expect(p.id == f.member.id && p.tenant == "default" && p.role == .member)
        #expect(p.scopes == [.exec, .sandboxesRead])
        #expect(p.tokenID == claims.jti.value)
        #expect(claims.exp.value.timeIntervalSince(claims.iat.value) == 900)
    }

    @Test func forgedHeadersAreRefused() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let (token, _) = try await f.access()
        let parts = token.split(separator: ".").map(String.init)
        let kid = f.tokens.keys.current.kid
        // alg: none, no signature.
        await expectRefused(f, Self.b64(["alg": "none", "typ": "JWT", "kid": kid]) + "." + parts[1] + ".")
        // HS256 keyed with our public key (the classic algorithm confusion).
        let pub = f.tokens.keys.current.publicKey.rawRepresentation
        for secret in [pub, Data(Self.b64(pub).utf8)] {
            let header = Self.b64(["alg": "HS256", "typ": "JWT", "kid": kid])
            let mac = HMAC<SHA256>.authenticationCode(
                for: Data((header + "." + parts[1]).utf8), using: SymmetricKey(data: secret))
            await expectRefused(f, header + "." + parts[1] + "." + Self.b64(Data(mac)))
        }
        // Unknown kid, and no kid at all, with an otherwise valid signature by another key.
        let other = try await SigningKeys(dir: f.dir + "/other-keys", maxTokenLifetime: 3600)
        let stranger = TokenService(config: .init(), keys: other, store: f.store, logger: Logger(label: "x"))
        let (foreign, _) = try await stranger.issueAccess(f.member, scopes: [.exec], boundSandbox: nil, family: nil)
        await expectRefused(f, foreign)
        // No kid, validly signed by our own current key: a verifier falling back to a default key would
        // accept it.
        func signed(_ header: [String: Any]) throws -> String {
            let unsigned = Self.b64(header) + "." + token.split(separator: ".")[1]
            return unsigned + "." + Self.b64(try f.tokens.keys.current.privateKey.signature(for: Data(unsigned.utf8)))
        }
        _ = try await f.tokens.verify(try signed(["alg": "EdDSA", "typ": "JWT", "kid": f.tokens.keys.current.kid]))
        await expectRefused(f, try signed(["alg": "EdDSA", "typ": "JWT"]))
        // Garbage.
        for junk in ["", "a.b", "a.b.c", String(repeating: "x", count: 10000), token + "x"] {
            await expectRefused(f, junk)
        }
    }

    @Test func tamperedPayloadIsRefused() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let (token, _) = try await f.access()
        let parts = token.split(separator: ".").map(String.init)
        var payload = Self.payload(of: token)
        payload["scopes"] = Scope.all.map(\.rawValue)
        payload["tenant"] = "other"
        await expectRefused(f, parts[0] + "." + Self.b64(payload) + "." + parts[2])
    }

    @Test func timesIssuerAndAudienceAreEnforced() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let (expired, _) = try await f.access(now: Date().addingTimeInterval(-3600))
        await expectRefused(f, expired)
        let (future, _) = try await f.access(now: Date().addingTimeInterval(600))
        await expectRefused(f, future)
        for cfg in [TokenService.Configuration(issuer: "evil"), TokenService.Configuration(audience: "other-api")] {
            let twin = TokenService(config: cfg, keys: f.tokens.keys, store: f.store, logger: Logger(label: "x"))
            let (t, _) = try await twin.issueAccess(f.member, scopes: [.exec], boundSandbox: nil, family: nil)
            await expectRefused(f, t)
        }
        // The lifetime is capped.
        let (_, long) = try await f.access(ttl: 86400)
        #expect(long.exp.value.timeIntervalSince(long.iat.value) == 3600)
    }

    @Test func revocationTakesEffectOnTheNextRequest() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let (a, ca) = try await f.access()
        let (b, _) = try await f.access()
        _ = try await f.tokens.verify(a)  // now cached
        try await f.tokens.revoke(.jti, ca.jti.value, tenant: nil)
        await expectRefused(f, a)
        _ = try await f.tokens.verify(b)
        try await f.tokens.revoke(.principal, f.member.id, tenant: nil)
        await expectRefused(f, b)
        // A token issued after the principal-wide revocation works again.
        let (c, _) = try await f.access(now: Date().addingTimeInterval(1))
        _ = try await f.tokens.verify(c, now: Date().addingTimeInterval(2))
        // Tenant-wide.
        try await f.tokens.revoke(.tenant, "default", tenant: nil, now: Date().addingTimeInterval(3))
        await expectRefused(f, c, now: Date().addingTimeInterval(4))
    }

    @Test func aDisabledPrincipalIsRefused() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let (t, _) = try await f.access()
        _ = try await f.tokens.verify(t)
        try await f.tokens.disable(f.member)
        await expectRefused(f, t)
        let (fresh, _) = try await f.access(now: Date().addingTimeInterval(1))
        await expectRefused(f, fresh, now: Date().addingTimeInterval(2))
    }

    @Test func refreshRotatesAndAReplayRevokesTheFamily() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let first = try await f.tokens.issuePair(
            f.member, scopes: [.exec], boundSandbox: nil, family: nil, action: "test")
        // Neither kind of token works as the other.
        await expectRefused(f, first.refreshToken)
        await expectCode(.unauthenticated) { try await f.tokens.refresh(first.accessToken) }
        let second = try await f.tokens.refresh(first.refreshToken)
        _ = try await f.tokens.verify(second.accessToken)
        // Replay of the used token: refused, and the pair it produced dies with the family.
        await expectCode(.unauthenticated) { try await f.tokens.refresh(first.refreshToken) }
        await expectRefused(f, second.accessToken)
        await expectCode(.unauthenticated) { try await f.tokens.refresh(second.refreshToken) }
        // Another family of the same principal is untouched.
        let other = try await f.tokens.issuePair(
            f.member, scopes: [.exec], boundSandbox: nil, family: nil, action: "test")
        _ = try await f.tokens.verify(other.accessToken)
    }

    @Test func revocationFailsClosed() async throws {
        let f = try await Fixture.make(.init(revocationStaleness: 30))
        defer { f.cleanup() }
        let (t, _) = try await f.access()
        _ = try await f.tokens.verify(t)
        // The store cannot be read any more: once the loaded state is stale, nothing passes.
        try FileManager.default.removeItem(atPath: f.dir + "/v.db")
        let broken = TokenService(
            config: f.tokens.config, keys: f.tokens.keys, store: BrokenStore(), logger: Logger(label: "x"))
        await broken.refreshRevocations()
        await expectCode(.unavailable) { try await broken.verify(t) }
        do {
            _ = try await f.tokens.verify(t, now: Date().addingTimeInterval(31))
            Issue.record("stale revocation state let a token through")
        } catch let e as VivariumError {
            #expect(e.code == .unavailable)
        }
    }

    @Test func rotatedKeysKeepVerifyingAndAreServedAsJWKS() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let (old, _) = try await f.access()
        let oldKid = f.tokens.keys.current.kid
        try await f.tokens.keys.rotate()
        #expect(f.tokens.keys.current.kid != oldKid)
        _ = try await f.tokens.verify(old)
        let (new, _) = try await f.access()
        #expect(Self.part(new, 0)["kid"] as? String == f.tokens.keys.current.kid, "new tokens use the new key")
        #expect(Self.part(old, 0)["kid"] as? String == oldKid)
        let jwks = f.tokens.keys.jwks.keys
        #expect(Set(jwks.map(\.kid)) == [oldKid, f.tokens.keys.current.kid])
        #expect(jwks.allSatisfy { $0.kty == "OKP" && $0.crv == "Ed25519" })
        // As served: public keys only, no private part ("d") in any key.
        let served = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(f.tokens.keys.jwks))
        let keys = try #require((served as? [String: Any])?["keys"] as? [[String: Any]])
        #expect(keys.count == 2 && keys.allSatisfy { $0["d"] == nil && ($0["x"] as? String)?.count == 43 })
        // Private keys are 0600 on disk; reloading finds both.
        var st = stat()
        #expect(stat(f.dir + "/keys/\(oldKid).ed25519", &st) == 0 && st.st_mode & 0o077 == 0)
        let reloaded = try await SigningKeys(dir: f.dir + "/keys", maxTokenLifetime: 3600)
        #expect(reloaded.all.map(\.kid) == f.tokens.keys.all.map(\.kid))
    }

    @Test func apiKeysAreExchangedOnlyWhenValid() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let key = try await f.tokens.createAPIKey(for: f.member, scopes: [.exec, .tenantsAdmin], ttl: 3600)
        let pair = try await f.tokens.exchange(apiKey: key)
        let p = try await f.tokens.verify(pair.accessToken)
        #expect(p.scopes == [.exec], "a member cannot hold tenants:admin even if the key names it")
        let parts = key.split(separator: "_")
        let wrong = "viv_\(parts[1])_" + String(repeating: "0", count: 64)
        await expectCode(.unauthenticated) { try await f.tokens.exchange(apiKey: wrong) }
        let expired = try await f.tokens.createAPIKey(
            for: f.member, scopes: [.exec], ttl: 1, now: Date().addingTimeInterval(-10))
        await expectCode(.unauthenticated) { try await f.tokens.exchange(apiKey: expired) }
        // Only the hash is stored.
        let db = try Data(contentsOf: URL(fileURLWithPath: f.dir + "/v.db"))
        let wal = (try? Data(contentsOf: URL(fileURLWithPath: f.dir + "/v.db-wal"))) ?? Data()
        #expect(db.range(of: Data(parts[2].utf8)) == nil && wal.range(of: Data(parts[2].utf8)) == nil)
    }
}

extension TokenTests {
    @Test func principalRevocationOutlivesTheAccessTokenLifetime() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let t0 = Date()
        let session = try await f.tokens.issuePair(
            f.member, scopes: [.exec], boundSandbox: nil, family: nil, action: "test", now: t0)
        let key = try await f.tokens.createAPIKey(for: f.member, scopes: [.exec], ttl: 86400, now: t0)
        try await f.tokens.revoke(.principal, f.member.id, tenant: nil, now: t0.addingTimeInterval(1))
        // Two hours later every access token of that time has expired, and the revocation still holds.
        let later = t0.addingTimeInterval(7200)
        await f.tokens.refreshRevocations(now: later)
        await expectCode(.unauthenticated) { try await f.tokens.refresh(session.refreshToken, now: later) }
        await expectCode(.unauthenticated) { try await f.tokens.exchange(apiKey: key, now: later) }
        // A key made after the revocation works, and so does refreshing its session.
        let fresh = try await f.tokens.createAPIKey(for: f.member, scopes: [.exec], ttl: 86400, now: later)
        let pair = try await f.tokens.exchange(apiKey: fresh, now: later)
        _ = try await f.tokens.refresh(pair.refreshToken, now: later.addingTimeInterval(5))
    }

    @Test func aSessionNeverOutlivesItsEnd() async throws {
        let f = try await Fixture.make()
        defer { f.cleanup() }
        let now = Date()
        let pair = try await f.tokens.issuePair(
            f.member, scopes: [.exec], boundSandbox: nil, family: nil, ttl: 60, sessionEnd: now.addingTimeInterval(60),
            action: "test", now: now)
        #expect(pair.expiresIn <= 60)
        await f.tokens.refreshRevocations(now: now.addingTimeInterval(50))
        let next = try await f.tokens.refresh(pair.refreshToken, now: now.addingTimeInterval(50))
        #expect(next.expiresIn <= 10, "refreshing cannot extend an issued token's lifetime")
        await expectCode(.unauthenticated) {
            try await f.tokens.refresh(next.refreshToken, now: now.addingTimeInterval(61))
        }
    }
}

/// A store whose reads fail: revocation state cannot be loaded.
struct BrokenStore: IdentityStore {
    struct Down: Error {}
    func insertTenant(_ t: TenantRecord, audit: AuditEvent) throws { throw Down() }
    func tenants() throws -> [TenantRecord] { throw Down() }
    func deleteTenant(_ name: String, audit: AuditEvent) throws { throw Down() }
    func setIntraTenant(_ name: String, _ allow: Bool, audit: AuditEvent) throws { throw Down() }
    func insertPrincipal(_ p: PrincipalRecord, audit: AuditEvent) throws { throw Down() }
    func principal(id: String) throws -> PrincipalRecord? { throw Down() }
    func principal(tenant: String, name: ResourceName) throws -> PrincipalRecord? { throw Down() }
    func principals(tenant: String?) throws -> [PrincipalRecord] { throw Down() }
    func setPrincipalDisabled(id: String, _ disabled: Bool, audit: AuditEvent) throws { throw Down() }
    func deletePrincipal(id: String, audit: AuditEvent) throws { throw Down() }
    func insertAPIKey(_ k: APIKeyRecord, audit: AuditEvent) throws { throw Down() }
    func apiKey(id: String) throws -> APIKeyRecord? { throw Down() }
    func insertRefresh(_ r: RefreshRecord, audit: AuditEvent) throws { throw Down() }
    func useRefresh(
        hash: String, now: Date, audit: @escaping @Sendable (RefreshOutcome, PrincipalRecord?) -> AuditEvent?
    ) throws -> RefreshOutcome { throw Down() }
    func refreshFamily(accessJTI: String) throws -> String? { throw Down() }
    func revoke(_ rs: [RevocationRecord], audit: AuditEvent) throws { throw Down() }
    func revocations(now: Date) throws -> [RevocationRecord] { throw Down() }
    func transaction<T: Sendable>(_ what: String, _ body: @Sendable (any StoreTransaction) async throws -> T)
        async throws -> T
    { throw Down() }
}
