// The services page: every service the token may read, its instances counted by status, live.
//
// It follows the whole catalog's stream: the snapshot fills a small index (service -> instance -> status and tags),
// each change updates one entry, and only the rows of services that changed are repainted, once per frame.

import { follow } from "./stream.js";
import { el, statuses, statusBadge, showConnection, frameScheduler } from "./view.js";

/** The worst status among `counts`, the one the row shows first. */
function overall(counts) {
  if (counts.critical > 0) return "critical";
  if (counts.warning > 0) return "warning";
  if (counts.passing > 0) return "passing";
  return "maintenance";
}

export function servicesPage() {
  /** service name -> Map(instance id -> { status, tags }) */
  const services = new Map();
  /** service name -> its table row, in name order in `order`. */
  const rows = new Map();
  const order = [];
  const dirty = new Set();
  let filter = "";

  const body = el("tbody");
  const summary = el("span", { class: "muted", id: "services-summary", "aria-live": "polite" }, "Loading\u2026");
  const input = el("input", {
    type: "search", id: "service-filter", placeholder: "Filter by name or tag", "aria-label": "Filter services",
  });
  input.addEventListener("input", () => {
    filter = input.value.trim().toLowerCase();
    for (const name of rows.keys()) dirty.add(name);
    schedule();
  });
  const heading = (text, numeric) => el("th", { scope: "col", class: numeric ? "num" : null }, text);
  const table = el("table", { id: "services" },
    el("thead", {}, el("tr", {},
      heading("Service"), heading("Health"), ...statuses.map((s) => heading(s, true)), heading("total", true),
      el("th", { scope: "col", class: "hide-narrow" }, "Tags"))),
    body);
  const element = el("section", { "aria-labelledby": "services-title" },
    el("h1", { id: "services-title" }, "Services"),
    el("div", { class: "toolbar" }, input, summary),
    table);

  function matches(name, tags) {
    return !filter || name.includes(filter) || tags.some((tag) => tag.toLowerCase().includes(filter));
  }

  function rowFor(name) {
    const cells = {
      health: el("td"),
      counts: Object.fromEntries(statuses.map((s) => [s, el("td", { class: "num", "data-count": s })])),
      total: el("td", { class: "num", "data-count": "total" }),
      tags: el("td", { class: "hide-narrow" }),
    };
    const row = el("tr", { "data-service": name },
      el("th", { scope: "row" }, el("a", { href: `#/services/${encodeURIComponent(name)}` }, name)),
      cells.health, ...statuses.map((s) => cells.counts[s]), cells.total, cells.tags);
    return { row, cells, shown: "" };
  }

  function place(name, entry) {
    // Binary search for the name's place: rows stay sorted without re-sorting the table.
    let low = 0, high = order.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (order[middle] < name) low = middle + 1;
      else high = middle;
    }
    const next = order[low];
    order.splice(low, 0, name);
    body.insertBefore(entry.row, next === undefined ? null : rows.get(next).row);
  }

  function paint(name) {
    const instances = services.get(name);
    let entry = rows.get(name);
    if (!instances || instances.size === 0) {
      if (entry) {
        entry.row.remove();
        rows.delete(name);
        order.splice(order.indexOf(name), 1);
      }
      return;
    }
    if (!entry) {
      entry = rowFor(name);
      rows.set(name, entry);
      place(name, entry);
    }
    const counts = { passing: 0, warning: 0, critical: 0, maintenance: 0 };
    const tags = new Set();
    for (const instance of instances.values()) {
      counts[instance.status] += 1;
      for (const tag of instance.tags) tags.add(tag);
    }
    const sortedTags = [...tags].sort();
    // Only what changed is written: a steady row costs nothing.
    const key = JSON.stringify([counts, sortedTags]);
    if (key !== entry.shown) {
      entry.shown = key;
      entry.cells.health.replaceChildren(statusBadge(overall(counts)));
      for (const status of statuses) {
        entry.cells.counts[status].textContent = counts[status];
        entry.cells.counts[status].className = `num${counts[status] ? ` count ${status}` : ""}`;
      }
      entry.cells.total.textContent = instances.size;
      entry.cells.tags.replaceChildren(...sortedTags.map((tag) => el("span", { class: "tag" }, tag)));
    }
    entry.row.hidden = !matches(name, sortedTags);
  }

  function render() {
    for (const name of dirty) paint(name);
    dirty.clear();
    let instances = 0, critical = 0, shown = 0;
    for (const [name, members] of services) {
      instances += members.size;
      for (const instance of members.values()) if (instance.status === "critical") critical += 1;
      if (rows.get(name) && !rows.get(name).row.hidden) shown += 1;
    }
    summary.textContent = `${rows.size} services, ${instances} instances, ${critical} critical` +
      (filter ? `; ${shown} shown` : "");
  }
  const schedule = frameScheduler(render);

  function put(instance) {
    let members = services.get(instance.service);
    if (!members) services.set(instance.service, (members = new Map()));
    members.set(instance.id, { status: instance.status, tags: instance.tags ?? [] });
    dirty.add(instance.service);
  }

  const stream = follow("/v1/watch?status=any", {
    onEvent(type, data) {
      if (type === "snapshot") {
        for (const name of services.keys()) dirty.add(name);
        services.clear();
        for (const instance of data.instances) put(instance);
      } else if (type === "removed") {
        services.get(data.service)?.delete(data.id);
        dirty.add(data.service);
      } else if (type !== "observed") {
        put(data.instance);
      }
      schedule();
    },
    onState: showConnection,
  });

  return { element, stop: () => stream.stop() };
}
