import ArgumentParser
import SwitchboardCore

/// The `switchboard` executable: the agent, and thin command-line clients of its HTTP API.
@main
struct SwitchboardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "Service discovery and traffic management for microservices.",
        version: SwitchboardVersion.current,
        subcommands: [
            AgentCommand.self,
            GatewayCommand.self,
            SidecarCommand.self,
            DemoCommand.self,
            DemoServiceCommand.self,
            ServicesCommand.self,
            MembersCommand.self,
            InstancesCommand.self,
            RegisterCommand.self,
            DeregisterCommand.self,
            MaintenanceCommand.self,
            WatchCommand.self,
            EventsCommand.self,
            ACLCommand.self,
        ]
    )
}
