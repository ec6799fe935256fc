// Job detail: state and reason, the live worker panel, the timeline, per-round charts, the
// failure explained, a live log tail, and the actions the job's state allows.

import { ApiError, api } from "../api.js";
import { lineChart } from "../chart.js";
import {
  ACTIVE_STATES,
  card,
  confirmDialog,
  emptyState,
  errorNotice,
  liveIndicator,
  loading,
  pageHeader,
  progressBar,
  stateBadge,
  timeAgo,
  toast,
} from "../components.js";
import { h, replace } from "../dom.js";
import { formatDuration, formatTime } from "../format.js";
import { openStream } from "../sse.js";

const LOG_TAIL_LINES = 200;
const LOG_KEEP_LINES = 2000;

const CAUSES = {
  worker_timeout: "Worker timeout",
  oom: "Out of memory",
  missing_file: "Missing file",
  nccl_error: "NCCL error",
  name_not_defined: "Name is not defined",
  manifest_missing: "manifest.ndjson missing",
  validation: "Validation error",
  other: "Error",
};

function stats(workers) {
  const tile = (label, value, warn = false) =>
    h(
      "div",
      { class: `stat${warn && value ? " warn" : ""}`, dataset: { stat: label.toLowerCase() } },
      h("div", { class: "value" }, String(value)),
      h("div", { class: "label" }, label),
    );
  return h(
    "div",
    { class: "stats", role: "group", "aria-label": "Workers" },
    tile("Total", workers.total),
    tile("Connected", workers.connected),
    tile("Errors", workers.errors, true),
    tile("Disconnected", workers.disconnected, true),
  );
}

function failureNotice(error) {
  return h(
    "div",
    { class: "notice error", role: "alert", dataset: { failure: error.cause } },
    h("span", { class: "title" }, "The job failed"),
    h(
      "dl",
      {},
      h("dt", {}, "Message"),
      h("dd", { dataset: { field: "message" } }, error.message),
      h("dt", {}, "Cause"),
      h("dd", { dataset: { field: "cause" } }, CAUSES[error.cause] ?? error.cause),
      h("dt", {}, "What to do"),
      h("dd", { dataset: { field: "hint" } }, error.hint),
    ),
  );
}

function timeline(transitions) {
  return h(
    "ol",
    { class: "timeline", "aria-label": "State transitions" },
    transitions.map((step, index) => {
      const previous = transitions[index - 1];
      const after = previous ? (Date.parse(step.at) - Date.parse(previous.at)) / 1000 : null;
      return h(
        "li",
        { class: `state-${step.state}` },
        h("strong", {}, step.state),
        h(
          "span",
          { class: "when" },
          formatTime(step.at),
          after === null ? "" : ` · after ${formatDuration(after)}`,
        ),
      );
    }),
  );
}

/** An ended job's outputs: final once the platform says so (a download before may be stale). */
function outputsStatus(job) {
  if (!job.outputs_written_at)
    return h("span", { class: "muted", dataset: { field: "outputs" } }, "Being written…");
  const models = `${job.files_prefix}model_out/`;
  return h(
    "span",
    { dataset: { field: "outputs" } },
    h("a", { href: `/files?prefix=${encodeURIComponent(models)}` }, "Written"),
    ` · ${formatTime(job.outputs_written_at)}`,
  );
}

function details(job) {
  const config = job.config;
  const rows = [
    ["Job id", h("span", { class: "mono" }, job.id)],
    ["Created", formatTime(job.created_at)],
    ["Updated", timeAgo(job.updated_at)],
    ["Local epochs", config.local_epochs],
    ["Batch size", config.batch_size],
    ["Learning rate", config.learning_rate],
    ["Min clients", config.min_clients ?? "all shards"],
    [
      "Folder",
      h("a", { href: `/files?prefix=${encodeURIComponent(job.files_prefix)}` }, job.files_prefix),
    ],
  ];
  if (!ACTIVE_STATES.has(job.state)) rows.push(["Outputs", outputsStatus(job)]);
  if (Object.keys(config.extra ?? {}).length) {
    rows.push(["Extra", h("span", { class: "mono" }, JSON.stringify(config.extra))]);
  }
  return h(
    "dl",
    { class: "kv" },
    rows.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]),
  );
}

function slotsTable(slots) {
  if (!slots.length)
    return emptyState("No workers placed yet", "They appear once the job is placed.");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data stack", "aria-label": "Worker slots" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Slot", "Site", "Worker", "Status", "Heartbeat"].map((t) =>
            h("th", { scope: "col" }, t),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        slots.map((slot) =>
          h(
            "tr",
            {},
            h("td", { class: "primary", "data-label": "Slot" }, `client_${slot.slot}`),
            h("td", { "data-label": "Site", class: "mono" }, slot.site_name),
            h("td", { "data-label": "Worker" }, slot.agent_id ?? "—"),
            h("td", { "data-label": "Status" }, slot.status),
            h(
              "td",
              { "data-label": "Heartbeat", class: "nowrap" },
              slot.last_heartbeat_at ? timeAgo(slot.last_heartbeat_at) : "—",
            ),
          ),
        ),
      ),
    ),
  );
}

function metricNames(rounds) {
  const names = new Set();
  for (const round of rounds) for (const name of Object.keys(round.metrics)) names.add(name);
  return [...names].sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : a.localeCompare(b)));
}

function charts(rounds) {
  if (!rounds.length) {
    return emptyState("No rounds completed yet", "Loss and metrics appear here after each round.");
  }
  return h(
    "div",
    { class: "charts" },
    metricNames(rounds).map((name) =>
      lineChart({
        title: name,
        className: name === "loss" ? "loss" : "",
        points: rounds
          .filter((round) => name in round.metrics)
          .map((round) => ({ round: round.round, value: round.metrics[name] })),
      }),
    ),
  );
}

/** The live log tail: one source at a time, the last lines first, then lines as they come. */
function logPanel(job, signal) {
  const select = h("select", { id: "log-source", "aria-label": "Log source" });
  const view = h("pre", {
    class: "log-view",
    tabindex: "0",
    "aria-label": "Log lines",
    "aria-live": "off",
  });
  let source = "server";
  let lines = [];
  let nextLine = 0; // number of the line after the last one shown: batches overlap the tail

  const setSources = (total) => {
    const wanted = ["server", ...Array.from({ length: total }, (_, i) => `client_${i}`)];
    if ([...select.options].map((o) => o.value).join() === wanted.join()) return;
    replace(
      select,
      wanted.map((value) =>
        h(
          "option",
          { value, selected: value === source },
          value === "server" ? "FL server" : value,
        ),
      ),
    );
  };

  let fileKey = "";

  const draw = () => {
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 24;
    if (lines.length) view.textContent = lines.join("\n");
    else replace(view, emptyLog());
    if (atBottom) view.scrollTop = view.scrollHeight;
  };

  // No lines yet, or no longer (the gateway deletes them a while after the job ended): the
  // complete log stays in the bucket.
  const emptyLog = () =>
    h(
      "span",
      { class: "empty-log" },
      `No ${source} log lines here. `,
      fileKey
        ? h("a", { href: `/files/view?key=${encodeURIComponent(fileKey)}` }, "Complete log file")
        : null,
    );

  const load = async () => {
    try {
      const tail = await api(`/api/jobs/${job.id}/logs`, {
        query: { source, tail: LOG_TAIL_LINES },
        signal,
      });
      lines = tail.lines;
      fileKey = tail.file_key;
      nextLine = tail.first_line + tail.lines.length;
      draw();
      view.scrollTop = view.scrollHeight;
    } catch (error) {
      if (error.name === "AbortError") return;
      lines = [];
      replace(
        view,
        h(
          "span",
          { class: "empty-log" },
          `${error.message}${error.hint ? ` — ${error.hint}` : ""}`,
        ),
      );
    }
  };

  select.addEventListener("change", () => {
    source = select.value;
    load();
  });
  setSources(job.workers.total);
  const panel = card({
    title: "Logs",
    actions: [h("label", { for: "log-source", class: "visually-hidden" }, "Log source"), select],
    body: view,
  });
  return {
    panel,
    load,
    setSources,
    append(batch) {
      if (batch.source !== source) return;
      const fresh = batch.lines.slice(Math.max(0, nextLine - batch.first_line));
      if (!fresh.length) return;
      lines = lines.concat(fresh).slice(-LOG_KEEP_LINES);
      nextLine = batch.first_line + batch.lines.length;
      draw();
    },
  };
}

export function renderJobDetail(main, { params, signal }) {
  replace(main, loading("Loading job…"));
  const jobId = params.id;
  const [live, setLive] = liveIndicator();
  const rounds = new Map();
  let job = null;
  let view = null;

  const requestEnd = async (mode) => {
    const cancel = mode === "cancel";
    const confirmed = await confirmDialog({
      title: cancel ? `Cancel ${job.name}?` : `Stop ${job.name}?`,
      message: cancel
        ? "The job stops now and ends CANCELLED. Outputs written so far are kept."
        : "The job stops now and ends FINISHED with the outputs of the rounds completed so far.",
      confirmLabel: cancel ? "Cancel job" : "Stop job",
    });
    if (!confirmed) return;
    try {
      await api(`/api/jobs/${job.id}/${mode}`, { method: "POST", signal });
      toast(cancel ? "Cancellation requested." : "Stop requested.");
    } catch (error) {
      if (error.name !== "AbortError") toast(`${error.message}. ${error.hint}`, { error: true });
    }
  };

  const actionsFor = (state) =>
    ACTIVE_STATES.has(state)
      ? [
          h(
            "button",
            { type: "button", class: "button", onClick: () => requestEnd("stop") },
            "Stop",
          ),
          h(
            "button",
            { type: "button", class: "button danger-outline", onClick: () => requestEnd("cancel") },
            "Cancel",
          ),
        ]
      : [
          h(
            "a",
            {
              class: "button primary",
              href: `/files?prefix=${encodeURIComponent(job.files_prefix)}`,
            },
            "Browse Job Files",
          ),
        ];

  const build = () => {
    const badge = h("span", {});
    const reason = h("span", { class: "subtitle", dataset: { field: "reason" } });
    const actions = h("div", { class: "actions" });
    const header = pageHeader({
      title: job.name,
      before: h("a", { href: "/jobs", class: "muted" }, "← Jobs"),
      badge: [badge, live],
    });
    header.querySelector(".titles").append(reason);
    header.append(actions);
    const logs = logPanel(job, signal);
    const parts = {
      badge,
      reason,
      actions,
      state: null,
      failure: h("div", {}),
      stats: h("div", {}),
      progress: h("div", { class: "round-cell" }),
      charts: h("div", {}),
      timeline: h("div", {}),
      details: h("div", {}),
      slots: h("div", {}),
      logs,
    };
    replace(
      main,
      header,
      h(
        "div",
        { class: "grid" },
        parts.failure,
        parts.stats,
        h(
          "div",
          { class: "grid detail" },
          h(
            "div",
            { class: "grid" },
            card({
              title: "Training",
              body: h("div", { class: "body grid" }, parts.progress, parts.charts),
            }),
            card({ title: "Worker slots", body: parts.slots }),
            logs.panel,
          ),
          h(
            "div",
            { class: "grid" },
            card({ title: "Timeline", body: h("div", { class: "body" }, parts.timeline) }),
            card({ title: "Details", body: h("div", { class: "body" }, parts.details) }),
          ),
        ),
      ),
    );
    return parts;
  };

  const drawCharts = () => {
    const ordered = [...rounds.values()].sort((a, b) => a.round - b.round);
    replace(view.charts, charts(ordered));
  };

  const draw = () => {
    if (!view) view = build();
    document.title = `${job.name} · Rondo`;
    if (view.state !== job.state) {
      view.state = job.state;
      replace(view.badge, stateBadge(job.state, { large: true }));
      replace(view.actions, actionsFor(job.state));
    }
    view.reason.textContent = job.reason || "";
    replace(view.failure, job.error ? failureNotice(job.error) : null);
    replace(view.stats, stats(job.workers));
    const kind = job.state === "FINISHED" ? "done" : job.state === "FAILED" ? "failed" : "";
    replace(
      view.progress,
      h(
        "strong",
        { class: "nowrap", dataset: { field: "round" } },
        `Round ${job.current_round} / ${job.num_rounds}`,
      ),
      progressBar(job.num_rounds ? job.current_round / job.num_rounds : 0, {
        className: kind,
        label: "Rounds completed",
      }),
    );
    replace(view.timeline, timeline(job.transitions));
    replace(view.details, details(job));
    replace(view.slots, slotsTable(job.slots));
    view.logs.setSources(job.workers.total);
  };

  const loadRounds = async () => {
    try {
      const metrics = await api(`/api/jobs/${jobId}/metrics`, { signal });
      for (const round of metrics.rounds) rounds.set(round.round, round);
      drawCharts();
    } catch (error) {
      if (error.name !== "AbortError")
        replace(view.charts, errorNotice(error, "Could not load metrics"));
    }
  };

  const onJob = (next) => {
    job = next;
    draw();
  };

  openStream(
    `/api/jobs/${encodeURIComponent(jobId)}/events`,
    {
      // First on every (re)connection: reload what the stream may have missed meanwhile.
      snapshot: (snapshot) => {
        onJob(snapshot);
        loadRounds();
        view.logs.load();
      },
      state: onJob,
      progress: onJob,
      failed: onJob,
      round: (round) => {
        rounds.set(round.round, round);
        if (view) drawCharts();
      },
      log: (batch) => view?.logs.append(batch),
    },
    {
      signal,
      onStatus: setLive,
      onError: (error) =>
        replace(
          main,
          pageHeader({ title: "Job", before: h("a", { href: "/jobs", class: "muted" }, "← Jobs") }),
          errorNotice(
            error,
            error instanceof ApiError && error.status === 404
              ? "Job not found"
              : "Could not load the job",
          ),
        ),
    },
  );
}
