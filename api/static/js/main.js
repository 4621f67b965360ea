// The shell: tabs from the URL hash, the admin-key dialog, toasts.
import { adminKey, keyProblem } from "./api.js";
import { initClassify } from "./classify.js";
import { initJobs } from "./jobs.js";
import { initModels } from "./models.js";
import { takeActionAfterKey, toast } from "./ui.js";

const TABS = ["classify", "models", "jobs"];
const views = {};

function showTab() {
  // "#jobs/<id>" is the Jobs tab with that job open (js/jobs.js).
  const tab = location.hash.slice(1).split("/")[0];
  const name = TABS.includes(tab) ? tab : "classify";
  for (const tab of TABS) {
    document.getElementById(`view-${tab}`).hidden = tab !== name;
    const link = document.querySelector(`nav a[data-tab="${tab}"]`);
    if (tab === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · FDL Serve`;
  views[name]?.shown?.();
}

function initKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  const button = document.getElementById("key-button");
  const state = document.getElementById("key-state");
  const problem = document.getElementById("key-error");
  const render = () => {
    const has = Boolean(adminKey.get());
    button.classList.toggle("has-key", has);
    state.textContent = has ? "Admin key set" : "Admin key";
  };
  button.addEventListener("click", () => {
    input.value = adminKey.get();
    dialog.showModal();
    input.focus();
  });
  document.getElementById("key-form").addEventListener("submit", (event) => {
    // A key that cannot be sent is not saved: the dialog stays open and says why.
    const refused = keyProblem(input.value.trim());
    problem.textContent = refused || "";
    problem.hidden = !refused;
    if (refused) {
      event.preventDefault();
      input.focus();
      return;
    }
    adminKey.set(input.value.trim());
    toast(input.value.trim() ? "Admin key saved for this tab." : "Admin key cleared.");
    // What asked for the key (a Promote, say) goes on with it.
    const action = takeActionAfterKey();
    if (action && adminKey.get()) action();
  });
  // Closed without saving (Close, Forget, Escape): the waiting action is dropped. A save closes
  // the dialog too, after the submit handler has already taken the action.
  dialog.addEventListener("close", () => takeActionAfterKey());
  document.getElementById("key-forget").addEventListener("click", () => {
    adminKey.set("");
    input.value = "";
    dialog.close();
    toast("Admin key forgotten.");
  });
  document.getElementById("key-close").addEventListener("click", () => dialog.close());
  window.addEventListener("fdl:key-changed", render);
  window.addEventListener("fdl:need-key", (event) => {
    problem.textContent = event.detail || "";
    problem.hidden = !event.detail;
    if (!dialog.open) {
      input.value = adminKey.get();
      dialog.showModal();
      input.focus();
    }
  });
  render();
}

initKeyDialog();
views.classify = initClassify();
views.models = initModels();
views.jobs = initJobs();
window.addEventListener("hashchange", showTab);
showTab();
