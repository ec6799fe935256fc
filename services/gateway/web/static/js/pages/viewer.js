// File viewer: text files read-only in Monaco with their language (capped, with a notice),
// images previewed, anything else described. Download asks for a fresh presigned URL on every
// click, so a link that expired while the page was open is never used.

import { api } from "../api.js";
import {
  breadcrumbs,
  card,
  emptyState,
  errorNotice,
  loading,
  pageHeader,
  timeAgo,
  toast,
} from "../components.js";
import { h, replace } from "../dom.js";
import { baseName, parentPrefix, pathCrumbs } from "../files.js";
import { formatBytes } from "../format.js";
import { loadMonaco, textLanguage } from "../monaco.js";

export const TEXT_CAP_BYTES = 1024 * 1024;
const IMAGE_TYPES = new Set(["png", "jpg", "jpeg", "gif", "webp", "svg", "bmp"]);

function extension(name) {
  return name.includes(".") ? name.split(".").pop().toLowerCase() : "";
}

async function showText(body, key, language, signal) {
  const file = await api("/api/files/text", { query: { key, max_bytes: TEXT_CAP_BYTES }, signal });
  const notice = file.truncated
    ? h(
        "div",
        { class: "notice info", role: "note", dataset: { truncated: "true" } },
        h("span", { class: "title" }, "Large file: showing the beginning only"),
        h(
          "span",
          {},
          `The first ${formatBytes(TEXT_CAP_BYTES)} of ${formatBytes(file.size)}. Download it to see the whole file.`,
        ),
      )
    : null;
  const host = h("div", { class: "viewer", "aria-label": `${baseName(key)} contents` });
  replace(body, notice ? h("div", { class: "body" }, notice) : null, host);
  try {
    const monaco = await loadMonaco();
    if (signal.aborted) return;
    const editor = monaco.editor.create(host, {
      value: file.text,
      language,
      readOnly: true,
      domReadOnly: true,
      automaticLayout: true,
      minimap: { enabled: false },
      scrollBeyondLastLine: false,
      wordWrap: language === "plaintext" ? "on" : "off",
      fontSize: 13,
      renderLineHighlight: "none",
    });
    signal.addEventListener("abort", () => editor.dispose(), { once: true });
  } catch (error) {
    console.warn("Monaco unavailable, showing plain text: %s", error.message);
    replace(host, h("pre", { class: "plain-text", tabindex: "0" }, file.text));
  }
}

async function showImage(body, key, signal) {
  const { url } = await api("/api/files/download-url", { method: "POST", body: { key }, signal });
  replace(body, h("div", { class: "image-preview" }, h("img", { src: url, alt: baseName(key) })));
}

export function renderViewer(main, { query, signal }) {
  const key = query.get("key") || "";
  const name = baseName(key);
  const meta = h("span", { class: "muted" });
  const body = h("div", {}, loading("Opening…"));

  const download = h("button", { type: "button", class: "button primary" }, "Download");
  download.addEventListener("click", async () => {
    download.disabled = true;
    try {
      const { url } = await api("/api/files/download-url", {
        method: "POST",
        body: { key },
        signal,
      });
      // Presigned to attach the file: the browser saves it and this page stays.
      window.location.assign(url);
    } catch (error) {
      if (error.name !== "AbortError") toast(`${error.message}. ${error.hint}`, { error: true });
    } finally {
      download.disabled = false;
    }
  });

  const crumbs = pathCrumbs(parentPrefix(key));
  crumbs.push({ label: name });
  replace(
    main,
    pageHeader({ title: name, before: breadcrumbs(crumbs), subtitle: meta, actions: [download] }),
    card({ title: key, className: "file-card", body }),
  );

  const describe = async () => {
    const listing = await api("/api/files", { query: { prefix: parentPrefix(key) }, signal });
    const object = listing.objects.find((candidate) => candidate.key === key);
    if (!object) return false;
    replace(meta, `${formatBytes(object.size)} · modified `, timeAgo(object.last_modified));
    return true;
  };

  (async () => {
    try {
      if (!(await describe())) {
        download.disabled = true;
        replace(body, emptyState("No such file", `${key} is not in your bucket.`));
        return;
      }
      const language = textLanguage(name);
      if (language) await showText(body, key, language, signal);
      else if (IMAGE_TYPES.has(extension(name))) await showImage(body, key, signal);
      else {
        replace(
          body,
          emptyState(
            `No preview for ${extension(name) ? `.${extension(name)}` : "this"} files`,
            "Use Download to get the file.",
          ),
        );
      }
    } catch (error) {
      if (error.name !== "AbortError") replace(body, errorNotice(error, "Could not open the file"));
    }
  })();
}
