// New job in three steps: (1) the job folder's files, picked from the bucket or uploaded from
// this computer; (2) the training config; (3) review, upload and submit. What the API refuses
// is shown next to the field or file it names, on every step where that field appears.

import { api } from "../api.js";
import { card, pageHeader, progressBar, toast } from "../components.js";
import { h, replace } from "../dom.js";
import { baseName } from "../files.js";
import { formatBytes } from "../format.js";
import { navigate } from "../router.js";
import { uploadFile } from "../upload.js";

const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const STEPS = ["Files", "Training config", "Review and submit"];

// Where each of the job's files lives under jobs/{name}/.
const MODEL_DEF_KEY = "scripts/model_def.py";
const REQUIREMENTS_KEY = "requirements/requirements.txt";
const SHARDS_DIR = "shards/";

// The config form: field name in the API's TrainingConfig / GpuRequirements, its label, input.
const CONFIG_FIELDS = [
  { name: "num_rounds", label: "Rounds", min: 1, max: 10000, value: 5, step: 1 },
  { name: "local_epochs", label: "Local epochs", min: 1, max: 1000, value: 2, step: 1 },
  { name: "batch_size", label: "Batch size", min: 1, max: 65536, value: 32, step: 1 },
  { name: "learning_rate", label: "Learning rate", min: 0, max: 10, value: 0.001, step: "any" },
  {
    name: "min_clients",
    label: "Min clients",
    min: 1,
    step: 1,
    help: "Workers that must stay connected; empty means every shard's worker.",
  },
];
const GPU_FIELDS = [
  {
    name: "gpu_models",
    label: "GPU models",
    placeholder: "rtx_4090, h100",
    help: "In order of preference, comma-separated; empty means any.",
  },
  {
    name: "estimated_memory_mb",
    label: "GPU memory per worker (MB)",
    min: 0,
    step: 1,
    numeric: true,
  },
  {
    name: "worker_ids",
    label: "Pinned workers",
    placeholder: "local-0, local-1",
    help: "Optional worker ids.",
  },
];

/** Which part of the form an API problem is about, from its `path` (or the key it names). */
export function problemTarget(path) {
  if (!path) return "general";
  const relative = path.replace(/^\/?jobs\/[^/]+\//, "");
  if (relative.startsWith("scripts/")) return "model_def";
  if (relative.startsWith("requirements/")) return "requirements";
  if (relative.startsWith("shards/") || relative === "shards") return "shards";
  const field = relative.replace(/^(config|gpu|body)\./, "").split(".")[0];
  if (field === "name") return "name";
  if (CONFIG_FIELDS.some((f) => f.name === field) || GPU_FIELDS.some((f) => f.name === field)) {
    return field;
  }
  return "general";
}

/** An API error as a list of {target, message, hint}. */
function problemsOf(error) {
  if (error.problems.length) {
    return error.problems.map((p) => ({
      target: problemTarget(p.path),
      message: p.message,
      hint: p.hint,
    }));
  }
  if (error.code === "validation_error") {
    // FastAPI's 422, flattened by the gateway as "loc: message; loc: message".
    return error.message.split("; ").map((part) => {
      const [loc, ...rest] = part.split(": ");
      return { target: problemTarget(loc), message: rest.join(": ") || part, hint: error.hint };
    });
  }
  const key = error.message.match(/jobs\/\S+/)?.[0];
  let target = key ? problemTarget(key) : "general";
  if (error.code === "missing_shards") target = "shards";
  if (/min_clients/.test(error.message)) target = "min_clients";
  if (error.code === "job_name_in_use") target = "name";
  return [{ target, message: error.message, hint: error.hint }];
}

function fieldErrors(problems) {
  if (!problems?.length) return null;
  return h(
    "div",
    { class: "field-error", role: "alert" },
    problems.map((p) =>
      h("div", {}, p.message, p.hint ? h("span", { class: "hint" }, p.hint) : null),
    ),
  );
}

function splitList(text) {
  return text
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
}

export function renderNewJob(main, { signal }) {
  const state = {
    step: 0,
    name: "",
    picked: { model_def: null, requirements: null, shards: [] },
    existing: { model_def: null, requirements: null, shards: [] },
    config: Object.fromEntries(CONFIG_FIELDS.map((f) => [f.name, f.value ?? ""])),
    gpu: { gpu_models: "", estimated_memory_mb: "", worker_ids: "" },
    extra: "{}",
    problems: new Map(), // target -> [{message, hint}]
    submitting: false,
  };
  const stepper = h("ol", { class: "steps", "aria-label": "Steps" });
  const body = h("div", {});
  const folders = h("datalist", { id: "job-folders" });
  replace(
    main,
    pageHeader({
      title: "New job",
      subtitle: "Put the job's files in your bucket, choose how it trains, and submit.",
    }),
    stepper,
    body,
    folders,
  );

  const problemsFor = (target) => state.problems.get(target) ?? [];
  const setProblems = (list) => {
    state.problems = new Map();
    for (const p of list) state.problems.set(p.target, [...problemsFor(p.target), p]);
  };
  const prefix = () => `jobs/${state.name}/`;
  const shardNames = () => {
    const names = new Set(state.existing.shards.map((s) => baseName(s.key)));
    for (const file of state.picked.shards) names.add(file.name);
    return [...names].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  };

  // ---- The bucket: existing job folders, and the files already in the chosen one -------
  const listFolders = async () => {
    try {
      const listing = await api("/api/files", { query: { prefix: "jobs/" }, signal });
      replace(
        folders,
        listing.folders.map((p) => h("option", { value: baseName(p) })),
      );
    } catch {
      // Only suggestions: the form works without them.
    }
  };
  const listExisting = async () => {
    const empty = { model_def: null, requirements: null, shards: [] };
    if (!NAME_PATTERN.test(state.name)) {
      state.existing = empty;
      return;
    }
    const objects = async (sub) =>
      (await api("/api/files", { query: { prefix: prefix() + sub }, signal })).objects;
    const [scripts, requirements, shards] = await Promise.all([
      objects("scripts/"),
      objects("requirements/"),
      objects(SHARDS_DIR),
    ]);
    state.existing = {
      model_def: scripts.find((o) => o.key === prefix() + MODEL_DEF_KEY) ?? null,
      requirements: requirements.find((o) => o.key === prefix() + REQUIREMENTS_KEY) ?? null,
      shards: shards.filter((o) => o.key.toLowerCase().endsWith(".zip")),
    };
  };

  // ---- Step 1: files --------------------------------------------------------------------
  const fileSlot = ({ target, title, description, accept, multiple, render }) => {
    const input = h("input", {
      type: "file",
      accept,
      multiple,
      class: "visually-hidden",
      id: `file-${target}`,
      "aria-describedby": `help-${target}`,
    });
    const content = h("div", {});
    const errors = h("div", {});
    const slot = h(
      "div",
      { class: "file-slot", dataset: { slot: target } },
      h(
        "div",
        { class: "head" },
        h("span", { class: "name" }, title),
        h("span", { class: "muted", id: `help-${target}` }, description),
        h(
          "span",
          { class: "actions" },
          h(
            "label",
            { class: "button small", for: `file-${target}`, tabindex: "-1" },
            multiple ? "Add files" : "Choose file",
          ),
        ),
      ),
      input,
      content,
      errors,
    );
    // The label opens the picker; keyboard users reach the (visually hidden) input itself.
    input.addEventListener("focus", () => slot.classList.add("dragging"));
    input.addEventListener("blur", () => slot.classList.remove("dragging"));
    const draw = () => {
      replace(content, render());
      const problems = problemsFor(target);
      slot.classList.toggle("invalid", problems.length > 0);
      replace(errors, fieldErrors(problems));
    };
    const take = (files) => {
      state.problems.delete(target);
      if (multiple) {
        const byName = new Map(state.picked.shards.map((f) => [f.name, f]));
        for (const file of files) byName.set(file.name, file);
        state.picked.shards = [...byName.values()];
      } else {
        state.picked[target] = files[0] ?? null;
      }
      draw();
    };
    input.addEventListener("change", () => {
      take([...input.files]);
      input.value = "";
    });
    slot.addEventListener("dragover", (event) => {
      event.preventDefault();
      slot.classList.add("dragging");
    });
    slot.addEventListener("dragleave", () => slot.classList.remove("dragging"));
    slot.addEventListener("drop", (event) => {
      event.preventDefault();
      slot.classList.remove("dragging");
      take([...(event.dataTransfer?.files ?? [])]);
    });
    draw();
    return { slot, draw };
  };

  const fileLine = (name, size, tag, onRemove) =>
    h(
      "li",
      {},
      h("span", { class: "mono" }, name),
      h(
        "span",
        { class: `tag${tag === "new" ? " new" : ""}` },
        tag === "new" ? "to upload" : "in bucket",
      ),
      h("span", { class: "size" }, formatBytes(size)),
      onRemove
        ? h(
            "button",
            {
              type: "button",
              class: "link-button",
              "aria-label": `Remove ${name}`,
              onClick: onRemove,
            },
            "Remove",
          )
        : null,
    );

  const single = (target, keyName, whenNone) => () => {
    const file = state.picked[target];
    const stored = state.existing[target];
    if (file) {
      return h(
        "ul",
        { class: "file-list" },
        fileLine(keyName, file.size, "new", () => {
          state.picked[target] = null;
          slots[target].draw();
        }),
      );
    }
    if (stored) return h("ul", { class: "file-list" }, fileLine(keyName, stored.size, "stored"));
    return h("span", { class: "faint" }, whenNone);
  };

  const shardList = () => {
    const picked = new Map(state.picked.shards.map((f) => [f.name, f]));
    const stored = new Map(state.existing.shards.map((o) => [baseName(o.key), o]));
    const names = shardNames();
    if (!names.length)
      return h("span", { class: "faint" }, "Drop one .zip per worker here, or add them.");
    return h(
      "div",
      {},
      h(
        "ul",
        { class: "file-list" },
        names.map((name) => {
          const file = picked.get(name);
          if (file) {
            return fileLine(name, file.size, "new", () => {
              state.picked.shards = state.picked.shards.filter((f) => f !== file);
              slots.shards.draw();
            });
          }
          return fileLine(name, stored.get(name).size, "stored");
        }),
      ),
      h(
        "p",
        { class: "muted", dataset: { field: "worker-count" } },
        `${names.length} shard${names.length === 1 ? "" : "s"}: the job runs on ${names.length} worker${names.length === 1 ? "" : "s"}.`,
      ),
    );
  };

  const slots = {};
  const stepFiles = () => {
    const nameInput = h("input", {
      id: "job-name",
      type: "text",
      list: "job-folders",
      value: state.name,
      autocomplete: "off",
      spellcheck: "false",
      required: true,
      placeholder: "digits-demo",
      "aria-describedby": "job-name-help",
    });
    const nameField = h(
      "div",
      { class: `field${problemsFor("name").length ? " invalid" : ""}` },
      h("label", { for: "job-name" }, "Job name"),
      nameInput,
      h(
        "span",
        { class: "help", id: "job-name-help" },
        "Lower-case letters, digits, - and _. The files go to jobs/<name>/ in your bucket; pick an existing folder to reuse its files.",
      ),
      fieldErrors(problemsFor("name")),
    );
    slots.model_def = fileSlot({
      target: "model_def",
      title: "model_def.py",
      description: "Your model class and fl_train_model (required).",
      accept: ".py",
      render: single("model_def", "model_def.py", "Drop the file here or choose it."),
    });
    slots.requirements = fileSlot({
      target: "requirements",
      title: "requirements.txt",
      description: "Extra pip packages for the workers; without one, an empty file is used.",
      accept: ".txt",
      render: single(
        "requirements",
        "requirements.txt",
        "None chosen: an empty requirements.txt is uploaded.",
      ),
    });
    slots.shards = fileSlot({
      target: "shards",
      title: "Shards",
      description: "One ZIP per worker, manifest.ndjson at its root.",
      accept: ".zip",
      multiple: true,
      render: shardList,
    });
    let timer = null;
    nameInput.addEventListener("input", () => {
      state.name = nameInput.value.trim();
      clearTimeout(timer);
      timer = setTimeout(async () => {
        try {
          await listExisting();
        } catch (error) {
          if (error.name === "AbortError") return;
          state.existing = { model_def: null, requirements: null, shards: [] };
        }
        for (const slot of Object.values(slots)) slot.draw();
      }, 300);
    });
    return [
      card({ title: "Job folder", body: h("div", { class: "body" }, nameField) }),
      h(
        "div",
        { class: "file-slots" },
        slots.model_def.slot,
        slots.requirements.slot,
        slots.shards.slot,
      ),
    ];
  };

  const checkFiles = () => {
    const problems = [];
    if (!NAME_PATTERN.test(state.name)) {
      problems.push({
        target: "name",
        message: "Enter a job name.",
        hint: "Start with a letter or digit; then letters, digits, - or _ (at most 63).",
      });
    }
    if (!state.picked.model_def && !state.existing.model_def) {
      problems.push({ target: "model_def", message: "Add model_def.py.", hint: "" });
    }
    if (state.picked.model_def && !state.picked.model_def.name.endsWith(".py")) {
      problems.push({
        target: "model_def",
        message: "model_def must be a Python (.py) file.",
        hint: "",
      });
    }
    const badShard = state.picked.shards.find((f) => !f.name.toLowerCase().endsWith(".zip"));
    if (badShard) {
      problems.push({
        target: "shards",
        message: `${badShard.name} is not a .zip file.`,
        hint: "Zip each shard.",
      });
    }
    if (!shardNames().length) {
      problems.push({
        target: "shards",
        message: "Add at least one shard.",
        hint: "One ZIP per worker.",
      });
    }
    return problems;
  };

  // ---- Step 2: training config ------------------------------------------------------------
  const numberField = (field, source) => {
    const id = `cfg-${field.name}`;
    const problems = problemsFor(field.name);
    const placeholder =
      field.name === "min_clients" ? `all ${shardNames().length}` : field.placeholder;
    return h(
      "div",
      { class: `field${problems.length ? " invalid" : ""}`, dataset: { field: field.name } },
      h("label", { for: id }, field.label),
      h("input", {
        id,
        name: field.name,
        type:
          field.numeric === false || (!field.numeric && field.min === undefined)
            ? "text"
            : "number",
        min: field.min,
        max: field.max,
        step: field.step,
        placeholder,
        value: source[field.name],
        "aria-invalid": problems.length ? "true" : undefined,
        onInput: (event) => {
          source[field.name] = event.target.value;
        },
      }),
      field.help ? h("span", { class: "help" }, field.help) : null,
      fieldErrors(problems),
    );
  };

  const stepConfig = () => {
    const extraProblems = problemsFor("extra");
    return [
      card({
        title: "Training",
        body: h(
          "div",
          { class: "body form-grid" },
          CONFIG_FIELDS.map((f) => numberField(f, state.config)),
        ),
      }),
      card({
        title: "GPU needs",
        body: h(
          "div",
          { class: "body form-grid" },
          GPU_FIELDS.map((f) => numberField(f, state.gpu)),
        ),
      }),
      card({
        title: "Extra keys",
        body: h(
          "div",
          { class: "body" },
          h(
            "div",
            {
              class: `field${extraProblems.length ? " invalid" : ""}`,
              dataset: { field: "extra" },
            },
            h(
              "label",
              { for: "cfg-extra" },
              'Passed to fl_train_model in payload["env"] (JSON object)',
            ),
            h(
              "textarea",
              {
                id: "cfg-extra",
                rows: 4,
                spellcheck: "false",
                onInput: (event) => {
                  state.extra = event.target.value;
                },
              },
              state.extra,
            ),
            fieldErrors(extraProblems),
          ),
        ),
      }),
    ];
  };

  /** The submission body from the form, or the problems that keep it from being one. */
  const submission = () => {
    const problems = [];
    const config = {};
    for (const field of CONFIG_FIELDS) {
      const text = String(state.config[field.name]).trim();
      if (text === "") {
        if (field.name !== "min_clients")
          problems.push({ target: field.name, message: `Enter ${field.label.toLowerCase()}.` });
        continue;
      }
      const value = Number(text);
      const whole = field.step === 1;
      if (!Number.isFinite(value) || (whole && !Number.isInteger(value))) {
        problems.push({
          target: field.name,
          message: `${field.label} must be a ${whole ? "whole " : ""}number.`,
        });
      } else if (
        value < field.min ||
        (field.max !== undefined && value > field.max) ||
        (field.name === "learning_rate" && value <= 0)
      ) {
        const range =
          field.name === "learning_rate"
            ? "above 0 and at most 10"
            : `from ${field.min} to ${field.max ?? "any"}`;
        problems.push({ target: field.name, message: `${field.label} must be ${range}.` });
      } else {
        config[field.name] = value;
      }
    }
    if (config.min_clients > shardNames().length) {
      problems.push({
        target: "min_clients",
        message: `Min clients is ${config.min_clients} but the job has ${shardNames().length} shard(s).`,
        hint: "Lower it, or add shards (one per worker).",
      });
    }
    try {
      const extra = JSON.parse(state.extra.trim() || "{}");
      if (extra === null || typeof extra !== "object" || Array.isArray(extra))
        throw new Error("not an object");
      config.extra = extra;
    } catch {
      problems.push({
        target: "extra",
        message: 'Extra keys must be a JSON object, like {"dropout": 0.1}.',
      });
    }
    const gpu = {
      gpu_models: splitList(state.gpu.gpu_models),
      worker_ids: splitList(state.gpu.worker_ids),
    };
    const memory = String(state.gpu.estimated_memory_mb).trim();
    if (memory) {
      const value = Number(memory);
      if (!Number.isInteger(value) || value < 0) {
        problems.push({
          target: "estimated_memory_mb",
          message: "GPU memory must be a whole number of MB.",
        });
      } else {
        gpu.estimated_memory_mb = value;
      }
    }
    return { body: { name: state.name, config, gpu }, problems };
  };

  // ---- Step 3: review and submit --------------------------------------------------------
  const reviewRow = (label, value, target) =>
    h(
      "tr",
      { dataset: { review: target ?? label } },
      h("th", { scope: "row" }, label),
      h("td", {}, value, fieldErrors(target ? problemsFor(target) : null)),
    );

  const reviewCard = (title, rows) =>
    card({
      title,
      body: h(
        "div",
        { class: "table-wrap" },
        h("table", { class: "data review" }, h("tbody", {}, rows)),
      ),
    });

  const stepReview = () => {
    const { config, gpu } = submission().body;
    const shards = shardNames();
    const fileState = (target) =>
      state.picked[target]
        ? "upload from this computer"
        : state.existing[target]
          ? "already in the bucket"
          : "none: an empty file is uploaded";
    const newShards = state.picked.shards.length;
    const general = problemsFor("general");
    const progress = h("div", { class: "uploads", id: "submit-progress" });
    return [
      general.length
        ? h(
            "div",
            { class: "notice error", role: "alert" },
            h("span", { class: "title" }, "The job was not submitted"),
            general.map((p) => h("span", {}, p.message, p.hint ? ` — ${p.hint}` : "")),
          )
        : null,
      state.problems.size && !general.length
        ? h(
            "div",
            { class: "notice error", role: "alert" },
            h("span", { class: "title" }, "The job was not submitted"),
            h("span", {}, "Fix what is marked below (or on the earlier steps) and submit again."),
          )
        : null,
      reviewCard("Files", [
        reviewRow("Folder", h("span", { class: "mono" }, prefix()), "name"),
        reviewRow("model_def.py", fileState("model_def"), "model_def"),
        reviewRow("requirements.txt", fileState("requirements"), "requirements"),
        reviewRow(
          "Shards",
          `${shards.join(", ")} (${newShards} to upload) → ${shards.length} worker(s)`,
          "shards",
        ),
      ]),
      reviewCard("Training config", [
        CONFIG_FIELDS.map((f) =>
          reviewRow(f.label, String(config[f.name] ?? `all ${shards.length}`), f.name),
        ),
        reviewRow("GPU models", gpu.gpu_models.join(", ") || "any", "gpu_models"),
        reviewRow(
          "GPU memory per worker",
          gpu.estimated_memory_mb ? `${gpu.estimated_memory_mb} MB` : "not set",
          "estimated_memory_mb",
        ),
        reviewRow("Pinned workers", gpu.worker_ids.join(", ") || "none", "worker_ids"),
        reviewRow(
          "Extra keys",
          h("span", { class: "mono" }, JSON.stringify(config.extra ?? {})),
          "extra",
        ),
      ]),
      progress,
    ];
  };

  const uploadsToDo = () => {
    const todo = [];
    if (state.picked.model_def) todo.push([MODEL_DEF_KEY, state.picked.model_def, "model_def"]);
    if (state.picked.requirements) {
      todo.push([REQUIREMENTS_KEY, state.picked.requirements, "requirements"]);
    } else if (!state.existing.requirements) {
      // The job folder needs one; an empty file means "no extra packages".
      const none = new File([], "requirements.txt", { type: "text/plain" });
      todo.push([REQUIREMENTS_KEY, none, "requirements"]);
    }
    for (const shard of state.picked.shards) todo.push([SHARDS_DIR + shard.name, shard, "shards"]);
    return todo;
  };

  const uploadAll = async () => {
    const area = document.getElementById("submit-progress");
    for (const [relative, file, target] of uploadsToDo()) {
      const status = h("span", { class: "status" }, "0%");
      const bar = h("div", {}, progressBar(0, { label: `Uploading ${relative}` }));
      const row = h(
        "div",
        { class: "upload-row" },
        h("span", { class: "mono" }, prefix() + relative),
        status,
        bar,
      );
      area.append(row);
      try {
        await uploadFile(prefix() + relative, file, {
          signal,
          onProgress: (sent) => {
            const fraction = file.size ? sent / file.size : 1;
            status.textContent = `${Math.round(fraction * 100)}%`;
            replace(bar, progressBar(fraction, { label: `Uploading ${relative}` }));
          },
        });
      } catch (error) {
        row.classList.add("error");
        status.textContent = error.message;
        throw Object.assign(error, { target });
      }
      row.classList.add("done");
      status.textContent = "Uploaded";
      replace(bar, progressBar(1, { className: "done", label: `${relative} uploaded` }));
      // Stored now: a retry after a refused submission does not upload it again.
      if (target === "shards") state.picked.shards = state.picked.shards.filter((f) => f !== file);
      else state.picked[target] = null;
    }
  };

  const submit = async () => {
    const { body: request, problems } = submission();
    const all = [...checkFiles(), ...problems];
    if (all.length) {
      setProblems(all);
      draw();
      return;
    }
    state.submitting = true;
    draw();
    try {
      await uploadAll();
      await listExisting();
      const job = await api("/api/jobs", { method: "POST", body: request, signal });
      toast(`Submitted ${job.name}.`);
      navigate(`/jobs/${job.id}`);
      return;
    } catch (error) {
      if (error.name === "AbortError") return;
      const list = error.problems
        ? problemsOf(error)
        : [{ target: error.target ?? "general", message: error.message, hint: "" }];
      setProblems(list);
    }
    state.submitting = false;
    draw();
  };

  // ---- The wizard -----------------------------------------------------------------------
  const go = (step) => {
    if (step > state.step && state.step === 0) {
      const problems = checkFiles();
      if (problems.length) {
        setProblems(problems);
        draw();
        return;
      }
    }
    if (step > state.step && state.step === 1) {
      const { problems } = submission();
      if (problems.length) {
        setProblems(problems);
        draw();
        return;
      }
    }
    if (step > state.step) state.problems = new Map();
    state.step = step;
    draw();
    main.querySelector("h2")?.focus?.();
  };

  const draw = () => {
    replace(
      stepper,
      STEPS.map((title, index) =>
        h(
          "li",
          {
            class: index < state.step ? "done" : "",
            "aria-current": index === state.step ? "step" : undefined,
          },
          h("span", { class: "step-label" }, title),
        ),
      ),
    );
    const content = [stepFiles, stepConfig, stepReview][state.step]();
    const back =
      state.step > 0
        ? h(
            "button",
            {
              type: "button",
              class: "button",
              disabled: state.submitting,
              onClick: () => go(state.step - 1),
            },
            "Back",
          )
        : h("a", { class: "button ghost", href: "/jobs" }, "Cancel");
    const next =
      state.step < STEPS.length - 1
        ? h("button", { type: "submit", class: "button primary" }, "Next")
        : h(
            "button",
            { type: "submit", class: "button primary", disabled: state.submitting },
            state.submitting
              ? "Submitting…"
              : uploadsToDo().length
                ? "Upload and submit"
                : "Submit job",
          );
    const form = h(
      "form",
      { class: "grid", novalidate: true, "aria-label": STEPS[state.step] },
      content,
      h("div", { class: "wizard-actions" }, back, next),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (state.step < STEPS.length - 1) go(state.step + 1);
      else submit();
    });
    replace(body, form);
    const firstInvalid = body.querySelector(
      ".invalid input, .invalid textarea, .file-slot.invalid input",
    );
    firstInvalid?.focus();
  };

  draw();
  listFolders();
}
