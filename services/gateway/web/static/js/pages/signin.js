// Sign in with an API key. The key is checked against the API, then kept in this tab's
// sessionStorage only: it is gone when the tab closes or the user signs out.

import { api, session } from "../api.js";
import { errorNotice } from "../components.js";
import { h, replace } from "../dom.js";
import { navigate } from "../router.js";

function safeNext(query) {
  const next = query.get("next") || "/jobs";
  // Only a path on this site: never bounce a freshly signed-in user to another origin.
  return next.startsWith("/") && !next.startsWith("//") ? next : "/jobs";
}

export function renderSignIn(main, { query }) {
  const keyInput = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "rsk_live_…",
    "aria-describedby": "api-key-help",
  });
  const reveal = h("button", { type: "button", class: "button", "aria-pressed": "false" }, "Show");
  reveal.addEventListener("click", () => {
    const shown = keyInput.type === "text";
    keyInput.type = shown ? "password" : "text";
    reveal.textContent = shown ? "Show" : "Hide";
    reveal.setAttribute("aria-pressed", String(!shown));
  });
  const problem = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "button primary" }, "Sign in");

  const form = h(
    "form",
    { class: "body", novalidate: true },
    h(
      "a",
      { class: "brand", href: "/signin" },
      h("img", { src: "/static/img/logo.svg", alt: "", width: 32, height: 32 }),
      h("span", {}, "Rondo"),
    ),
    h(
      "p",
      { class: "muted" },
      "Federated-learning jobs on your GPU fleet. Sign in with your API key.",
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: "api-key" }, "API key"),
      h("div", { class: "key-input" }, keyInput, reveal),
      h(
        "span",
        { class: "help", id: "api-key-help" },
        "Kept in this browser tab only, until you sign out or close it.",
      ),
    ),
    problem,
    submit,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) {
      replace(problem, errorNotice({ message: "Enter your API key.", hint: "" }, "No key"));
      keyInput.focus();
      return;
    }
    submit.disabled = true;
    replace(problem);
    try {
      await api("/api/jobs", { query: { limit: 1 }, key });
      session.signIn(key);
      navigate(safeNext(query), { replace: true });
    } catch (error) {
      replace(problem, errorNotice(error, "Sign-in failed"));
      keyInput.select();
    } finally {
      submit.disabled = false;
    }
  });

  replace(main, h("div", { class: "signin" }, h("div", { class: "card" }, form)));
  keyInput.focus();
}
