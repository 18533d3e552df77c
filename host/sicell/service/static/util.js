// sicell dashboard, shared parts: the page's state, DOM and number helpers, HTTP with the
// control token (kept in this tab's sessionStorage), dialogs and messages.

export const API = "/api/v1";
const TOKEN_KEY = "sicell-token";

export const state = {
  boards: new Map(), // board_id -> {data, at (ms, when data arrived), el}
  runs: [],
  sel: null, // the run whose plots are shown
  events: 0, // events received (tests and the status line)
  connected: false,
};
window.sicell = state; // for the browser test and for poking around in the console

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "text") e.textContent = v;
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ---- numbers as the CLI prints them (sicell.progress) ------------------------------------
export function fmtVolts(v) {
  return v === null || v === undefined ? "-" : `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(4)} V`;
}
function sign(x) {
  return x < 0 ? "−" : "+";
}
export function fmtCurrent(a) {
  if (a === null || a === undefined) return "-";
  const m = Math.abs(a);
  if (m >= 1e-3) return `${sign(a)}${(m * 1e3).toFixed(3)} mA`;
  if (m >= 1e-6 || m === 0) return `${sign(a)}${(m * 1e6).toFixed(2)} µA`;
  return `${sign(a)}${(m * 1e9).toFixed(1)} nA`;
}
export function fmtCapacity(ah) {
  if (ah === null || ah === undefined) return "-";
  const mah = ah * 1e3;
  if (Math.abs(mah) >= 0.1) return `${mah.toFixed(4)} mAh`;
  return `${(mah * 1e3).toFixed(3)} µAh`;
}
export function fmtDuration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "-";
  let t = Math.round(Math.max(0, s));
  const d = Math.floor(t / 86400);
  t -= d * 86400;
  const h = Math.floor(t / 3600);
  t -= h * 3600;
  const m = Math.floor(t / 60);
  const sec = t - m * 60;
  const p = (n) => String(n).padStart(2, "0");
  if (d) return `${d}d ${p(h)}:${p(m)}:${p(sec)}`;
  if (h) return `${p(h)}:${p(m)}:${p(sec)}`;
  return `${p(m)}:${p(sec)}`;
}
export function fmtAge(s) {
  if (s === null || s === undefined) return "-";
  if (s < 60) return `${s.toFixed(0)} s ago`;
  return `${fmtDuration(s)} ago`;
}

// ---- HTTP --------------------------------------------------------------------------------
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

export async function api(path, opts = {}) {
  const headers = Object.assign({}, authHeaders(), opts.headers || {});
  const r = await fetch(API + path, Object.assign({}, opts, { headers, cache: "no-store" }));
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null; // not JSON (a proxy's page): the status says enough
  }
  if (!r.ok) {
    const err = new Error((body && body.error) || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

// a read that asks for the token when the service wants one for reading too
export async function read(path) {
  try {
    return await api(path);
  } catch (e) {
    if ((e.status === 401 || e.status === 403) && (await askToken(e.message))) return api(path);
    throw e;
  }
}

// ---- messages ----------------------------------------------------------------------------
let toastTimer = null;
export function toast(text, isError) {
  const t = $("toast");
  t.textContent = text;
  t.className = isError ? "toast error" : "toast";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), isError ? 10000 : 4000);
}

// ---- dialogs -----------------------------------------------------------------------------
function dialogResult(dlg) {
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue), { once: true });
  });
}

export async function confirmAction(text, okLabel) {
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dlg.returnValue = "cancel";
  const done = dialogResult(dlg);
  dlg.showModal();
  return (await done) === "ok";
}

let asking = null; // the open token prompt: callers meanwhile share its answer

export function askToken(why) {
  if (!asking) {
    asking = promptToken(why).finally(() => (asking = null));
  }
  return asking;
}

async function promptToken(why) {
  const dlg = $("token-dialog");
  const input = $("token-input");
  input.value = token() || "";
  input.placeholder = why || "";
  dlg.returnValue = "cancel";
  const done = dialogResult(dlg);
  dlg.showModal();
  const what = await done;
  if (what === "forget") sessionStorage.removeItem(TOKEN_KEY);
  if (what === "save" && input.value.trim()) {
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    return true;
  }
  return false;
}

// a POST with the token; asks for it when missing or refused (once)
export async function control(path, opts = {}) {
  if (!token() && !(await askToken("the token is needed for control"))) return null;
  try {
    return await api(path, Object.assign({ method: "POST" }, opts));
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) throw e;
    if (!(await askToken(e.message))) return null;
    return api(path, Object.assign({ method: "POST" }, opts));
  }
}

