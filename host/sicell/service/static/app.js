// sicell dashboard: boards from /api/v1/boards, kept live by /api/v1/events (server-sent
// events read with fetch, so a token can ride along); plots in plots.js, new runs in start.js.
import { closeRun, onRecords, resyncRun, selectRun } from "./plots.js";
import { initStart, openStart } from "./start.js";
import {
  $, API, askToken, authHeaders, confirmAction, control, el, fmtAge, fmtCapacity, fmtCurrent,
  fmtDuration, fmtVolts, read, state, toast,
} from "./util.js";

const RUNNING = new Set(["CC", "CV", "rest", "OCV"]);
const CAN_CONTINUE = new Set(["paused", "held", "interrupted"]);
const CAN_STOP = new Set(["CC", "CV", "rest", "OCV", "paused", "held", "interrupted"]);
const CAN_START = new Set(["idle", "done", "stopped", "tripped"]);

function showAlert(ev) {
  const box = $("alerts");
  const when = ev.at ? new Date(ev.at).toLocaleString() : new Date().toLocaleString();
  const close = el("button", { type: "button", text: "dismiss" });
  const row = el(
    "div",
    { class: "alert", "data-kind": ev.kind || "alert", "data-board": ev.board_id || "" },
    el("strong", { text: `${ev.board_id || "service"}: ${ev.kind || "alert"}` }),
    el("span", { text: ev.text || "" }),
    el("span", { class: "muted", text: when }),
    close,
  );
  close.addEventListener("click", () => row.remove());
  box.prepend(row);
  while (box.children.length > 20) box.lastChild.remove();
}


// ---- the board grid ----------------------------------------------------------------------
const FIELDS = [
  ["step", "step"],
  ["cycle", "cycle"],
  ["voltage_v", "V"],
  ["we_v", "E vs Li"],
  ["current_a", "I"],
  ["half_cycle_ah", "Q"],
  ["eta_s", "ETA"],
  ["age", "last record"],
];

function fieldText(b, key) {
  switch (key) {
    case "step":
      return b.step === null || b.step === undefined
        ? "-"
        : b.step_kind
          ? `${b.step} ${b.step_kind}`
          : String(b.step);
    case "cycle":
      return b.cycle === null || b.cycle === undefined ? "-" : String(b.cycle);
    case "voltage_v":
    case "we_v":
      return fmtVolts(b[key]);
    case "current_a":
      return fmtCurrent(b.current_a);
    case "half_cycle_ah":
      return fmtCapacity(b.half_cycle_ah);
    default:
      return "";
  }
}

function makeCard(id) {
  const dl = el("dl");
  for (const [key, label] of FIELDS) {
    dl.append(el("dt", { text: label }), el("dd", { "data-field": key, text: "-" }));
  }
  const actions = el("div", { class: "actions" });
  for (const [op, label] of [
    ["pause", "Pause"],
    ["continue", "Continue"],
    ["stop", "Stop"],
    ["start", "New run…"],
  ]) {
    const btn = el("button", { type: "button", "data-op": op, text: label });
    btn.addEventListener("click", (ev) => {
      ev.stopPropagation();
      if (op === "start") openStart(id);
      else steer(id, op);
    });
    actions.append(btn);
  }
  const card = el(
    "article",
    { class: "board", "data-board": id, tabIndex: 0 },
    el(
      "header",
      {},
      el("h3", { text: id, "data-role": "title" }),
      el("span", { class: "mode", "data-role": "mode" }),
    ),
    el("div", { class: "port", "data-role": "port" }),
    el("div", { class: "runname", "data-role": "run" }),
    dl,
    el("div", { class: "badges", "data-role": "badges" }),
    el("div", { class: "msg", "data-role": "message" }),
    actions,
  );
  card.addEventListener("click", () => {
    const b = state.boards.get(id);
    if (b && b.data.run) selectRun(b.data.run.name, id);
  });
  return card;
}

let runsDue = null;
function refreshRunsSoon() {
  if (runsDue === null) {
    runsDue = setTimeout(() => {
      runsDue = null;
      loadRuns().catch(() => {}); // the table is a convenience: the next change tries again
    }, 500);
  }
}

function renderBoard(b) {
  const alias = b.alias && b.alias !== b.board_id ? b.alias : null;
  let entry = state.boards.get(b.board_id);
  if (!entry) {
    entry = { data: b, at: Date.now(), el: makeCard(b.board_id) };
    state.boards.set(b.board_id, entry);
    const grid = $("grid");
    entry.key = alias || b.board_id;
    const after = [...grid.children].find((c) => c.dataset.key > entry.key);
    entry.el.dataset.key = entry.key;
    grid.insertBefore(entry.el, after || null);
  }
  const before = entry.data;
  entry.data = b;
  entry.at = Date.now();
  const runName = b.run ? b.run.name : null;
  const runChanged = runName !== (before.run ? before.run.name : null);
  const known = !runName || state.runs.some((r) => r.name === runName);
  if (runChanged || !known || (before.mode !== b.mode && !RUNNING.has(b.mode))) refreshRunsSoon();
  const card = entry.el;
  const mode = b.online === false ? "offline" : b.mode || "idle";
  card.dataset.mode = mode;
  card.querySelector('[data-role="mode"]').textContent = mode;
  card.querySelector('[data-role="title"]').textContent = alias || b.board_id;
  const where = alias ? `${b.board_id} · ${b.port || ""}` : b.port || "";
  card.querySelector('[data-role="port"]').textContent = where;
  card.querySelector('[data-role="port"]').title = where;
  const run = b.run;
  card.querySelector('[data-role="run"]').textContent = run
    ? `${run.name} · ${run.schedule || ""} · ${run.run_id}`
    : "no run";
  for (const [key] of FIELDS) {
    const dd = card.querySelector(`[data-field="${key}"]`);
    if (key === "age" || key === "eta_s") continue; // kept current by tick()
    dd.textContent = fieldText(b, key);
    const raw = key === "step" ? b.step : b[key];
    dd.dataset.value = raw === null || raw === undefined ? "" : String(raw);
  }
  const badges = card.querySelector('[data-role="badges"]');
  badges.replaceChildren(
    ...(b.badges || []).map((g) =>
      el("span", { class: "badge", "data-kind": g.kind, text: g.text || g.kind, title: g.text }),
    ),
  );
  card.querySelector('[data-role="message"]').textContent = b.message || "";
  card.querySelector('[data-role="message"]').title = b.message || "";
  const btn = (op) => card.querySelector(`[data-op="${op}"]`);
  btn("pause").disabled = !RUNNING.has(mode);
  btn("continue").disabled = !CAN_CONTINUE.has(mode);
  btn("stop").disabled = !CAN_STOP.has(mode);
  btn("start").disabled = !CAN_START.has(mode);
  card.classList.toggle("selected", !!(state.sel && run && state.sel.name === run.name));
  tickBoard(entry);
  summary();
}

function tickBoard(entry) {
  const b = entry.data;
  const since = (Date.now() - entry.at) / 1000;
  const ageDd = entry.el.querySelector('[data-field="age"]');
  const age =
    b.last_record_age_s === null || b.last_record_age_s === undefined
      ? null
      : b.last_record_age_s + since;
  ageDd.textContent = fmtAge(age);
  ageDd.dataset.value = age === null ? "" : age.toFixed(1);
  const etaDd = entry.el.querySelector('[data-field="eta_s"]');
  const running = RUNNING.has(entry.el.dataset.mode);
  const eta =
    b.eta_s === null || b.eta_s === undefined ? null : running ? b.eta_s - since : b.eta_s;
  etaDd.textContent = fmtDuration(eta);
  etaDd.dataset.value = eta === null ? "" : eta.toFixed(0);
}

function summary() {
  const counts = {};
  for (const { el: card } of state.boards.values()) {
    counts[card.dataset.mode] = (counts[card.dataset.mode] || 0) + 1;
  }
  const parts = Object.entries(counts).map(([m, n]) => `${n} ${m}`);
  $("summary").textContent = `${state.boards.size} boards${parts.length ? ": " : ""}${parts.join(", ")}`;
  $("no-boards").hidden = state.boards.size > 0;
}

async function steer(id, op) {
  const b = state.boards.get(id);
  const run = b && b.data.run ? ` (run ${b.data.run.name})` : "";
  const words = { pause: "Pause", continue: "Continue", stop: "Stop" }[op];
  const extra = op === "stop" ? " A stopped run cannot be continued." : "";
  if (!(await confirmAction(`${words} the run on board ${id}${run}?${extra}`, words))) return;
  try {
    const res = await control(`/boards/${encodeURIComponent(id)}/${op}`);
    if (res === null) return;
    toast(`${id}: ${op} done`);
    renderBoard(await read(`/boards/${encodeURIComponent(id)}`));
  } catch (e) {
    toast(`${id}: ${op} failed: ${e.message}`, true);
  }
}

async function loadBoards() {
  const list = await read("/boards");
  const seen = new Set();
  for (const b of list) {
    renderBoard(b);
    seen.add(b.board_id);
  }
  for (const [id, entry] of state.boards) {
    if (!seen.has(id)) {
      entry.el.remove();
      state.boards.delete(id);
    }
  }
  summary();
}

// ---- runs --------------------------------------------------------------------------------
async function loadRuns() {
  state.runs = await read("/runs");
  const body = $("runs-table").querySelector("tbody");
  body.replaceChildren(
    ...state.runs.map((r) => {
      const tr = el(
        "tr",
        { "data-run": r.name },
        el("td", { text: r.name }),
        el("td", { text: r.board_id || "-" }),
        el("td", { text: r.run_id || "-" }),
        el("td", { text: r.state || "-" }),
        el("td", { text: r.started_at || r.started || "-" }),
        el("td", { text: r.ended_at || r.ended || "-" }),
        el("td", { text: r.service_note || r.note || "" }),
      );
      tr.addEventListener("click", () => selectRun(r.name, r.board_id));
      return tr;
    }),
  );
}


// ---- live events -------------------------------------------------------------------------
function handle(ev) {
  state.events += 1;
  if (ev.type === "board" && ev.board) {
    renderBoard(ev.board);
  } else if (ev.type === "records") {
    onRecords(ev);
  } else if (ev.type === "alert") {
    showAlert(ev);
  } else if (ev.type === "overflow" || ev.type === "resync") {
    resync();
  } else if (ev.type === "run") {
    loadRuns().catch(() => {}); // a run started or ended; the table is a convenience
  }
}

function setConn(what, text) {
  const c = $("conn");
  c.dataset.state = what;
  c.textContent = text;
}

async function resync() {
  await loadBoards();
  await loadRuns();
  await resyncRun();
}

async function streamEvents() {
  for (;;) {
    try {
      const r = await fetch(`${API}/events`, { headers: authHeaders(), cache: "no-store" });
      if (r.status === 401 || r.status === 403) {
        setConn("token", "needs the token");
        if (!(await askToken("reading needs the token"))) await new Promise((ok) => setTimeout(ok, 5000));
        continue;
      }
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      setConn("live", "live");
      state.connected = true;
      resync().catch((e) => toast(e.message, true));
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = chunk
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
          if (data) handle(JSON.parse(data));
        }
      }
    } catch (e) {
      console.debug("event stream:", e); // the service restarting: reconnect below
    }
    state.connected = false;
    setConn("reconnecting", "reconnecting…");
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

// ---- start -------------------------------------------------------------------------------
function init() {
  $("token-btn").addEventListener("click", () => askToken(""));
  $("run-close").addEventListener("click", closeRun);
  initStart(async (name, boardId) => {
    await loadRuns();
    selectRun(name, boardId);
  });
  setInterval(() => {
    for (const entry of state.boards.values()) tickBoard(entry);
  }, 1000);
  const m = /run=([^&]+)/.exec(location.hash);
  loadBoards()
    .then(() => loadRuns())
    .then(() => {
      if (m) {
        const name = decodeURIComponent(m[1]);
        const run = state.runs.find((r) => r.name === name);
        selectRun(name, run && run.board_id);
      }
    })
    .catch((e) => toast(e.message, true));
  streamEvents();
}

init(); // a module runs once the document is parsed
