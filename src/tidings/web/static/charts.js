/* Line charts drawn as inline SVG: no library, no network. */
"use strict";

window.TidingsCharts = (function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  /* A "nice" upper bound for the axis: 1, 2, 2.5 or 5 times a power of ten. */
  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  /*
   * Draw `series` ([{name, color, points: [[t, value|null], …]}]) over the last `span` seconds
   * ending at `end`. `format` turns an axis value into a label. Null values leave gaps.
   */
  function line(svg, series, options) {
    const opts = Object.assign({ span: 120, format: String, end: Date.now() / 1000 }, options || {});
    const width = svg.clientWidth || 600;
    const height = svg.clientHeight || 220;
    const pad = { left: 52, right: 12, top: 10, bottom: 24 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    while (svg.firstChild) svg.removeChild(svg.firstChild);

    const start = opts.end - opts.span;
    let top = 0;
    for (const s of series) {
      for (const [t, v] of s.points) if (t >= start && v != null && v > top) top = v;
    }
    top = niceMax(top * 1.1);
    const x = (t) => pad.left + ((t - start) / opts.span) * plotW;
    const y = (v) => pad.top + plotH - (v / top) * plotH;

    for (let i = 0; i <= 4; i++) {
      const value = (top * i) / 4;
      const yy = y(value);
      el("line", { x1: pad.left, x2: width - pad.right, y1: yy, y2: yy, class: "grid-line" }, svg);
      el("text", { x: pad.left - 6, y: yy + 4, "text-anchor": "end" }, svg).textContent = opts.format(value);
    }
    for (let ago = opts.span; ago >= 0; ago -= 30) {
      const xx = x(opts.end - ago);
      el("text", { x: xx, y: height - 6, "text-anchor": ago === 0 ? "end" : "middle" }, svg)
        .textContent = ago === 0 ? "now" : `-${ago}s`;
    }

    for (const s of series) {
      const runs = [];
      let run = [];
      for (const [t, v] of s.points) {
        if (t < start) continue;
        if (v == null) { if (run.length) runs.push(run); run = []; continue; }
        run.push([x(t), y(v)]);
      }
      if (run.length) runs.push(run);
      for (const r of runs) {
        const d = r.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
        if (s.fill && r.length > 1) {
          const base = y(0).toFixed(1);
          el("path", { d: `${d}L${r[r.length - 1][0].toFixed(1)},${base}L${r[0][0].toFixed(1)},${base}Z`,
                       class: "area", fill: s.color }, svg);
        }
        el("path", { d, class: "series", stroke: s.color, "data-series": s.name }, svg);
        if (r.length === 1) el("circle", { cx: r[0][0], cy: r[0][1], r: 2.5, fill: s.color }, svg);
      }
    }
  }

  /* A legend under a chart. */
  function legend(container, series) {
    let box = container.querySelector(".legend");
    if (!box) { box = document.createElement("div"); box.className = "legend"; container.appendChild(box); }
    box.replaceChildren(...series.map((s) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color;
      item.append(swatch, s.label || s.name);
      return item;
    }));
  }

  return { line, legend, niceMax };
})();
