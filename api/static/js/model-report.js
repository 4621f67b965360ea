// A model version's evaluation report on the Models page: test accuracy and loss, per-class
// accuracy, and its images (confusion matrix, training curves), fetched with the key.
import { api, describe } from "./api.js";
import { el, num, pct } from "./ui.js";

const reportUrl = (model, version, file) =>
  `/v1/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}/report/${encodeURIComponent(file)}`;

// The report's images are fetched with the key and shown as object URLs: an <img src> cannot send
// the Authorization header that a gateway with FDL_CLASSIFY_OPEN=false asks for. As `loading="lazy"`
// did, an image is fetched only once it comes near the viewport, so a page of many models does not
// spend the key's rate limit on reports nobody scrolls to. Each box's URLs are revoked, and its
// pending fetches disowned, when its report is replaced or its card leaves the list.
const LAZY_MARGIN = "600px";
const reports = new Map(); // report box -> { urls, loaders, observer } of the showReport call it shows

export function releaseReport(box) {
  const report = reports.get(box);
  if (!report) return;
  report.observer.disconnect();
  for (const url of report.urls) URL.revokeObjectURL(url);
  reports.delete(box);
}

// Whether `report` is still what `box` shows, on the page: the box of a card removed is detached.
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

export async function showReport(box, model, version) {
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
