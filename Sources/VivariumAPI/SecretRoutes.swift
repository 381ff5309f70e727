import Foundation
import Hummingbird
import NIOCore
import VivariumCore
import VivariumEngine

/// `/v1/secrets` (write-only values: the body of a set is the value, nothing ever returns one) and
/// `/v1/kms` (the key-encryption keys, admins only).
struct SecretRoutes {
    let secrets: Secrets

    func register(_ r: inout RouteRegistry) {
        let secrets = self.secrets
        r.add(Endpoints.secretSet) { call in
            let name = try SecretName.parse(try call.context.parameters.require("name"))
            let q = call.request.uri.queryParameters
            let sandboxes = try q.getAll("sandbox").map { try ResourceName.parse(String($0), what: "sandbox name") }
            let labels = try FieldRules.parsePairs(q.getAll("label").map { String($0) }, what: "label")
            let gid = try call.int("gid", 0...65535).map(UInt32.init) ?? 0
            let value = try await Self.value(call)
            let (s, versions) = try await secrets.set(
                call.caller, name: name, value: value,
                binding: SecretBinding(sandboxes: sandboxes, labels: labels, gid: gid))
            return Self.info(s, versions: versions)
        }
        r.add(Endpoints.secretList) { call in
            Page(
                items: try await secrets.list(call.caller).map { Self.info($0.0, versions: $0.versions) },
                nextCursor: nil)
        }
        r.add(Endpoints.secretDelete) { call in
            try await secrets.delete(
                call.caller, name: try SecretName.parse(try call.context.parameters.require("name")),
                keepLatest: try call.flag("prune"))
            return Empty()
        }
        r.add(Endpoints.kmsShow) { call in try await secrets.keys(call.caller) }
        r.add(Endpoints.kmsRotate) { call in try await secrets.rotate(call.caller) }
        r.add(Endpoints.kmsRetire) { call in
            let raw = try call.context.parameters.require("name")
            guard let id = raw.removingPercentEncoding, id.utf8.count <= 200 else {
                throw VivariumError(.invalidArgument, "invalid key id")
            }
            return try await secrets.retire(call.caller, keyID: id)
        }
    }

    /// The request body, the value itself, bounded.
    static func value(_ call: Call) async throws -> SecretValue {
        var req = call.request
        let limit = SecretBinding.maxValueBytes
        let buffer: ByteBuffer
        do {
            buffer = try await req.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw VivariumError(.payloadTooLarge, "a secret's value is at most \(limit >> 20) MiB")
        } catch let e as HTTPError where e.status == .contentTooLarge {
            throw VivariumError(.payloadTooLarge, "a secret's value is at most \(limit >> 20) MiB")
        }
        return SecretValue(buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? [])
    }

    static func info(_ s: Secret, versions: Int64) -> SecretInfo {
        SecretInfo(
            name: s.name.rawValue, version: s.version, versions: versions,
            sandboxes: s.binding.sandboxes.map(\.rawValue), labels: s.binding.labels, gid: s.binding.gid,
            createdAt: s.createdAt)
    }
}
