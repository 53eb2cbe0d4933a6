// One service's page: its instances with their checks, each check's recent history as a strip of marks (so a
// flapping check shows at a glance), and drain / undrain. Follows the service's stream; repaints only the instances
// that changed.

import { follow } from "./stream.js";
import { put, rights, instancePath } from "./api.js";
import { el, statusBadge, showConnection, frameScheduler, clock, ago, errorBox } from "./view.js";

/** What a check looks at, in a few words. */
function target(check) {
  if (check.type === "http") return `${check.method ?? "GET"} ${check.url} every ${check.interval ?? "?"}`;
  if (check.type === "tcp") return `TCP ${check.target} every ${check.interval ?? "?"}`;
  return `TTL ${check.ttl}`;
}

/** The check's transitions as coloured marks, each with its time and output on hover and in its label. */
function historyStrip(check) {
  const marks = check.history.map((change) =>
    el("span", {
      class: `mark ${change.to}`, role: "img",
      title: `${clock(change.at)}: ${change.from} \u2192 ${change.to}${change.output ? ` (${change.output})` : ""}`,
      "aria-label": `${change.to} at ${clock(change.at)}`,
    }));
  const flips = check.history.length;
  const words = flips === 0 ? "no changes yet" :
    `${flips} change${flips === 1 ? "" : "s"}, the last ${ago(check.history[flips - 1].at)}`;
  return el("div", { class: "history", "data-history": flips }, ...marks, el("span", { class: "why" }, words));
}

export function servicePage(name) {
  const instances = new Map();
  const cards = new Map();
  const dirty = new Set();
  let access = "write";
  let accessKnown = false;

  const list = el("div", { class: "instances", id: "instances" });
  const summary = el("p", { class: "muted", id: "service-summary", "aria-live": "polite" }, "Loading\u2026");
  const element = el("section", { "aria-labelledby": "service-title" },
    el("h1", { id: "service-title" }, name),
    el("p", {}, el("a", { href: "#/services" }, "\u2190 All services"), " \u00b7 ",
      el("a", { href: `#/events/${encodeURIComponent(name)}` }, "Events of this service")),
    summary, list);

  function actions(instance) {
    const problem = el("div", { class: "problem" });
    const canWrite = access === "write";
    const why = canWrite ? null :
      el("span", { class: "why" }, `Needs service:${name}:write; this token has ${access}.`);
    async function setMaintenance(body, form) {
      for (const control of form.querySelectorAll("button, input")) control.disabled = true;
      problem.replaceChildren();
      try {
        await put(`${instancePath(name, instance.id)}/maintenance`, body);
      } catch (error) {
        problem.replaceChildren(errorBox(error));
        for (const control of form.querySelectorAll("button, input")) control.disabled = !canWrite;
      }
    }
    let form;
    if (instance.maintenance) {
      form = el("form", { class: "actions" },
        el("button", { type: "submit", disabled: !canWrite, "data-action": "undrain" }, "Undrain"), why);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        setMaintenance({ enabled: false }, form);
      });
    } else {
      const reason = el("input", {
        name: "reason", placeholder: "Reason (optional)", "aria-label": `Reason to drain ${instance.id}`,
        disabled: !canWrite, maxlength: 256,
      });
      form = el("form", { class: "actions" }, reason,
        el("button", { type: "submit", disabled: !canWrite, "data-action": "drain" }, "Drain"), why);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        setMaintenance({ enabled: true, reason: reason.value.trim() || "drained from the dashboard" }, form);
      });
    }
    return [form, problem];
  }

  function card(instance) {
    const zone = instance.meta?.zone;
    const meta = Object.entries(instance.meta ?? {}).filter(([key]) => key !== "zone");
    return el("article", { class: `instance ${instance.status}`, "data-instance": instance.id },
      el("header", {},
        el("h3", {}, instance.id), statusBadge(instance.status),
        instance.maintenance ? el("span", { class: "why" },
          `drained ${ago(instance.maintenance.since)}: ${instance.maintenance.reason}`) : null),
      el("dl", { class: "facts" },
        el("div", {}, el("dt", {}, "address"), el("dd", {}, `${instance.address}:${instance.port}`)),
        el("div", {}, el("dt", {}, "weight"), el("dd", {}, instance.weight)),
        zone ? el("div", {}, el("dt", {}, "zone"), el("dd", {}, zone)) : null,
        instance.tags.length ? el("div", {}, el("dt", {}, "tags"),
          el("dd", {}, ...instance.tags.map((tag) => el("span", { class: "tag" }, tag)))) : null,
        ...meta.map(([key, value]) => el("div", {}, el("dt", {}, key), el("dd", {}, value)))),
      instance.checks.length === 0 ? el("p", { class: "why" }, "No checks: passing while registered.") :
        el("ul", { class: "checks" }, ...instance.checks.map((check) =>
          el("li", { "data-check": check.id },
            el("div", { class: "check-line" },
              statusBadge(check.status), el("strong", {}, check.name ?? check.id),
              el("span", { class: "muted" }, target(check))),
            check.output ? el("div", { class: "output" }, check.output) : null,
            historyStrip(check)))),
      ...actions(instance));
  }

  function paint(id) {
    const instance = instances.get(id);
    const old = cards.get(id);
    if (!instance) {
      old?.remove();
      cards.delete(id);
      return;
    }
    const fresh = card(instance);
    if (old) old.replaceWith(fresh);
    else {
      // Keep the cards in id order.
      const next = [...cards.keys()].filter((other) => other > id).sort()[0];
      list.insertBefore(fresh, next === undefined ? null : cards.get(next));
    }
    cards.set(id, fresh);
  }

  function render() {
    if (!accessKnown) return;
    for (const id of dirty) paint(id);
    dirty.clear();
    const counts = {};
    for (const instance of instances.values()) counts[instance.status] = (counts[instance.status] ?? 0) + 1;
    summary.textContent = instances.size === 0 ? "No instances registered." :
      `${instances.size} instance${instances.size === 1 ? "" : "s"}: ` + Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ");
  }
  const schedule = frameScheduler(render);

  rights([name]).then((answer) => {
    access = answer.services[name] ?? "deny";
  }).catch(() => {
    access = "read";
  }).finally(() => {
    accessKnown = true;
    for (const id of instances.keys()) dirty.add(id);
    schedule();
  });

  const stream = follow(`/v1/services/${encodeURIComponent(name)}/watch?status=any`, {
    onEvent(type, data) {
      if (type === "snapshot") {
        for (const id of instances.keys()) dirty.add(id);
        instances.clear();
        for (const instance of data.instances) {
          instances.set(instance.id, instance);
          dirty.add(instance.id);
        }
      } else if (type === "removed") {
        instances.delete(data.id);
        dirty.add(data.id);
      } else if (type !== "observed") {
        instances.set(data.id, data.instance);
        dirty.add(data.id);
      }
      schedule();
    },
    onState: showConnection,
  });

  return { element, stop: () => stream.stop() };
}
