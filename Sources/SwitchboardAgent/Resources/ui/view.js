// Small helpers the pages share: building elements, statuses, times, the live-connection notice.

/** An element: `el("td", { class: "num" }, "3")`. Attributes starting with "on" become listeners. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The statuses, worst last, as the agent orders them. */
export const statuses = ["passing", "warning", "critical", "maintenance"];

/** A status as a badge: a symbol (from the style sheet) and the word, so colour is never the only sign. */
export function statusBadge(status) {
  return el("span", { class: `status ${status}`, "data-status": status }, status);
}

/** `2026-12-07 17:40:01` in local time, from an ISO date. */
export function clock(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** "3 s ago", "5 min ago", "2 h ago". */
export function ago(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

/** "1 d 2 h", "3 h 4 min", "5 min 6 s". */
export function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s % 60} s`;
}

/** Shows how a page's live stream fares: nothing while open, a notice while lost or refused. */
export function showConnection(state, detail) {
  const notice = document.getElementById("connection");
  if (state === "open" || state === "stopped") {
    notice.hidden = true;
    notice.textContent = "";
    notice.className = "notice";
    return;
  }
  notice.hidden = false;
  if (state === "lost") {
    notice.className = "notice lost";
    notice.textContent = "Connection to the agent lost: reconnecting, and resuming where the stream left off\u2026";
  } else {
    notice.className = "notice error";
    notice.textContent = `The agent refused the live view: ${detail?.message ?? "unknown error"}` +
      (detail?.status === 401 || detail?.status === 403 ? " (enter a token with read access above)" : "");
  }
}

/** An error box for a page that could not load. */
export function errorBox(error) {
  return el("div", { class: "error", role: "alert" }, error?.message ?? String(error));
}

/** Runs `render` at most once per frame however often `schedule()` is called: many events, one repaint. */
export function frameScheduler(render) {
  let pending = false;
  return function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  };
}

/**
 * Calls `step` now, then `period` ms after each call ends, until `stop()`; a step that returns false ends the polling.
 * A step that awaited checks `stopped` before it paints, so a page left meanwhile is not painted over.
 */
export function poll(step, period) {
  let timer = null;
  const polling = {
    stopped: false,
    stop() {
      polling.stopped = true;
      clearTimeout(timer);
    },
  };
  async function run() {
    const again = await step();
    if (!polling.stopped && again !== false) timer = setTimeout(run, period);
  }
  run();
  return polling;
}
