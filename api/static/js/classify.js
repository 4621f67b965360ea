// Classify: digits from the pad (js/draw-pad.js), a photo drop zone, the model seen, top-k bars.
import { api, describe } from "./api.js";
import { channelsOf, getModel, listModels } from "./catalog.js";
import { initPad } from "./draw-pad.js";
import { el, pct, showError } from "./ui.js";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);

function targetPaths(model, choice) {
  const base = `/v1/models/${encodeURIComponent(model)}`;
  if (choice.startsWith("v:")) {
    const v = encodeURIComponent(choice.slice(2));
    return { classify: `${base}/versions/${v}:classify`, preprocess: `${base}:preprocess?version=${v}` };
  }
  if (choice.startsWith("l:")) {
    const l = encodeURIComponent(choice.slice(2));
    return { classify: `${base}/labels/${l}:classify`, preprocess: `${base}:preprocess?label=${l}` };
  }
  return { classify: `${base}:classify`, preprocess: `${base}:preprocess` };
}

function renderResult(body, elapsed) {
  const prediction = body.predictions[0];
  $("result-empty").hidden = true;
  $("result-body").hidden = false;
  $("result-meta").textContent = `${body.model} · version ${body.version} · ${Math.round(elapsed)} ms`;
  $("answer").textContent = prediction.label;
  $("answer-score").textContent = `${(prediction.score * 100).toFixed(1)}%`;
  const bars = $("bars");
  bars.replaceChildren(
    ...prediction.top_k.map((entry) => {
      const share = Math.max(0, Math.min(1, entry.score));
      return el(
        "li",
        { "aria-label": `${entry.label}: ${(share * 100).toFixed(1)} percent` },
        el("span", { className: "name", title: entry.label }, entry.label),
        el("span", { className: "track" }, el("span", { className: "fill", style: `width:${share * 100}%` })),
        el("span", { className: "pct" }, `${(share * 100).toFixed(1)}%`),
      );
    }),
  );
}

const SERVED = new Set(["available", "unknown"]);

// The version a default choice classifies with: the "stable" label's, else the newest served.
function defaultVersion(model) {
  const stable = model.versions.find((v) => v.version === model.labels.stable);
  return stable || model.versions.find((v) => SERVED.has(v.status)) || null;
}

// Whether a model fits a source, digits (1 channel) or photos (3), by the input its metadata
// records; one whose input is unknown fits where its name says so (mnist…, cifar…), and with
// `loosely` it fits anywhere (it may be offered, never opened with).
function fits(model, channels, prefix, loosely = false) {
  const found = channelsOf(model);
  if (found !== null) return found === channels;
  return loosely || model.name.startsWith(prefix);
}

// The model a page opens with, for digits (1 channel) or photos (3): one with a "stable" label
// first, then the most accurate served one (never merely the alphabetically first); null when
// none fits, never a model of the other kind (a digit model that calls every photo a digit).
export function defaultModel(models, channels, prefix) {
  const candidates = models.filter((m) => fits(m, channels, prefix) && defaultVersion(m));
  const accuracy = (m) => {
    const v = defaultVersion(m);
    return v.metrics.test_accuracy ?? v.raw.test_accuracy ?? -1;
  };
  const rank = (m) => [m.labels.stable !== undefined ? 1 : 0, accuracy(m)];
  candidates.sort((a, b) => {
    const [ra, rb] = [rank(a), rank(b)];
    return rb[0] - ra[0] || rb[1] - ra[1];
  });
  return candidates[0] || null;
}

// Each source's kind of model: input channels, name prefix, and what to train when none is served.
const KINDS = {
  digit: { channels: 1, prefix: "mnist", what: "digit", train: "mnist_cnn" },
  photo: { channels: 3, prefix: "cifar", what: "photo", train: "cifar10_cnn" },
};
const noneServed = (source) =>
  `No ${KINDS[source].what} model is served yet: train ${KINDS[source].train} on the Jobs page.`;
const unlisted = (error, seconds) =>
  `The model list could not be loaded: ${describe(error)} Retrying in ${seconds} s (or type a model name).`;

// Waits between tries to load the model list while it fails (a gateway still starting, say).
const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 30_000;

// Hides the previous answer (bars, "what the model sees", version and time): after a failed
// request only the error and the new input show, never another image's answer beside them.
function clearResult() {
  $("result-body").hidden = true;
  $("result-meta").textContent = "";
  $("seen").parentElement.hidden = true;
}

export function initClassify() {
  const sources = {
    digit: { model: $("digit-model"), version: $("digit-version") },
    photo: { model: $("photo-model"), version: $("photo-version") },
  };
  let controller = null;
  let previewUrl = null;
  // The model list: `error` while the last try failed (then it is tried again after `delay`,
  // doubled each time up to RETRY_MAX_MS), `served[source]` whether a fetched list had a model
  // of that kind, `errorShown` whether the result box shows the failure. Until a list is fetched
  // nothing claims that no model is served.
  const list = {
    error: null,
    delay: RETRY_FIRST_MS,
    served: { digit: false, photo: false },
    errorShown: false,
    timer: null,
    loading: null,
  };

  async function classify(source, blob, name) {
    const { model, version } = sources[source];
    let modelName = model.value.trim();
    showError($("result-error"), null);
    list.errorShown = false;
    if (!modelName && list.error) {
      // The list failed before: it is asked for now, and its default model used if it comes.
      await refresh();
      modelName = model.value.trim();
    }
    if (!modelName) {
      clearResult();
      // "None served" only from a list that was fetched: a list that failed says why instead.
      const why = list.error
        ? unlisted(list.error, Math.round(list.delay / 1000))
        : list.served[source]
          ? `Choose a model for the ${source} first.`
          : noneServed(source);
      showError($("result-error"), new Error(why));
      list.errorShown = Boolean(list.error);
      return;
    }
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    const paths = targetPaths(modelName, version.value);
    const form = () => {
      const data = new FormData();
      data.append("file", blob, name);
      data.append("top_k", String(TOP_K));
      return data;
    };
    $("result").setAttribute("aria-busy", "true");
    const started = performance.now();
    const preview = api.upload(paths.preprocess, form(), { signal }).catch(() => null);
    try {
      const body = await api.upload(paths.classify, form(), { signal });
      renderResult(body, performance.now() - started);
      const png = await preview;
      const seen = $("seen");
      if (png instanceof Blob) {
        if (previewUrl) URL.revokeObjectURL(previewUrl);
        previewUrl = URL.createObjectURL(png);
        seen.src = previewUrl;
        seen.onload = () => ($("seen-size").textContent = `(${seen.naturalWidth}×${seen.naturalHeight})`);
        seen.parentElement.hidden = false;
      } else {
        seen.parentElement.hidden = true;
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      clearResult();
      showError($("result-error"), error);
    } finally {
      if (!signal.aborted) $("result").removeAttribute("aria-busy");
    }
  }

  initPad((blob) => classify("digit", blob, "digit.png"));

  const input = $("photo-input");
  const zone = $("dropzone");
  const usePhoto = (file) => {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError($("result-error"), new Error(`${file.name} is not an image.`));
      return;
    }
    const img = $("photo-preview");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(file);
    img.alt = `Your photo: ${file.name}`;
    img.hidden = false;
    $("drop-text").hidden = true;
    classify("photo", file, file.name);
  };
  input.addEventListener("change", () => usePhoto(input.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    usePhoto(event.dataTransfer.files[0]);
  });

  async function fillVersions(source, prefer = null) {
    const { model, version } = sources[source];
    const name = model.value.trim();
    const keep = prefer ?? version.value;
    version.replaceChildren(el("option", { value: "" }, "latest"));
    if (!name) return;
    try {
      const info = await getModel(name);
      // Each version's test accuracy beside it, so that people pick the good one.
      const accuracy = (n) => {
        const found = info.versions.find((v) => v.version === Number(n));
        const value = found && found.metrics.test_accuracy;
        return typeof value === "number" ? `, test ${pct(value, 1)}` : "";
      };
      for (const [label, v] of Object.entries(info.labels)) {
        version.append(el("option", { value: `l:${label}` }, `${label} (v${v}${accuracy(v)})`));
      }
      for (const v of info.versions) {
        const text = `v${v.version}${accuracy(v.version).replace(", ", " · ")}`;
        version.append(el("option", { value: `v:${v.version}` }, text));
      }
      if ([...version.options].some((o) => o.value === keep)) version.value = keep;
    } catch {
      // Unknown model or no catalog route: "latest" still works.
    }
  }

  // Each box's note: why the list is missing, or that no model of its kind is served; hidden
  // once the box names a model (one typed in by hand included).
  function showNote(source) {
    const note = $(`${source}-none`);
    const named = Boolean(sources[source].model.value.trim());
    if (list.error) note.textContent = unlisted(list.error, Math.round(list.delay / 1000));
    else note.textContent = named || list.served[source] ? "" : noneServed(source);
    note.hidden = !note.textContent;
  }

  for (const source of Object.keys(sources)) {
    sources[source].model.addEventListener("change", () => fillVersions(source));
    sources[source].model.addEventListener("input", () => showNote(source));
  }

  async function loadModels() {
    clearTimeout(list.timer);
    let models;
    try {
      models = await listModels();
    } catch (error) {
      if (list.error) list.delay = Math.min(list.delay * 2, RETRY_MAX_MS);
      list.error = error;
      for (const source of Object.keys(KINDS)) showNote(source);
      // Tried again while the page is on Classify; otherwise when it is shown again.
      list.timer = setTimeout(() => {
        if (!$("view-classify").hidden) refresh();
      }, list.delay);
      return;
    }
    list.error = null;
    list.delay = RETRY_FIRST_MS;
    if (list.errorShown) showError($("result-error"), null);
    list.errorShown = false;
    for (const [source, { channels, prefix }] of Object.entries(KINDS)) {
      // Each box offers the models whose input fits its images only.
      const offered = models.filter((m) => fits(m, channels, prefix, true));
      $(`${source}-model-names`).replaceChildren(...offered.map((m) => el("option", { value: m.name })));
      const box = sources[source].model;
      const found = box.value ? null : defaultModel(models, channels, prefix);
      if (found) {
        box.value = found.name;
        fillVersions(source, found.labels.stable !== undefined ? "l:stable" : "");
      }
      list.served[source] = offered.some((m) => fits(m, channels, prefix));
      showNote(source);
    }
  }

  // One load at a time: a refresh asked for while one is under way shares it.
  function refresh() {
    list.loading ??= loadModels().finally(() => (list.loading = null));
    return list.loading;
  }

  // Asked again when the page comes back (another tab, window or app in between): models may
  // have been trained, or the gateway started, meanwhile.
  const again = () => {
    if (!$("view-classify").hidden && document.visibilityState === "visible") refresh();
  };
  window.addEventListener("focus", again);
  document.addEventListener("visibilitychange", again);

  return { shown: refresh };
}
