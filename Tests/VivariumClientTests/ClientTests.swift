import Foundation
import Glibc
import Synchronization
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// The CLI's HTTP client: answers are read by their length or chunked terminator, never by waiting for
/// the server to close, and one connection carries a verb's calls.
@Suite struct ClientTests {
    /// A unix-socket server that answers each request head with the next canned answer and never closes
    /// a connection by itself. Counts the connections it accepted.
    final class CannedServer: @unchecked Sendable {
        let path = "/tmp/vivarium-client-\(randomHex(bytes: 6)).sock"
        let fd: Int32
        let accepted = Atomic<Int>(0)
        let answers: [String]

        init(_ answers: [String]) throws {
            self.answers = answers
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                raw.copyBytes(from: Array(path.utf8))
                raw[path.utf8.count] = 0
            }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard rc == 0, listen(fd, 4) == 0 else { throw VivariumError(.unavailable, "cannot listen") }
            let t = Thread { [self] in self.serve() }
            t.start()
        }

        func serve() {
            var next = 0
            while true {
                let c = accept(fd, nil, nil)
                guard c >= 0 else {
                    close(fd)
                    return
                }
                accepted.add(1, ordering: .relaxed)
                var buf = [UInt8]()
                var chunk = [UInt8](repeating: 0, count: 4096)
                while next < answers.count {
                    let n = recv(c, &chunk, chunk.count, 0)
                    if n <= 0 { break }
                    buf += chunk[0..<n]
                    while let end = (0..<max(0, buf.count - 3)).first(where: {
                        buf[$0] == 13 && buf[$0 + 1] == 10 && buf[$0 + 2] == 13 && buf[$0 + 3] == 10
                    }) {
                        buf.removeFirst(end + 4)
                        let a = Array(answers[next].utf8)
                        next += 1
                        _ = a.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    }
                }
            }
        }

        /// Stops accepting and removes the socket (the serving thread holds the server, so deinit
        /// alone would never run).
        func stop() {
            shutdown(fd, Int32(SHUT_RDWR))
            unlink(path)
        }
    }

    @Test func answersAreReadByLengthOrChunksOverOneKeptConnection() throws {
        let notFound = #"{"error":{"code":"not_found","message":"gone","request_id":"r1"}}"#
        let server = try CannedServer([
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"items\":[]}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"ite\r\n7\r\nms\":[]}\r\n0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: \(notFound.utf8.count)\r\n\r\n"
                + notFound,
        ])
        defer { server.stop() }
        var http = SocketHTTPClient(socketPath: server.path)
        http.receiveTimeout = .seconds(5)
        let client = APIClient(http: http)
        let clock = ContinuousClock()
        let start = clock.now
        let first = try client.call(Endpoints.sandboxList)
        let second = try client.call(Endpoints.sandboxList)
        #expect(first.items.isEmpty && second.items.isEmpty)
        _ = try client.call(Endpoints.sandboxDelete, name: "x")
        #expect(clock.now - start < .seconds(2), "no answer waited for the server to close")
        #expect(server.accepted.load(ordering: .relaxed) == 1, "one connection for every call")
        expectCode(.notFound) { try client.call(Endpoints.sandboxGet, name: "gone") }
    }

    @Test func pathsAreBuiltFromTheRoutesWithEncodedValues() {
        #expect(Endpoints.sandboxExec.route.path(["name": "a b/c"]) == "/v1/sandboxes/a%20b%2Fc/exec")
        #expect(
            Endpoints.auditList.route.path(query: [("limit", "5"), ("actor", nil), ("action", "sandbox.exec")])
                == "/v1/audit?limit=5&action=sandbox.exec")
        #expect(Endpoints.sandboxGet.route.parameters == ["name"])
    }
}
