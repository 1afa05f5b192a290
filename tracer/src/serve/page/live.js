// The live page of `tracer serve`: fetches /live.json at every interval and draws it. Every
// figure arrives formatted (units.rs); this script only lays it out. No library, no network
// beyond this daemon.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 2000;
const FLAME_EVERY = 5; // refreshes between flame graph reloads
const COLORS = { total: ["#37474f"], line: ["#c62828", "#ad1457", "#e65100", "#6a1b9a", "#b71c1c"],
                 holder: ["#1565c0", "#00838f", "#2e7d32", "#4527a0", "#0277bd"] };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function figure(value, label) {
  return el("div", { class: "figure" }, el("b", {}, value), el("span", {}, label));
}

function verdict(v) {
  return el("span", { class: "v " + v }, v);
}

function chart(c) {
  const W = 1000, H = 260, L = 70, R = 10, T = 10, B = 24;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                            role: "img", "aria-label": "memory over time" });
  const x = (t) => L + (W - L - R) * (t - c.x_min) / Math.max(c.x_max - c.x_min, 1e-9);
  const y = (v) => H - B - (H - T - B) * v / Math.max(c.y_max, 1);
  for (const [v, label] of c.y_ticks) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eee" }));
    const t = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" });
    t.textContent = label;
    root.append(t);
  }
  for (const [v, label] of c.x_ticks) {
    const t = svg("text", { x: x(v), y: H - 6, "text-anchor": "middle" });
    t.textContent = label;
    root.append(t);
  }
  const legend = el("div", { class: "legend" });
  const used = { total: 0, line: 0, holder: 0 };
  for (const s of c.series) {
    const palette = COLORS[s.kind];
    const color = palette[used[s.kind]++ % palette.length];
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    const path = svg("path", { class: "series " + s.kind, d, fill: "none", stroke: color,
                               "stroke-width": s.kind === "total" ? 2.5 : 1.8, "vector-effect": "non-scaling-stroke" });
    const title = svg("title");
    title.textContent = `${s.name}: ${s.now}`;
    path.append(title);
    root.append(path);
    legend.append(el("span", { class: "entry" }, el("i", { style: "background:" + color }), `${s.name} (${s.now})`));
  }
  return [root, legend];
}

function leakTable(rows) {
  if (!rows.length) return el("p", { class: "none" }, "No line is judged leak or growing.");
  const t = el("table", { class: "leaks" },
    el("tr", {}, el("th", {}, "verdict"), el("th", {}, "line"), el("th", {}, "outstanding"),
       el("th", {}, "growth"), el("th", {}, "why")));
  for (const r of rows) {
    t.append(el("tr", {}, el("td", {}, verdict(r.verdict)), el("td", { class: "line" }, r.line),
      el("td", { class: "num" }, r.outstanding), el("td", { class: "num" }, r.growth),
      el("td", { class: "why" }, r.why)));
  }
  return t;
}

function holderTable(rows) {
  if (!rows.length) return el("p", { class: "none" }, "No container read (yet).");
  const t = el("table", { class: "holders" },
    el("tr", {}, el("th", {}, "verdict"), el("th", {}, "path"), el("th", {}, "type"), el("th", {}, "items"),
       el("th", {}, "growth"), el("th", {}, "keeps alive")));
  for (const h of rows) {
    t.append(el("tr", {}, el("td", {}, verdict(h.verdict)), el("td", {}, h.path), el("td", {}, h.type),
      el("td", { class: "num" }, h.len), el("td", { class: "num" }, h.growth), el("td", { class: "num" }, h.retained)));
  }
  return t;
}

function processSection(p, many) {
  const s = el("section", { class: "proc", "data-pid": String(p.pid) });
  if (many) s.append(el("h2", {}, `pid ${p.pid}: ${p.command}`));
  s.append(el("div", { class: "figures" }, figure(p.rss, "resident memory (RSS)"),
    figure(p.outstanding, "outstanding (allocated since attach, not freed)"),
    figure(p.traced, "traced"), figure("CPython " + p.python, "interpreter")));
  const [c, legend] = chart(p.chart);
  s.append(el("h2", {}, "Memory over time"), c, legend);
  s.append(el("h2", {}, "What leaks"), leakTable(p.leaks));
  s.append(el("h2", {}, "Containers that hold memory"), holderTable(p.holders));
  return s;
}

let refreshes = 0;

async function refresh() {
  const status = document.getElementById("status");
  try {
    const res = await fetch("/live.json", { cache: "no-store" });
    if (res.status === 503) {
      status.textContent = "waiting for the first interval";
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const page = await res.json();
    const many = page.processes.length > 1;
    document.getElementById("procs").replaceChildren(...page.processes.map((p) => processSection(p, many)));
    status.textContent = `${page.samples} samples; updated ${new Date().toLocaleTimeString()}`;
    if (++refreshes % FLAME_EVERY === 0) {
      const old = document.getElementById("flame");
      const fresh = old.cloneNode(false);
      fresh.setAttribute("data", "/flamegraph.svg?t=" + Date.now());
      old.replaceWith(fresh);
    }
  } catch (e) {
    status.textContent = "the daemon does not answer (" + e.message + "); retrying";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
