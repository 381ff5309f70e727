/// Everything a caller can ask of Vivarium, whichever door the request comes through (REST, WebSocket,
/// and later SSH, MCP, e2b). The policy table in VivariumAuth decides each one; the audit trail records
/// requests, denials and failures under these names.
public enum Action: String, CaseIterable, Sendable, Codable {
    case health = "health"
    case apiDescribe = "api.describe"
    case jwks = "keys.jwks"
    case tokenExchange = "token.exchange"
    case tokenIssue = "token.issue"
    case tokenRevoke = "token.revoke"
    case keysRotate = "keys.rotate"

    case tenantList = "tenant.list"
    case tenantCreate = "tenant.create"
    case tenantDelete = "tenant.delete"

    case principalList = "principal.list"
    case principalCreate = "principal.create"
    case principalDelete = "principal.delete"
    case principalDisable = "principal.disable"
    case apiKeyCreate = "apikey.create"

    case tenantUpdate = "tenant.update"

    case sandboxList = "sandbox.list"
    case sandboxCreate = "sandbox.create"
    case sandboxGet = "sandbox.get"
    case sandboxDelete = "sandbox.delete"
    case sandboxStart = "sandbox.start"
    case sandboxStop = "sandbox.stop"
    case sandboxExec = "sandbox.exec"
    /// A sandbox's egress policy changed, running or not.
    case sandboxNetwork = "sandbox.network"
    /// Create, exec and (optionally) delete in one call.
    case sandboxRun = "sandbox.run"
    /// A request through the ingress to a sandbox port that needs a token (a token route, or the
    /// `PORT-SANDBOXID` host name).
    case sandboxConnect = "sandbox.connect"
    /// A file's bytes, a directory's entries or a path's metadata, read inside a sandbox.
    case filesRead = "files.read"
    /// A file written, a directory made, a path moved or removed inside a sandbox.
    case filesWrite = "files.write"
    /// A sandbox's detached processes listed, or their kept output read.
    case processList = "process.list"
    /// A signal or input sent to a detached process.
    case processControl = "process.control"

    /// A sandbox port published through the ingress (HTTP by host name, or a TCP forward).
    case routeCreate = "route.create"
    case routeList = "route.list"
    case routeDelete = "route.delete"

    case imageList = "image.list"
    case imageImport = "image.import"
    /// A tar stream sent with the request: a tenant's own image, or (admins) a shared one.
    case imageUpload = "image.upload"
    case imageDelete = "image.delete"
    /// An image pulled from a registry into the caller's tenant, its reference pinned to the digest.
    case imagePull = "image.pull"
    /// The packages an image holds, as a CycloneDX SBOM.
    case imageSBOM = "image.sbom"
    /// An image's SBOM matched against the imported advisories.
    case imageScan = "image.scan"
    /// An image's manifest, config and layers.
    case imageInspect = "image.inspect"
    /// A local image published to a registry under a tag, its digest unchanged.
    case imagePush = "image.push"
    /// OSV advisories read from a path on the daemon's host (local root only).
    case vulndbImport = "vulndb.import"
    /// What to sign for an image in its registry (the digest its reference names now, cosign's payload).
    case imageSigningPayload = "image.signing_payload"
    /// A signature, made by the caller with its own key, published next to the image in its registry.
    case imageSign = "image.sign"

    /// A new version of a secret (its value and bindings); values are write-only.
    case secretSet = "secret.set"
    case secretList = "secret.list"
    case secretDelete = "secret.delete"
    case kmsShow = "kms.show"
    /// A new key-encryption key; data keys are re-wrapped by it in the background.
    case kmsRotate = "kms.rotate"
    case kmsRetire = "kms.retire"

    case auditList = "audit.list"
    case auditFollow = "audit.follow"
    case auditCheckpoints = "audit.checkpoints"
}
