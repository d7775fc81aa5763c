// The linked attention view (Streamlit Components v2, no iframe). Draws the exact, approximate and
// difference maps of every head from the payload of xviz.figures.linked.linked_view_data, a query
// inspector and the token strips. Hover highlights the query (and key) in every panel here, in the
// browser, with no server rerun; a head switch is client-side too; only a click (a pin) goes back to
// Python, through the component state "pin" = {query, key, head}, so the URL reproduces it.
//
// Streamlit calls this function again on every rerun with the new data and keeps the same
// parentElement: the view is built once per payload and kept on the element (a rerun that only moves
// the pin redraws nothing else).

const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
  [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]];
const RDBU = [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];

function lut(stops) {
  const out = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1), k = Math.min(stops.length - 2, Math.floor(x)), f = x - k;
    for (let c = 0; c < 3; c++) out[i * 3 + c] = stops[k][c] + f * (stops[k + 1][c] - stops[k][c]);
  }
  return out;
}
// signed weights: diverging too, in other colours than the difference's (plotly's PuOr_r, as the figures)
const PUOR_R = [[45, 0, 75], [84, 39, 136], [128, 115, 172], [178, 171, 210], [216, 218, 235], [247, 247, 247],
  [254, 224, 182], [253, 184, 99], [224, 130, 20], [179, 88, 6], [127, 59, 8]];
const SEQ = lut(VIRIDIS), DIV = lut(RDBU), SIGNED = lut(PUOR_R);

function half(h) {  // IEEE float16 -> number
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 5.960464477539063e-8;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * Math.pow(2, e - 15);
}

function unpack(b64) {
  const bin = atob(b64), n = bin.length >> 1, out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = half(bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8));
  return out;
}

function el(tag, cls, attrs) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fmt(x) {
  if (!isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? x.toExponential(2) : x.toPrecision(3).replace(/\.?0+$/, "");
}

function signature(d) {
  const m = d.maps[0] || {};
  return [d.n_queries, d.n_keys, d.r0, d.c0, d.rows, d.cols, d.heads, d.names.join("|"),
    (m.exact || "").length, (m.exact || "").slice(0, 64), (m.approx || "").slice(-64), m.top, m.dtop,
    (d.tokens || []).length].join(",");
}

class LinkedView {
  constructor(root) {
    this.root = root;
    this.box = el("div", "xv");
    root.appendChild(this.box);
  }

  build(d) {
    this.d = d;
    this.cache = new Map();  // head -> decoded maps
    this.head = d.head;
    this.pin = {query: d.query, key: d.key};
    this.hover = null;
    this.box.replaceChildren();
    this.box.style.fontSize = `${d.font_size || 14}px`;
    const bar = el("div", "bar");
    const label = el("label", "head-label");
    label.textContent = "head ";
    this.headSelect = el("select", "", {"data-testid": "xviz-head", "aria-label": "head shown"});
    for (let h = 0; h < d.heads; h++) {
      const o = el("option", "", {value: String(h)});
      o.textContent = String(h);
      this.headSelect.appendChild(o);
    }
    this.headSelect.addEventListener("change", () => { this.head = +this.headSelect.value; this.draw(); });
    label.appendChild(this.headSelect);
    this.info = el("span", "info", {"data-testid": "xviz-hover-info"});
    bar.append(label, this.info);
    if (d.heads < 2) label.style.display = "none";
    this.box.appendChild(bar);

    const grid = el("div", "grid");
    this.panels = [];
    this.maps = [];
    const titles = [d.names[0], d.names[1], `difference (${d.names[1]} − ${d.names[0]})`];
    ["exact", "approx", "diff"].forEach((which, i) => {
      const fig = el("figure", "panel", {"data-testid": "xviz-linked", "data-panel": which});
      const cap = el("figcaption");
      cap.textContent = titles[i];
      const scale = el("div", "scale");
      const holder = el("div", "mapbox", i === 0 ? {"data-testid": "xviz-attention-map",
        "data-n-queries": String(d.n_queries), "data-n-keys": String(d.n_keys),
        "data-rows": String(d.rows), "data-cols": String(d.cols)} : {});
      holder.style.aspectRatio = `${d.cols} / ${d.rows}`;
      const canvas = el("canvas", "", {width: String(d.cols), height: String(d.rows),
        role: "img", "aria-label": `${titles[i]} attention map`});
      const rowBand = el("div", "band row"), colBand = el("div", "band col"), pinBox = el("div", "pinbox");
      holder.append(canvas, rowBand, colBand, pinBox);
      const axes = el("div", "axes");
      axes.textContent = "queries ↓ · keys →";
      fig.append(cap, holder, scale, axes);
      grid.appendChild(fig);
      this.panels.push(fig);
      this.maps.push({which, canvas, rowBand, colBand, pinBox, scale, holder});
      holder.addEventListener("mousemove", (ev) => this.onMap(ev, holder));
      holder.addEventListener("mouseleave", () => this.setHover(null));
      holder.addEventListener("click", (ev) => { const c = this.cellAt(ev, holder); this.setPin(c.query, c.key); });
    });
    const insp = el("figure", "panel inspector", {"data-testid": "xviz-linked", "data-panel": "inspector"});
    this.inspTitle = el("figcaption");
    this.inspCanvas = el("canvas", "", {width: "600", height: "300", role: "img"});
    const legend = el("div", "legend");
    legend.innerHTML = '<span class="sw e"></span>' + esc(d.names[0]) + ' <span class="sw a"></span>' + esc(d.names[1]);
    insp.append(this.inspTitle, this.inspCanvas, legend);
    grid.appendChild(insp);
    this.panels.push(insp);
    this.box.appendChild(grid);

    this.strips = [];
    if (d.tokens) {
      const t = el("div", "tokens", {"data-testid": "xviz-linked", "data-panel": "tokens"});
      const help = el("div", "help");
      help.textContent = d.cross ? "Queries (hover one), then the keys shaded by its weights:" :
        "The text, each key shaded by the hovered (or pinned) query's weight, relative to the row's largest:";
      t.appendChild(help);
      const addStrip = (labels, offset, role, which, name) => {
        const row = el("div", "strip", {"data-role": role});
        const lab = el("div", "lab");
        lab.textContent = name;
        row.appendChild(lab);
        const spans = labels.map((tok, i) => {
          const s = el("span", "tok", {"data-testid": "xviz-token", "data-index": String(offset + i),
            "data-role": role});
          s.textContent = tok;
          s.addEventListener("mouseenter", () => role === "key" ? this.setHover({query: null, key: offset + i}) :
            this.setHover({query: offset + i, key: null}));
          s.addEventListener("mouseleave", () => this.setHover(null));
          s.addEventListener("click", () => role === "key" ? this.setPin(this.pin.query, offset + i) :
            this.setPin(offset + i, this.pin.key));
          row.appendChild(s);
          return s;
        });
        t.appendChild(row);
        this.strips.push({role, which, spans, offset});
      };
      if (d.cross) {
        addStrip(d.tokens, d.r0, "query", null, "queries");
        if (d.key_tokens) {
          addStrip(d.key_tokens, d.c0, "key", "exact", `keys, ${d.names[0]}`);
          addStrip(d.key_tokens, d.c0, "key", "approx", `keys, ${d.names[1]}`);
        }
      } else {
        addStrip(d.tokens, d.r0, "query", "exact", d.names[0]);
        addStrip(d.tokens, d.r0, "query", "approx", d.names[1]);
      }
      this.panels.push(t);
      this.box.appendChild(t);
    }
    this.note = el("div", "note");
    this.box.appendChild(this.note);
    this.draw();
  }

  decoded(h) {
    if (!this.cache.has(h)) {
      const m = this.d.maps[h];
      this.cache.set(h, {exact: unpack(m.exact), approx: unpack(m.approx), diff: unpack(m.diff), top: m.top,
        dtop: m.dtop, etop: m.etop, atop: m.atop, note: m.note});
    }
    return this.cache.get(h);
  }

  draw() {
    const d = this.d, m = this.decoded(this.head);
    this.headSelect.value = String(this.head);
    for (const p of this.maps) {
      // weights and differences never share a scale: signed weights get their own diverging colours, and
      // the exact map then keeps its own sequential range (a signed range would wash it out)
      const z = m[p.which], diverging = p.which === "diff" || (d.signed && p.which === "approx");
      const top = p.which === "diff" ? m.dtop : !d.signed ? m.top : p.which === "exact" ? m.etop : m.atop;
      const lt = p.which === "diff" ? DIV : diverging ? SIGNED : SEQ;
      const ctx = p.canvas.getContext("2d"), img = ctx.createImageData(d.cols, d.rows);
      for (let i = 0; i < z.length; i++) {
        const x = diverging ? 0.5 + 0.5 * z[i] / top : z[i] / top;
        const k = Math.max(0, Math.min(255, Math.round(x * 255))) * 3;
        img.data[4 * i] = lt[k]; img.data[4 * i + 1] = lt[k + 1]; img.data[4 * i + 2] = lt[k + 2];
        img.data[4 * i + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
      const lo = diverging ? -top : 0;
      const bar = p.which === "diff" ? "div" : diverging ? "signed" : "seq";
      p.scale.innerHTML = `<span>${fmt(lo)}</span><span class="bar ${bar}"></span>` +
        `<span>${fmt(top)}</span>`;
    }
    const pooled = d.fr > 1 || d.fc > 1;
    this.note.textContent = (pooled ? `Each cell is the mean of a block of ${d.fr} queries × ${d.fc} keys ` +
      `(${d.rows} × ${d.cols} cells for ${d.n_queries} × ${d.n_keys}). ` : "") +
      (m.note ? `Weights saturate at ${m.note}. ` : "") +
      "Hover a cell or a token to follow a query in every panel; click to pin it (the address bar keeps it).";
    this.render();
  }

  cellAt(ev, holder) {  // the query and key under the mouse (inside the pooled block: by position)
    const d = this.d, r = holder.getBoundingClientRect();
    const fy = Math.min(0.999999, Math.max(0, (ev.clientY - r.top) / r.height));
    const fx = Math.min(0.999999, Math.max(0, (ev.clientX - r.left) / r.width));
    const pick = (f, cells, size, n) => {
      const i = Math.floor(f * cells), len = Math.min(size, n - i * size);
      return Math.min(n - 1, i * size + Math.floor((f * cells - i) * len));
    };
    return {query: d.r0 + pick(fy, d.rows, d.fr, d.n_queries), key: d.c0 + pick(fx, d.cols, d.fc, d.n_keys)};
  }

  onMap(ev, holder) { this.setHover(this.cellAt(ev, holder)); }

  setHover(h) { this.hover = h; this.render(); }

  setPin(query, key) {
    this.pin = {query, key};
    this.hover = null;
    this.render();
    if (this.send) this.send("pin", {query, key, head: this.head});
  }

  current() {  // what every panel shows: the hover where there is one, else the pin
    const h = this.hover || {};
    return {query: h.query ?? this.pin.query, key: h.key ?? (h.query != null ? null : this.pin.key)};
  }

  blockText(start, size, n, off) {
    const i = Math.floor((start - off) / size), a = off + i * size, b = off + Math.min(n, (i + 1) * size) - 1;
    return a === b ? `${a}` : `${a}–${b}`;
  }

  render() {
    const d = this.d, m = this.decoded(this.head), cur = this.current();
    const qs = cur.query == null ? "" : String(cur.query), ks = cur.key == null ? "" : String(cur.key);
    for (const p of this.panels) { p.dataset.hoverQuery = qs; p.dataset.hoverKey = ks; }
    const row = Math.floor((cur.query - d.r0) / d.fr);
    const col = cur.key == null ? null : Math.floor((cur.key - d.c0) / d.fc);
    const prow = Math.floor((this.pin.query - d.r0) / d.fr), pcol = Math.floor((this.pin.key - d.c0) / d.fc);
    const pct = (i, n) => `${(100 * i) / n}%`;
    for (const p of this.maps) {
      p.rowBand.style.top = pct(row, d.rows); p.rowBand.style.height = pct(1, d.rows);
      p.rowBand.style.display = row >= 0 && row < d.rows ? "block" : "none";
      p.colBand.style.left = pct(col, d.cols); p.colBand.style.width = pct(1, d.cols);
      p.colBand.style.display = col != null && col >= 0 && col < d.cols ? "block" : "none";
      p.pinBox.style.top = pct(prow, d.rows); p.pinBox.style.height = pct(1, d.rows);
      p.pinBox.style.left = pct(pcol, d.cols); p.pinBox.style.width = pct(1, d.cols);
    }
    // the hover line: which block a pooled cell stands for, and the three values there
    const tok = (labels, i, off) => labels && labels[i - off] != null ? ` “${labels[i - off]}”` : "";
    let text = `head ${this.head} · quer${d.fr > 1 ? "ies " + this.blockText(cur.query, d.fr, d.n_queries, d.r0) :
      "y " + cur.query}${d.fr > 1 ? "" : tok(d.tokens, cur.query, d.r0)}`;
    if (col != null && row >= 0 && row < d.rows && col >= 0 && col < d.cols) {
      const i = row * d.cols + col;
      text += ` × key${d.fc > 1 ? "s " + this.blockText(cur.key, d.fc, d.n_keys, d.c0) : " " + cur.key}` +
        `${d.fc > 1 ? "" : tok(d.key_tokens, cur.key, d.c0)}: ${d.names[0]} ${fmt(m.exact[i])}, ${d.names[1]} ` +
        `${fmt(m.approx[i])}, difference ${fmt(m.diff[i])}`;
    }
    this.info.textContent = text + (this.hover ? "" : " (pinned)");
    this.drawInspector(m, row, col);
    this.shadeTokens(m, row, cur);
  }

  drawInspector(m, row, col) {
    const d = this.d, c = this.inspCanvas, ctx = c.getContext("2d"), W = c.width, H = c.height;
    const pad = {l: 48, r: 10, t: 10, b: 30};
    ctx.clearRect(0, 0, W, H);
    this.inspTitle.textContent = `Query inspector: ${d.fr > 1 ? "queries " + this.blockText(this.current().query,
      d.fr, d.n_queries, d.r0) : "query " + this.current().query}, weight on each key${d.fc > 1 ? " block" : ""}`;
    if (row < 0 || row >= d.rows) return;
    const e = m.exact.subarray(row * d.cols, (row + 1) * d.cols), a = m.approx.subarray(row * d.cols, (row + 1) * d.cols);
    let lo = 0, hi = 1e-12;
    for (let j = 0; j < d.cols; j++) { hi = Math.max(hi, e[j], a[j]); lo = Math.min(lo, e[j], a[j]); }
    const X = (j) => pad.l + ((j + 0.5) / d.cols) * (W - pad.l - pad.r);
    const Y = (v) => H - pad.b - ((v - lo) / (hi - lo)) * (H - pad.t - pad.b);
    ctx.strokeStyle = "#999"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(pad.l, pad.t); ctx.lineTo(pad.l, H - pad.b); ctx.lineTo(W - pad.r, H - pad.b); ctx.stroke();
    ctx.fillStyle = "#555"; ctx.font = "13px sans-serif"; ctx.textAlign = "right";
    ctx.fillText(fmt(hi), pad.l - 4, pad.t + 10); ctx.fillText(fmt(lo), pad.l - 4, H - pad.b);
    ctx.textAlign = "center";
    ctx.fillText(`keys ${d.c0}–${d.c0 + d.n_keys - 1} →`, (pad.l + W - pad.r) / 2, H - 8);
    if (col != null && col >= 0 && col < d.cols) {
      ctx.fillStyle = "rgba(255,0,255,0.18)";
      const w = Math.max(2, (W - pad.l - pad.r) / d.cols);
      ctx.fillRect(X(col) - w / 2, pad.t, w, H - pad.t - pad.b);
    }
    for (const [z, colour] of [[e, "#1f77b4"], [a, "#ff7f0e"]]) {
      ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
      for (let j = 0; j < d.cols; j++) j ? ctx.lineTo(X(j), Y(z[j])) : ctx.moveTo(X(j), Y(z[j]));
      ctx.stroke();
    }
  }

  shadeTokens(m, row, cur) {
    const d = this.d;
    for (const s of this.strips) {
      if (s.which === null) {  // the query strip of cross-attention: marks the query
        s.spans.forEach((sp, i) => { sp.classList.toggle("on", s.offset + i === cur.query); sp.style.background = ""; });
        continue;
      }
      const z = m[s.which];
      let top = 1e-12;
      if (row >= 0 && row < d.rows) for (let j = 0; j < d.cols; j++) top = Math.max(top, Math.abs(z[row * d.cols + j]));
      s.spans.forEach((sp, i) => {
        const t = s.offset + i, j = Math.floor((t - d.c0) / d.fc);
        const w = row >= 0 && row < d.rows && j >= 0 && j < d.cols ? z[row * d.cols + j] / top : 0;
        sp.style.background = `rgba(${w >= 0 ? "31,119,180" : "214,39,40"},${Math.min(1, Math.abs(w)).toFixed(3)})`;
        sp.style.color = Math.abs(w) > 0.55 ? "#fff" : "";
        sp.classList.toggle("on", s.role === "query" ? t === cur.query : t === cur.key);
      });
    }
  }

  update(d) {
    const sig = signature(d);
    if (sig !== this.sig) {
      this.sig = sig;
      this.last = {query: d.query, key: d.key, head: d.head};
      this.build(d);
      return;
    }
    // same maps: follow the server's query, key and head when they moved (a number box, a link)
    const l = this.last;
    this.last = {query: d.query, key: d.key, head: d.head};
    if (l.head !== d.head) { this.head = d.head; this.draw(); }
    if (l.query !== d.query || l.key !== d.key) { this.pin = {query: d.query, key: d.key}; this.render(); }
  }
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}

export default function (component) {
  const {data, parentElement, setStateValue} = component;
  let view = parentElement.__xvizLinked;
  if (!view) {
    view = new LinkedView(parentElement);
    parentElement.__xvizLinked = view;
  }
  view.send = setStateValue;
  if (data && data.maps) view.update(data);
}
