// Follows one of the agent's SSE streams. Read with fetch rather than EventSource, so the token travels in a header
// (EventSource cannot send one) and a lost connection resumes with `Last-Event-ID` on our own schedule.

import { headers, errorFrom } from "./api.js";

/**
 * Follows `path` until `stop()`: `onEvent(type, data)` for each event (a `snapshot` replaces everything the page
 * holds; the other types are changes), `onState(state, detail)` with "open", "lost" (retrying) or "refused" (an
 * answer such as 401 or 403, which a retry would not change).
 */
export function follow(path, { onEvent, onState }) {
  let stopped = false;
  let controller = null;
  let lastEventID = null;
  let opened = false;

  async function readOnce() {
    controller = new AbortController();
    const request = headers({ Accept: "text/event-stream" });
    if (lastEventID !== null) request["Last-Event-ID"] = lastEventID;
    const response = await fetch(path, { headers: request, signal: controller.signal, cache: "no-store" });
    if (!response.ok) {
      const error = await errorFrom(response);
      error.final = response.status >= 400 && response.status < 500 && response.status !== 429;
      throw error;
    }
    opened = true;
    onState("open");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let scanned = 0;
    let type = "message";
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      // A snapshot may be megabytes on one line: search only what was not searched yet.
      while ((newline = buffer.indexOf("\n", scanned)) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        scanned = 0;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (id !== null) lastEventID = id;
          if (data.length > 0) onEvent(type, JSON.parse(data.join("\n")));
          type = "message";
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let content = colon < 0 ? "" : line.slice(colon + 1);
        if (content.startsWith(" ")) content = content.slice(1);
        if (field === "event") type = content;
        else if (field === "data") data.push(content);
        else if (field === "id") id = content;
      }
      scanned = buffer.length;
    }
  }

  async function run() {
    let delay = 250;
    while (!stopped) {
      opened = false;
      try {
        await readOnce();
      } catch (error) {
        if (stopped) return;
        if (error.final) {
          onState("refused", error);
          return;
        }
      }
      if (stopped) return;
      onState("lost");
      if (opened) delay = 250;
      await new Promise((resume) => setTimeout(resume, delay));
      delay = Math.min(delay * 2, 4000);
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      controller?.abort();
    },
  };
}
