// The live page of `rollout serve`: reads the API (/v1/rollouts) and follows
// the event stream (/v1/events) with fetch(), so it can send the bearer token
// when reads are closed. Every text is set with textContent: nothing from the
// API is ever parsed as HTML.
"use strict";

const TOKEN_KEY = "warren.api-token";
const SVG = "http://www.w3.org/2000/svg";

const state = {
  rollouts: new Map(), // id -> RolloutSummary
  selected: null, // id
  detail: null, // {rollout, spec, plan, steps, alerts} of the selected one
  newestAt: 0, // newest step time seen, for `since=` on reconnect
};

// --- the API ---------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Asks for the token; false when the person cancels. */
function askToken(why) {
  const t = window.prompt(why + "\nAPI token (from rollout serve --api-token-file):");
  if (!t) return false;
  sessionStorage.setItem(TOKEN_KEY, t.trim());
  return true;
}

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

/** A request; on 401 asks for the token once and tries again. */
async function api(path, method = "GET") {
  let resp = await fetch(path, { method, headers: headers() });
  if (resp.status === 401 && askToken(method + " " + path + " needs the token.")) {
    resp = await fetch(path, { method, headers: headers() });
  }
  return resp;
}

/** The JSON body, or an Error carrying the API's `error` message. */
async function json(resp) {
  const body = await resp.json().catch(() => null);
  if (resp.ok) return body;
  const why = body && body.error ? body.error : resp.statusText;
  if (resp.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  throw new Error(resp.status + ": " + why);
}

function showError(e) {
  const p = document.getElementById("error");
  p.textContent = e ? String(e.message || e) : "";
  p.hidden = !e;
}

async function loadList() {
  const list = await json(await api("/v1/rollouts"));
  state.rollouts = new Map(list.map((r) => [r.id, r]));
  for (const r of list) state.newestAt = Math.max(state.newestAt, r.updated_at);
  if (!state.selected && list.length) state.selected = location.hash.slice(1) || list[0].id;
  renderList();
}

async function loadDetail() {
  if (!state.selected) return;
  const d = await json(await api("/v1/rollouts/" + encodeURIComponent(state.selected)));
  d.alerts = d.alerts || [];
  state.detail = d;
  for (const s of d.steps) state.newestAt = Math.max(state.newestAt, s.at);
  renderDetail();
}

async function act(action) {
  const id = state.selected;
  if (!token() && !askToken(action + " " + id)) return;
  try {
    const body = await json(await api("/v1/rollouts/" + encodeURIComponent(id) + "/" + action, "POST"));
    showError(null);
    onRollout(body.rollout);
  } catch (e) {
    showError(e);
  }
}

// --- the event stream ------------------------------------------------------

function setLive(on) {
  document.body.dataset.live = on ? "1" : "0";
  document.getElementById("live").textContent = on ? "live" : "offline";
}

/** Follows /v1/events until it ends, then reconnects from the newest step. */
async function follow() {
  let asked = false;
  for (;;) {
    try {
      const resp = await fetch("/v1/events?since=" + state.newestAt, { headers: headers() });
      if (resp.status === 401 && !asked) {
        asked = true;
        if (askToken("The event stream needs the token.")) continue;
      }
      if (!resp.ok) throw new Error("event stream: " + resp.status);
      setLive(true);
      await readEvents(resp.body.getReader());
    } catch (e) {
      console.warn(e);
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Server-sent events: blocks of `event:` and `data:` lines, blank-line separated. */
async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

function onEvent(kind, data) {
  if (kind === "rollout") onRollout(data);
  else if (kind === "step") onStep(data);
}

function onRollout(summary) {
  state.rollouts.set(summary.id, summary);
  state.newestAt = Math.max(state.newestAt, summary.updated_at);
  if (!state.selected) {
    state.selected = summary.id;
    loadDetail().catch(showError);
  }
  renderList();
  if (state.detail && state.detail.rollout.id === summary.id) {
    state.detail.rollout = summary;
    renderDetail();
  }
}

function onStep(step) {
  state.newestAt = Math.max(state.newestAt, step.at);
  if (!state.rollouts.has(step.rollout)) loadList().catch(showError);
  const d = state.detail;
  if (!d || d.rollout.id !== step.rollout) return;
  if (d.steps.some((s) => s.seq === step.seq)) return; // sent again after a reconnect
  d.steps.push(step);
  d.steps.sort((a, b) => a.seq - b.seq);
  if (step.kind === "alert" && !d.alerts.some((a) => a.fingerprint === step.detail.fingerprint)) {
    d.alerts.push(step.detail);
  }
  renderDetail();
}

// --- what the journal says about each host ---------------------------------

/** Per component and host: {state, version}, from the plan and the steps in order. */
function hostStates(plan, steps) {
  const hosts = new Map(); // "component/host" -> {state, version, initial}
  const key = (c, h) => c + "/" + h;
  const inventories = [[plan.component, plan.inventory]].concat(
    (plan.later || []).map((p) => [p.component, p.inventory]));
  for (const [component, inv] of inventories) {
    for (const h of inv || []) {
      const v = h.version || "none";
      hosts.set(key(component, h.id), { state: "pending", version: v, initial: v });
    }
  }
  const stageComponent = (si) => (plan.stages[si] && plan.stages[si].component) || plan.component;
  const get = (c, h) => {
    if (!hosts.has(key(c, h))) hosts.set(key(c, h), { state: "pending", version: "none", initial: "none" });
    return hosts.get(key(c, h));
  };
  const each = (si, list, f) => (list || []).forEach((h) => f(get(stageComponent(si), h)));
  const back = new Map(); // "component/host" -> version it goes back to
  for (const s of steps) {
    const d = s.detail || {};
    switch (s.kind) {
      case "assign":
        get(d.component || plan.component, s.host).state = "applying";
        break;
      case "salt_apply":
        each(d.stage, d.hosts, (h) => (h.state = "applying"));
        break;
      case "salt_result":
        for (const [h, r] of Object.entries(d.returns || {})) {
          if (r.outcome !== "success") get(stageComponent(d.stage), h).state = "failed";
        }
        break;
      case "confirmed":
        each(d.stage, d.hosts, (h) => Object.assign(h, { state: "baking", version: d.version }));
        break;
      case "batch_done": {
        const batch = (plan.stages[d.stage].batches || [])[d.batch];
        each(d.stage, batch && batch.hosts, (h) => { if (h.state !== "failed") h.state = "done"; });
        break;
      }
      case "rollback_assign": {
        const c = d.component || plan.component;
        const h = get(c, s.host);
        h.state = "applying";
        back.set(key(c, s.host), d.previous ? d.previous.version : h.initial);
        break;
      }
      case "rollback_applied": {
        const c = d.component || plan.component;
        const to = back.get(key(c, s.host));
        Object.assign(get(c, s.host), { state: "rolled back", version: to || get(c, s.host).initial });
        break;
      }
      case "rollback_failed":
        for (const k of back.keys()) if (hosts.get(k).state === "applying") hosts.get(k).state = "failed";
        break;
    }
  }
  return (component, host) => get(component, host);
}

/** Each gate's measurements: name -> {stage, threshold, points: [{at, value, outcome}]}. */
function gateSeries(spec, steps) {
  const gates = new Map();
  for (const s of steps) {
    if (s.kind !== "gate") continue;
    const d = s.detail;
    if (!gates.has(d.gate)) gates.set(d.gate, { condition: null, points: [] });
    const g = gates.get(d.gate);
    if (d.condition) g.condition = d.condition;
    g.points.push({ at: s.at, value: typeof d.value === "number" ? d.value : null, text: d.value, outcome: d.outcome });
  }
  for (const [name, g] of gates) {
    g.threshold = threshold(g.condition);
    if (g.threshold === null) {
      const written = ((spec && spec.gates) || []).find((x) => x.name === name);
      g.threshold = findThreshold(written);
    }
  }
  return gates;
}

/** `< 0.01` -> 0.01. */
function threshold(condition) {
  const m = /^\s*(?:<=|>=|==|!=|<|>)\s*(\S+)/.exec(condition || "");
  return m && isFinite(Number(m[1])) ? Number(m[1]) : null;
}

/** The `threshold` of a spec's gate, wherever its source keeps it. */
function findThreshold(v) {
  if (!v || typeof v !== "object") return null;
  if (typeof v.threshold === "number") return v.threshold;
  for (const x of Object.values(v)) {
    const t = findThreshold(x);
    if (t !== null) return t;
  }
  return null;
}

// --- rendering -------------------------------------------------------------

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") e.onclick = v;
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function clock(ms) {
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function describe(r) {
  const parts = r.components && r.components.length ? r.components : [r];
  return parts.map((c) => c.component + " " + c.version).join(" then ");
}

function renderList() {
  const ul = document.getElementById("rollouts");
  const all = [...state.rollouts.values()].sort((a, b) => b.created_at - a.created_at);
  ul.replaceChildren(...all.map((r) => el("li",
    { "data-rollout": r.id, "data-state": r.state, class: r.id === state.selected ? "selected" : null },
    el("button", { onclick: () => select(r.id) },
      el("span", { class: "badge" }, r.state), " ", describe(r), el("br"),
      el("time", {}, clock(r.created_at))))));
}

function select(id) {
  state.selected = id;
  location.hash = id;
  renderList();
  loadDetail().catch(showError);
}

function renderDetail() {
  const { rollout: r, spec, plan, steps, alerts } = state.detail;
  const host = hostStates(plan, steps);
  const stages = plan.stages.map((st, si) => {
    const component = st.component || plan.component;
    return el("section", { "data-stage": si },
      el("h3", {}, `Stage ${si + 1}: ${st.cohort} (${component} ${st.version || plan.version}, bake ${st.bake})`),
      st.batches.map((b) => el("div", { class: "batch", "data-batch": b.index },
        el("span", {}, "batch " + (b.index + 1)),
        b.hosts.map((h) => {
          const s = host(component, h);
          return el("span", { class: "host", "data-host": h, "data-component": component,
            "data-state": s.state, "data-version": s.version }, el("b", {}, h), ` ${s.version} · ${s.state}`);
        }))),
      st.skipped.length ? el("p", { class: "muted" }, "already on the version: " + st.skipped.join(", ")) : null);
  });
  const gates = [...gateSeries(spec, steps)].map(([name, g]) => el("div", { class: "gate", "data-gate": name },
    el("div", {}, `${name} ${g.condition || ""}`), chart(g),
    el("div", { class: "muted" }, "last: " + String(g.points[g.points.length - 1].text))));
  // What each button may do in this state (the API refuses the rest with 409).
  const allowed = { pause: ["running"], resume: ["paused"], abort: ["running", "paused"] };
  document.getElementById("detail").replaceChildren(
    el("h2", { "data-rollout": r.id, "data-state": r.state },
      el("span", { class: "badge" }, r.state), ` ${describe(r)} `, el("span", { class: "muted" }, r.id)),
    el("div", { class: "actions" }, ["pause", "resume", "abort"].map((a) =>
      el("button", { "data-action": a, disabled: allowed[a].includes(r.state) ? null : "", onclick: () => act(a) }, a))),
    ...stages,
    el("section", {}, el("h3", {}, "Gates"),
      gates.length ? el("div", { class: "gates" }, gates) : el("p", { class: "muted" }, "no measurement yet")),
    el("section", {}, el("h3", {}, "Matched alerts"),
      alerts.length ? el("ul", {}, alerts.map((a) => el("li", { "data-alert": a.fingerprint },
        `${a.labels.alertname || a.fingerprint} (${a.source}, ${a.selector}) received ${clock(a.received_at_ms)}`)))
        : el("p", { class: "muted" }, "none")),
    el("section", {}, el("h3", {}, "Timeline"),
      el("table", {}, steps.slice().reverse().map((s) => el("tr", { "data-seq": s.seq, "data-kind": s.kind },
        el("td", {}, el("time", {}, clock(s.at))), el("td", {}, s.kind), el("td", {}, s.host || ""),
        el("td", { class: "detail" }, JSON.stringify(s.detail)))))));
}

/** Values over time as a polyline, the threshold as a dashed line. */
function chart(g) {
  const W = 240, H = 70, P = 6;
  const pts = g.points.filter((p) => p.value !== null);
  const values = pts.map((p) => p.value).concat(g.threshold === null ? [] : [g.threshold]);
  const lo = Math.min(...values, 0), hi = Math.max(...values, lo + 1e-9);
  const t0 = g.points[0].at, t1 = Math.max(g.points[g.points.length - 1].at, t0 + 1);
  const x = (at) => P + ((at - t0) / (t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
  const s = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  if (g.threshold !== null) {
    s.append(svg("line", { class: "threshold", x1: P, x2: W - P, y1: y(g.threshold), y2: y(g.threshold) }));
  }
  s.append(svg("polyline", { points: pts.map((p) => `${x(p.at)},${y(p.value)}`).join(" ") }));
  for (const p of pts) {
    const kind = p.outcome === "successful" ? "pass" : p.outcome === "failed" ? "fail" : "other";
    const c = svg("circle", { cx: x(p.at), cy: y(p.value), r: 2.5, class: kind });
    const title = svg("title", {});
    title.textContent = `${clock(p.at)}: ${p.value} (${p.outcome})`;
    c.append(title);
    s.append(c);
  }
  return s;
}

// --- start -----------------------------------------------------------------

async function start() {
  try {
    await loadList();
    await loadDetail();
  } catch (e) {
    showError(e);
  }
  follow();
}

start();
