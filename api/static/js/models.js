// Models: versions, status, labels, test accuracy, the evaluation report (js/model-report.js);
// promote and roll back.
import { describe } from "./api.js";
import { listModels } from "./catalog.js";
import { explained, promoteLabel, rollBackLabel } from "./label-change.js";
import { releaseReport, showReport } from "./model-report.js";
import { el, pct, retryAfterKey, showError, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);

// Point a label at a version, if it still points where the page showed it (`shown`); true when
// done. When the key is missing or refused, the key dialog opens, and saving it runs the same
// promotion again, then afterKey(). A label moved elsewhere is refused (412) and read again (update).
async function promote(model, label, version, shown, errorBox, update, afterKey = () => {}) {
  showError(errorBox, null);
  try {
    await promoteLabel(model, label, version, shown);
    toast(`${model}: “${label}” now points to version ${version}.`);
    return true;
  } catch (error) {
    const again = (current) => `Promote again to move it from version ${current}.`;
    showError(errorBox, await explained(error, { model, label, shown, update, done: "promoted", again }));
    retryAfterKey(error, async () => (await promote(model, label, version, shown, errorBox, update, afterKey)) && afterKey());
    return false;
  }
}

// A model's card, kept across refreshes and updated in place (`update`): the label typed, the
// report chosen, an error shown and the control with focus stay as they were. Redrawing every
// card put the label back to "stable" after a Promote (the next Roll back then rolled back
// stable), showed the newest version's report again and sent focus to <body>.
function modelCard(initial, refresh) {
  let model = initial;
  let drawn = ""; // the listing the card shows, to skip redrawing an unchanged model
  let report = null; // { version, chosen }: the report shown, and whether a Report click chose it
  const errorBox = el("p", { className: "error", role: "alert", hidden: true });
  const labelInput = el("input", { value: "stable", pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", "aria-label": `Label to set on ${model.name}`, dataset: { focus: "label" } });
  const reportBox = el("div", { className: "report-box" });
  const heading = el("h2", {});
  const rows = el("tbody", {});
  const label = () => labelInput.value.trim() || "stable";
  const showVersion = (version, chosen) => {
    report = { version, chosen };
    showReport(reportBox, model.name, version);
  };

  // Sent with If-Match of the version shown: the gateway refuses (412) a label moved elsewhere
  // (another tab, the CLI), so it is never rolled back from a version this page did not show.
  async function rollBack() {
    const name = label();
    const shown = model.labels[name];
    showError(errorBox, null);
    try {
      if (shown === undefined) throw new Error(`${model.name} has no label “${name}” to roll back.`);
      // The gateway picks the previous version from the repository, whatever its load state.
      const done = await rollBackLabel(model.name, name, shown);
      toast(`${model.name}: “${name}” rolled back from version ${shown} to version ${done.version}.`);
      refresh();
    } catch (error) {
      const again = (current) => `Roll back again to roll it back from version ${current}.`;
      showError(errorBox, await explained(error, { model: model.name, label: name, shown, update, done: "rolled back", again }));
      retryAfterKey(error, rollBack); // saving the key carries on with the rollback
    }
  }
  const rollback = el("button", { type: "button", className: "ghost", title: "Point the label at the previous version (loaded first if it is retired)", dataset: { focus: "rollback" } }, "Roll back");
  rollback.addEventListener("click", rollBack);

  const row = (v) => {
    const promoteButton = el("button", { type: "button", className: "small", dataset: { focus: `promote-${v.version}` } }, "Promote");
    promoteButton.addEventListener("click", async () => {
      const name = label();
      if (await promote(model.name, name, v.version, model.labels[name], errorBox, update, refresh)) refresh();
    });
    const reportButton = el("button", { type: "button", className: "small ghost", dataset: { focus: `report-${v.version}` } }, "Report");
    reportButton.addEventListener("click", () => showVersion(v.version, true));
    const accuracy = v.metrics.test_accuracy ?? v.raw.test_accuracy;
    return el("tr", {},
      el("td", {}, el("strong", {}, `v${v.version}`)),
      el("td", {}, statusBadge(v)),
      el("td", {}, v.labels.map((l) => el("span", { className: "badge label" }, l)), v.labels.length ? "" : "–"),
      el("td", { className: "num" }, pct(accuracy, 2)),
      el("td", {}, v.job_id ? el("a", { href: `#jobs`, dataset: { focus: `job-${v.version}` }, onclick: () => sessionStorage.setItem("fdl.openJob", v.job_id) }, String(v.job_id).slice(0, 8)) : "–"),
      el("td", {}, promoteButton, " ", reportButton));
  };

  function update(next) {
    model = next;
    const listing = JSON.stringify(next.raw);
    if (listing === drawn) return;
    drawn = listing;
    heading.replaceChildren(model.name, ...Object.entries(model.labels).map(([l, v]) => el("span", { className: "badge label" }, `${l} → v${v}`)));
    rows.replaceChildren(...model.versions.map(row));
    // The newest version's report unless one was chosen; another only when that one is gone.
    const newest = (model.versions.find((v) => v.status === "available" || v.status === "unknown") || model.versions[0])?.version;
    const kept = report && model.versions.some((v) => v.version === report.version) && (report.chosen || report.version === newest);
    if (kept) return;
    if (newest !== undefined) showVersion(newest, false);
    else {
      report = null;
      releaseReport(reportBox);
      reportBox.replaceChildren();
    }
  }

  const card = el("article", { className: "card model-card", dataset: { model: model.name } },
    el("header", { className: "card-head" },
      heading,
      el("div", { className: "model-tools" }, el("label", {}, "Label", labelInput), rollback)),
    el("div", { className: "table-wrap" },
      el("table", {},
        el("thead", {}, el("tr", {}, ["Version", "Status", "Labels", "Test accuracy", "Job", "Actions"].map((h) => el("th", { scope: "col", className: h === "Test accuracy" ? "num" : "" }, h)))),
        rows)),
    errorBox,
    reportBox);
  update(initial);
  return { card, update, release: () => releaseReport(reportBox) };
}

// The page refreshes itself while it is shown: every POLL_MS, every PENDING_POLL_MS while a
// version is pending, and at once when the browser tab is shown again or the window gets focus,
// so a label moved elsewhere, a pending version loaded or an outage's error do not stay until
// Refresh. A background refresh opens no key dialog: only Refresh and the page's actions do.
const POLL_MS = 10_000;
const PENDING_POLL_MS = 2_000;

// The control with focus in a card, to focus again if its row was redrawn.
function focusedControl() {
  const node = document.activeElement;
  const card = node?.closest?.("article.model-card");
  if (!card || !node.dataset.focus) return null;
  const field = node instanceof HTMLInputElement ? [node.selectionStart, node.selectionEnd] : null;
  return { node, model: card.dataset.model, key: node.dataset.focus, field };
}

export function initModels() {
  const list = $("models-list");
  const view = $("view-models");
  const cards = new Map(); // model name -> its card (modelCard)
  let running = null;
  let again = null; // null, or whether the refresh asked for meanwhile is a background one
  let pending = false;
  let timer = null;
  const visible = () => !view.hidden && document.visibilityState === "visible";

  function draw(models) {
    const focused = focusedControl();
    const names = new Set(models.map((m) => m.name));
    for (const [name, card] of cards) {
      if (names.has(name)) continue;
      card.release();
      cards.delete(name);
    }
    const wanted = models.map((m) => {
      const known = cards.get(m.name);
      if (known) known.update(m);
      else cards.set(m.name, modelCard(m, () => refresh()));
      return cards.get(m.name).card;
    });
    if (!wanted.length) {
      list.replaceChildren(el("div", { className: "card empty" }, "No models yet: train one on the Jobs page."));
    } else if (wanted.length !== list.children.length || wanted.some((card, i) => list.children[i] !== card)) {
      list.replaceChildren(...wanted);
    }
    if (!focused || (focused.node.isConnected && document.activeElement === focused.node)) return;
    const target = cards.get(focused.model)?.card.querySelector(`[data-focus="${focused.key}"]`);
    if (!target) return;
    target.focus({ preventScroll: true });
    if (focused.field) target.setSelectionRange(...focused.field);
  }

  async function load(quiet) {
    const box = $("models-error");
    try {
      const models = await listModels();
      showError(box, null);
      pending = models.some((m) => m.versions.some((v) => v.raw.pending === true));
      draw(models);
    } catch (error) {
      if (!quiet) showError(box, error);
      else {
        box.textContent = describe(error);
        box.hidden = false;
      }
    }
  }

  // One refresh at a time: one asked for meanwhile runs after it, so answers never land out of order.
  async function refresh({ quiet = false } = {}) {
    if (running) {
      again = again === null ? quiet : again && quiet;
      return running;
    }
    clearTimeout(timer);
    running = (async () => {
      await load(quiet);
      while (again !== null) {
        const next = again;
        again = null;
        await load(next);
      }
    })();
    try {
      await running;
    } finally {
      running = null;
      schedule();
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!visible()) return;
    timer = setTimeout(() => {
      if (visible()) refresh({ quiet: true });
    }, pending ? PENDING_POLL_MS : POLL_MS);
  }

  const whenShown = () => {
    if (visible()) refresh({ quiet: true });
    else clearTimeout(timer);
  };
  document.addEventListener("visibilitychange", whenShown);
  window.addEventListener("focus", whenShown);
  $("models-refresh").addEventListener("click", () => refresh());
  return { shown: () => refresh() };
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
