// The served models, from GET /v1/models and GET /v1/models/{model}, in one normalized shape:
// { name, versions: [{ version, status, labels, metrics, job_id, input, class_names }], labels }
import { api } from "./api.js";

function versionOf(raw) {
  const v = typeof raw === "object" && raw !== null ? raw : { version: raw };
  return {
    version: Number(v.version),
    status: String(v.status || v.state || "unknown").toLowerCase(),
    labels: Array.isArray(v.labels) ? v.labels : [],
    metrics: v.metrics || v.evaluation || {},
    job_id: v.job_id || v.job || null,
    input: v.input || (v.metadata && v.metadata.input) || null,
    class_names: v.class_names || v.classes || null,
    report: v.report || null,
    raw: v,
  };
}

export function normalizeModel(raw) {
  const name = raw.name || raw.model;
  const versions = (raw.versions || []).map(versionOf).filter((v) => Number.isFinite(v.version));
  let labels = raw.labels || {};
  if (Array.isArray(labels)) {
    labels = Object.fromEntries(labels.map((l) => [l.label || l.name, Number(l.version)]));
  }
  for (const [label, version] of Object.entries(labels)) {
    const target = versions.find((v) => v.version === Number(version));
    if (target && !target.labels.includes(label)) target.labels.push(label);
  }
  for (const v of versions) {
    for (const label of v.labels) labels[label] ??= v.version;
  }
  versions.sort((a, b) => b.version - a.version);
  return { name, versions, labels, raw };
}

export async function listModels() {
  const body = await api.get("/v1/models");
  const items = Array.isArray(body) ? body : body.models || [];
  return items.map((m) => normalizeModel(typeof m === "string" ? { name: m } : m));
}

export async function getModel(name) {
  return normalizeModel(await api.get(`/v1/models/${encodeURIComponent(name)}`));
}

// Input channels of a model (1: digits, 3: photos) when the catalog knows them.
export function channelsOf(model) {
  for (const input of [model.raw.input, ...model.versions.map((v) => v.input)]) {
    if (!input) continue;
    if (input.channels) return Number(input.channels);
    if (Array.isArray(input.shape) && input.shape.length === 4) return Number(input.shape[3]);
  }
  return null;
}
