// sicell dashboard: the "new run" dialog: a TOML checked by the service (computed currents,
// warnings, estimate) before it may be started.
import { $, control, el, fmtDuration, toast } from "./util.js";

let onStarted = null;
let startBoard = null;

export function openStart(id) {
  startBoard = id;
  $("start-board").textContent = id;
  $("start-plan").replaceChildren();
  $("start-go").disabled = true;
  $("start-dialog").showModal();
}

function planTable(plan) {
  const steps = plan.steps || [];
  const keys = [];
  for (const s of steps) for (const k of Object.keys(s)) if (!keys.includes(k)) keys.push(k);
  const cell = (v) =>
    el("td", {
      text:
        v === null || v === undefined
          ? ""
          : typeof v === "number"
            ? String(Number(v.toPrecision(6)))
            : typeof v === "object"
              ? JSON.stringify(v)
              : String(v),
    });
  return el(
    "div",
    {},
    el("p", {
      text: `${plan.schedule || "schedule"}: ${steps.length} steps, about ${fmtDuration(plan.estimate_s)}`,
    }),
    ...(plan.warnings || []).map((w) => el("p", { class: "warn", text: `warning: ${w}` })),
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", { text: k })))),
      el("tbody", {}, ...steps.map((s) => el("tr", {}, ...keys.map((k) => cell(s[k]))))),
    ),
  );
}

async function checkPlan() {
  const out = $("start-plan");
  $("start-go").disabled = true;
  try {
    const plan = await control(`/boards/${encodeURIComponent(startBoard)}/plan`, {
      body: $("start-toml").value,
      headers: { "Content-Type": "application/toml" },
    });
    if (plan === null) return;
    out.replaceChildren(planTable(plan));
    $("start-go").disabled = false;
  } catch (e) {
    out.replaceChildren(el("p", { class: "err", text: e.message }));
  }
}

async function startRun() {
  const name = $("start-name").value.trim();
  if (!$("start-name").reportValidity()) return;
  try {
    const run = await control(
      `/boards/${encodeURIComponent(startBoard)}/runs?name=${encodeURIComponent(name)}`,
      { body: $("start-toml").value, headers: { "Content-Type": "application/toml" } },
    );
    if (run === null) return;
    $("start-dialog").close("started");
    toast(`${startBoard}: run ${name} started`);
    if (onStarted) await onStarted(name, startBoard);
  } catch (e) {
    $("start-plan").replaceChildren(el("p", { class: "err", text: e.message }));
  }
}


export function initStart(started) {
  onStarted = started;
  $("start-check").addEventListener("click", checkPlan);
  $("start-go").addEventListener("click", startRun);
  $("start-toml").addEventListener("input", () => ($("start-go").disabled = true));
  $("start-file").addEventListener("change", async () => {
    const f = $("start-file").files[0];
    if (f) {
      $("start-toml").value = await f.text();
      $("start-go").disabled = true;
    }
  });
}
