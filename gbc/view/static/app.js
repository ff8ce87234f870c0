// gbc view: the page. Every piece of data is put in the page as text (textContent, text nodes,
// attribute values), never parsed as HTML: captions, keys and model answers are untrusted.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const state = { info: null, list: null, graph: null, selected: null, hover: null, listCursor: 0 };

// ------------------------------------------------------------------ small helpers
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.setAttribute("class", value);
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
}

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") query.set(k, v);
  }
  const response = await fetch(path + (query.toString() ? "?" + query : ""), { headers: { accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function graphHref(key, vertex) {
  let href = "#/graph/" + encodeURIComponent(key);
  if (vertex !== undefined && vertex !== null) href += "?v=" + encodeURIComponent(vertex);
  return href;
}

function imageUrl(key, thumb) {
  const q = new URLSearchParams({ key });
  if (thumb) q.set("thumb", "1");
  return "/api/image?" + q;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(digits)) : String(value);
}

function main() { return document.getElementById("main"); }

function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes.filter((node) => node !== null && node !== undefined));
  window.scrollTo(0, 0);
}

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const q = hash.indexOf("?");
  const path = q >= 0 ? hash.slice(0, q) : hash;
  const params = new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
  return { path, params };
}

// ------------------------------------------------------------------ index state
async function refreshInfo() {
  try {
    state.info = await api("/api/info");
  } catch (err) {
    return;
  }
  document.getElementById("source-name").textContent = state.info.source;
  document.title = "gbc view: " + state.info.source;
  const idx = state.info.index || {};
  const box = document.getElementById("index-state");
  if (idx.state === "building" && idx.progress) {
    const total = idx.progress.total ? " / " + idx.progress.total : "";
    box.textContent = "indexing " + (idx.progress.indexed || 0) + total;
  } else if (idx.state === "refreshing") {
    box.textContent = "index refreshing";
  } else if (idx.state === "failed") {
    box.textContent = idx.error || "index failed";
  } else {
    box.textContent = "";
  }
  box.dataset.state = idx.state || "";
  if (idx.state === "building" || idx.state === "refreshing" || idx.state === "missing") {
    setTimeout(refreshInfo, 2000);
  }
}

// ------------------------------------------------------------------ list rows
function rowNode(item, index) {
  const thumb = el("img", { class: "thumb", alt: "", loading: "lazy", src: item.status === "done" ? imageUrl(item.key, true) : null });
  thumb.addEventListener("error", () => thumb.classList.add("missing"));
  if (item.status !== "done") thumb.classList.add("missing");
  const counts = item.n_vertices !== undefined && item.n_vertices !== null
    ? item.n_vertices + " vertices · " + item.n_captions + " captions" : "";
  const reason = item.status === "failed"
    ? el("span", { class: "reason" }, (item.error_type ? item.error_type + ": " : "") + (item.reason || "no reason recorded"))
    : null;
  let snippet = null;
  if (item.snippet) {
    snippet = el("span", { class: "snippet" }, el("span", { class: "muted" }, item.snippet.label + ": "),
      item.snippet.cut_start ? "…" : null,
      ...item.snippet.segments.map((seg) => (seg.hit ? el("mark", {}, seg.text) : seg.text)),
      item.snippet.cut_end ? "…" : null);
  }
  return el("li", { class: "row", "data-index": index, "data-key": item.key },
    el("a", { href: graphHref(item.key, item.snippet ? item.snippet.vertex : undefined), class: "row-link" },
      thumb,
      el("span", { class: "row-text" },
        el("span", { class: "key" }, item.key),
        el("span", { class: "status " + item.status }, item.status),
        el("span", { class: "counts" }, counts),
        reason, snippet)));
}

function selectRow(index) {
  const rows = main().querySelectorAll("li.row");
  if (!rows.length) return;
  state.listCursor = Math.max(0, Math.min(rows.length - 1, index));
  rows.forEach((r, i) => r.classList.toggle("cursor", i === state.listCursor));
  rows[state.listCursor].scrollIntoView({ block: "nearest" });
}

function pager(prevHref, nextHref) {
  return el("div", { class: "pager" },
    prevHref ? el("a", { href: prevHref, id: "page-prev" }, "← previous") : el("span", { class: "muted" }, "← previous"),
    nextHref ? el("a", { href: nextHref, id: "page-next" }, "next →") : el("span", { class: "muted" }, "next →"));
}

// ------------------------------------------------------------------ browse
async function showList(params) {
  const after = params.get("after"), before = params.get("before");
  const data = await api("/api/list", { after, before });
  state.list = data.items;
  const first = data.items.length ? data.items[0].key : null;
  const last = data.items.length ? data.items[data.items.length - 1].key : null;
  const prevHref = data.has_previous && first !== null ? "#/list?before=" + encodeURIComponent(first) : null;
  const nextHref = data.has_next && last !== null ? "#/list?after=" + encodeURIComponent(last) : null;
  const total = state.info && state.info.graphs !== null && state.info.graphs !== undefined ? state.info.graphs + " graphs" : "";
  const list = el("ol", { class: "rows", id: "rows" }, ...data.items.map(rowNode));
  show(el("h1", {}, "Browse ", el("small", { class: "muted" }, total)),
    el("p", { class: "hint" }, "j / k or ↓ / ↑ move, Enter opens, ← / → turn pages"),
    data.items.length ? list : el("p", { class: "muted" }, "No graphs here (yet)."),
    pager(prevHref, nextHref));
  state.pageLinks = { prev: prevHref, next: nextHref };
  selectRow(before ? data.items.length - 1 : 0);
  if (!data.items.length && data.indexing) {
    // a graph file is listed from its index: look again while the index is being built
    const hash = location.hash;
    setTimeout(() => { if (location.hash === hash) route(); }, 1000);
  }
}

// ------------------------------------------------------------------ find
function findForm(params) {
  const labels = state.info ? state.info : { vertex_labels: [], caption_labels: [] };
  const select = (name, values, title) => el("label", {}, title + " ",
    el("select", { name, id: "f-" + name },
      el("option", { value: "" }, "any"),
      ...values.map((v) => el("option", { value: v, selected: params.get(name) === v ? "selected" : null }, v))));
  const num = (name, title) => el("label", {}, title + " ",
    el("input", { name, id: "f-" + name, type: "number", step: "any", size: 6, value: params.get(name) || "" }));
  const form = el("form", { id: "find-form", class: "find" },
    el("input", { name: "q", id: "f-q", type: "search", value: params.get("q") || "", placeholder: "words, \"a phrase\", or a key", size: 40 }),
    select("status", ["done", "failed"], "status"),
    select("vertex_label", labels.vertex_labels, "vertex label"),
    select("caption_label", labels.caption_labels, "caption label"),
    el("span", { class: "range" }, num("clip_min", "lowest CLIP ≥"), num("clip_max", "≤")),
    el("span", { class: "range" }, num("tox_min", "highest toxicity ≥"), num("tox_max", "≤")),
    el("button", { type: "submit" }, "Find"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, v);
    location.hash = "#/find?" + q;
  });
  return form;
}

async function showFind(params) {
  const form = findForm(params);
  const asked = ["q", "status", "vertex_label", "caption_label", "clip_min", "clip_max", "tox_min", "tox_max"]
    .some((k) => params.get(k));
  if (!asked) {
    show(el("h1", {}, "Find"), form, el("p", { class: "hint" },
      "Searches keys and caption text of the whole source (all words must occur; quote a phrase; word* for a prefix)."));
    return;
  }
  const query = Object.fromEntries(params.entries());
  const data = await api("/api/search", query);
  if (data.exact && params.get("go") === "1") {
    location.replace(graphHref(data.exact));
    return;
  }
  const items = data.items || [];
  const base = new URLSearchParams(params);
  base.delete("after"); base.delete("before"); base.delete("go");
  const prevHref = data.has_previous && items.length ? "#/find?" + base + "&before=" + items[0].id : null;
  const nextHref = data.has_next && items.length ? "#/find?" + base + "&after=" + items[items.length - 1].id : null;
  const idx = data.index || {};
  const partial = idx.state === "building" ? el("p", { class: "warn" }, "The index is still being built: results so far.") : null;
  const exact = data.exact ? el("p", {}, "Key ", el("a", { href: graphHref(data.exact), id: "exact-key" }, data.exact), " exists.") : null;
  const count = el("p", { class: "muted", id: "result-count" },
    (data.count_capped ? "more than " : "") + data.count + " graph" + (data.count === 1 ? "" : "s") + " match");
  state.list = items;
  show(el("h1", {}, "Find"), form, partial, exact, count,
    el("ol", { class: "rows", id: "rows" }, ...items.map(rowNode)), pager(prevHref, nextHref));
  state.pageLinks = { prev: prevHref, next: nextHref };
  selectRow(0);
}

// ------------------------------------------------------------------ stats
async function showStats() {
  const data = await api("/api/stats");
  const s = data.stats;
  if (!s) {
    show(el("h1", {}, "Stats"), el("p", { class: "muted" }, "The figures appear when the index is built (" + ((data.index || {}).state || "missing") + ")."));
    setTimeout(() => { if (parseHash().path === "/stats") route(); }, 2000);
    return;
  }
  const table = (title, rows) => el("section", {}, el("h2", {}, title),
    el("table", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "mean"), el("th", {}, "min"), el("th", {}, "max")),
      ...rows.map(([name, v]) => el("tr", {}, el("td", {}, name), el("td", {}, fmt(v.mean, 2)), el("td", {}, fmt(v.min, 2)), el("td", {}, fmt(v.max, 2))))));
  show(el("h1", {}, "Stats"),
    el("p", {}, s.graphs + " graphs" + (s.failed !== null && s.failed !== undefined ? ", " + s.failed + " failed images" : "")),
    el("div", { class: "stats-grid" },
      table("Per graph", Object.entries(s.per_graph || {})),
      table("Vertices by label", Object.entries(s.vertices_by_label || {})),
      table("Captions by label", Object.entries(s.descs_by_label || {})),
      table("Words per caption", Object.entries(s.caption_words || {}))),
    data.plot ? el("img", { class: "stats-plot", src: "/api/stats.png", alt: "statistics plot" }) : null);
}

// ------------------------------------------------------------------ one graph
function vertexById(id) {
  return state.graph ? state.graph.graph.vertices.find((v) => v.id === id) : null;
}

function neighbours(id) {
  const v = vertexById(id);
  if (!v) return new Set();
  return new Set([...v.parents.map((e) => e.source), ...v.children.map((e) => e.target)]);
}

function highlight(id, cls) {
  // as in `gbc render --vertex`: the selected vertex, its parents and children stand out
  const near = cls === "selected" ? neighbours(id) : new Set();
  for (const node of document.querySelectorAll("[data-vid]")) {
    node.classList.toggle(cls, id !== null && node.dataset.vid === id);
    if (cls === "selected") node.classList.toggle("near", id !== null && node.dataset.vid !== id && near.has(node.dataset.vid));
  }
  const view = document.getElementById("graph-view");
  if (view) view.classList.toggle("has-" + cls, id !== null);
}

function selectVertex(id, pin = true) {
  if (!vertexById(id)) return;
  if (pin) {
    state.selected = id;
    highlight(id, "selected");
    history.replaceState(null, "", graphHref(state.graph.entry.key, id));
  }
  renderDetails(id);
}

function hoverVertex(id) {
  state.hover = id;
  highlight(id, "hover");
  renderDetails(id !== null ? id : state.selected);
}

function vertexHandlers(id) {
  return {
    onmouseenter: () => hoverVertex(id),
    onmouseleave: () => hoverVertex(null),
    onclick: (event) => { event.preventDefault(); event.stopPropagation(); selectVertex(id); },
  };
}

function imagePanel(data) {
  const g = data.graph;
  const wrap = el("div", { class: "image-wrap" });
  const overlay = svgEl("svg", { class: "boxes", preserveAspectRatio: "none" });
  const draw = (w, h) => {
    overlay.setAttribute("viewBox", "0 0 " + w + " " + h);
    overlay.replaceChildren();
    const boxes = g.vertices.filter((v) => v.label !== "image")
      .map((v) => ({ v, area: (v.box.right - v.box.left) * (v.box.bottom - v.box.top) }))
      .sort((a, b) => b.area - a.area);
    for (const { v } of boxes) {
      const rect = svgEl("rect", {
        x: v.box.left * w, y: v.box.top * h, width: (v.box.right - v.box.left) * w, height: (v.box.bottom - v.box.top) * h,
        stroke: v.colour, class: "box box-" + v.label, "data-vid": v.id,
      });
      const title = svgEl("title", {});
      title.textContent = v.name + " (" + v.label + ")";
      rect.append(title);
      setAttrs(rect, vertexHandlers(v.id));
      overlay.append(rect);
    }
    if (state.selected !== null) highlight(state.selected, "selected");
  };
  if (data.image) {
    const img = el("img", { class: "photo", alt: "image of " + data.entry.key, src: imageUrl(data.entry.key, false) });
    img.addEventListener("load", () => draw(img.naturalWidth, img.naturalHeight));
    img.addEventListener("error", () => { img.remove(); wrap.classList.add("blank"); draw(...canvasSize(g)); });
    wrap.append(img, overlay);
  } else {
    wrap.classList.add("blank");
    const [w, h] = canvasSize(g);
    wrap.style.aspectRatio = w + " / " + h;
    wrap.append(el("span", { class: "no-image" }, "image not found"), overlay);
    draw(w, h);
  }
  return wrap;
}

function canvasSize(g) {
  return g.img_size ? g.img_size : [800, 600];
}

function graphPanel(g) {
  const perLayer = {};
  for (const v of g.vertices) perLayer[v.layer] = (perLayer[v.layer] || 0) + 1;
  const widest = Math.max(1, ...Object.values(perLayer));
  const width = Math.max(420, widest * 125), rowH = 80, top = 30;
  const height = top * 2 + (g.layers - 1) * rowH;
  const svg = svgEl("svg", { class: "graph", viewBox: "0 0 " + width + " " + height, id: "graph-drawing" });
  const defs = svgEl("defs", {});
  const marker = svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svgEl("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);
  const pos = {};
  for (const v of g.vertices) pos[v.id] = [v.x * width, top + v.layer * rowH];
  const byId = Object.fromEntries(g.vertices.map((v) => [v.id, v]));
  const seen = new Set();
  for (const v of g.vertices) {
    for (const e of v.children) {
      const pair = v.id + "\u0000" + e.target;
      if (seen.has(pair) || !pos[e.target]) continue;
      seen.add(pair);
      const [x1, y1] = pos[v.id], [x2, y2] = pos[e.target];
      const child = byId[e.target];
      const kind = v.label === "relation" ? "member" : child.label === "relation" ? "asks" : "edge";
      const dy = y2 - y1, dx = x2 - x1, len = Math.hypot(dx, dy) || 1;
      const line = svgEl("line", {
        x1: x1 + dx / len * 18, y1: y1 + dy / len * 18, x2: x2 - dx / len * 18, y2: y2 - dy / len * 18,
        class: "link link-" + kind, "marker-end": "url(#arrow)", "data-from": v.id, "data-to": e.target,
      });
      const title = svgEl("title", {});
      title.textContent = e.text;
      line.append(title);
      svg.append(line);
    }
  }
  for (const v of g.vertices) {
    const [x, y] = pos[v.id];
    const label = v.name.length > 15 ? v.name.slice(0, 14) + "…" : v.name;
    const w = Math.max(40, label.length * 7.2 + 14);
    const node = svgEl("g", { class: "node node-" + v.label, "data-vid": v.id, transform: "translate(" + x + "," + y + ")" });
    node.append(svgEl("rect", { x: -w / 2, y: -14, width: w, height: 28, rx: 8, fill: v.colour }));
    const text = svgEl("text", { "text-anchor": "middle", y: 5 });
    text.textContent = label;
    const title = svgEl("title", {});
    title.textContent = v.name + " (" + v.label + ")";
    node.append(text, title);
    setAttrs(node, vertexHandlers(v.id));
    svg.append(node);
  }
  const legend = el("div", { class: "legend" }, ...Object.entries(g.colours).map(([label, colour]) => {
    const chip = el("span", { class: "chip" });
    chip.style.background = colour;
    return el("span", {}, chip, label);
  }));
  return el("div", { class: "graph-wrap" }, legend, svg);
}

function vertexLink(id, text) {
  const v = vertexById(id);
  const a = el("a", { href: graphHref(state.graph.entry.key, id), class: "vlink", "data-target": id }, text !== undefined ? text : (v ? v.name : id));
  a.addEventListener("click", (event) => { event.preventDefault(); selectVertex(id); });
  return a;
}

function scoreTable(title, scores) {
  if (!scores) return null;
  return el("div", { class: "scores" }, el("span", { class: "muted" }, title + ": "),
    ...Object.entries(scores).map(([name, value]) => el("span", { class: "score" }, name + " " + fmt(value))));
}

function renderDetails(id) {
  const panel = document.getElementById("details");
  if (!panel) return;
  const v = vertexById(id);
  if (!v) {
    panel.replaceChildren(el("p", { class: "muted" }, "Hover or click a box or a vertex."));
    return;
  }
  const chip = el("span", { class: "chip" });
  chip.style.background = v.colour;
  const byLabel = new Map();
  for (const d of v.descs) {
    if (!byLabel.has(d.label)) byLabel.set(d.label, []);
    byLabel.get(d.label).push(d);
  }
  const captions = [];
  for (const [label, descs] of byLabel) {
    captions.push(el("h3", {}, label));
    for (const d of descs) {
      const p = el("p", { class: "caption", "data-label": label });
      for (const seg of d.segments) {
        if (seg.target !== undefined) {
          const a = vertexLink(seg.target, seg.text);
          a.classList.add("phrase");
          p.append(a);
        } else {
          p.append(document.createTextNode(seg.text));
        }
      }
      captions.push(p, scoreTable("CLIP", d.clip), scoreTable("toxicity", d.toxicity));
    }
  }
  const list = (title, items) => items.length ? el("div", { class: "links" }, el("span", { class: "muted" }, title + ": "),
    ...items.flatMap((item, i) => (i ? [", ", item] : [item]))) : null;
  const b = v.box;
  panel.replaceChildren(...[
    el("h2", {}, chip, v.name, " ", el("small", { class: "muted" }, v.label)),
    el("p", { class: "facts" },
      "id ", el("code", {}, JSON.stringify(v.id)),
      " · box [" + [b.left, b.top, b.right, b.bottom].map((x) => x.toFixed(3)).join(", ") + "]",
      " · confidence " + fmt(v.confidence, 2), " · depth " + fmt(v.depth)),
    list(v.label === "relation" ? "relation members" : "composition members", v.members.map((m) => vertexLink(m))),
    list("parents", uniqueBy(v.parents, "source").map((e) => vertexLink(e.source))),
    list("children", uniqueBy(v.children, "target").filter((e) => !v.members.includes(e.target)).map((e) => vertexLink(e.target))),
    ...captions].filter((node) => node !== null && node !== undefined));
}

function uniqueBy(items, field) {
  const seen = new Set();
  return items.filter((item) => (seen.has(item[field]) ? false : (seen.add(item[field]), true)));
}

function extraPanel(kind, key) {
  const pre = el("pre", { class: "json", id: kind + "-json" });
  const box = el("details", { class: "extra", id: kind + "-panel" }, el("summary", {}, kind === "raw" ? "Raw graph JSON" : "Provenance (raw model answers)"), pre);
  box.addEventListener("toggle", async () => {
    if (!box.open || pre.dataset.loaded) return;
    try {
      const body = await api(kind === "raw" ? "/api/raw" : "/api/provenance", { key });
      pre.textContent = JSON.stringify(kind === "raw" ? body : body.provenance, null, 2);
    } catch (err) {
      pre.textContent = String(err.message || err);
    }
    pre.dataset.loaded = "1";
  });
  return box;
}

async function showGraph(key, params) {
  const data = await api("/api/graph", { key });
  state.graph = data;
  state.selected = null;
  const nav = el("div", { class: "graph-nav" },
    data.prev !== null ? el("a", { href: graphHref(data.prev), id: "graph-prev", title: "previous (←)" }, "←") : el("span", { class: "muted" }, "←"),
    el("h1", { class: "key", id: "graph-key" }, data.entry.key),
    el("span", { class: "status " + data.entry.status }, data.entry.status),
    data.next !== null ? el("a", { href: graphHref(data.next), id: "graph-next", title: "next (→)" }, "→") : el("span", { class: "muted" }, "→"));
  if (!data.graph) {
    const why = data.entry.status === "failed"
      ? (data.entry.error_type ? data.entry.error_type + ": " : "") + (data.entry.reason || "no reason recorded")
      : "This graph cannot be shown.";
    show(nav, el("p", { class: "reason big" }, why), extraPanel("provenance", key));
    return;
  }
  const g = data.graph;
  const details = el("aside", { id: "details", class: "details" });
  const view = el("div", { id: "graph-view", class: "graph-view" }, imagePanel(data), graphPanel(g), details);
  view.addEventListener("click", (event) => {
    if (event.target === view) { state.selected = null; highlight(null, "selected"); renderDetails(null); }
  });
  const source = g.img_path || g.img_url;
  show(nav, source ? el("p", { class: "muted small" }, source) : null, view,
    el("div", { class: "extras" }, extraPanel("raw", key), extraPanel("provenance", key)));
  const wanted = params.get("v");
  const root = g.vertices.find((v) => v.label === "image");
  if (wanted !== null && vertexById(wanted)) selectVertex(wanted);
  else renderDetails(root ? root.id : null);
}

// ------------------------------------------------------------------ routing and keys
async function route() {
  const { path, params } = parseHash();
  for (const id of ["nav-browse", "nav-find", "nav-stats"]) document.getElementById(id).classList.remove("active");
  try {
    if (path.startsWith("/graph/")) {
      await showGraph(decodeURIComponent(path.slice("/graph/".length)), params);
    } else if (path === "/find") {
      document.getElementById("nav-find").classList.add("active");
      await showFind(params);
    } else if (path === "/stats") {
      document.getElementById("nav-stats").classList.add("active");
      await showStats();
    } else {
      document.getElementById("nav-browse").classList.add("active");
      state.graph = null;
      await showList(params);
    }
  } catch (err) {
    show(el("p", { class: "reason big" }, "Error: " + (err.message || err)), el("p", {}, el("a", { href: "#/" }, "back to the list")));
  }
}

function onKey(event) {
  const tag = (event.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "select" || tag === "textarea" || event.altKey || event.ctrlKey || event.metaKey) return;
  const { path } = parseHash();
  const click = (id) => { const a = document.getElementById(id); if (a) { a.click(); return true; } return false; };
  if (path.startsWith("/graph/")) {
    if (event.key === "ArrowRight" || event.key === "n") click("graph-next");
    else if (event.key === "ArrowLeft" || event.key === "p") click("graph-prev");
    else if (event.key === "Escape") { state.selected = null; highlight(null, "selected"); renderDetails(null); }
    else if (event.key === "b" || event.key === "u") history.back();
    else return;
  } else if (document.getElementById("rows")) {
    if (event.key === "j" || event.key === "ArrowDown") selectRow(state.listCursor + 1);
    else if (event.key === "k" || event.key === "ArrowUp") selectRow(state.listCursor - 1);
    else if (event.key === "Enter") {
      const row = main().querySelectorAll("li.row a.row-link")[state.listCursor];
      if (row) row.click();
    } else if (event.key === "ArrowRight" || event.key === "n") click("page-next");
    else if (event.key === "ArrowLeft" || event.key === "p") click("page-prev");
    else return;
  } else return;
  event.preventDefault();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("quick-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = document.getElementById("quick-q").value.trim();
    if (q) location.hash = "#/find?" + new URLSearchParams({ q, go: "1" });
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", route);
  refreshInfo().then(route);
});
