// Small DOM helpers shared by the views.
import { ApiError, describe } from "./api.js";

export function toast(message, bad = false) {
  const box = document.getElementById("toasts");
  const item = document.createElement("div");
  item.className = bad ? "toast bad" : "toast";
  item.textContent = message;
  box.append(item);
  setTimeout(() => item.remove(), bad ? 8000 : 4000);
}

// Build an element: el("td", { className: "num" }, "text", child, ...).
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role" || key === "for") node.setAttribute(key, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Show an error in an inline message box (or hide it with null); 401s also open the key dialog.
export function showError(box, error) {
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = describe(error);
  box.hidden = false;
  if (error instanceof ApiError && error.status === 401) {
    window.dispatchEvent(new CustomEvent("fdl:need-key", { detail: describe(error) }));
  }
}

export const pct = (value, digits = 1) =>
  value === null || value === undefined ? "–" : `${(value * 100).toFixed(digits)}%`;

export const num = (value, digits = 4) =>
  value === null || value === undefined ? "–" : Number(value).toFixed(digits);

export const isFiniteNumber = (value) => typeof value === "number" && Number.isFinite(value);

// A metric that is no number (NaN, an infinity, a string; null where every report has a value,
// the training loss and accuracy, for the worker writes a NaN as null) as the table shows it.
const NOT_NUMBERS = new Map([[null, "no value"], ["Infinity", "∞"], ["-Infinity", "−∞"], [Infinity, "∞"], [-Infinity, "−∞"]]);
const notANumber = (value) => NOT_NUMBERS.get(value) ?? (typeof value === "string" ? value.slice(0, 16) : "NaN");

// A metric's cell: the number, "–" where there is none (`nullIsNone`: null too, a validation
// value where there is no validation), else what it is, in red.
export function metricCell(value, format, nullIsNone = false) {
  if (isFiniteNumber(value)) return el("td", {}, format(value));
  if (value === undefined || (value === null && nullIsNone)) return el("td", {}, "–");
  return el("td", { className: "diverged", title: "Not a number: did the training diverge?" }, notANumber(value));
}

export function when(seconds) {
  if (!seconds) return "–";
  const date = new Date(seconds * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

// One action waiting for the admin key: set when a request is refused for want of a key, run
// once the key dialog is saved, dropped when the dialog is closed without saving.
let pendingAfterKey = null;

export function retryAfterKey(error, action) {
  if (error instanceof ApiError && error.status === 401) pendingAfterKey = action;
}

export function takeActionAfterKey() {
  const action = pendingAfterKey;
  pendingAfterKey = null;
  return action;
}
