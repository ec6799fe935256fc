// Monaco, loaded on first use from the gateway (`/monaco`, the npm package's `min` build)
// with its own AMD loader: no CDN, and pages that never show a file never pay for it.

const MONACO_BASE = "/monaco/vs";

let loading = null;

const LANGUAGES = {
  txt: "plaintext",
  log: "plaintext",
  json: "json",
  ndjson: "ndjson",
  py: "python",
  yaml: "yaml",
  yml: "yaml",
  csv: "plaintext",
  md: "markdown",
  sh: "shell",
  toml: "ini",
  cfg: "ini",
};

/** The file types the viewer opens as text, with their Monaco language. */
export function textLanguage(name) {
  const extension = name.includes(".") ? name.split(".").pop().toLowerCase() : "";
  return LANGUAGES[extension] ?? null;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`${src} could not be loaded`));
    document.head.append(script);
  });
}

// One JSON document a line: Monaco's JSON mode would flag every line after the first.
const NDJSON_TOKENS = {
  tokenizer: {
    root: [
      [/"(?:[^"\\]|\\.)*"(?=\s*:)/, "type"],
      [/"(?:[^"\\]|\\.)*"/, "string"],
      [/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/, "number"],
      [/\b(?:true|false|null)\b/, "keyword"],
      [/[{}[\],:]/, "delimiter"],
    ],
  },
};

/** Resolves to the `monaco` namespace; rejects when Monaco is not installed. */
export function loadMonaco() {
  loading ??= (async () => {
    await loadScript(`${MONACO_BASE}/loader.js`);
    window.require.config({ paths: { vs: MONACO_BASE } });
    const monaco = await new Promise((resolve, reject) => {
      window.require(["vs/editor/editor.main"], () => resolve(window.monaco), reject);
    });
    monaco.languages.register({ id: "ndjson", extensions: [".ndjson"] });
    monaco.languages.setMonarchTokensProvider("ndjson", NDJSON_TOKENS);
    return monaco;
  })();
  return loading;
}
