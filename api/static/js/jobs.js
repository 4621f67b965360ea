// Jobs: the form that submits a training job, and the paged list of jobs (one opens in JobView).
import { ApiError, adminKey, api } from "./api.js";
import { JobView } from "./job-view.js";
import { el, pct, retryAfterKey, showError, when } from "./ui.js";

const $ = (id) => document.getElementById(id);
const PAGE = 15;
// The job in the URL (#jobs/<id>), so that a reload, back and forward show the job watched.
const JOB_HASH = /^#jobs\/(.+)$/;

function jobFromHash() {
  const match = JOB_HASH.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null; // a malformed escape typed by hand
  }
}

// Whether the gateway augments a model's training images when a spec leaves `augment` out
// (fdl/jobspec.py): on for the CIFAR-10 architectures, off (and refused) for MNIST ones.
const augmentsByDefault = (model) => model.startsWith("cifar10");
// What that augmentation is, shown beside the box (docs/training.md, the job-spec table).
function augmentHint(model) {
  if (model === "cifar10_airnet") return "on by default: flip, translate ±2 px";
  if (augmentsByDefault(model)) return "on by default: crop, flip, brightness, contrast";
  return "CIFAR-10 models only";
}

// The augmentation box starts at the chosen model's default (ticked for CIFAR-10 models).
function syncAugment(form) {
  const model = form.elements.model.value;
  form.elements.augment.checked = augmentsByDefault(model);
  document.getElementById("augment-hint").textContent = `(${augmentHint(model)})`;
}

function specFromForm(form) {
  const data = new FormData(form);
  const value = (name) => String(data.get(name) ?? "").trim();
  const number = (name) => (value(name) === "" ? undefined : Number(value(name)));
  const spec = {
    model: value("model"),
    epochs: number("epochs"),
    batch_size: number("batch_size"),
    validation_split: number("validation_split"),
    seed: number("seed"),
    regularization: { l2: number("l2") ?? 0 },
    publish: { min_accuracy: number("min_accuracy") ?? 0, only_if_better: data.get("only_if_better") === "on" },
  };
  // Fields left empty take the recipe's values; a rate alone applies to the recipe's optimizer.
  if (value("recipe")) spec.recipe = value("recipe");
  const optimizer = { name: value("optimizer") || undefined, learning_rate: number("learning_rate") };
  for (const key of Object.keys(optimizer)) if (optimizer[key] === undefined) delete optimizer[key];
  if (Object.keys(optimizer).length) spec.optimizer = optimizer;
  if (number("dropout") !== undefined) spec.regularization.dropout = number("dropout");
  if (number("patience") !== undefined) spec.early_stopping = { patience: number("patience") };
  if (number("max_train_examples") !== undefined) spec.max_train_examples = number("max_train_examples");
  if (number("max_test_examples") !== undefined) spec.max_test_examples = number("max_test_examples");
  if (value("publish_as")) spec.publish_as = value("publish_as");
  // Sent only where the box differs from the model's default, so that the server's applies.
  const augment = data.get("augment") === "on";
  if (augment !== augmentsByDefault(spec.model)) spec.augment = augment;
  for (const key of Object.keys(spec)) if (spec[key] === undefined) delete spec[key];
  return spec;
}

// A new Idempotency-Key: a UUID, or where randomUUID is missing (a page not served over HTTPS or
// from localhost), 128 random bits in hex.
function newKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Whether a failed submission may have queued its job, or may be tried again as it is: the answer
// never came (network, a stopped gateway), a 5xx, a 408 or 429, the key still in use (409), or a
// refused admin key (it says nothing of an earlier try's job). Such a try's key is kept.
function mayRetry(error) {
  if (!(error instanceof ApiError)) return true; // the answer's body was cut off, say
  const { status, code } = error;
  return status === 0 || status >= 500 || [401, 403, 408, 429].includes(status) ||
    (status === 409 && code === "idempotency_key_in_use");
}

// The pending submission kept in the tab's sessionStorage ({key, spec}), or null when there is
// none or it cannot be read.
const PENDING_STORAGE = "fdl.pendingJob";

function readPending() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(PENDING_STORAGE) ?? "null");
    if (saved && typeof saved.key === "string" && saved.key && typeof saved.spec === "string") {
      return { key: saved.key, spec: saved.spec };
    }
  } catch {
    // Unreadable (storage disabled, a value not JSON): none.
  }
  return null;
}

export function initJobs() {
  let offset = 0;
  let selected = null;
  let timer = null;
  const rowsById = new Map();
  const shown = new WeakMap(); // cell -> what it shows, so an unchanged cell is left alone
  const view = new JobView((job) => updateRow(job));

  function statusBadge(job) {
    return el("span", { className: `badge ${job.status}` }, job.status);
  }

  function progressText(job) {
    const p = job.progress || {};
    const epochs = p.epochs || (job.spec && job.spec.epochs);
    return p.epoch ? `${p.epoch}/${epochs}` : epochs ? `0/${epochs}` : "–";
  }

  // A job's cells, written into its row's own cells: the row element stays, so keyboard focus
  // and a screen reader's place on it survive each refresh (a rebuilt row threw focus to <body>).
  function fill(tr, job) {
    const cells = [
      el("code", {}, job.id.slice(0, 8)),
      (job.result && job.result.model) || (job.spec && (job.spec.publish_as || job.spec.model)) || "?",
      statusBadge(job),
      progressText(job),
      job.result && job.result.metrics ? pct(job.result.metrics.test_accuracy, 2) : "–",
      when(job.created_at),
    ];
    cells.forEach((content, index) => {
      const td = tr.cells[index];
      const text = content instanceof Node ? content.outerHTML : content;
      if (shown.get(td) !== text) {
        shown.set(td, text);
        td.replaceChildren(content);
      }
    });
  }

  function row(job) {
    let tr = rowsById.get(job.id);
    if (!tr) {
      tr = el("tr", { className: "clickable", tabIndex: 0, dataset: { job: job.id } },
        ...Array.from({ length: 6 }, () => el("td")));
      const open = () => select(job.id);
      tr.addEventListener("click", open);
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          open();
        }
      });
      rowsById.set(job.id, tr);
    }
    tr.setAttribute("aria-selected", String(job.id === selected));
    fill(tr, job);
    return tr;
  }

  function updateRow(job) {
    const tr = rowsById.get(job.id);
    if (tr) fill(tr, job);
  }

  // `push`: a new history entry for the job (a click), or not (the URL already names it).
  function select(id, push = true) {
    selected = id;
    for (const [jobId, tr] of rowsById) tr.setAttribute("aria-selected", String(jobId === id));
    const hash = `#jobs/${encodeURIComponent(id)}`;
    if (push && location.hash !== hash) history.pushState(null, "", hash);
    view.open(id);
  }

  // The list's rows in the page's order, each job's row kept (and moved only where the order
  // changed), so the row or control that has focus keeps it.
  function showRows(jobs) {
    const body = $("jobs-rows");
    const wanted = jobs.map(row);
    const keep = new Set(wanted);
    for (const [id, tr] of rowsById) if (!keep.has(tr)) rowsById.delete(id);
    for (const child of [...body.children]) if (!keep.has(child)) child.remove();
    const focused = document.activeElement;
    wanted.forEach((tr, index) => {
      if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] ?? null);
    });
    // A focused row that had to move loses focus in the browser: give it back.
    if (focused && focused !== document.activeElement && body.contains(focused)) focused.focus();
  }

  async function refresh() {
    showError($("jobs-error"), null);
    try {
      let page = await api.get(`/v1/jobs?limit=${PAGE}&offset=${offset}`, { admin: true });
      if (!page.jobs.length && page.total > 0 && offset > 0) {
        // Past the end (jobs removed since this page was shown): the last page that has jobs.
        offset = Math.floor((page.total - 1) / PAGE) * PAGE;
        page = await api.get(`/v1/jobs?limit=${PAGE}&offset=${offset}`, { admin: true });
      }
      showRows(page.jobs);
      if (!page.jobs.length) {
        $("jobs-rows").append(el("tr", {}, el("td", { colSpan: 6, className: "muted" },
          page.total ? "No jobs on this page." : "No jobs yet.")));
      }
      $("jobs-page").textContent = page.jobs.length ? `${offset + 1}–${offset + page.jobs.length} of ${page.total}` : "";
      $("jobs-prev").disabled = offset === 0;
      $("jobs-next").disabled = offset + page.jobs.length >= page.total;
    } catch (error) {
      // No polling with a missing or refused key: it would only ask for the key again.
      if (error instanceof ApiError && error.status === 401) clearInterval(timer);
      showError($("jobs-error"), error);
    }
  }

  $("jobs-refresh").addEventListener("click", refresh);
  $("jobs-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); refresh(); });
  $("jobs-next").addEventListener("click", () => { offset += PAGE; refresh(); });
  // A saved key restarts the polling, and the job view where a missing or refused key stopped it
  // (its stream resumes from its Last-Event-ID).
  window.addEventListener("fdl:key-changed", () => {
    if ($("view-jobs").hidden) return;
    startPolling();
    if (adminKey.get()) view.resume();
  });

  // The Idempotency-Key of the form's last submission while its outcome is unknown or it may be
  // tried again, with the spec it was sent with: Submit sends that spec again under the same key,
  // so the gateway creates at most one job. A success, a definite refusal or another spec ends it.
  // Kept in the tab's sessionStorage too, so that it survives a reload (a user's reaction to a
  // Submit that got no answer); a new tab starts without one.
  let pending = readPending();
  const setPending = (value) => {
    pending = value;
    try {
      if (value) sessionStorage.setItem(PENDING_STORAGE, JSON.stringify(value));
      else sessionStorage.removeItem(PENDING_STORAGE);
    } catch {
      // No storage (disabled, full): the key lives in the page only, as before.
    }
  };
  const form = $("job-form");
  form.elements.model.addEventListener("change", () => syncAugment(form));
  syncAugment(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError($("job-form-error"), null);
    if (!form.reportValidity()) return;
    const button = $("job-submit");
    button.disabled = true;
    $("job-form-status").textContent = "Submitting…";
    const spec = specFromForm(form);
    const sent = JSON.stringify(spec);
    if (!pending || pending.spec !== sent) setPending({ key: newKey(), spec: sent });
    const attempt = pending;
    let replayed = false;
    const onResponse = (response) => { replayed = response.headers.get("Idempotent-Replayed") === "true"; };
    try {
      const headers = { "Idempotency-Key": attempt.key };
      const job = await api.post("/v1/jobs", spec, { admin: true, headers, onResponse });
      if (pending === attempt) setPending(null);
      const id = job.id.slice(0, 8);
      $("job-form-status").textContent = replayed
        ? `Already queued as job ${id}: your earlier try went through.` : `Queued job ${id}.`;
      offset = 0;
      await refresh();
      select(job.id);
    } catch (error) {
      const retry = mayRetry(error);
      if (!retry && pending === attempt) setPending(null);
      const unknown = retry && pending === attempt && ![401, 403].includes(error.status);
      $("job-form-status").textContent = unknown ? "Submitting again is safe: it cannot start a second job." : "";
      showError($("job-form-error"), error);
      // Saving the key in the dialog that opens submits again (under the same Idempotency-Key).
      retryAfterKey(error, () => form.requestSubmit());
    } finally {
      button.disabled = false;
    }
  });

  function startPolling() {
    clearInterval(timer);
    timer = setInterval(() => {
      if ($("view-jobs").hidden) clearInterval(timer);
      else if (!document.hidden) refresh();
    }, 5000);
    refresh();
  }

  return {
    shown() {
      const linked = sessionStorage.getItem("fdl.openJob");
      if (linked) sessionStorage.removeItem("fdl.openJob");
      const inUrl = jobFromHash();
      if (linked) select(linked);
      else if (inUrl && inUrl !== selected) select(inUrl, false);
      else if (selected && adminKey.get()) view.resume();
      startPolling();
    },
  };
}
