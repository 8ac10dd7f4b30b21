// A confirmation dialog (<dialog>, built once): a question, optional fields, OK/Cancel.
// Resolves with the fields' values, or null when cancelled.
import { el, clear } from "./dom.js";

let dialog = null;

function build() {
  dialog = el("dialog", { id: "confirm" },
    el("form", { method: "dialog" },
      el("h3", { id: "confirm-title" }),
      el("p", { id: "confirm-text" }),
      el("div", { class: "fields", id: "confirm-fields" }),
      el("div", { class: "buttons" },
        el("button", { type: "submit", value: "cancel", id: "confirm-cancel", formnovalidate: true }, "Cancel"),
        el("button", { type: "submit", value: "ok", id: "confirm-ok", class: "primary" }, "OK"))));
  document.body.append(dialog);
}

/**
 * confirmAction({title, text, ok: "Stop", danger: true, fields: [
 *   {name: "timeout", label: "Timeout (s)", type: "number", min: 1, max: 300, placeholder},
 *   {name: "force", label: "Force (SIGKILL)", type: "checkbox"}]})
 */
export function confirmAction({ title, text = "", ok = "OK", danger = false, fields = [] }) {
  if (!dialog) build();
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  const okButton = dialog.querySelector("#confirm-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "primary danger" : "primary";
  const box = clear(dialog.querySelector("#confirm-fields"));
  const inputs = {};
  for (const f of fields) {
    const input = el("input", { type: f.type || "text", name: f.name, id: `confirm-${f.name}`,
      min: f.min, max: f.max, step: f.step, placeholder: f.placeholder });
    inputs[f.name] = input;
    box.append(f.type === "checkbox"
      ? el("label", { class: "check" }, input, f.label)
      : el("label", {}, f.label, input));
  }
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") { resolve(null); return; }
      const values = {};
      for (const [name, input] of Object.entries(inputs)) {
        values[name] = input.type === "checkbox" ? input.checked : input.value.trim();
      }
      resolve(values);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    okButton.focus();
  });
}
