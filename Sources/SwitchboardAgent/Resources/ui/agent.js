// The agent (and its cluster): version, uptime, index, what it holds, how its checks fare, heartbeats a second,
// and in cluster mode the members and how current this agent's view is. Read every two seconds.

import { get } from "./api.js";
import { el, statuses, statusBadge, duration, clock, errorBox, poll } from "./view.js";

const period = 2000;

function card(label, value, id) {
  return el("div", { class: "card", "data-figure": id },
    el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

export function agentPage() {
  const content = el("div", { id: "agent" }, el("p", { class: "muted" }, "Loading\u2026"));
  const element = el("section", { "aria-labelledby": "agent-title" },
    el("h1", { id: "agent-title" }, "Agent"), content);
  let previous = null;

  function render(agent, rate) {
    const h = agent.health;
    const preservation = h.selfPreservation;
    const parts = [
      el("div", { class: "cards" },
        card("Version", agent.version, "version"),
        card("Uptime", duration(agent.uptimeSeconds), "uptime"),
        card("Index", agent.index, "index"),
        card("Store", agent.store, "store"),
        card("Services", agent.services, "services"),
        card("Instances", agent.instances, "instances"),
        card("Heartbeats a second", rate === null ? "\u2026" : rate.toFixed(1), "heartbeats"),
        card("Probe lateness p50 / p99 / max",
          `${h.probeLateness.p50Ms.toFixed(1)} / ${h.probeLateness.p99Ms.toFixed(1)} / ` +
          `${h.probeLateness.maxMs.toFixed(1)} ms`, "lateness"),
        card("Checks (TTL / HTTP / TCP)", `${h.checks.ttl} / ${h.checks.http} / ${h.checks.tcp}`, "checks"),
        card("Probes in flight / skipped", `${h.probesInFlight} / ${h.skippedProbes}`, "probes"),
        card("Held queries", agent.watches.waiting, "held"),
        card("Self-preservation", !preservation.enabled ? "off" :
          preservation.active ? `ON since ${clock(preservation.since)}` :
            `armed (${preservation.missing} of ${preservation.instances} missing)`, "self-preservation")),
      el("h2", {}, "Instances by status"),
      el("p", { class: "toolbar" }, ...statuses.map((status) =>
        el("span", { "data-count": status }, statusBadge(status), ` ${agent.counts[status] ?? 0}`))),
    ];
    const cluster = agent.cluster;
    if (cluster) {
      const age = cluster.viewAgeMilliseconds;
      parts.push(
        el("h2", {}, "Cluster"),
        el("p", {}, `Store: ${cluster.store} (${cluster.endpoints.join(", ")}), prefix ${cluster.prefix}. ` +
          `View confirmed ${age === undefined || age === null ? "never" : `${(age / 1000).toFixed(1)} s ago`}` +
          `${cluster.lastError ? `; last error: ${cluster.lastError}` : ""}.`),
        el("table", { id: "members" },
          el("thead", {}, el("tr", {}, ...["Agent", "Address", "Version", "Started", "TTL instances", "Missing"]
            .map((text) => el("th", { scope: "col" }, text)))),
          el("tbody", {}, ...cluster.members.map((member) =>
            el("tr", { "data-member": member.id },
              el("th", { scope: "row" }, member.id + (member.id === cluster.agentID ? " (this agent)" : "")),
              el("td", {}, member.address), el("td", {}, member.version), el("td", {}, clock(member.startedAt)),
              el("td", { class: "num" }, member.ttlInstances ?? ""),
              el("td", { class: "num" }, member.ttlMissing ?? ""))))));
    }
    content.replaceChildren(...parts);
  }

  /** One reading; false (no more readings) when the token may not read the agent. */
  async function refresh() {
    try {
      const agent = await get("/v1/agent");
      if (polling.stopped) return false;
      const now = performance.now();
      const rate = previous ? (agent.health.heartbeats - previous.heartbeats) / ((now - previous.at) / 1000) : null;
      previous = { heartbeats: agent.health.heartbeats, at: now };
      render(agent, rate);
      return true;
    } catch (error) {
      if (polling.stopped) return false;
      content.replaceChildren(errorBox(error));
      return error.status !== 401 && error.status !== 403;
    }
  }
  const polling = poll(refresh, period);

  return { element, stop: () => polling.stop() };
}
