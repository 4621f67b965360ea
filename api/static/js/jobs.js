// Jobs: submit a training job, list jobs, follow one live (SSE) with loss/accuracy curves; cancel.
import { ApiError, api, followEvents } from "./api.js";
import { LineChart } from "./chart.js";
import { duration, el, num, pct, showError, toast, when } from "./ui.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const PAGE = 15;
const COLORS = { train: "#4f46e5", val: "#0ea5a4" };

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
    optimizer: { name: value("optimizer"), learning_rate: number("learning_rate") },
    regularization: { l2: number("l2") ?? 0 },
    publish: { min_accuracy: number("min_accuracy") ?? 0, only_if_better: data.get("only_if_better") === "on" },
  };
  if (number("dropout") !== undefined) spec.regularization.dropout = number("dropout");
  if (number("patience") !== undefined) spec.early_stopping = { patience: number("patience") };
  if (number("max_train_examples") !== undefined) spec.max_train_examples = number("max_train_examples");
  if (number("max_test_examples") !== undefined) spec.max_test_examples = number("max_test_examples");
  if (value("publish_as")) spec.publish_as = value("publish_as");
  if (spec.model.startsWith("cifar10") || data.get("augment") === "on") spec.augment = data.get("augment") === "on";
  for (const key of Object.keys(spec)) if (spec[key] === undefined) delete spec[key];
  return spec;
}

class JobView {
  constructor(onStatus) {
    this.onStatus = onStatus;
    this.lossChart = new LineChart($("chart-loss"), { xLabel: "epoch" });
    this.accChart = new LineChart($("chart-acc"), { xLabel: "epoch", yMax: 1 });
    this.controller = null;
    $("job-cancel").addEventListener("click", () => this.cancel());
  }

  reset(job) {
    this.job = job;
    this.points = new Map(); // x (fractional epoch) -> progress
    this.lastEventId = null;
    $("detail-empty").hidden = true;
    $("detail-body").hidden = false;
    $("detail-id").textContent = job.id;
    $("epoch-rows").replaceChildren();
    showError($("detail-error"), null);
    if (job.progress && job.progress.epoch) this.addProgress(job.progress);
    this.render();
  }

  async open(id) {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    try {
      this.reset(await api.get(`/v1/jobs/${id}`, { admin: true, signal: controller.signal }));
    } catch (error) {
      if (error.name !== "AbortError") showError($("detail-error"), error);
      return;
    }
    this.follow(controller.signal);
  }

  async follow(signal) {
    const id = this.job.id;
    let failures = 0;
    // The stream replays the job's history first, so even a finished job gets its curves.
    for (let first = true; first || (!signal.aborted && !TERMINAL.has(this.job.status)); first = false) {
      try {
        this.lastEventId = await followEvents(`/v1/jobs/${id}/events`, {
          signal,
          lastEventId: this.lastEventId,
          onEvent: (type, data) => this.onEvent(type, data),
        });
        failures = 0;
      } catch (error) {
        if (signal.aborted || error.name === "AbortError") return;
        if (error instanceof ApiError && error.status === 401) {
          showError($("detail-error"), error);
          return;
        }
        failures += 1;
      }
      if (TERMINAL.has(this.job.status) || signal.aborted) break;
      // The stream ended or failed early: catch up from the record, then reconnect.
      await this.refreshRecord(signal);
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * 2 ** failures)));
    }
    if (!signal.aborted) await this.refreshRecord(signal);
  }

  async refreshRecord(signal) {
    try {
      const job = await api.get(`/v1/jobs/${this.job.id}`, { admin: true, signal });
      this.job = job;
      if (job.progress && job.progress.epoch) this.addProgress(job.progress);
      this.render();
      this.onStatus(job);
    } catch {
      // Shown by the next attempt.
    }
  }

  onEvent(type, data) {
    if (type === "progress") {
      this.addProgress(data);
      this.job.progress = data;
    } else if (type === "status") {
      this.job.status = data.status;
      if ("result" in data) this.job.result = data.result;
      if ("error" in data) this.job.error = data.error;
      this.onStatus(this.job);
    }
    this.render();
  }

  addProgress(p) {
    const x = p.step && p.steps && p.step < p.steps ? p.epoch - 1 + p.step / p.steps : p.epoch;
    this.points.set(Math.round(x * 1000) / 1000, p);
  }

  render() {
    const job = this.job;
    const status = $("detail-status");
    status.textContent = job.status;
    status.className = `badge ${job.status}`;
    const spec = job.spec || {};
    const progress = job.progress || {};
    const epochs = progress.epochs || spec.epochs || 1;
    const sorted = [...this.points.entries()].sort((a, b) => a[0] - b[0]);
    const done = job.status === "succeeded" ? 1 : sorted.length ? sorted.at(-1)[0] / epochs : 0;
    const bar = $("detail-progress");
    bar.setAttribute("aria-valuenow", String(Math.round(done * 100)));
    bar.firstElementChild.style.width = `${Math.round(done * 100)}%`;
    const parts = [`${spec.model || "?"}`, `epoch ${progress.epoch || 0} of ${epochs}`];
    if (progress.images_per_second) parts.push(`${Math.round(progress.images_per_second)} images/s`);
    if (!TERMINAL.has(job.status) && progress.eta_seconds !== undefined && progress.eta_seconds !== null) {
      parts.push(`about ${duration(progress.eta_seconds)} left`);
    }
    $("detail-summary").textContent = parts.join(" · ");
    $("job-cancel").hidden = TERMINAL.has(job.status);

    const series = (key) => sorted.filter(([, p]) => p[key] !== null && p[key] !== undefined).map(([x, p]) => [x, p[key]]);
    const epochEnds = sorted.filter(([x, p]) => Number.isInteger(x) && !(p.step && p.step < p.steps));
    const valSeries = (key) => epochEnds.filter(([, p]) => p[key] !== null && p[key] !== undefined).map(([x, p]) => [x, p[key]]);
    this.lossChart.setSeries([
      { name: "train loss", color: COLORS.train, points: series("loss") },
      { name: "validation loss", color: COLORS.val, dashed: true, points: valSeries("val_loss") },
    ], epochs);
    this.accChart.setSeries([
      { name: "train accuracy", color: COLORS.train, points: series("accuracy") },
      { name: "validation accuracy", color: COLORS.val, dashed: true, points: valSeries("val_accuracy") },
    ], epochs);
    $("epoch-rows").replaceChildren(...epochEnds.map(([x, p]) => el("tr", {},
      el("td", {}, String(x)), el("td", {}, num(p.loss)), el("td", {}, pct(p.accuracy, 2)),
      el("td", {}, num(p.val_loss)), el("td", {}, pct(p.val_accuracy, 2)),
      el("td", {}, p.images_per_second ? String(Math.round(p.images_per_second)) : "–"))));

    const result = $("detail-result");
    if (job.status === "succeeded" && job.result) {
      const r = job.result;
      const acc = r.metrics ? pct(r.metrics.test_accuracy, 2) : "–";
      result.textContent = r.published
        ? `Published ${r.model} version ${r.version}: test accuracy ${acc}.`
        : `Finished with test accuracy ${acc}; not published${r.reason ? `: ${r.reason}` : "."}`;
    } else if (job.status === "failed") {
      result.textContent = `Failed: ${job.error || "unknown error"}`;
    } else if (job.status === "cancelled") {
      result.textContent = `Cancelled${job.error ? `: ${job.error}` : "."}`;
    } else {
      result.textContent = "";
    }
  }

  async cancel() {
    try {
      const job = await api.del(`/v1/jobs/${this.job.id}`, { admin: true });
      toast(job.status === "cancelled" ? "Job cancelled." : "Cancellation requested: it stops at the next batch.");
      if (job.status) {
        this.job.status = job.status;
        this.render();
        this.onStatus(this.job);
      }
    } catch (error) {
      showError($("detail-error"), error);
    }
  }
}

export function initJobs() {
  let offset = 0;
  let selected = null;
  let timer = null;
  const rowsById = new Map();
  const view = new JobView((job) => updateRow(job));

  function statusBadge(job) {
    return el("span", { className: `badge ${job.status}` }, job.status);
  }

  function progressText(job) {
    const p = job.progress || {};
    const epochs = p.epochs || (job.spec && job.spec.epochs);
    return p.epoch ? `${p.epoch}/${epochs}` : epochs ? `0/${epochs}` : "–";
  }

  function row(job) {
    const tr = el("tr", { className: "clickable", tabIndex: 0, dataset: { job: job.id }, "aria-selected": String(job.id === selected) },
      el("td", {}, el("code", {}, job.id.slice(0, 8))),
      el("td", {}, (job.result && job.result.model) || (job.spec && (job.spec.publish_as || job.spec.model)) || "?"),
      el("td", {}, statusBadge(job)),
      el("td", {}, progressText(job)),
      el("td", {}, job.result && job.result.metrics ? pct(job.result.metrics.test_accuracy, 2) : "–"),
      el("td", {}, when(job.created_at)));
    const open = () => select(job.id);
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        open();
      }
    });
    rowsById.set(job.id, tr);
    return tr;
  }

  function updateRow(job) {
    const tr = rowsById.get(job.id);
    if (!tr) return;
    tr.replaceWith(row(job));
  }

  function select(id) {
    selected = id;
    for (const [jobId, tr] of rowsById) tr.setAttribute("aria-selected", String(jobId === id));
    view.open(id);
  }

  async function refresh() {
    showError($("jobs-error"), null);
    try {
      const page = await api.get(`/v1/jobs?limit=${PAGE}&offset=${offset}`, { admin: true });
      rowsById.clear();
      $("jobs-rows").replaceChildren(...page.jobs.map(row));
      if (!page.jobs.length) {
        $("jobs-rows").append(el("tr", {}, el("td", { colSpan: 6, className: "muted" }, "No jobs yet.")));
      }
      $("jobs-page").textContent = page.total ? `${offset + 1}–${offset + page.jobs.length} of ${page.total}` : "";
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
  window.addEventListener("fdl:key-changed", () => !$("view-jobs").hidden && startPolling());

  const form = $("job-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError($("job-form-error"), null);
    if (!form.reportValidity()) return;
    const button = $("job-submit");
    button.disabled = true;
    $("job-form-status").textContent = "Submitting…";
    try {
      const job = await api.post("/v1/jobs", specFromForm(form), { admin: true });
      $("job-form-status").textContent = `Queued job ${job.id.slice(0, 8)}.`;
      offset = 0;
      await refresh();
      select(job.id);
    } catch (error) {
      $("job-form-status").textContent = "";
      showError($("job-form-error"), error);
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
      const wanted = sessionStorage.getItem("fdl.openJob");
      if (wanted) {
        sessionStorage.removeItem("fdl.openJob");
        select(wanted);
      }
      startPolling();
    },
  };
}
