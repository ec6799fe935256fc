// Client-side routing over real paths: the gateway answers every page path with the same
// shell, and this draws the page. Each page gets an AbortSignal that fires when the user
// leaves it, which closes its streams, timers and pending requests.

import { session } from "./api.js";
import { replace } from "./dom.js";

const routes = [];
let outlet = null;
let leaveCurrent = null;

/** Register a page: `pattern` like "/jobs/:id"; `render(main, ctx)` draws it. */
export function route(pattern, render, { nav, title, public: isPublic = false } = {}) {
  const names = [];
  const source = pattern.replace(/:(\w+)/g, (_, name) => {
    names.push(name);
    return "([^/]+)";
  });
  routes.push({ regex: new RegExp(`^${source}/?$`), names, render, nav, title, isPublic });
}

export function navigate(url, { replace: replaceEntry = false } = {}) {
  if (replaceEntry) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  show();
}

function match(pathname) {
  for (const candidate of routes) {
    const found = candidate.regex.exec(pathname);
    if (found) {
      const params = {};
      candidate.names.forEach((name, i) => {
        params[name] = decodeURIComponent(found[i + 1]);
      });
      return { ...candidate, params };
    }
  }
  return null;
}

function markNav(nav) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function show() {
  leaveCurrent?.abort();
  leaveCurrent = new AbortController();
  const url = new URL(location.href);
  const found = match(url.pathname) ?? match("/jobs");
  if (!found.isPublic && !session.key) {
    const next = encodeURIComponent(url.pathname + url.search);
    history.replaceState(null, "", `/signin?next=${next}`);
    show();
    return;
  }
  document.getElementById("sidebar").hidden = found.isPublic;
  document.body.classList.toggle("public-page", found.isPublic);
  markNav(found.nav);
  document.title = found.title ? `${found.title} · Rondo` : "Rondo";
  replace(outlet);
  found.render(outlet, {
    params: found.params,
    query: url.searchParams,
    signal: leaveCurrent.signal,
  });
  // Move focus to the new page so keyboard and screen-reader users start at its top.
  outlet.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function isPlainLeftClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

export function startRouter(main) {
  outlet = main;
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[href]");
    if (!link || !isPlainLeftClick(event) || link.target || link.hasAttribute("download")) return;
    const url = new URL(link.href);
    if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
    event.preventDefault();
    if (url.href !== location.href) navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", show);
  show();
}
