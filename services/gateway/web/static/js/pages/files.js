// Files: the bucket by folders, with breadcrumbs; upload by drag and drop (or the button)
// straight to the bucket with a progress bar per file; delete with confirmation.

import { api } from "../api.js";
import {
  breadcrumbs,
  card,
  confirmDialog,
  emptyState,
  errorNotice,
  icon,
  loading,
  pageHeader,
  progressBar,
  timeAgo,
  toast,
} from "../components.js";
import { h, replace } from "../dom.js";
import { baseName, folderUrl, normalizePrefix, pathCrumbs, viewerUrl } from "../files.js";
import { formatBytes } from "../format.js";
import { uploadFile } from "../upload.js";

function listingTable(listing, onDelete) {
  const folders = listing.folders.map((prefix) =>
    h(
      "tr",
      { dataset: { key: prefix } },
      h(
        "td",
        { class: "primary", "data-label": "Name" },
        h(
          "a",
          { class: "file-name", href: folderUrl(prefix) },
          icon("folder"),
          `${baseName(prefix)}/`,
        ),
      ),
      h("td", { class: "num muted", "data-label": "Size" }, "—"),
      h("td", { class: "muted", "data-label": "Modified" }, "—"),
      h("td", { "data-label": "" }),
    ),
  );
  const objects = listing.objects.map((object) =>
    h(
      "tr",
      { dataset: { key: object.key } },
      h(
        "td",
        { class: "primary", "data-label": "Name" },
        h(
          "a",
          { class: "file-name", href: viewerUrl(object.key) },
          icon("file"),
          baseName(object.key),
        ),
      ),
      h("td", { class: "num nowrap", "data-label": "Size" }, formatBytes(object.size)),
      h("td", { class: "nowrap", "data-label": "Modified" }, timeAgo(object.last_modified)),
      h(
        "td",
        { class: "num", "data-label": "" },
        h(
          "button",
          {
            type: "button",
            class: "button small danger-outline",
            "aria-label": `Delete ${baseName(object.key)}`,
            onClick: () => onDelete(object.key),
          },
          "Delete",
        ),
      ),
    ),
  );
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data stack", "aria-label": "Files" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Name"),
          h("th", { scope: "col", class: "num" }, "Size"),
          h("th", { scope: "col" }, "Modified"),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
        ),
      ),
      h("tbody", {}, folders, objects),
    ),
  );
}

function uploadRow(file) {
  const status = h("span", { class: "status" }, "Waiting…");
  const bar = h("div", {}, progressBar(0, { label: `Uploading ${file.name}` }));
  const row = h(
    "div",
    { class: "upload-row" },
    h("span", { class: "file-name" }, file.name),
    status,
    bar,
  );
  return {
    row,
    progress(sent) {
      status.textContent = `${formatBytes(sent)} of ${formatBytes(file.size)}`;
      replace(
        bar,
        progressBar(file.size ? sent / file.size : 1, { label: `Uploading ${file.name}` }),
      );
    },
    finish(error) {
      row.classList.add(error ? "error" : "done");
      status.textContent = error ? error.message : "Uploaded";
      if (!error)
        replace(bar, progressBar(1, { className: "done", label: `${file.name} uploaded` }));
    },
  };
}

export function renderFiles(main, { query, signal }) {
  const prefix = normalizePrefix(query.get("prefix"));
  const picker = h("input", { type: "file", multiple: true, hidden: true, id: "upload-input" });
  const uploadButton = h(
    "button",
    { type: "button", class: "button primary", onClick: () => picker.click() },
    "Upload files",
  );
  const uploads = h("div", { class: "uploads", "aria-label": "Uploads" });
  const listingBody = h("div", {}, loading());
  const zone = h(
    "div",
    { class: "dropzone" },
    card({
      title: prefix ? baseName(prefix) : "Your bucket",
      actions: [h("span", { class: "muted" }, "Drop files here to upload")],
      body: listingBody,
    }),
  );
  replace(
    main,
    pageHeader({
      title: "Files",
      before: breadcrumbs(pathCrumbs(prefix)),
      subtitle: prefix ? `In ${prefix}` : "Job folders, their outputs and models.",
      actions: [uploadButton, picker],
    }),
    uploads,
    zone,
  );

  const load = async () => {
    try {
      const listing = await api("/api/files", { query: { prefix }, signal });
      if (!listing.folders.length && !listing.objects.length) {
        replace(
          listingBody,
          emptyState("This folder is empty", "Drop files here, or use Upload files."),
        );
      } else {
        replace(listingBody, listingTable(listing, remove));
      }
    } catch (error) {
      if (error.name !== "AbortError")
        replace(listingBody, errorNotice(error, "Could not list files"));
    }
  };

  const remove = async (key) => {
    const confirmed = await confirmDialog({
      title: `Delete ${baseName(key)}?`,
      message: `${key} is removed from your bucket. This cannot be undone.`,
      confirmLabel: "Delete",
    });
    if (!confirmed) return;
    try {
      await api("/api/files", { method: "DELETE", query: { key }, signal });
      toast(`Deleted ${baseName(key)}.`);
      await load();
    } catch (error) {
      if (error.name !== "AbortError") toast(`${error.message}. ${error.hint}`, { error: true });
    }
  };

  const upload = async (files) => {
    for (const file of files) {
      const view = uploadRow(file);
      uploads.append(view.row);
      try {
        await uploadFile(prefix + file.name, file, { onProgress: view.progress, signal });
        view.finish();
      } catch (error) {
        if (error.name === "AbortError") return;
        view.finish(error);
      }
    }
    await load();
  };

  picker.addEventListener("change", () => {
    upload([...picker.files]);
    picker.value = "";
  });
  let depth = 0; // dragenter/dragleave fire for every child: count to know when it left
  zone.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth += 1;
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragover", (event) => event.preventDefault());
  zone.addEventListener("dragleave", () => {
    depth -= 1;
    if (depth <= 0) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    const files = [...(event.dataTransfer?.files ?? [])];
    if (files.length) upload(files);
  });

  load();
}
