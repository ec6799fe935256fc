// Small pieces every page uses: badges, headers, notices, dialogs, toasts, icons.

import { h, svg } from "./dom.js";
import { formatTime, relativeTime } from "./format.js";

export const STATES = ["PENDING", "RUNNING", "FINISHED", "FAILED", "CANCELLED"];
export const ACTIVE_STATES = new Set(["PENDING", "RUNNING"]);

export function stateBadge(state, { large = false } = {}) {
  return h("span", { class: `badge state-${state}${large ? " large" : ""}` }, state);
}

/** "3 minutes ago", exact time on hover; `refreshTimes` keeps it current. */
export function timeAgo(iso, now = Date.now()) {
  return h("time", { datetime: iso, title: formatTime(iso) }, relativeTime(iso, now));
}

/** Re-word every `timeAgo` on the page (called on a timer by the app). */
export function refreshTimes() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[datetime]")) {
    el.textContent = relativeTime(el.getAttribute("datetime"), now);
  }
}

export function pageHeader({ title, subtitle, badge, actions = [], before }) {
  return h(
    "div",
    { class: "page-header" },
    h(
      "div",
      { class: "titles" },
      before,
      h("div", { class: "title-row" }, h("h1", {}, title), badge),
      subtitle ? h("div", { class: "subtitle" }, subtitle) : null,
    ),
    actions.length ? h("div", { class: "actions" }, actions) : null,
  );
}

export function card({ title, actions = [], body, className = "" }) {
  return h(
    "section",
    { class: `card ${className}`.trim(), "aria-label": title },
    h(
      "header",
      {},
      h("h2", {}, title),
      actions.length ? h("div", { class: "actions" }, actions) : null,
    ),
    body,
  );
}

/** A failed call, as the API explained it: message and what to do about it. */
export function errorNotice(error, title = "Something went wrong") {
  return h(
    "div",
    { class: "notice error", role: "alert" },
    h("span", { class: "title" }, title),
    h("span", {}, error.message),
    error.hint ? h("span", { class: "muted" }, error.hint) : null,
  );
}

export function loading(text = "Loading…") {
  return h("div", { class: "loading", role: "status" }, text);
}

export function emptyState(title, text) {
  return h("div", { class: "empty" }, h("div", { class: "title" }, title), text);
}

export function progressBar(fraction, { className = "", label } = {}) {
  const percent = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  return h(
    "div",
    {
      class: `progress ${className}`.trim(),
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": percent,
      "aria-label": label,
    },
    h("span", { style: `width: ${percent}%` }),
  );
}

/** "Live" / "Reconnecting…" next to a page title; returns [element, setStatus]. */
export function liveIndicator() {
  const el = h("span", { class: "live", role: "status" }, "Connecting…");
  const set = (status) => {
    el.className = `live ${status === "live" ? "on" : "off"}`;
    el.textContent = status === "live" ? "Live" : "Reconnecting…";
  };
  return [el, set];
}

export function breadcrumbs(items) {
  return h(
    "nav",
    { "aria-label": "Breadcrumb" },
    h(
      "ol",
      { class: "breadcrumbs" },
      items.map((item, index) =>
        h(
          "li",
          {},
          index === items.length - 1
            ? h("span", { "aria-current": "page" }, item.label)
            : h("a", { href: item.href }, item.label),
        ),
      ),
    ),
  );
}

export function toast(message, { error = false } = {}) {
  const el = h("div", { class: `toast${error ? " error" : ""}` }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), error ? 8000 : 4000);
}

/**
 * Ask before something that cannot be undone. Resolves true when confirmed. A native
 * <dialog>: focus moves into it, Escape cancels, focus returns to the button afterwards.
 */
export function confirmDialog({ title, message, confirmLabel, danger = true }) {
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const confirm = h(
      "button",
      { type: "submit", value: "confirm", class: `button ${danger ? "danger" : "primary"}` },
      confirmLabel,
    );
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "confirm-title" }, title),
        h("p", {}, message),
        h(
          "div",
          { class: "buttons" },
          h(
            "button",
            { type: "submit", value: "cancel", class: "button", autofocus: true },
            "Keep",
          ),
          confirm,
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      opener?.focus?.();
      resolve(dialog.returnValue === "confirm");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

const ICON_PATHS = {
  folder:
    "M3 6.5A1.5 1.5 0 0 1 4.5 5h4l2 2h9A1.5 1.5 0 0 1 21 8.5v9a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 17.5z",
  file: "M6 3h8l5 5v12a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zm7 1.5V9h4.5",
};

export function icon(name) {
  return svg(
    "svg",
    { class: `icon ${name}`, viewBox: "0 0 24 24", "aria-hidden": "true" },
    svg("path", {
      d: ICON_PATHS[name],
      fill: name === "folder" ? "currentColor" : "none",
      stroke: "currentColor",
      "stroke-width": name === "folder" ? 0 : 1.6,
      "stroke-linejoin": "round",
    }),
  );
}
