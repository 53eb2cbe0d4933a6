import Logging
import NIOHTTP1
import SwitchboardCore

/// An observation waiting to be sent to the agent.
struct ObservationReport: Sendable {
    var service: ServiceName
    var id: InstanceID
    var observation: Observation
}

extension ServiceDiscovery {
    /// Tells the agent what this process saw of `instance` (an outlier ejection, say): the agent logs it as an
    /// `observed` event, visible in `GET /v1/events` and in watch streams, and changes nothing else.
    ///
    /// Returns at once: ``run()`` sends reports in the background, one at a time. At most 64 wait to be sent
    /// (newer ones are dropped), and one the agent cannot take is dropped: a report is for operators, and must
    /// never slow a call down.
    public func report(_ kind: Observation.Kind, about instance: Instance, reason: String, duration: Duration? = nil) {
        let observation = Observation(
            kind: kind, reporter: configuration.reporter, reason: reason,
            duration: duration.map { HumanDuration(milliseconds: Int64($0.nanoseconds / 1_000_000)) })
        reportsContinuation.yield(
            ObservationReport(service: instance.service, id: instance.id, observation: observation))
    }

    /// Sends queued reports until cancelled; a report the agent refuses or cannot take is logged and dropped.
    func sendReports() async {
        for await report in reports {
            do {
                _ = try await agent.report(report.observation, about: report.service, id: report.id)
            } catch let error where error.code == .refused {
                logger.debug(
                    "the agent refused an observation",
                    metadata: ["instance": "\(report.service)/\(report.id)", "error": "\(error)"])
            } catch {
                if Task.isCancelled { return }
                logger.debug(
                    "an observation could not be sent",
                    metadata: ["instance": "\(report.service)/\(report.id)", "error": "\(error)"])
            }
        }
    }
}
