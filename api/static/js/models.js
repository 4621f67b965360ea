// Models: versions, status, labels, test accuracy, the evaluation report; promote and roll back.
import { api, describe } from "./api.js";
import { listModels } from "./catalog.js";
import { el, num, pct, retryAfterKey, showError, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);
const reportUrl = (model, version, file) =>
  `/v1/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}/report/${encodeURIComponent(file)}`;

// Point a label at a version; true when done. When the key is missing or refused, the key dialog
// opens, and saving it runs the same promotion again, then afterKey().
async function promote(model, label, version, errorBox, afterKey = () => {}) {
  showError(errorBox, null);
  try {
    await api.post(`/v1/models/${encodeURIComponent(model)}/labels/${encodeURIComponent(label)}`, { version }, { admin: true });
    toast(`${model}: “${label}” now points to version ${version}.`);
    return true;
  } catch (error) {
    showError(errorBox, error);
    retryAfterKey(error, async () => (await promote(model, label, version, errorBox, afterKey)) && afterKey());
    return false;
  }
}

// The report's images are fetched with the key and shown as object URLs: an <img src> cannot send
// the Authorization header that a gateway with FDL_CLASSIFY_OPEN=false asks for. As `loading="lazy"`
// did, an image is fetched only once it comes near the viewport, so a page of many models does not
// spend the key's rate limit on reports nobody scrolls to. Each box's URLs are revoked, and its
// pending fetches disowned, when its report is replaced or the list is drawn again.
const LAZY_MARGIN = "600px";
const reports = new Map(); // report box -> { urls, loaders, observer } of the showReport call it shows

function releaseReport(box) {
  const report = reports.get(box);
  if (!report) return;
  report.observer.disconnect();
  for (const url of report.urls) URL.revokeObjectURL(url);
  reports.delete(box);
}

function releaseAllReports() {
  for (const box of [...reports.keys()]) releaseReport(box);
}

// Whether `report` is still what `box` shows, on the page: a box of a list drawn again is detached.
const isCurrent = (box, report) => reports.get(box) === report && box.isConnected;

function loadImage(box, report, img, model, version, file, caption) {
  api.get(reportUrl(model, version, file)).then((blob) => {
    if (!isCurrent(box, report)) return; // replaced meanwhile
    if (!(blob instanceof Blob)) throw new Error("the gateway did not answer with an image");
    const url = URL.createObjectURL(blob);
    report.urls.push(url);
    img.src = url;
  }).catch((error) => {
    if (!isCurrent(box, report)) return;
    img.replaceWith(el("p", { className: "muted small" }, `Could not load the ${caption.toLowerCase()}: ${describe(error)}`));
  });
}

function reportFigure(box, report, model, version, file, caption) {
  const img = el("img", { alt: `${caption} of ${model} version ${version}` });
  const figure = el("figure", {}, img, el("figcaption", {}, caption));
  report.loaders.set(figure, () => loadImage(box, report, img, model, version, file, caption));
  report.observer.observe(figure);
  return figure;
}

function newReport() {
  const loaders = new Map(); // figure -> fetches its image
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      loaders.get(entry.target)?.();
      loaders.delete(entry.target);
    }
  }, { rootMargin: `${LAZY_MARGIN} 0px` });
  return { urls: [], loaders, observer };
}

async function showReport(box, model, version) {
  releaseReport(box);
  const report = newReport();
  reports.set(box, report);
  box.replaceChildren(el("p", { className: "muted small" }, `Loading the report of version ${version}…`));
  let evaluation = null;
  try {
    evaluation = await api.get(reportUrl(model, version, "evaluation.json"));
  } catch (error) {
    if (!isCurrent(box, report)) return;
    box.replaceChildren(el("p", { className: "muted" }, `No evaluation report for version ${version}: ${error.message}`));
    return;
  }
  if (!isCurrent(box, report)) return; // another report, or list, was asked for meanwhile
  const figure = (file, caption) => reportFigure(box, report, model, version, file, caption);
  const perClass = Object.entries(evaluation.per_class_accuracy || {});
  box.replaceChildren(
    el("p", { className: "result-line" },
      `Version ${version}: test accuracy ${pct(evaluation.test_accuracy, 2)}, test loss ${num(evaluation.test_loss)} on ${evaluation.test_examples ?? "?"} examples`),
    perClass.length
      ? el("p", { className: "muted small" }, "Per class: ", perClass.map(([name, acc]) => `${name} ${pct(acc, 0)}`).join(" · "))
      : null,
    el("div", { className: "report" },
      figure("confusion_matrix.png", "Confusion matrix"),
      figure("training_curves.png", "Training curves")),
  );
}

function modelCard(model, refresh) {
  const errorBox = el("p", { className: "error", role: "alert", hidden: true });
  const labelInput = el("input", { value: "stable", pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", "aria-label": `Label to set on ${model.name}` });
  const reportBox = el("div", { className: "report-box" });
  const available = model.versions.filter((v) => v.status === "available" || v.status === "unknown");
  const label = () => labelInput.value.trim() || "stable";

  const rollback = el("button", { type: "button", className: "ghost", title: "Point the label at the previous version (loaded first if it is retired)" }, "Roll back");
  rollback.addEventListener("click", async () => {
    if (model.labels[label()] === undefined) {
      showError(errorBox, new Error(`${model.name} has no label “${label()}” to roll back.`));
      return;
    }
    // The gateway picks the previous version from the repository, whatever its load state.
    showError(errorBox, null);
    try {
      const done = await api.post(`/v1/models/${encodeURIComponent(model.name)}/labels/${encodeURIComponent(label())}:rollback`, {}, { admin: true });
      toast(`${model.name}: “${label()}” rolled back to version ${done.version}.`);
      refresh();
    } catch (error) {
      showError(errorBox, error);
    }
  });

  const rows = model.versions.map((v) => {
    const promoteButton = el("button", { type: "button", className: "small" }, "Promote");
    promoteButton.addEventListener("click", async () => {
      if (await promote(model.name, label(), v.version, errorBox, refresh)) refresh();
    });
    const reportButton = el("button", { type: "button", className: "small ghost" }, "Report");
    reportButton.addEventListener("click", () => showReport(reportBox, model.name, v.version));
    const accuracy = v.metrics.test_accuracy ?? v.raw.test_accuracy;
    return el("tr", {},
      el("td", {}, el("strong", {}, `v${v.version}`)),
      el("td", {}, statusBadge(v)),
      el("td", {}, v.labels.map((l) => el("span", { className: "badge label" }, l)), v.labels.length ? "" : "–"),
      el("td", { className: "num" }, pct(accuracy, 2)),
      el("td", {}, v.job_id ? el("a", { href: `#jobs`, onclick: () => sessionStorage.setItem("fdl.openJob", v.job_id) }, String(v.job_id).slice(0, 8)) : "–"),
      el("td", {}, promoteButton, " ", reportButton));
  });

  const card = el("article", { className: "card model-card", dataset: { model: model.name } },
    el("header", { className: "card-head" },
      el("h2", {}, model.name, Object.entries(model.labels).map(([l, v]) => el("span", { className: "badge label" }, `${l} → v${v}`))),
      el("div", { className: "model-tools" }, el("label", {}, "Label", labelInput), rollback)),
    el("div", { className: "table-wrap" },
      el("table", {},
        el("thead", {}, el("tr", {}, ["Version", "Status", "Labels", "Test accuracy", "Job", "Actions"].map((h) => el("th", { scope: "col", className: h === "Test accuracy" ? "num" : "" }, h)))),
        el("tbody", {}, rows))),
    errorBox,
    reportBox);
  const newest = available[0] || model.versions[0];
  if (newest) showReport(reportBox, model.name, newest.version);
  return card;
}

export function initModels() {
  const list = $("models-list");
  async function refresh() {
    showError($("models-error"), null);
    try {
      const models = await listModels();
      releaseAllReports();
      if (!models.length) {
        list.replaceChildren(el("div", { className: "card empty" }, "No models yet: train one on the Jobs page."));
        return;
      }
      list.replaceChildren(...models.map((m) => modelCard(m, refresh)));
    } catch (error) {
      showError($("models-error"), error);
    }
  }
  $("models-refresh").addEventListener("click", refresh);
  return { shown: refresh };
}

// END (unloaded by the latest-version policy) and NOT_LOADED (after a restart) are no error: the
// model server serves labelled versions and the newest; the others are kept on disk, retired.
// The gateway marks `pending` the newest version the model server has not picked up yet (just
// published): NOT_LOADED too, but loaded at the server's next poll, not retired.
const RETIRED = new Set(["end", "not_loaded"]);
const RETIRED_TITLE = "Kept on disk, not served: classifying by this version answers 404. Promote it to serve it again.";
const PENDING_TITLE = "Published a moment ago: the model server loads it at its next poll of the model repository (a few seconds). Refresh to see it available.";

function statusBadge(v) {
  if (v.raw.pending === true && v.status === "not_loaded") return el("span", { className: "badge loading", title: PENDING_TITLE }, "pending");
  if (RETIRED.has(v.status)) return el("span", { className: "badge retired", title: RETIRED_TITLE }, "retired");
  return el("span", { className: `badge ${v.status}` }, v.status.replace("_", " "));
}
