// Server-Sent Events over fetch: unlike EventSource, fetch can send the Authorization header,
// so the API key never goes into a URL (nor into proxy or server logs).
//
// `openStream` reconnects with a growing pause after a dropped connection. Both streams it
// follows start with an event that says where to resume (`snapshot` on a job's stream, `ready`
// on the user's), so a page reloads what it may have missed there. A 4xx answer is final:
// `onError` gets the ApiError and the stream stops.

import { authHeaders, failure } from "./api.js";

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 15000;

function dispatch(block, handlers) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  const handler = handlers[event];
  if (!handler || data.length === 0) return;
  handler(JSON.parse(data.join("\n")));
}

async function readEvents(response, handlers, signal) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const stop = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        dispatch(buffer.slice(0, end), handlers);
        buffer = buffer.slice(end + 2);
      }
    }
  } finally {
    signal.removeEventListener("abort", stop);
  }
}

/**
 * Follow `path` until `signal` aborts. `handlers` maps event names to functions of the parsed
 * JSON data; `onStatus("live" | "reconnecting")` reports the connection.
 */
export function openStream(path, handlers, { signal, onStatus, onError } = {}) {
  let retry = FIRST_RETRY_MS;
  const run = async () => {
    while (!signal.aborted) {
      try {
        const response = await fetch(path, {
          headers: { ...authHeaders(), Accept: "text/event-stream" },
          signal,
        });
        if (!response.ok) {
          const error = await failure(response);
          if (response.status < 500) {
            onError?.(error);
            return;
          }
          throw error;
        }
        retry = FIRST_RETRY_MS;
        onStatus?.("live");
        await readEvents(response, handlers, signal);
      } catch (error) {
        if (signal.aborted) return;
        console.debug("event stream %s dropped: %s", path, error.message);
      }
      if (signal.aborted) return;
      onStatus?.("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retry));
      retry = Math.min(retry * 2, MAX_RETRY_MS);
    }
  };
  run();
}
