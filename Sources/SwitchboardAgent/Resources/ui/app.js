// The dashboard's shell: the token form, the pages by URL fragment, the banners every page shows.

import { token, setToken, get, rights } from "./api.js";
import { el, showConnection } from "./view.js";
import { servicesPage } from "./services.js";
import { servicePage } from "./service.js";
import { eventsPage } from "./events.js";
import { agentPage } from "./agent.js";
import { gatewaysPage } from "./gateways.js";

const main = document.getElementById("main");
let current = null;
/** Whether the token may read the agent itself (its banners); asked before polling, so nothing is refused. */
let agentReadable = false;

/** The page the fragment names: `#/services`, `#/services/payment`, `#/events`, `#/gateways`, `#/agent`. */
function route() {
  const path = location.hash.replace(/^#/, "") || "/services";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "services" && parts[1]) return { name: "services", make: () => servicePage(parts[1]) };
  if (parts[0] === "events") return { name: "events", make: () => eventsPage(parts[1] ?? "") };
  if (parts[0] === "agent") return { name: "agent", make: () => agentPage() };
  if (parts[0] === "gateways") return { name: "gateways", make: () => gatewaysPage() };
  return { name: "services", make: () => servicesPage() };
}

function show() {
  current?.stop();
  showConnection("stopped");
  const { name, make } = route();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = make();
  main.replaceChildren(current.element);
}

/** Says whose view this is: the token's accessor id, or that ACLs are off. */
async function describeToken() {
  const state = document.getElementById("token-state");
  try {
    const answer = await rights();
    agentReadable = answer.agent !== "deny";
    state.textContent = answer.enforced ? `as ${answer.accessorID}` : "ACLs off";
    state.classList.remove("error");
  } catch (error) {
    agentReadable = false;
    state.textContent = error.message;
  }
}

/** Banners for the whole agent: self-preservation on, a cluster view gone stale. Polled; quiet without agent:read. */
async function refreshBanners() {
  const banners = document.getElementById("banners");
  if (!agentReadable) {
    banners.replaceChildren();
    return;
  }
  try {
    const agent = await get("/v1/agent");
    const shown = [];
    const preservation = agent.health.selfPreservation;
    if (preservation.active) {
      shown.push(el("div", { class: "banner warning", id: "self-preservation" },
        `Self-preservation is on: ${preservation.missing} of ${preservation.instances} TTL instances missed ` +
        "heartbeats at once, so the agent is not expiring any (it suspects its own network)."));
    }
    const age = agent.cluster?.viewAgeMilliseconds;
    if (agent.cluster && (age === undefined || age === null || age > 5000)) {
      shown.push(el("div", { class: "banner critical", id: "stale-view" },
        `This agent's view of the cluster is stale (${age === undefined || age === null ? "never confirmed" :
          `${(age / 1000).toFixed(1)} s old`}${agent.cluster.lastError ? `: ${agent.cluster.lastError}` : ""}).`));
    }
    banners.replaceChildren(...shown);
  } catch {
    banners.replaceChildren();
  }
}

document.getElementById("token").value = token();
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(document.getElementById("token").value.trim());
  describeToken().then(refreshBanners);
  show();
});
window.addEventListener("hashchange", show);
describeToken().then(refreshBanners);
setInterval(refreshBanners, 3000);
show();
