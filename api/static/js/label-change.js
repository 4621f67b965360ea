// The Models page's label changes (Promote, Roll back), each sent with the version the page shows
// as its precondition: If-Match "3", or If-None-Match: * for a label it shows none of. The gateway
// checks it under the repository's lock and refuses (412 precondition_failed, nothing changed) a
// label moved elsewhere since (another tab, the CLI, another admin); the page then reads the model
// again and says where the label is now.
import { api, ApiError, LONG_REQUEST_MS } from "./api.js";
import { getModel } from "./catalog.js";

const labelUrl = (model, label) => `/v1/models/${encodeURIComponent(model)}/labels/${encodeURIComponent(label)}`;
const expecting = (shown) => (shown === undefined ? { "If-None-Match": "*" } : { "If-Match": `"${shown}"` });
const options = (shown) => ({ admin: true, timeoutMs: LONG_REQUEST_MS, headers: expecting(shown) });

// Point `label` at `version`, if it still points at `shown` (undefined: if it does not exist).
export const promoteLabel = (model, label, version, shown) =>
  api.post(labelUrl(model, label), { version }, options(shown));

// Roll `label` back from `shown`, the version it must still point at; the answer names the new one.
export const rollBackLabel = (model, label, shown) =>
  api.post(`${labelUrl(model, label)}:rollback`, {}, options(shown));

// The error to show for a change of `label` that failed: for a 412, where the label is now, read
// again (`update` gets the model read), what was not `done` and what to do `again`; any other
// error as it is.
export async function explained(error, { model, label, shown, update, done, again }) {
  if (!(error instanceof ApiError) || error.status !== 412) return error;
  let fresh;
  try {
    fresh = await getModel(model);
  } catch {
    return error; // the gateway's own message says where the label is
  }
  update(fresh);
  const current = fresh.labels[label];
  const was = shown === undefined ? "no such label" : `version ${shown}`;
  if (current === undefined) return new Error(`“${label}” was removed elsewhere (this page showed ${was}); nothing was ${done}.`);
  const how = shown === undefined ? "set" : "moved";
  return new Error(`“${label}” was ${how} to version ${current} elsewhere (this page showed ${was}); nothing was ${done}. ${again(current)}`);
}
