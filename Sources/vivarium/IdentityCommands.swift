import ArgumentParser
import Foundation
import VivariumClient
import VivariumCore

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant", abstract: "Manage tenants (admin).",
        subcommands: [Create.self, Ls.self, Set.self, Rm.self])

    struct Create: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a tenant.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant name (a DNS label).") var name: String
        func run(_ client: APIClient) async throws {
            print(try client.call(Endpoints.tenantCreate, CreateTenantRequest(name: name)).name)
        }
    }

    struct Ls: ClientCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List tenants.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let page = try client.call(Endpoints.tenantList)
            if json { return try printJSON(page.items) }
            printTable(
                ["NAME", "CREATED", "INTRA-TENANT"],
                page.items.map { [$0.name, ISO8601DateFormatter().string(from: $0.createdAt), $0.intraTenant] })
        }
    }

    struct Set: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "set", abstract: "Change a tenant's settings.",
            discussion: """
                --intra-tenant allow lets the tenant's sandboxes reach each other on the sandbox network (those \
                whose egress is not none); deny (the default) keeps each alone. Another tenant's sandboxes are \
                never reachable. Running sandboxes follow at once.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant name.") var name: String
        @Option(help: "allow or deny.") var intraTenant: String
        func run(_ client: APIClient) async throws {
            let t = try client.call(Endpoints.tenantUpdate, UpdateTenantRequest(intraTenant: intraTenant), name: name)
            print("\(t.name): intra-tenant \(t.intraTenant)")
        }
    }

    struct Rm: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove a tenant; refused while it holds sandboxes or images unless --force.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Delete the tenant's sandboxes and images too.") var force = false
        @Argument(help: "Tenant name.") var name: String
        func run(_ client: APIClient) async throws {
            _ = try client.call(Endpoints.tenantDelete, name: name, query: [("force", force ? "true" : nil)])
            print(name)
        }
    }
}

struct PrincipalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "principal", abstract: "Manage users, agents and services of a tenant.",
        subcommands: [Create.self, Ls.self, Rm.self, Disable.self, Key.self])

    struct Create: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a principal.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Principal name (a DNS label).") var name: String
        @Option(help: "user, agent or service.") var kind = "user"
        @Option(help: "admin, tenant-admin, member or auditor.") var role = "member"
        @Option(help: "Tenant (admins only; default: your own).") var tenant: String?
        func run(_ client: APIClient) async throws {
            let p = try client.call(
                Endpoints.principalCreate, CreatePrincipalRequest(name: name, kind: kind, role: role),
                query: tenantQuery(tenant))
            print("\(p.name) \(p.id)")
        }
    }

    struct Ls: ClientCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List principals.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant (admins only; default: your own).") var tenant: String?
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let page = try client.call(Endpoints.principalList, query: tenantQuery(tenant))
            if json { return try printJSON(page.items) }
            printTable(
                ["NAME", "KIND", "ROLE", "DISABLED", "ID"],
                page.items.map { [$0.name, $0.kind, $0.role, String($0.disabled), $0.id] })
        }
    }

    struct Rm: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove a principal and revoke its tokens.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant (admins only).") var tenant: String?
        @Argument(help: "Principal name.") var name: String
        func run(_ client: APIClient) async throws {
            _ = try client.call(Endpoints.principalDelete, name: name, query: tenantQuery(tenant))
            print(name)
        }
    }

    struct Disable: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "disable", abstract: "Disable a principal; its tokens stop at once.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant (admins only).") var tenant: String?
        @Argument(help: "Principal name.") var name: String
        func run(_ client: APIClient) async throws {
            print(try client.call(Endpoints.principalDisable, name: name, query: tenantQuery(tenant)).name)
        }
    }

    struct Key: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "key",
            abstract: "Create an API key for a principal. It is printed once; only its hash is stored.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant (admins only).") var tenant: String?
        @Option(help: "Comma-separated scopes (default: all the principal's role allows).") var scopes: String?
        @Option(help: "Lifetime, e.g. 90d (default 90d).") var ttl: String?
        @Argument(help: "Principal name.") var name: String
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let req = CreateAPIKeyRequest(
                scopes: scopes.map { $0.split(separator: ",").map(String.init) },
                ttlSeconds: try ttl.map { try Quantity.parseSeconds($0) })
            let k = try client.call(Endpoints.apiKeyCreate, req, name: name, query: tenantQuery(tenant))
            if json { try printJSON(k) } else { print(k.apiKey) }
        }
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Issue least-privilege tokens and revoke tokens.",
        subcommands: [Issue.self, Revoke.self])

    struct Issue: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue",
            abstract: "Mint a token for a principal, optionally bound to one sandbox (by id, not by name).",
            discussion:
                "Example: vivarium token issue --principal bot --sandbox work --scopes exec,sandboxes:read --ttl 10m")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Principal name.") var principal: String
        @Option(help: "Bind the token to this sandbox.") var sandbox: String?
        @Option(help: "Comma-separated scopes.") var scopes: String
        @Option(help: "Lifetime, e.g. 10m (capped by the daemon).") var ttl: String?
        @Option(help: "Tenant (admins only).") var tenant: String?
        @Flag(help: "Print JSON (access and refresh token).") var json = false
        func run(_ client: APIClient) async throws {
            let req = IssueTokenRequest(
                principal: principal, sandbox: sandbox, scopes: scopes.split(separator: ",").map(String.init),
                ttlSeconds: try ttl.map { try Quantity.parseSeconds($0) })
            let pair = try client.call(Endpoints.tokenIssue, req, query: tenantQuery(tenant))
            if json { try printJSON(pair) } else { print(pair.accessToken) }
        }
    }

    struct Revoke: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke",
            abstract:
                "Revoke one token (--jti), every token of a principal, or of a tenant. Effective on the next request.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Token id (the jti claim).") var jti: String?
        @Option(help: "Principal name.") var principal: String?
        @Option(name: .customLong("all-of-tenant"), help: "Tenant name: revoke all its tokens.") var allOfTenant:
            String?
        @Option(help: "Tenant the principal belongs to (admins only).") var tenant: String?
        func run(_ client: APIClient) async throws {
            _ = try client.call(
                Endpoints.tokenRevoke, RevokeRequest(jti: jti, principal: principal, tenant: allOfTenant),
                query: tenantQuery(tenant))
            print("revoked")
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Token signing keys.", subcommands: [Rotate.self])

    struct Rotate: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate",
            abstract: "Start signing with a new Ed25519 key; older keys verify until their tokens expire.")
        @OptionGroup var global: GlobalOptions
        func run(_ client: APIClient) async throws {
            for k in try client.call(Endpoints.keysRotate).keys { print(k.kid) }
        }
    }
}
