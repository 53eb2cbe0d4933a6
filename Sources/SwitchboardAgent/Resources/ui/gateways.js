// The gateways that registered themselves (tagged "gateway"), each with the routes in force, read from its admin
// address (`/routes`), so an operator sees what traffic goes where. Read every five seconds.

import { get } from "./api.js";
import { el, statusBadge, errorBox, poll } from "./view.js";

const period = 5000;

/** A gateway's routes, straight from its admin address (which allows any origin to read them). */
async function routesOf(admin) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 2000);
  try {
    const response = await fetch(`http://${admin}/routes`, { signal: controller.signal, cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

function routesTable(answer) {
  return el("table", { class: "routes" },
    el("thead", {}, el("tr", {}, ...["Route", "Prefix", "Services (weight)"].map((text) =>
      el("th", { scope: "col" }, text)))),
    el("tbody", {}, ...answer.routes.map((route) =>
      el("tr", { "data-route": route.name ?? route.prefix },
        el("td", {}, route.name ?? "(default)"),
        el("td", { class: "output" }, route.prefix),
        el("td", {}, ...(route.targets ?? [{ service: "<service>", weight: 1 }]).map((target) =>
          el("span", { class: "tag" }, target.service.startsWith("<") ? `${target.service} tagged ${route.tag}` :
            el("a", { href: `#/services/${encodeURIComponent(target.service)}` }, target.service),
          ` ${target.weight}`)))))));
}

export function gatewaysPage() {
  const content = el("div", { id: "gateways" }, el("p", { class: "muted" }, "Loading\u2026"));
  const element = el("section", { "aria-labelledby": "gateways-title" },
    el("h1", { id: "gateways-title" }, "Gateways"), content);
  async function refresh() {
    try {
      const list = await get("/v1/services");
      const names = list.services.filter((service) => service.tags.includes("gateway")).map((service) => service.name);
      const gateways = [];
      for (const name of names) {
        const lookup = await get(`/v1/services/${name}?status=any`);
        for (const instance of lookup.instances) gateways.push(instance);
      }
      const cards = await Promise.all(gateways.map(async (gateway) => {
        const admin = gateway.meta?.["gateway-admin"];
        let routes;
        if (!admin) routes = el("p", { class: "why" }, "No admin address registered: its routes cannot be read.");
        else {
          try {
            routes = routesTable(await routesOf(admin));
          } catch (error) {
            routes = errorBox(new Error(`The routes at http://${admin}/routes could not be read: ${error.message}`));
          }
        }
        return el("article", { class: `instance ${gateway.status}`, "data-gateway": gateway.id },
          el("header", {}, el("h3", {}, gateway.id), statusBadge(gateway.status),
            el("a", { href: `#/services/${encodeURIComponent(gateway.service)}` }, gateway.service)),
          el("dl", { class: "facts" },
            el("div", {}, el("dt", {}, "address"),
              el("dd", {}, `${gateway.meta?.scheme ?? "http"}://${gateway.address}:${gateway.port}`)),
            admin ? el("div", {}, el("dt", {}, "admin"), el("dd", {}, admin)) : null),
          routes);
      }));
      if (polling.stopped) return;
      content.replaceChildren(...(cards.length ? cards : [el("p", { class: "muted" },
        "No gateway has registered itself. Start one with `switchboard gateway --register gateway`.")]));
    } catch (error) {
      if (polling.stopped) return;
      content.replaceChildren(errorBox(error));
    }
  }
  const polling = poll(refresh, period);

  return { element, stop: () => polling.stop() };
}
