import Testing
import VivariumCore
import VivariumTestSupport

@testable import VivariumAPI

@Suite struct SourceTrustTests {
    @Test func cidrsMatchTheirAddressesOnly() throws {
        let net = try CIDR("10.0.0.0/8")
        #expect(net.contains("10.200.3.4") && !net.contains("11.0.0.1") && !net.contains("::1"))
        #expect(try CIDR("127.0.0.1").contains("127.0.0.1") && !CIDR("127.0.0.1").contains("127.0.0.2"))
        #expect(try CIDR("fd00::/8").contains("fd12::1") && !CIDR("fd00::/8").contains("fe80::1"))
        #expect(try CIDR("10.0.0.0/8").contains("::ffff:10.1.2.3"), "IPv4-mapped IPv6 counts as IPv4")
        expectCode(.invalidArgument) { try CIDR("10.0.0.0/33") }
        expectCode(.invalidArgument) { try CIDR("nonsense") }
        #expect(try CIDR("192.168.0.0/16").description == "192.168.0.0/16")
    }

    @Test func forwardedHeadersCountOnlyFromTrustedProxies() throws {
        let trust = SourceTrust(trustedProxies: [try CIDR("127.0.0.1/32"), try CIDR("10.0.0.0/8")])
        #expect(trust.clientAddress(peer: "203.0.113.9", proxied: nil, forwardedFor: "1.2.3.4") == "203.0.113.9")
        #expect(trust.clientAddress(peer: "203.0.113.9", proxied: "1.2.3.4", forwardedFor: nil) == "203.0.113.9")
        #expect(trust.clientAddress(peer: "127.0.0.1", proxied: nil, forwardedFor: "1.2.3.4") == "1.2.3.4")
        // A client cannot push its own entry past the proxies: the right-most untrusted one counts.
        #expect(
            trust.clientAddress(peer: "127.0.0.1", proxied: nil, forwardedFor: "6.6.6.6, 1.2.3.4, 10.1.1.1")
                == "1.2.3.4")
        #expect(trust.clientAddress(peer: "127.0.0.1", proxied: "5.5.5.5", forwardedFor: "1.2.3.4") == "5.5.5.5")
        #expect(trust.clientAddress(peer: "127.0.0.1", proxied: nil, forwardedFor: "garbage") == "127.0.0.1")
    }

    @Test func proxyProtocolHeadersAreParsedStrictly() {
        let v1 = Array("PROXY TCP4 198.51.100.7 127.0.0.1 5555 443\r\nGET /".utf8)
        #expect(ProxyProtocolHandler.parse(v1) == .header(length: 44, source: "198.51.100.7"))
        #expect(ProxyProtocolHandler.parse(Array("PROXY UNKNOWN\r\n".utf8)) == .header(length: 15, source: nil))
        #expect(ProxyProtocolHandler.parse(Array("PROXY TCP4 nonsense 1 2 3\r\n".utf8)) == .invalid)
        #expect(ProxyProtocolHandler.parse(Array("PROX".utf8)) == .needMore)
        #expect(ProxyProtocolHandler.parse(Array("GET / HTTP/1.1\r\n".utf8)) == .none)
        var v2 = ProxyProtocolHandler.v2Signature + [0x21, 0x11, 0x00, 0x0C]
        v2 += [203, 0, 113, 5, 127, 0, 0, 1, 0x15, 0xB3, 0x01, 0xBB]
        #expect(ProxyProtocolHandler.parse(v2) == .header(length: 28, source: "203.0.113.5"))
        #expect(ProxyProtocolHandler.parse(Array(v2.prefix(20))) == .needMore)
        var bad = v2
        bad[12] = 0x31  // version 3
        #expect(ProxyProtocolHandler.parse(bad) == .invalid)
    }
}
