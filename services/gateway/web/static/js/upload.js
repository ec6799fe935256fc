// Uploads straight from the browser to the bucket with presigned URLs (the API never carries
// file bytes): one PUT for a small file, S3 multipart for a large one. XMLHttpRequest rather
// than fetch because only it reports upload progress.

import { api } from "./api.js";

// The API signs one UploadPart URL per 50 MiB part; smaller files go in one PUT.
export const MULTIPART_THRESHOLD = 50 * 1024 * 1024;

function put(url, body, { contentType, onProgress, signal }) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", url);
    if (contentType) request.setRequestHeader("Content-Type", contentType);
    request.upload.onprogress = (event) => onProgress?.(event.loaded);
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) {
        resolve(request.getResponseHeader("ETag"));
      } else {
        reject(new Error(`the object store refused the upload (HTTP ${request.status})`));
      }
    };
    request.onerror = () => reject(new Error("the object store could not be reached"));
    request.onabort = () => reject(new DOMException("upload cancelled", "AbortError"));
    signal?.addEventListener("abort", () => request.abort(), { once: true });
    request.send(body);
  });
}

async function putMultipart(key, file, contentType, { onProgress, signal }) {
  const upload = await api("/api/files/multipart/init", {
    method: "POST",
    body: { key, size: file.size, content_type: contentType },
    signal,
  });
  const sent = new Array(upload.urls.length).fill(0);
  try {
    const parts = [];
    // One part at a time: steady progress, and memory stays at one slice.
    for (const [index, url] of upload.urls.entries()) {
      const start = index * upload.part_size;
      const etag = await put(url, file.slice(start, start + upload.part_size), {
        onProgress: (loaded) => {
          sent[index] = loaded;
          onProgress?.(sent.reduce((a, b) => a + b, 0));
        },
        signal,
      });
      if (!etag) throw new Error("the object store did not expose the part's ETag (CORS)");
      parts.push({ part_number: index + 1, etag });
    }
    await api("/api/files/multipart/complete", {
      method: "POST",
      body: { upload_id: upload.upload_id, key, parts },
      signal,
    });
  } catch (error) {
    // Leave no half-written upload behind; the object that was there stays untouched.
    await api("/api/files/multipart/abort", {
      method: "POST",
      body: { upload_id: upload.upload_id, key },
    }).catch(() => {});
    throw error;
  }
}

/** Upload `file` to the bucket key `key`; `onProgress(bytesSent)` as it goes. */
export async function uploadFile(key, file, { onProgress, signal } = {}) {
  const contentType = file.type || "application/octet-stream";
  if (file.size > MULTIPART_THRESHOLD) {
    await putMultipart(key, file, contentType, { onProgress, signal });
    return;
  }
  const { url } = await api("/api/files/upload-url", {
    method: "POST",
    body: { key, content_type: contentType },
    signal,
  });
  await put(url, file, { contentType, onProgress, signal });
}
