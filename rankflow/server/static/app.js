// Rankflow's page: calls the REST API (/v1/...) and draws what it returns. No build step, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const PLAN = ["tp", "pp", "dp", "cp", "ep", "zero_stage", "recompute", "schedule", "virtual_stages"];
const WORKLOAD = ["micro_batch", "global_batch", "seq_len"];
const COLORS = ["#3867d6", "#20bf6b", "#f7b731", "#eb3b5a", "#8854d0", "#0fb9b1", "#fa8231", "#4b6584", "#a5b1c2", "#2d3436"];

async function api(method, path, body) {
  const res = await fetch(path, {method, headers: {"content-type": "application/json"},
                                 body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function fill(select, rows, label) {
  for (const r of rows) {
    const o = document.createElement("option");
    o.value = r.name;
    o.textContent = label(r);
    select.appendChild(o);
  }
}

// The page's inputs as URL parameters: the share link, and what a loaded link fills back in.
function params() {
  const p = new URLSearchParams();
  if ($("paste").checked) {
    p.set("model_yaml", $("model_yaml").value);
    p.set("hardware_yaml", $("hardware_yaml").value);
  } else {
    p.set("model", $("model").value);
    p.set("hardware", $("hardware").value);
  }
  for (const k of [...PLAN, ...WORKLOAD]) if ($(k).value !== "") p.set(k, $(k).value);
  if ($("sp").checked) p.set("sp", "true");
  return p;
}

function restore(p) {
  if (p.has("model_yaml")) {
    $("paste").checked = true;
    $("yaml-row").hidden = false;
    $("model_yaml").value = p.get("model_yaml");
    $("hardware_yaml").value = p.get("hardware_yaml") || "";
  }
  for (const k of ["model", "hardware"]) {  // a link may use any name the API takes (an HF id, an alias)
    if (p.has(k) && ![...$(k).options].some((o) => o.value === p.get(k))) fill($(k), [{name: p.get(k)}], (r) => r.name);
  }
  for (const k of ["model", "hardware", ...PLAN, ...WORKLOAD]) if (p.has(k)) $(k).value = p.get(k);
  $("sp").checked = p.get("sp") === "true";
}

function request() {
  const p = params();
  const body = {parallelism: {}, set: []};
  if (p.has("model_yaml")) {
    body.model_yaml = p.get("model_yaml");
    body.hardware_yaml = p.get("hardware_yaml");
  } else {
    body.model = p.get("model");
    body.hardware = p.get("hardware");
  }
  for (const k of PLAN) if (p.has(k)) body.parallelism[k] = /^\d+$/.test(p.get(k)) ? Number(p.get(k)) : p.get(k);
  body.parallelism.sp = $("sp").checked;
  for (const k of WORKLOAD) if (p.has(k)) body.set.push(`workload.${k}=${p.get(k)}`);
  return body;
}

function show(id, value, text) {
  $(id).dataset.value = String(value);
  $(id).textContent = text;
}

// Horizontal stacked bars: rows of [label, [[part, value], ...]] in one unit.
function bars(el, rows, unit) {
  const max = Math.max(...rows.map(([, parts]) => parts.reduce((a, [, v]) => a + v, 0)), 1e-12);
  const names = [...new Set(rows.flatMap(([, parts]) => parts.map(([n]) => n)))];
  const W = 760, left = 120, h = 26;
  const legend = [];  // [x, line] of each name, wrapped to the chart's width
  let lx = 0, line = 0;
  for (const n of names) {
    if (lx + 24 + n.length * 7 > W + 100) { lx = 0; line += 1; }
    legend.push([lx, line]);
    lx += 24 + n.length * 7;
  }
  let svg = `<svg width="${W + 110}" height="${rows.length * h + 30 + 18 * (line + 1)}">`;
  rows.forEach(([label, parts], i) => {
    let x = left;
    svg += `<text x="0" y="${i * h + 17}">${label}</text>`;
    for (const [name, v] of parts) {
      const w = (v / max) * (W - left);
      svg += `<rect x="${x}" y="${i * h + 4}" width="${Math.max(w, 0)}" height="18" fill="${COLORS[names.indexOf(name) % COLORS.length]}"><title>${name}: ${v.toFixed(3)} ${unit}</title></rect>`;
      x += w;
    }
    const total = parts.reduce((a, [, v]) => a + v, 0);
    svg += `<text x="${x + 4}" y="${i * h + 17}">${total.toFixed(2)} ${unit}</text>`;
  });
  names.forEach((n, j) => {
    const [x, l] = legend[j], y = rows.length * h + 14 + 18 * l;
    svg += `<rect x="${x}" y="${y}" width="12" height="12" fill="${COLORS[j % COLORS.length]}"/>`;
    svg += `<text x="${x + 16}" y="${y + 11}">${n.replaceAll("_", " ")}</text>`;
  });
  el.innerHTML = svg + "</svg>";
}

function render(r) {
  $("results").hidden = false;
  $("what").textContent = `${r.model} on ${r.gpus} x ${r.device} (${r.backend} backend)`;
  show("step-time", r.step_time_s, `${r.step_time_s.toFixed(4)} s`);
  show("tokens-per-s", r.throughput.tokens_per_s, `${Math.round(r.throughput.tokens_per_s).toLocaleString("en-US")} tokens/s`);
  show("mfu", r.flops.mfu, `${(100 * r.flops.mfu).toFixed(1)} %`);
  const peak = Math.max(...r.memory.roles.map((m) => m.total_gib));
  show("peak-mem", peak, `${peak.toFixed(2)} GiB of ${r.memory.roles[0].capacity_gib.toFixed(1)} GiB`);
  $("fits").textContent = r.memory.fits ? "fits" : "does not fit: choose more parallelism, recompute or ZeRO";
  $("fits").className = r.memory.fits ? "" : "error";
  const b = r.breakdown_s;
  const comm = Object.entries(b.exposed_comm).filter(([, v]) => v > 0).map(([k, v]) => [`${k} comm`, v]);
  bars($("breakdown"), [[b.critical_role, [["compute", b.compute], ...comm, ["bubble", b.pipeline_bubble],
                                               ...(b.stragglers > 0 ? [["slowest host", b.stragglers]] : [])]]], "s");
  const parts = ["weights", "master_weights", "gradients", "optimizer_states", "activations", "kv_cache",
                 "transient", "comm_buffers", "allocator_slack", "reserved"];
  bars($("memory"), r.memory.roles.map((m) => [m.role, parts.map((k) => [k, m[`${k}_gib`] || 0])]), "GiB");
}

async function simulate() {
  $("status").className = "";
  $("status").textContent = "simulating...";
  $("trace-link").hidden = true;
  const p = params();
  $("share").href = `${location.pathname}?${p.toString()}&run=1`;
  try {
    render(await api("POST", "/v1/simulate", request()));
    $("status").textContent = "done";
  } catch (e) {
    $("status").className = "error";
    $("status").textContent = e.message;
  }
}

async function trace() {
  $("status").textContent = "building the op-level timeline...";
  try {
    const data = await api("POST", "/v1/trace", request());
    const blob = new Blob([JSON.stringify(data)], {type: "application/json"});
    $("trace-link").href = URL.createObjectURL(blob);
    $("trace-link").hidden = false;
    $("status").textContent = "trace ready";
  } catch (e) {
    $("status").className = "error";
    $("status").textContent = e.message;
  }
}

// Serving: the plan's TP/PP/EP, the model and hardware above, a Poisson rate or a capacity question.
function serveBody(capacity) {
  const base = request(), body = {set: base.set, parallelism: {}};
  for (const k of ["model", "hardware", "model_yaml", "hardware_yaml"]) if (base[k] !== undefined) body[k] = base[k];
  for (const k of ["tp", "pp", "ep"]) body.parallelism[k] = base.parallelism[k];
  Object.assign(body, {scheduler: $("scheduler").value, requests: Number($("requests").value),
                       input_len: $("input_len").value, output_len: $("output_len").value,
                       slo_ttft_s: Number($("slo_ttft").value), slo_tpot_s: Number($("slo_tpot").value)});
  if (capacity) body.capacity = true; else body.rate_per_s = Number($("rate").value);
  return body;
}

function serveRows(doc) {
  const s = doc.kind === "capacity" ? doc.metrics : doc;
  const ms = (x) => (x === null ? "-" : (1000 * x).toFixed(1));
  const row = (name, d) => `<tr><td>${name}</td><td>${ms(d.p50)}</td><td>${ms(d.p90)}</td><td>${ms(d.p99)}</td></tr>`;
  $("serve-table").innerHTML = "<tr><th>latency</th><th>p50 (ms)</th><th>p90 (ms)</th><th>p99 (ms)</th></tr>" +
    row("TTFT", s.latency.ttft_s) + row("TPOT", s.latency.tpot_s) + row("end to end", s.latency.e2e_s);
  $("serve-table").dataset.ttftP90 = String(s.latency.ttft_s.p90);
  const rate = doc.kind === "capacity" ? `highest rate meeting the SLO: ${doc.rate_per_s.toFixed(3)} requests/s; ` : "";
  $("serve-status").textContent = `${rate}${s.throughput.output_tokens_per_s.toFixed(0)} output tokens/s, ` +
    `SLO ${s.slo.met ? "met" : "missed"}`;
}

async function serve(capacity) {
  $("serve-status").className = "";
  $("serve-status").textContent = capacity ? "searching for the highest rate..." : "simulating...";
  try {
    serveRows(await api("POST", "/v1/serve", serveBody(capacity)));
  } catch (e) {
    $("serve-status").className = "error";
    $("serve-status").textContent = e.message;
  }
}

let job = null;

async function search() {
  const body = {model: $("model").value, hardware: [$("hardware").value],
                gpus: $("gpus").value.split(",").map(Number), set: request().set};
  $("search-status").className = "";
  try {
    job = (await api("POST", "/v1/search", body)).id;
  } catch (e) {
    $("search-status").className = "error";
    $("search-status").textContent = e.message;
    return;
  }
  $("search-cancel").disabled = false;
  for (;;) {
    const s = await api("GET", `/v1/search/${job}`);
    $("search-progress").value = s.progress;
    $("search-status").textContent = `${s.state}: ${s.plans_done.toLocaleString("en-US")} of ${s.plans_total.toLocaleString("en-US")} plans`;
    if (s.state === "done") {
      const doc = await api("GET", `/v1/search/${job}/result`);
      front(doc);
      $("front").dataset.plans = String(doc.pareto.length);
      if (doc.top.length) $("top").dataset.best = String(doc.top[0].simulated.step_time_s);
      else $("search-status").textContent = "done: no plan fits in memory";
      break;
    }
    if (s.state !== "running" && s.state !== "queued") {
      if (s.error) { $("search-status").className = "error"; $("search-status").textContent = s.error; }
      break;
    }
    await new Promise((ok) => setTimeout(ok, 400));
  }
  $("search-cancel").disabled = true;
}

function planText(p) {
  return `tp${p.tp} pp${p.pp} dp${p.dp} ${p.schedule} mb${p.micro_batch} zero${p.zero_stage} ${p.recompute}`;
}

// The Pareto front (blue) among the top plans (grey): step time against cost per million tokens (GPUs
// when no price is known), the two axes a plan trades.
function front(doc) {
  if (!doc.pareto.length) { $("front").innerHTML = ""; $("top").innerHTML = ""; return; }
  const priced = doc.pareto.every((e) => e.usd_per_million_tokens !== null);
  const xOf = (e) => (priced ? e.usd_per_million_tokens : e.gpus);
  const pts = [...doc.top.map((t) => [t, "#a5b1c2"]), ...doc.pareto.map((e) => [e, "#3867d6"])];
  const W = 700, H = 280, pad = 60;
  const xs = pts.map(([e]) => xOf(e)), ys = pts.map(([e]) => e.step_time_s);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (W - 2 * pad);
  const sy = (y) => H - pad + (y1 > y0 ? -(y - y0) / (y1 - y0) : -0.5) * (H - 2 * pad);
  const xLabel = priced ? "cost (USD per million tokens)" : "GPUs";
  let svg = `<svg width="${W}" height="${H}"><text x="${W / 2 - 80}" y="${H - 10}">${xLabel}</text>`;
  svg += `<text x="0" y="14">step time (s)</text>`;
  svg += `<text x="${pad}" y="${H - 30}">${x0.toFixed(2)}</text><text x="${W - pad - 30}" y="${H - 30}">${x1.toFixed(2)}</text>`;
  svg += `<text x="0" y="${sy(y0)}">${y0.toFixed(2)}</text><text x="0" y="${sy(y1) + 10}">${y1.toFixed(2)}</text>`;
  for (const [e, color] of pts) {
    svg += `<circle cx="${sx(xOf(e))}" cy="${sy(e.step_time_s)}" r="5" fill="${color}"><title>${planText(e)}: ${e.step_time_s.toFixed(3)} s</title></circle>`;
  }
  $("front").innerHTML = svg + "</svg>";
  const rows = doc.top.map((t) => `<tr><td>${t.gpus} x ${t.hardware}</td><td>${planText(t)}</td>` +
    `<td>${t.simulated.step_time_s.toFixed(4)}</td>` +
    `<td>${Math.round(t.simulated.throughput.tokens_per_s).toLocaleString("en-US")}</td>` +
    `<td>${(100 * t.simulated.flops.mfu).toFixed(1)}</td><td>${t.peak_memory_gib.toFixed(1)}</td></tr>`);
  $("top").innerHTML = "<tr><th>GPUs</th><th>plan</th><th>step time (s)</th><th>tokens/s</th><th>MFU (%)</th>" +
    `<th>peak memory (GiB)</th></tr>${rows.join("")}`;
}

async function init() {
  const [models, hardware] = await Promise.all([api("GET", "/v1/models"), api("GET", "/v1/hardware")]);
  fill($("model"), models.models, (r) => `${r.name} (${r.params_b} B, ${r.family})`);
  fill($("hardware"), hardware.hardware, (r) => `${r.name} (${r.bf16_tflops ?? "-"} TFLOP/s, ${r.hbm_gib} GiB)`);
  $("model").value = "llama2-7b";
  $("hardware").value = "A100-SXM4-80GB";
  $("paste").onchange = () => { $("yaml-row").hidden = !$("paste").checked; };
  $("run").onclick = simulate;
  $("trace").onclick = trace;
  $("search-run").onclick = search;
  $("serve-run").onclick = () => serve(false);
  $("capacity-run").onclick = () => serve(true);
  $("search-cancel").onclick = () => job && api("DELETE", `/v1/search/${job}`);
  const p = new URLSearchParams(location.search);
  restore(p);
  if (p.has("gpus")) $("gpus").value = p.get("gpus");
  if (p.get("run") === "1") await simulate();
  for (const k of ["rate", "input_len", "output_len", "requests"]) if (p.has(k)) $(k).value = p.get(k);
  if (p.get("serve") === "1") await serve(false);
  if (p.get("search") === "1") await search();
  document.body.dataset.ready = "1";
}

init();
