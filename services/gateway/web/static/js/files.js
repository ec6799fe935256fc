// Keys and folders of the user's bucket, shared by the Files, viewer and New job pages.

export function baseName(key) {
  const trimmed = key.endsWith("/") ? key.slice(0, -1) : key;
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

export function parentPrefix(key) {
  const trimmed = key.endsWith("/") ? key.slice(0, -1) : key;
  return trimmed.slice(0, trimmed.lastIndexOf("/") + 1);
}

export function folderUrl(prefix) {
  return prefix ? `/files?prefix=${encodeURIComponent(prefix)}` : "/files";
}

export function viewerUrl(key) {
  return `/files/view?key=${encodeURIComponent(key)}`;
}

/** Breadcrumb items from the bucket root down to `key` (a folder prefix or an object key). */
export function pathCrumbs(key) {
  const items = [{ label: "Bucket", href: folderUrl("") }];
  let prefix = "";
  for (const part of key.split("/").filter(Boolean)) {
    prefix += `${part}/`;
    items.push({ label: part, href: folderUrl(prefix) });
  }
  return items;
}

/** A prefix as users may type or link it: no leading slash, one trailing slash. */
export function normalizePrefix(prefix) {
  const trimmed = (prefix || "").replace(/^\/+/, "");
  return trimmed && !trimmed.endsWith("/") ? `${trimmed}/` : trimmed;
}
