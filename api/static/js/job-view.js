// One job, followed live: status, progress, loss/accuracy curves per epoch, result, cancel.
import { ApiError, api, followEvents } from "./api.js";
import { LineChart } from "./chart.js";
import { duration, el, isFiniteNumber, metricCell, num, pct, retryAfterKey, showError, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);
// The browser cannot import fdl/jobs.py: this is its TERMINAL, the statuses a job never leaves.
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const COLORS = { train: "#4f46e5", val: "#0ea5a4" };
const GONE = "This job no longer exists (its record was removed).";
// Waits before a stream is asked for again: the reconnection time the stream gave last (`retry:`,
// as EventSource keeps it; at most RETRY_MAX_MS), else FIRST_WAIT_MS; doubled per failure in a
// row, up to WAIT_MAX_MS or the stream's own time where that is longer.
const FIRST_WAIT_MS = 500;
const WAIT_MAX_MS = 5000;
const RETRY_MAX_MS = 300_000;
// The gateway's own answer for a job it does not hold: a 404 from a proxy or an ingress in front
// of it (another code, or no JSON at all) is a failure to retry, not a removed job.
const isGone = (error) => error instanceof ApiError && error.status === 404 && error.code === "job_not_found";
// A job's URL: its id encoded, whatever it holds ("../models/x/labels/stable" in a hand-edited
// Redis record must never make a Cancel click another route's DELETE).
const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;
// The gateway's job id rule (fdl/job_records.py JOB_ID_PATTERN, matched whole): an id outside it
// is never asked for. "." and ".." would not even name a job's route: encodeURIComponent leaves
// them, and the browser resolves them as dot segments ("/v1/jobs/.." is "/v1/").
const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/;
const isJobId = (id) => typeof id === "string" && JOB_ID.test(id);
const notAJobId = (id) => {
  const shown = JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id);
  return `${shown} is not a job id: a job id is 1 to 64 characters, each a letter (A–Z, a–z), a digit, “_” or “-”.`;
};
// A mid-epoch report carries step/steps; the epoch's own report (after validation) has none,
// whatever step says: the epoch is done only at that report.
const isMidEpoch = (p) => p.step !== undefined && p.step !== null;

export class JobView {
  constructor(onStatus) {
    this.onStatus = onStatus;
    this.lossChart = new LineChart($("chart-loss"), { xLabel: "epoch" });
    this.accChart = new LineChart($("chart-acc"), { xLabel: "epoch", yMax: 1 });
    this.controller = null;
    this.wanted = null; // the id of the job asked for, loaded or not
    this.needsKey = false; // whether opening or following it stopped at a missing or refused key
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
    this.showLost(false);
    if (job.progress && job.progress.epoch) this.addProgress(job.progress);
    this.render();
  }

  async open(id) {
    this.controller?.abort();
    if (!isJobId(id)) {
      // An id typed into the URL (#jobs/<id>), or a version's job_id: said so, nothing asked.
      this.controller = null;
      this.job = null;
      this.wanted = null;
      $("detail-empty").hidden = true;
      $("detail-body").hidden = true;
      $("job-cancel").hidden = true;
      showError($("detail-error"), new Error(notAJobId(String(id))));
      return;
    }
    const controller = new AbortController();
    this.controller = controller;
    this.wanted = id;
    this.needsKey = false;
    try {
      this.reset(await api.get(jobPath(id), { admin: true, signal: controller.signal }));
    } catch (error) {
      if (error.name === "AbortError" || controller.signal.aborted) return;
      this.needsKey = error instanceof ApiError && error.status === 401;
      showError($("detail-error"), error);
      return;
    }
    this.follow(controller.signal);
  }

  // Called once a key is saved: a view that stopped at a missing or refused key goes on, the
  // stream from the last event it was given (Last-Event-ID), so nothing is lost or drawn twice.
  resume() {
    if (!this.needsKey || !this.wanted) return;
    this.needsKey = false;
    const signal = this.controller?.signal;
    if (this.job && this.job.id === this.wanted && signal && !signal.aborted) {
      showError($("detail-error"), null);
      this.follow(signal);
    } else {
      this.open(this.wanted);
    }
  }

  // The "connection lost — reconnecting…" line, shown while the stream is down and the view
  // tries again, hidden once events flow again.
  showLost(lost) {
    $("detail-connection").hidden = !lost;
  }

  async follow(signal) {
    const id = this.job.id;
    let failures = 0;
    // The stream replays the job's history first, so even a finished job gets its curves: one
    // that could not be read (a 503 from a gateway at its stream cap, a Redis hiccup) is read
    // again, with the same back-off, until it has been, or it has failed six times.
    let replayed = false;
    let retryMs = null; // the stream's reconnection time, once it gave one
    while (!signal.aborted) {
      try {
        this.lastEventId = await followEvents(`${jobPath(id)}/events`, {
          signal,
          lastEventId: this.lastEventId,
          onRetry: (ms) => (retryMs = Math.min(ms, RETRY_MAX_MS)),
          onEvent: (type, data, eventId) => {
            // Kept as each event comes, so a stream that breaks off (or stalls) resumes after it.
            if (eventId) this.lastEventId = eventId;
            this.showLost(false);
            this.onEvent(type, data);
          },
        });
        failures = 0;
        replayed = true;
      } catch (error) {
        if (signal.aborted || error.name === "AbortError") return;
        if (error instanceof ApiError && error.status === 401) {
          // Resumed by resume() once a key is saved (the key dialog opens).
          this.needsKey = true;
          this.showLost(false);
          showError($("detail-error"), error);
          return;
        }
        // Its record was removed (FDL_JOB_RETENTION_S): asking again would never end.
        if (isGone(error)) {
          this.showGone();
          return;
        }
        failures += 1;
        if (!replayed && failures >= 6 && TERMINAL.has(this.job.status)) {
          this.showLost(false);
          showError($("detail-error"), error);
          break;
        }
      }
      if (signal.aborted || (replayed && TERMINAL.has(this.job.status))) break;
      // The stream broke off, was refused or went silent, before the job's end: say so, rather
      // than leave the card frozen at its last point (a hung gateway, a paused Redis).
      this.showLost(true);
      // The stream ended or failed early: catch up from the record, then reconnect.
      if (!(await this.refreshRecord(signal))) {
        if (!signal.aborted) this.showGone();
        return;
      }
      const base = retryMs ?? FIRST_WAIT_MS;
      await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(WAIT_MAX_MS, base), base * 2 ** failures)));
    }
    if (!signal.aborted) this.showLost(false);
    if (!signal.aborted && !(await this.refreshRecord(signal)) && !signal.aborted) this.showGone();
  }

  // Catch up from the job's record; false when the record no longer exists.
  async refreshRecord(signal) {
    try {
      const job = await api.get(jobPath(this.job.id), { admin: true, signal });
      this.job = job;
      if (job.progress && job.progress.epoch) this.addProgress(job.progress);
      this.render();
      this.onStatus(job);
    } catch (error) {
      if (isGone(error)) return false;
      // Anything else is shown by the next attempt.
    }
    return true;
  }

  showGone() {
    this.showLost(false);
    $("job-cancel").hidden = true;
    showError($("detail-error"), new Error(GONE));
  }

  onEvent(type, data) {
    if (type === "progress") {
      if (!this.addProgress(data)) return; // no report it can place
      this.job.progress = data;
      if (!isMidEpoch(data)) this.onStatus(this.job); // epoch done: list row
    } else if (type === "status") {
      this.job.status = data.status;
      if ("result" in data) this.job.result = data.result;
      if ("error" in data) this.job.error = data.error;
      this.onStatus(this.job);
    }
    this.render();
  }

  // Whether `p` was a report with an epoch, placed on the curves.
  addProgress(p) {
    if (!p || typeof p !== "object" || !isFiniteNumber(p.epoch)) return false;
    // A mid-epoch point stays short of the epoch's own (an older worker reported 16 of 4 steps).
    const part = isFiniteNumber(p.step) && isFiniteNumber(p.steps) && p.steps ? p.step / p.steps : 0;
    const x = isMidEpoch(p) ? p.epoch - 1 + Math.min(part, 0.999) : p.epoch;
    this.points.set(Math.round(x * 1000) / 1000, p);
    return true;
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
    if (isFiniteNumber(progress.images_per_second)) parts.push(`${Math.round(progress.images_per_second)} images/s`);
    const trained = sorted.length && sorted.at(-1)[0] >= epochs;
    if (job.status === "running" && trained) {
      parts.push("evaluating and publishing…");
    } else if (!TERMINAL.has(job.status) && isFiniteNumber(progress.eta_seconds)) {
      parts.push(`about ${duration(progress.eta_seconds)} left`);
    }
    const diverged = sorted.filter(([, p]) => "loss" in p && !isFiniteNumber(p.loss)).map(([x]) => x);
    if (diverged.length) parts.push(`loss not a number at epoch ${diverged.join(", ")}`);
    $("detail-summary").textContent = parts.join(" · ");
    $("job-cancel").hidden = TERMINAL.has(job.status);

    // Values that are no number stay in, for the chart to mark; a validation null is no value.
    const series = (key) => sorted.filter(([, p]) => p[key] !== undefined).map(([x, p]) => [x, p[key]]);
    const epochEnds = sorted.filter(([x, p]) => Number.isInteger(x) && !isMidEpoch(p));
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
      el("td", {}, String(x)), metricCell(p.loss, num), metricCell(p.accuracy, (v) => pct(v, 2)),
      metricCell(p.val_loss, num, true), metricCell(p.val_accuracy, (v) => pct(v, 2), true),
      el("td", {}, isFiniteNumber(p.images_per_second) ? String(Math.round(p.images_per_second)) : "–"))));

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
      const job = await api.del(jobPath(this.job.id), { admin: true });
      toast(job.status === "cancelled" ? "Job cancelled." : "Cancellation requested: it stops within 16 batches (one call into the compiled graph).");
      if (job.status) {
        this.job.status = job.status;
        this.render();
        this.onStatus(this.job);
      }
    } catch (error) {
      showError($("detail-error"), error);
      // Saving the key in the dialog that opens cancels this job without a second click.
      const id = this.job.id;
      retryAfterKey(error, () => this.job?.id === id && this.cancel());
    }
  }
}
