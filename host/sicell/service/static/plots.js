// sicell dashboard: the selected run's plots (V and E vs time, capacity and CE per cycle,
// dQ/dV of chosen cycles), loaded by seq from the API and extended from live events.
import { $, API, el, read, state, toast } from "./util.js";

const MAX_POINTS = 200000; // points kept in the V/E plot; older ones are thinned past this
const PLOT_CONFIG = { responsive: true, displaylogo: false };

function vtLayout(unit) {
  return {
    margin: { l: 60, r: 20, t: 40, b: 40 },
    title: { text: "potential vs time", font: { size: 13 }, x: 0.02, xanchor: "left" },
    xaxis: { title: { text: `time / ${unit}` } },
    yaxis: { title: { text: "V" } },
    legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 1, xanchor: "right" },
    uirevision: "keep",
  };
}

export async function selectRun(name, boardId) {
  if (!name) return;
  if (state.sel && state.sel.name === name) return;
  const sel = {
    name,
    board: boardId,
    t: [],
    v: [],
    e: [],
    seq: 0,
    pending: [],
    loading: true,
    unit: "min",
    scale: 60,
    hasE: false,
    cycles: [],
    chosen: new Set(),
    picked: false, // the user chose the dQ/dV cycles
    lastCycle: null,
    cyclesDue: 0,
  };
  state.sel = sel;
  location.hash = `run=${encodeURIComponent(name)}`;
  for (const { el: card, data } of state.boards.values()) {
    card.classList.toggle("selected", !!(data.run && data.run.name === name));
  }
  $("run").hidden = false;
  $("run-title").textContent = name;
  $("run-meta").textContent = boardId ? `board ${boardId}` : "";
  $("run-report").href = `${API}/runs/${encodeURIComponent(name)}/report`;
  const gd = $("plot-vt");
  gd.dataset.points = "0";
  try {
    const info = await read(`/runs/${encodeURIComponent(name)}`);
    if (state.sel !== sel) return;
    $("run-meta").textContent = [
      info.board_id ? `board ${info.board_id}` : null,
      info.schedule ? `schedule ${info.schedule}` : null,
      info.run_id ? `run id ${info.run_id}` : null,
      info.state || null,
    ]
      .filter(Boolean)
      .join(" · ");
    await loadRecords(sel);
  } catch (e) {
    toast(`${name}: ${e.message}`, true);
  }
  if (state.sel !== sel) return;
  sel.loading = false;
  const pending = sel.pending;
  sel.pending = [];
  drawVt(sel);
  appendRecords(sel, pending.flat());
  refreshCycles(sel);
}

async function loadRecords(sel) {
  for (;;) {
    const page = await read(
      `/runs/${encodeURIComponent(sel.name)}/records?since=${sel.seq}&limit=20000`,
    );
    if (state.sel !== sel) return;
    addRows(sel, page.records);
    if (!page.records.length || page.next <= sel.seq) break;
    sel.seq = Math.max(sel.seq, page.next);
  }
}

function addRows(sel, recs) {
  for (const r of recs) {
    if (r.seq <= sel.seq) continue;
    sel.seq = r.seq;
    sel.t.push(r.t_s);
    sel.v.push(r.v);
    sel.e.push(r.e === undefined ? null : r.e);
    if (r.e !== null && r.e !== undefined) sel.hasE = true;
    if (r.cycle !== undefined && r.cycle !== null) sel.lastCycle = r.cycle;
  }
  if (sel.t.length > MAX_POINTS) thin(sel);
}

function thin(sel) {
  const keep = (a) => a.filter((_, i) => i % 2 === 0 || i === a.length - 1);
  sel.t = keep(sel.t);
  sel.v = keep(sel.v);
  sel.e = keep(sel.e);
  sel.redraw = true;
}

function drawVt(sel) {
  const last = sel.t.length ? sel.t[sel.t.length - 1] : 0;
  [sel.unit, sel.scale] = last > 2 * 3600 ? ["h", 3600] : last > 120 ? ["min", 60] : ["s", 1];
  const x = sel.t.map((t) => t / sel.scale);
  const traces = [
    { x, y: sel.v.slice(), name: "V (cell)", mode: "lines", line: { width: 1.5 } },
    {
      x: x.slice(),
      y: sel.e.slice(),
      name: "E vs Li",
      mode: "lines",
      line: { width: 1.5 },
      visible: sel.hasE,
    },
  ];
  Plotly.react($("plot-vt"), traces, vtLayout(sel.unit), PLOT_CONFIG);
  sel.redraw = false;
  sel.drawn = sel.t.length;
  $("plot-vt").dataset.points = String(sel.t.length);
  $("plot-vt").dataset.lastSeq = String(sel.seq);
}

let flushQueued = false;
function appendRecords(sel, recs) {
  const before = sel.t.length;
  const hadE = sel.hasE;
  addRows(sel, recs);
  if (sel.t.length === before && !sel.redraw) return;
  if (sel.redraw || sel.hasE !== hadE) {
    drawVt(sel);
    return;
  }
  if (!flushQueued) {
    flushQueued = true;
    requestAnimationFrame(() => {
      flushQueued = false;
      flush(state.sel);
    });
  }
}

function flush(sel) {
  if (!sel || sel.loading) return;
  const from = sel.drawn || 0;
  if (from >= sel.t.length) return;
  const x = sel.t.slice(from).map((t) => t / sel.scale);
  Plotly.extendTraces(
    $("plot-vt"),
    { x: [x, x.slice()], y: [sel.v.slice(from), sel.e.slice(from)] },
    [0, 1],
  );
  sel.drawn = sel.t.length;
  $("plot-vt").dataset.points = String(sel.t.length);
  $("plot-vt").dataset.lastSeq = String(sel.seq);
  if (sel.lastCycle !== sel.shownCycle || Date.now() > sel.cyclesDue) refreshCycles(sel);
}

async function refreshCycles(sel) {
  sel.cyclesDue = Date.now() + 10000;
  sel.shownCycle = sel.lastCycle;
  let cycles;
  try {
    cycles = await read(`/runs/${encodeURIComponent(sel.name)}/cycles`);
  } catch (e) {
    return; // a run without a cycle yet, or busy: the next records try again
  }
  if (state.sel !== sel) return;
  sel.cycles = cycles;
  const n = cycles.map((c) => c.cycle);
  const maxQ = Math.max(0, ...cycles.map((c) => Math.max(c.lith_ah || 0, c.delith_ah || 0)));
  const [unit, k] = maxQ >= 1e-4 ? ["mAh", 1e3] : ["µAh", 1e6];
  const scaled = (key) => cycles.map((c) => (c[key] === null ? null : c[key] * k));
  Plotly.react(
    $("plot-cycles"),
    [
      { x: n, y: scaled("lith_ah"), name: "lithiation", mode: "lines+markers" },
      { x: n, y: scaled("delith_ah"), name: "delithiation", mode: "lines+markers" },
      {
        x: n,
        y: cycles.map((c) => (c.ce === null || c.ce === undefined ? null : c.ce * 100)),
        name: "CE %",
        mode: "lines+markers",
        yaxis: "y2",
        line: { dash: "dot" },
      },
    ],
    {
      margin: { l: 60, r: 60, t: 50, b: 40 },
      title: { text: "capacity and CE per cycle", font: { size: 13 }, x: 0.02, xanchor: "left" },
      xaxis: { title: { text: "cycle" }, dtick: cycles.length < 12 ? 1 : undefined },
      yaxis: { title: { text: unit }, rangemode: "tozero" },
      yaxis2: { title: { text: "CE / %" }, overlaying: "y", side: "right", tickformat: ".2f" },
      legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 1, xanchor: "right" },
      uirevision: "keep",
    },
    PLOT_CONFIG,
  );
  if (!sel.picked && n.length) {
    // until the user picks: the first cycle and the newest (the fade shows between them)
    sel.chosen = new Set([n[0], n[n.length - 1]]);
  }
  const pick = $("dqdv-pick");
  pick.replaceChildren(
    el("span", { class: "muted", text: n.length ? "dQ/dV of cycles:" : "no cycle yet" }),
    ...n.map((c) => {
      const box = el("input", { type: "checkbox", checked: sel.chosen.has(c), value: c });
      box.addEventListener("change", () => {
        sel.picked = true;
        if (box.checked) sel.chosen.add(c);
        else sel.chosen.delete(c);
        drawDqdv(sel);
      });
      return el("label", {}, box, ` ${c}`);
    }),
  );
  drawDqdv(sel);
}

async function drawDqdv(sel) {
  const gen = (sel.dqdvGen = (sel.dqdvGen || 0) + 1); // a newer call wins
  const chosen = [...sel.chosen].sort((a, b) => a - b);
  const traces = [];
  let unit = null; // the analysis names it (mAh/V, or per g or cm² when normalised)
  for (const c of chosen) {
    try {
      const d = await read(`/runs/${encodeURIComponent(sel.name)}/dqdv?cycle=${c}`);
      unit = unit || d.unit;
      traces.push({ x: d.v, y: d.dqdv, name: `cycle ${c}`, mode: "lines" });
    } catch (e) {
      traces.push({ x: [], y: [], name: `cycle ${c}: ${e.message}`, mode: "lines" });
    }
  }
  if (state.sel !== sel || gen !== sel.dqdvGen) return;
  Plotly.react(
    $("plot-dqdv"),
    traces,
    {
      margin: { l: 60, r: 20, t: 50, b: 40 },
      title: { text: "dQ/dV", font: { size: 13 }, x: 0.02, xanchor: "left" },
      xaxis: { title: { text: sel.hasE ? "E vs Li / V" : "V" } },
      yaxis: { title: { text: unit ? `dQ/dV / (${unit})` : "dQ/dV" } },
      showlegend: true,
      legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 1, xanchor: "right" },
      uirevision: "keep",
    },
    PLOT_CONFIG,
  );
}

export function closeRun() {
  state.sel = null;
  $("run").hidden = true;
  history.replaceState(null, "", location.pathname);
  for (const { el: card } of state.boards.values()) card.classList.remove("selected");
}


// a live records event of the selected run
export function onRecords(ev) {
  const name = typeof ev.run === "string" ? ev.run : ev.run && ev.run.name;
  const sel = state.sel;
  if (!sel || name !== sel.name) return;
  if (sel.loading) sel.pending.push(ev.records || []);
  else appendRecords(sel, ev.records || []);
}

// after a reconnect or lost events: what the selected run recorded meanwhile
export async function resyncRun() {
  const sel = state.sel;
  if (sel && !sel.loading) {
    await loadRecords(sel);
    if (state.sel === sel) drawVt(sel);
  }
}
