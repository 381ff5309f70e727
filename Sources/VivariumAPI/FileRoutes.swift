import Foundation
import Glibc
import HTTPTypes
import Hummingbird
import NIOCore
import VivariumCore
import VivariumEngine

/// `/v1/sandboxes/{name}/files`: the file API, paths in the `path` query parameter.
struct FileRoutes {
    let sandboxes: Sandboxes

    static func path(_ call: Call) throws -> String {
        guard let p = call.query("path"), !p.isEmpty else {
            throw VivariumError(.invalidArgument, "path is required (a path inside the sandbox)")
        }
        return p
    }

    func register(_ r: inout RouteRegistry) {
        let sandboxes = self.sandboxes
        r.bytes(Endpoints.fileRead) { call in
            let (fd, info) = try await sandboxes.openFile(
                call.caller, name: try call.name("sandbox name"), path: Self.path(call))
            // Streamed from the descriptor in 256 KiB chunks, at the pace the client reads.
            let body = ResponseBody(contentLength: Int(info.sizeBytes)) { writer in
                defer { close(fd) }
                var sent: Int64 = 0
                var buffer = [UInt8](repeating: 0, count: 256 << 10)
                while sent < info.sizeBytes {
                    let n = read(fd, &buffer, min(buffer.count, Int(info.sizeBytes - sent)))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw VivariumError(.internalError, "the file shrank while it was read") }
                    try await writer.write(ByteBuffer(bytes: buffer[0..<n]))
                    sent += Int64(n)
                }
                try await writer.finish(nil)
            }
            var headers: HTTPFields = [.contentType: "application/octet-stream"]
            headers[HTTPField.Name("X-File-Mode")!] = info.mode
            return Response(status: .ok, headers: headers, body: body)
        }
        r.add(Endpoints.fileWrite) { call in
            let body = call.request.body
            return try await sandboxes.writeFile(
                call.caller, name: try call.name("sandbox name"), path: Self.path(call), mode: call.query("mode")
            ) { write in
                for try await chunk in body { try chunk.withUnsafeReadableBytes { try write($0) } }
            }
        }
        r.add(Endpoints.fileDelete) { call in
            try await sandboxes.remove(
                call.caller, name: try call.name("sandbox name"), path: Self.path(call),
                recursive: try call.flag("recursive"))
            return Empty()
        }
        r.add(Endpoints.fileStat) { call in
            try await sandboxes.stat(call.caller, name: try call.name("sandbox name"), path: Self.path(call))
        }
        r.add(Endpoints.fileList) { call in
            Page(
                items: try await sandboxes.list(
                    call.caller, name: try call.name("sandbox name"), path: Self.path(call)),
                nextCursor: nil)
        }
        r.add(Endpoints.fileMkdir) { call in
            try await sandboxes.makeDirectory(call.caller, name: try call.name("sandbox name"), try await call.body())
        }
        r.add(Endpoints.fileMove) { call in
            try await sandboxes.move(call.caller, name: try call.name("sandbox name"), try await call.body())
        }
    }
}
