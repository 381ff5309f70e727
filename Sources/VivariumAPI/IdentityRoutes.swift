import VivariumCore
import VivariumEngine

/// Tokens, signing keys, tenants and principals.
struct IdentityRoutes {
    let identity: Identity

    func register(_ r: inout RouteRegistry) {
        let identity = self.identity
        r.add(Endpoints.tokenExchange) { call in
            let body: TokenRequest = try await call.body()
            let grant: TokenGrant
            switch body.grantType {
            case "api_key":
                guard let k = body.apiKey else { throw VivariumError(.invalidArgument, "api_key is missing") }
                grant = .apiKey(k)
            case "refresh_token":
                guard let t = body.refreshToken else {
                    throw VivariumError(.invalidArgument, "refresh_token is missing")
                }
                grant = .refreshToken(t)
            default:
                throw VivariumError(.invalidArgument, "grant_type must be api_key or refresh_token")
            }
            return try await identity.exchange(call.caller, grant)
        }
        r.add(Endpoints.tokenIssue) { call in
            let body: IssueTokenRequest = try await call.body()
            return try await identity.issueToken(
                call.caller, principal: try ResourceName.parse(body.principal, what: "principal name"),
                sandbox: try body.sandbox.map { try ResourceName.parse($0, what: "sandbox name") },
                scopes: try Mapping.scopes(body.scopes),
                ttl: Mapping.seconds(body.ttlSeconds))
        }
        r.add(Endpoints.tokenRevoke) { call in
            let body: RevokeRequest = try await call.body()
            let target: RevocationTarget
            switch (body.jti, body.principal, body.tenant) {
            case (let jti?, nil, nil): target = .jti(jti)
            case (nil, let p?, nil): target = .principal(try ResourceName.parse(p, what: "principal name"))
            case (nil, nil, let t?): target = .tenant(try ResourceName.parse(t, what: "tenant"))
            default: throw VivariumError(.invalidArgument, "give exactly one of jti, principal, tenant")
            }
            try await identity.revoke(call.caller, target)
            return Empty()
        }
        r.add(Endpoints.keysRotate) { call in try await identity.rotateKeys(call.caller) }
        r.add(Endpoints.jwks) { call in try await identity.jwks(call.caller) }

        r.add(Endpoints.tenantList) { call in
            Page(items: try await identity.listTenants(call.caller).map(Mapping.info), nextCursor: nil)
        }
        r.add(Endpoints.tenantCreate) { call in
            let body: CreateTenantRequest = try await call.body()
            let name = try ResourceName.parse(body.name, what: "tenant name")
            return Mapping.info(try await identity.createTenant(call.caller, name: name))
        }
        r.add(Endpoints.tenantUpdate) { call in
            let body: UpdateTenantRequest = try await call.body()
            guard ["allow", "deny"].contains(body.intraTenant) else {
                throw VivariumError(.invalidArgument, "intra_tenant must be allow or deny")
            }
            return Mapping.info(
                try await identity.setIntraTenant(
                    call.caller, name: try call.name("tenant name"), allow: body.intraTenant == "allow"))
        }
        r.add(Endpoints.tenantDelete) { call in
            try await identity.deleteTenant(
                call.caller, name: try call.name("tenant name"), force: try call.flag("force"))
            return Empty()
        }

        r.add(Endpoints.principalList) { call in
            Page(items: try await identity.listPrincipals(call.caller).map(Mapping.info), nextCursor: nil)
        }
        r.add(Endpoints.principalCreate) { call in
            let body: CreatePrincipalRequest = try await call.body()
            let name = try ResourceName.parse(body.name, what: "principal name")
            let p = try await identity.createPrincipal(
                call.caller, name: name, kind: try PrincipalKind.parse(body.kind ?? "user"),
                role: try Role.parse(body.role ?? "member"))
            return Mapping.info(p)
        }
        r.add(Endpoints.principalDelete) { call in
            try await identity.deletePrincipal(call.caller, name: try call.name("principal name"))
            return Empty()
        }
        r.add(Endpoints.principalDisable) { call in
            Mapping.info(try await identity.disablePrincipal(call.caller, name: try call.name("principal name")))
        }
        r.add(Endpoints.apiKeyCreate) { call in
            let body: CreateAPIKeyRequest = try await call.body()
            let key = try await identity.createAPIKey(
                call.caller, principal: try call.name("principal name"), scopes: try body.scopes.map(Mapping.scopes),
                ttl: Mapping.seconds(body.ttlSeconds))
            return Mapping.info(key)
        }
    }
}
