import VivariumCore
import VivariumEngine

/// `/v1/images`: local images, imported from a host path (local root) or uploaded as an archive.
struct ImageRoutes {
    let images: Images

    func register(_ r: inout RouteRegistry) {
        let images = self.images
        r.add(Endpoints.imageList) { call in
            Page(items: try await images.list(call.caller).map(Mapping.info), nextCursor: nil)
        }
        r.add(Endpoints.imagePulls) { call in Page(items: try await images.pulls(call.caller), nextCursor: nil) }
        r.add(Endpoints.imageImport) { call in
            let body: ImportImageRequest = try await call.body()
            let name = try ResourceName.parse(body.name, what: "image name")
            return Mapping.info(
                try await images.importRootfs(call.caller, path: body.path, name: name, format: body.format ?? .auto))
        }
        r.add(Endpoints.imageUpload) { call in
            let name = try ResourceName.parse(call.query("name") ?? "", what: "image name")
            let shared = try call.flag("shared")
            let body = call.request.body
            // The archive streams from the connection into the unpacker: nothing is held in memory.
            return Mapping.info(
                try await images.upload(call.caller, name: name, shared: shared) { feed in
                    for try await chunk in body {
                        try chunk.withUnsafeReadableBytes { try feed($0) }
                    }
                })
        }
        r.add(Endpoints.imagePull) { call in
            let body: PullImageRequest = try await call.body()
            return Mapping.info(try await images.pull(call.caller, reference: try ImageReference.parse(body.reference)))
        }
        r.add(Endpoints.imageSBOM) { call in
            let body: PullImageRequest = try await call.body()
            return try await images.sbom(call.caller, reference: try ImageReference.parse(body.reference))
        }
        r.add(Endpoints.imageScan) { call in
            let body: PullImageRequest = try await call.body()
            return try await images.scan(call.caller, reference: try ImageReference.parse(body.reference))
        }
        r.add(Endpoints.imageInspect) { call in
            let body: PullImageRequest = try await call.body()
            return try await images.inspect(call.caller, reference: try ImageReference.parse(body.reference))
        }
        r.add(Endpoints.imagePush) { call in
            let body: PushImageRequest = try await call.body()
            return try await images.push(
                call.caller, image: try ImageReference.parse(body.image),
                to: try ImageReference.parse(body.destination))
        }
        r.add(Endpoints.vulndbImport) { call in
            let body: ImportVulnDBRequest = try await call.body()
            return try await images.importAdvisories(call.caller, path: body.path)
        }
        r.add(Endpoints.imageSigningPayload) { call in
            let body: PullImageRequest = try await call.body()
            return try await images.signingPayload(call.caller, reference: try ImageReference.parse(body.reference))
        }
        r.add(Endpoints.imageSign) { call in
            let body: PublishSignatureRequest = try await call.body()
            return try await images.publishSignature(
                call.caller, reference: try ImageReference.parse(body.reference), payload: body.payload,
                signature: body.signature)
        }
        r.add(Endpoints.imageDelete) { call in
            try await images.remove(call.caller, name: try call.name("image name"))
            return Empty()
        }
    }
}
