import ArgumentParser
import Foundation
import SwitchboardClient
import SwitchboardCore

/// `switchboard acl ...`: bootstrap the ACLs, manage tokens and policies.
struct ACLCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acl", abstract: "Manage ACL tokens and policies (agents started with --acl-default-policy).",
        subcommands: [ACLBootstrapCommand.self, ACLTokenCommand.self, ACLPolicyCommand.self])
}

struct ACLBootstrapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bootstrap",
        abstract: "Create the first management token, once, and print it (its secret is shown this one time).")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.perform(as: Self.self) { agent in
            printToken(try await agent.bootstrapACLs(), json: options.json)
        }
    }
}

struct ACLTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Create, list, update and delete ACL tokens.",
        subcommands: [Create.self, List.self, Update.self, Delete.self, Show.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token holding policies; prints its secret (shown this one time).")

        @Option(help: "A policy the token holds (repeatable).")
        var policy: [String] = []

        @Option(help: "What the token is for.")
        var description = ""

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.perform(as: Self.self) { agent in
                let token = try await agent.createACLToken(ACLTokenRequest(description: description, policies: policy))
                printToken(token, json: options.json)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the tokens (never their secrets).")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.perform(as: Self.self) { agent in
                let tokens = try await agent.aclTokens()
                if options.json { return printEncoded(ACLTokenList(tokens: tokens)) }
                let rows = tokens.map {
                    [
                        $0.accessorID, $0.policies.joined(separator: ","), SwitchboardJSON.timestamp($0.createdAt),
                        $0.description,
                    ]
                }
                print(Table(header: ["ACCESSOR", "POLICIES", "CREATED", "DESCRIPTION"], rows: rows))
            }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a token's policies and description (accessor id, or anonymous for callers without a token).")

        @Argument(help: "The token's accessor id, or anonymous.")
        var accessor: String

        @Option(help: "A policy the token holds (repeatable); the list replaces the token's.")
        var policy: [String] = []

        @Option(help: "What the token is for.")
        var description = ""

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.perform(as: Self.self) { agent in
                let token = try await agent.updateACLToken(
                    accessorID: accessor, ACLTokenRequest(description: description, policies: policy))
                printToken(token, json: options.json)
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a token: it stops working at once.")

        @Argument(help: "The token's accessor id.")
        var accessor: String

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.perform(as: Self.self) { agent in
                let token = try await agent.deleteACLToken(accessorID: accessor)
                if options.json { return printEncoded(token) }
                print("deleted token \(token.accessorID)")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "self", abstract: "Show the token this command presents (--token, SWITCHBOARD_TOKEN).")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.perform(as: Self.self) { agent in
                printToken(try await agent.aclTokenSelf(), json: options.json)
            }
        }
    }
}

struct ACLPolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Create, list and delete ACL policies.",
        subcommands: [Create.self, List.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a policy: access (read, write or deny) to services and to the agent's areas.",
            discussion: """
                Example: switchboard acl policy create order-service --service order=write --service payment=read
                A name is that service exactly; 'pay*' is every service starting with pay, and '*' every service.
                An exact name beats a prefix, and a longer prefix a shorter one.
                """)

        @Argument(help: "The policy's name (letters, digits, '-', '_').")
        var name: String

        @Option(
            help:
                "name=read|write|deny for a service, prefix*=... for services starting with prefix, *=... for all (repeatable)."
        )
        var service: [String] = []

        @Option(
            name: .customLong("agent-access"), help: "read or write on the agent itself (its info, members, metrics).")
        var agentAccess: String?

        @Option(name: .customLong("acl-access"), help: "read or write on ACL tokens and policies.")
        var aclAccess: String?

        @Option(name: .customLong("events-access"), help: "read on the event log and its audit trail.")
        var eventsAccess: String?

        @Option(help: "What the policy is for.")
        var description = ""

        @OptionGroup var options: ClientOptions

        func run() async throws {
            let policy = try parsed()
            try await options.perform(as: Self.self) { client in
                let created = try await client.createACLPolicy(policy)
                if options.json { return printEncoded(created) }
                print("created policy \(created.name)")
            }
        }

        private func parsed() throws -> ACLPolicy {
            var services: [String: ACLAccess] = [:]
            for rule in service {
                guard let separator = rule.lastIndex(of: "=") else {
                    throw ValidationError("--service takes name=read|write|deny, not \"\(rule)\"")
                }
                do {
                    services[String(rule[..<separator])] = try ACLAccess(
                        parsing: String(rule[rule.index(after: separator)...]), field: "--service")
                } catch {
                    throw ValidationError(error.message)
                }
            }
            func access(_ text: String?, _ flag: String) throws -> ACLAccess? {
                guard let text else { return nil }
                do {
                    return try ACLAccess(parsing: text, field: flag)
                } catch {
                    throw ValidationError(error.message)
                }
            }
            return ACLPolicy(
                name: name, description: description, services: services,
                agent: try access(agentAccess, "--agent-access"), acl: try access(aclAccess, "--acl-access"),
                events: try access(eventsAccess, "--events-access"))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the policies.")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.perform(as: Self.self) { agent in
                let policies = try await agent.aclPolicies()
                if options.json { return printEncoded(ACLPolicyList(policies: policies)) }
                let rows = policies.map { policy in
                    let services = policy.services.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.rawValue)" }
                    let areas = [("agent", policy.agent), ("acl", policy.acl), ("events", policy.events)]
                        .compactMap { name, access in access.map { "\(name)=\($0.rawValue)" } }
                    return [
                        policy.name, services.joined(separator: ","), areas.joined(separator: ","), policy.description,
                    ]
                }
                print(Table(header: ["POLICY", "SERVICES", "AREAS", "DESCRIPTION"], rows: rows))
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a policy that no token holds.")

        @Argument(help: "The policy's name.")
        var name: String

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.perform(as: Self.self) { agent in
                let policy = try await agent.deleteACLPolicy(named: name)
                if options.json { return printEncoded(policy) }
                print("deleted policy \(policy.name)")
            }
        }
    }
}

/// `switchboard events`: the change log, with who made each change (the audit trail).
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Print the change log with its audit trail: who changed what, from where.")

    @Option(help: "Only events after this index.")
    var since: UInt64 = 0

    @Option(help: "At most this many events.")
    var limit = 100

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.perform(as: Self.self) { agent in
            let page = try await agent.events(since: since, aclSince: 0, limit: limit)
            if options.json { return printEncoded(page) }
            let rows = page.events.map { event in
                [
                    "\(event.index)", SwitchboardJSON.timestamp(event.at), event.kind.rawValue,
                    "\(event.service)/\(event.id)", event.by?.accessorID ?? "-", event.by?.address ?? "-",
                    event.by?.requestID ?? "-",
                ]
            }
            print(Table(header: ["INDEX", "AT", "KIND", "INSTANCE", "BY", "FROM", "REQUEST"], rows: rows))
            if let acl = page.acl, !acl.isEmpty {
                print("")
                let rows = acl.map { change in
                    [
                        "\(change.sequence)", SwitchboardJSON.timestamp(change.at), change.action.rawValue,
                        change.target,
                        change.by.accessorID ?? "-", change.by.address ?? "-", change.by.requestID ?? "-",
                    ]
                }
                print(Table(header: ["ACL", "AT", "ACTION", "TARGET", "BY", "FROM", "REQUEST"], rows: rows))
            }
        }
    }
}

/// A token as the CLI shows it; the secret, when the answer has one, on a line of its own so scripts can take it.
private func printToken(_ token: ACLToken, json: Bool) {
    if json { return printEncoded(token) }
    print("AccessorID:   \(token.accessorID)")
    if let secret = token.secretID { print("SecretID:     \(secret)") }
    print("Description:  \(token.description)")
    print("Policies:     \(token.policies.joined(separator: ", "))")
    print("Created:      \(SwitchboardJSON.timestamp(token.createdAt))")
}

private func printEncoded(_ value: some Encodable) {
    let data = (try? SwitchboardJSON.encoder(pretty: true).encode(value)) ?? Data("{}".utf8)
    print(String(decoding: data, as: UTF8.self))
}
