// Workers: the fleet as the scheduler last heard it: online or not, slots and their free
// memory, the jobs each runs, the last heartbeat. Refreshed every few seconds.

import { api } from "../api.js";
import { emptyState, errorNotice, loading, pageHeader, timeAgo } from "../components.js";
import { h, replace } from "../dom.js";
import { formatMegabytes } from "../format.js";

const REFRESH_MS = 5000;

function slotLine(slot) {
  const model = slot.kind === "cpu" ? "CPU" : slot.model.replaceAll("_", " ").toUpperCase();
  return h(
    "li",
    {},
    h("span", {}, `#${slot.index} ${model}`),
    h(
      "span",
      { class: "size" },
      `${formatMegabytes(slot.free_memory_mb)} free of ${formatMegabytes(slot.total_memory_mb)}`,
    ),
  );
}

function workersTable(workers) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data stack", "aria-label": "Workers" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Worker", "Status", "Slots", "Jobs", "Last heartbeat"].map((title) =>
            h("th", { scope: "col" }, title),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        workers.map((worker) =>
          h(
            "tr",
            { dataset: { agentId: worker.agent_id } },
            h(
              "td",
              { class: "primary", "data-label": "Worker" },
              h("div", {}, worker.agent_id),
              h("div", { class: "muted mono" }, worker.host),
            ),
            h(
              "td",
              { "data-label": "Status" },
              h(
                "span",
                { class: `badge ${worker.online ? "online" : "offline"}` },
                worker.online ? "Online" : "Offline",
              ),
            ),
            h(
              "td",
              { "data-label": "Slots" },
              h("ul", { class: "file-list" }, worker.slots.map(slotLine)),
            ),
            h(
              "td",
              { "data-label": "Jobs" },
              worker.jobs.length
                ? worker.jobs.map((id) =>
                    h("div", {}, h("a", { class: "mono", href: `/jobs/${id}` }, id.slice(0, 8))),
                  )
                : h("span", { class: "muted" }, "Idle"),
            ),
            h(
              "td",
              { class: "nowrap", "data-label": "Last heartbeat" },
              worker.last_heartbeat_at ? timeAgo(worker.last_heartbeat_at) : "—",
            ),
          ),
        ),
      ),
    ),
  );
}

function summary(fleet) {
  const slots = fleet.workers.reduce((count, worker) => count + worker.slots.length, 0);
  const busy = fleet.workers.filter((worker) => worker.jobs.length).length;
  const tile = (label, value) =>
    h(
      "div",
      { class: "stat" },
      h("div", { class: "value" }, value),
      h("div", { class: "label" }, label),
    );
  return h(
    "div",
    { class: "stats", role: "group", "aria-label": "Fleet" },
    tile("Online", String(fleet.online_count)),
    tile("Slots", String(slots)),
    tile("Busy workers", String(busy)),
    tile("Free memory", formatMegabytes(fleet.total_free_memory_mb)),
  );
}

export function renderWorkers(main, { signal }) {
  const stats = h("div", {});
  const list = h("section", { class: "card", "aria-label": "Worker list" }, loading());
  replace(
    main,
    pageHeader({
      title: "Workers",
      subtitle: "Hosts that run federations, as of their last heartbeat.",
    }),
    h("div", { class: "grid" }, stats, list),
  );

  const load = async () => {
    try {
      const fleet = await api("/api/workers", { signal });
      replace(stats, summary(fleet));
      replace(
        list,
        fleet.workers.length
          ? workersTable(fleet.workers)
          : emptyState(
              "No workers",
              "Start a worker-agent; it shows here after its first heartbeat.",
            ),
      );
    } catch (error) {
      if (error.name !== "AbortError") replace(list, errorNotice(error, "Could not load workers"));
    }
  };

  load();
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer), { once: true });
}
