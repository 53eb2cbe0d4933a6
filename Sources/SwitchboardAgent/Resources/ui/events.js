// The change log as it happens: registrations, status changes, removals, what clients observed, and who made each
// change (the audit trail) when the token may read the event log.
//
// The stream says when something changed; the log (`/v1/events?since=`) says who changed it. With a token that may
// not read the log, the page shows the stream's own events, without the audit record.

import { follow } from "./stream.js";
import { get, rights } from "./api.js";
import { el, statusBadge, showConnection, clock } from "./view.js";

const kept = 500;

function detail(event) {
  if (event.kind === "observed" && event.observation) {
    const o = event.observation;
    return `${o.reporter} saw ${o.kind}: ${o.reason}`;
  }
  if (event.kind === "status") {
    if (event.instance.maintenance) return `drained: ${event.instance.maintenance.reason}`;
    const failing = event.instance.checks.find((check) => check.status !== "passing");
    return failing?.output ?? "";
  }
  if (event.kind === "added") return `${event.instance.address}:${event.instance.port}`;
  return "";
}

function who(by) {
  if (!by) return "";
  return [by.accessorID, by.address].filter(Boolean).join(" from ");
}

export function eventsPage(initialFilter) {
  let filter = initialFilter.toLowerCase();
  let audited = false;
  let since = null;
  let fetching = false;
  let again = false;
  const body = el("tbody");
  const state = el("span", { class: "muted", "aria-live": "polite" }, "Loading\u2026");
  const input = el("input", {
    type: "search", id: "event-filter", value: initialFilter, placeholder: "Filter by service",
    "aria-label": "Filter events by service",
  });
  input.addEventListener("input", () => {
    filter = input.value.trim().toLowerCase();
    for (const row of body.rows) row.hidden = !row.dataset.service.includes(filter);
  });
  const heading = (text, narrow) => el("th", { scope: "col", class: narrow ? "hide-narrow" : null }, text);
  const element = el("section", { "aria-labelledby": "events-title" },
    el("h1", { id: "events-title" }, "Events"),
    el("div", { class: "toolbar" }, input, state),
    el("table", { class: "events", id: "events" },
      el("thead", {}, el("tr", {}, heading("Time"), heading("Index", true), heading("Kind"), heading("Service"),
        heading("Instance"), heading("Status"), heading("Detail", true), heading("By"))),
      body));

  function add(events) {
    // Newest first; the log returns oldest first.
    for (const event of events) {
      const row = el("tr", { "data-service": event.service, "data-kind": event.kind, "data-index": event.index },
        el("td", {}, clock(event.at)),
        el("td", { class: "num hide-narrow" }, event.index),
        el("td", { class: "kind" }, event.kind),
        el("td", {}, el("a", { href: `#/services/${encodeURIComponent(event.service)}` }, event.service)),
        el("td", {}, event.id),
        el("td", {}, event.kind === "removed" ? "gone" : statusBadge(event.instance.status)),
        el("td", { class: "output hide-narrow" }, detail(event)),
        el("td", { class: "who" }, who(event.by)));
      row.hidden = !event.service.includes(filter);
      body.insertBefore(row, body.firstChild);
    }
    while (body.rows.length > kept) body.lastChild.remove();
  }

  /** Reads the log after `since`; one read at a time, and one more if changes arrived meanwhile. */
  async function readLog() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      do {
        again = false;
        const page = await get(`/v1/events?since=${since}&limit=${kept}`);
        add(page.events);
        since = page.index;
      } while (again);
      state.textContent = "Live, with who made each change.";
    } catch (error) {
      state.textContent = `The event log could not be read: ${error.message}`;
    } finally {
      fetching = false;
    }
  }

  let stream = null;
  let stopped = false;
  rights().then((answer) => {
    audited = answer.events !== "deny";
  }).catch(() => {
    audited = false;
  }).finally(() => {
    if (stopped) return;
    stream = follow("/v1/watch?status=any", {
      onEvent(type, data) {
        if (type === "snapshot") {
          if (since === null) {
            since = audited ? Math.max(0, data.index - 200) : data.index;
            if (audited) readLog();
            else state.textContent = "Live. This token may not read the event log, so who made each change is not shown.";
          }
          return;
        }
        if (audited) readLog();
        else add([data]);
      },
      onState: showConnection,
    });
  });

  return {
    element,
    stop() {
      stopped = true;
      stream?.stop();
    },
  };
}
