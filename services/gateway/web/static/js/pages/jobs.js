// Jobs: every job of the user, newest first, filterable by state, live over `/api/events`.

import { api } from "../api.js";
import {
  STATES,
  emptyState,
  errorNotice,
  liveIndicator,
  loading,
  pageHeader,
  progressBar,
  stateBadge,
  timeAgo,
} from "../components.js";
import { h, replace } from "../dom.js";
import { isBefore } from "../format.js";
import { navigate } from "../router.js";
import { openStream } from "../sse.js";

export const PAGE_SIZE = 50;

function roundCell(job) {
  const fraction = job.num_rounds ? job.current_round / job.num_rounds : 0;
  const kind = job.state === "FINISHED" ? "done" : job.state === "FAILED" ? "failed" : "";
  return h(
    "div",
    { class: "round-cell" },
    h("span", { class: "nowrap" }, `${job.current_round} / ${job.num_rounds}`),
    progressBar(fraction, {
      className: kind,
      label: `Round ${job.current_round} of ${job.num_rounds}`,
    }),
  );
}

function jobRow(job, now) {
  const errors = job.workers.errors;
  return h(
    "tr",
    { dataset: { jobId: job.id, state: job.state } },
    h(
      "td",
      { class: "primary", "data-label": "Job" },
      h("a", { href: `/jobs/${job.id}` }, job.name),
    ),
    h("td", { "data-label": "State" }, stateBadge(job.state)),
    h(
      "td",
      { class: "num", "data-label": "Connected / Total", "data-col": "workers" },
      `${job.workers.connected}/${job.workers.total}`,
    ),
    h(
      "td",
      { class: `num${errors ? " warn" : ""}`, "data-label": "Errors" },
      errors ? h("strong", { class: "field-error" }, String(errors)) : "0",
    ),
    h("td", { "data-label": "Round", "data-col": "round" }, roundCell(job)),
    h("td", { class: "nowrap", "data-label": "Created" }, timeAgo(job.created_at, now)),
    h("td", { class: "nowrap", "data-label": "Updated" }, timeAgo(job.updated_at, now)),
  );
}

function jobsTable(jobs) {
  const now = Date.now();
  const body = h(
    "tbody",
    {},
    jobs.map((job) => jobRow(job, now)),
  );
  const table = h(
    "table",
    { class: "data stack", "aria-label": "Jobs" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Job"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col", class: "num" }, "Connected/Total"),
        h("th", { scope: "col", class: "num" }, "Errors"),
        h("th", { scope: "col" }, "Round"),
        h("th", { scope: "col" }, "Created"),
        h("th", { scope: "col" }, "Updated"),
      ),
    ),
    body,
  );
  return { table, body };
}

export function renderJobs(main, { query, signal }) {
  const state = STATES.includes(query.get("state")) ? query.get("state") : "";
  const page = Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1);
  const [live, setLive] = liveIndicator();

  const filters = h(
    "div",
    { class: "segmented", role: "group", "aria-label": "Filter by state" },
    ["", ...STATES].map((value) =>
      h(
        "button",
        {
          type: "button",
          "aria-pressed": String(value === state),
          onClick: () => navigate(value ? `/jobs?state=${value}` : "/jobs"),
        },
        value ? value.charAt(0) + value.slice(1).toLowerCase() : "All",
      ),
    ),
  );
  const content = h("section", { class: "card", "aria-label": "Job list" }, loading());
  replace(
    main,
    pageHeader({
      title: "Jobs",
      badge: live,
      subtitle: "Every job you submitted, newest first. Updates as it runs.",
      actions: [h("a", { class: "button primary", href: "/jobs/new" }, "New job")],
    }),
    filters,
    content,
  );

  // What the table shows, kept in step with the stream: id -> job.
  let jobs = new Map();
  let total = 0;
  let body = null;

  const pageUrl = (n) => {
    const params = new URLSearchParams();
    if (state) params.set("state", state);
    if (n > 1) params.set("page", String(n));
    const text = params.toString();
    return text ? `/jobs?${text}` : "/jobs";
  };

  const draw = () => {
    if (jobs.size === 0) {
      body = null;
      replace(
        content,
        emptyState(
          state ? `No ${state.toLowerCase()} jobs` : "No jobs yet",
          state ? "Try another filter." : "Submit one from New job; it shows here as it runs.",
        ),
      );
      return;
    }
    const view = jobsTable([...jobs.values()]);
    body = view.body;
    const first = (page - 1) * PAGE_SIZE + 1;
    const last = first + jobs.size - 1;
    const pager = h(
      "div",
      { class: "pager" },
      h("span", {}, `${first}–${last} of ${total}`),
      h(
        "div",
        { class: "buttons" },
        page > 1 ? h("a", { class: "button small", href: pageUrl(page - 1) }, "Newer") : null,
        last < total ? h("a", { class: "button small", href: pageUrl(page + 1) }, "Older") : null,
      ),
    );
    replace(content, h("div", { class: "table-wrap" }, view.table), pager);
  };

  const load = async () => {
    try {
      const list = await api("/api/jobs", {
        query: { state, limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE },
        signal,
      });
      jobs = new Map(list.items.map((job) => [job.id, job]));
      total = list.total;
      draw();
    } catch (error) {
      if (error.name !== "AbortError") replace(content, errorNotice(error, "Could not load jobs"));
    }
  };

  // Whether a job missing from this page would be on it (page 1 holds the newest matches).
  const fitsThisPage = (job) =>
    page === 1 &&
    (jobs.size < PAGE_SIZE || !isBefore(job.created_at, [...jobs.values()].at(-1).created_at));

  const onChange = (job) => {
    const known = jobs.get(job.id);
    if (known && isBefore(job.updated_at, known.updated_at)) return; // an old view, late
    const belongs = !state || job.state === state;
    if (known && !belongs) {
      jobs.delete(job.id);
      total -= 1;
      draw();
    } else if (known) {
      jobs.set(job.id, job);
      body?.querySelector(`tr[data-job-id="${job.id}"]`)?.replaceWith(jobRow(job, Date.now()));
    } else if (belongs && fitsThisPage(job)) {
      load(); // new here (submitted, or now in the filtered state): list in the server's order
    }
  };

  openStream(
    "/api/events",
    { ready: load, state: onChange, progress: onChange, failed: onChange },
    {
      signal,
      onStatus: setLive,
      onError: (error) => replace(content, errorNotice(error, "Could not follow jobs")),
    },
  );
}
