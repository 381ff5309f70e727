import Foundation
import Testing
import VivariumCore
import VivariumEngine
import VivariumEngineTestSupport
import VivariumTestSupport

@Suite struct IdentityUseCaseTests {
    /// A token's session cannot be asked to outlive the maximum access lifetime (9223372036854775807
    /// seconds was accepted once, and the session never ended).
    @Test func anIssuedTokensLifetimeIsBounded() async throws {
        let f = try await EngineFixture()
        let admin = try await f.caller(try await f.token("root", role: .admin))
        _ = try await f.token("agent")
        let agent = ResourceName(rawValue: "agent")!
        for ttl: Duration in [.seconds(Int64.max), .seconds(3601), .zero] {
            await expectCode(.invalidArgument, "ttl \(ttl)") {
                try await f.engine.identity.issueToken(admin, principal: agent, sandbox: nil, scopes: [.exec], ttl: ttl)
            }
        }
        let pair = try await f.engine.identity.issueToken(
            admin, principal: agent, sandbox: nil, scopes: [.exec], ttl: .seconds(3600))
        #expect(pair.expiresIn <= 3600)
    }
}
