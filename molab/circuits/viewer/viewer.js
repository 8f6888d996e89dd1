// molab's offline attribution-graph viewer: the graph JSON (circuit-tracer's frontend schema)
// and its feature records are embedded in the page; nothing is fetched except, when served by
// `molab circuits view --serve`, the POST that saves the viewer state into the graph file.
// A large graph's page carries only its strongest links (molab/circuits/viewer.py, page_links),
// and tens of thousands of links are still drawn: they lie in their own layer (svg#graph-links,
// faded as a whole), and a render touches only what changed (the links of nodes the slider
// showed or hid; the hovered or clicked node's links, drawn again on top of the nodes' layer).
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const parse = (id) => JSON.parse(document.getElementById(id).textContent);
  const graph = parse("graph-data");
  const features = parse("feature-data");
  const config = parse("viewer-config");
  const meta = graph.metadata;
  const q = graph.qParams;

  const state = {
    pinned: new Set(q.pinnedIds),
    supernodes: q.supernodes.map((s) => s.slice()),
    clickedId: q.clickedId || "",
    selected: new Set(),
    hovered: null,
    limit: 1,
  };

  // --- nodes, links, layout -------------------------------------------------------------------
  const nodes = graph.nodes.map((n) => Object.assign({}, n));
  const byId = new Map(nodes.map((n) => [n.node_id, n]));
  const links = graph.links
    .filter((l) => byId.has(l.source) && byId.has(l.target))
    .map((l) => ({ source: byId.get(l.source), target: byId.get(l.target), weight: l.weight }));
  nodes.forEach((n) => { n.inputs = []; n.outputs = []; });
  links.forEach((l) => { l.source.outputs.push(l); l.target.inputs.push(l); });

  const kind = (n) => ({ "mlp reconstruction error": "error", embedding: "embedding", logit: "logit" })[n.feature_type] || "feature";
  const rowKey = (n) => (n.layer === "E" ? -1 : Number(n.layer));
  const featureIndex = (n) => Number(n.node_id.split("_")[1]);
  const alwaysShown = (n) => kind(n) === "embedding" || kind(n) === "logit";

  const rows = Array.from(new Set(nodes.map(rowKey))).sort((a, b) => b - a);
  const nPos = Math.max(meta.prompt_tokens.length, ...nodes.map((n) => n.ctx_idx + 1));
  const cells = new Map();
  nodes.forEach((n) => {
    const key = rowKey(n) + ":" + n.ctx_idx;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(n);
  });
  const order = { feature: 0, error: 1, embedding: 2, logit: 3 };
  cells.forEach((list) => list.sort((a, b) => order[kind(a)] - order[kind(b)] || (a.influence ?? 1) - (b.influence ?? 1)));

  // columns and rows stretch to fill the graph's pane; a large graph scrolls instead
  const wrap = document.getElementById("graph-wrap");
  const STEP = 14, LEFT = 64, TOP = 18, BOTTOM = 44;
  const ROW_H = Math.min(110, Math.max(56, Math.floor(((wrap.clientHeight || 600) - TOP - BOTTOM) / rows.length)));
  const colWidth = [];
  for (let p = 0; p < nPos; p++) {
    let most = 0;
    rows.forEach((r) => { most = Math.max(most, (cells.get(r + ":" + p) || []).length); });
    colWidth.push(Math.max(54, most * STEP + 12));
  }
  const spare = (wrap.clientWidth || 900) - LEFT - 20 - colWidth.reduce((a, b) => a + b, 0);
  if (spare > 0) colWidth.forEach((w, p) => { colWidth[p] = w + spare / nPos; });
  const colX = [];
  colWidth.reduce((x, w, i) => { colX[i] = x; return x + w; }, LEFT);
  const width = colX.length ? colX[nPos - 1] + colWidth[nPos - 1] + 10 : LEFT + 100;
  const height = TOP + rows.length * ROW_H + BOTTOM;
  const rowY = new Map(rows.map((r, i) => [r, TOP + i * ROW_H + ROW_H / 2]));
  cells.forEach((list, key) => {
    const [r, p] = key.split(":").map(Number);
    const span = (list.length - 1) * STEP;
    list.forEach((n, i) => {
      n.x = colX[p] + colWidth[p] / 2 - span / 2 + i * STEP;
      n.y = rowY.get(r);
    });
  });

  // --- drawing --------------------------------------------------------------------------------
  const svg = document.getElementById("graph");
  const linkSvg = document.getElementById("graph-links");
  [svg, linkSvg].forEach((s) => {
    s.setAttribute("width", width);
    s.setAttribute("height", height);
    s.setAttribute("viewBox", `0 0 ${width} ${height}`);
  });
  const el = (tag, attrs, parent) => {
    const e = document.createElementNS(SVG, tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    (parent || svg).appendChild(e);
    return e;
  };
  const gridLayer = el("g", {});
  const linkLayer = el("g", {}, linkSvg);
  const focusLayer = el("g", {});
  const ringLayer = el("g", {});
  const nodeLayer = el("g", {});

  const logitRow = (r) => nodes.some((n) => rowKey(n) === r && kind(n) === "logit");
  rows.forEach((r) => {
    const y = rowY.get(r);
    el("line", { class: "grid", x1: LEFT - 6, x2: width, y1: y, y2: y }, gridLayer);
    const label = r === -1 ? "Emb" : logitRow(r) ? "Logits" : "L" + r;
    el("text", { class: "row-label", x: 6, y: y + 3 }, gridLayer).textContent = label;
  });
  for (let p = 0; p < nPos; p++) {
    const t = el("text", { class: "token-label", x: colX[p] + colWidth[p] / 2, y: height - BOTTOM + 18, "text-anchor": "middle" }, gridLayer);
    t.textContent = shortToken(meta.prompt_tokens[p] ?? "");
  }

  const maxWeight = links.reduce((most, l) => Math.max(most, Math.abs(l.weight)), 1e-12);
  const drawLink = (l, parent) => {
    const s = Math.abs(l.weight) / maxWeight;
    const mid = (l.source.y + l.target.y) / 2;
    return el("path", {
      class: "link",
      d: `M${l.source.x},${l.source.y} C${l.source.x},${mid} ${l.target.x},${mid} ${l.target.x},${l.target.y}`,
      stroke: l.weight >= 0 ? "#2b6cb0" : "#c0392b",
      "stroke-width": (0.4 + 3.2 * s).toFixed(2),
      "stroke-opacity": (0.15 + 0.7 * s).toFixed(2),
    }, parent);
  };
  links.forEach((l) => { l.el = drawLink(l, linkLayer); l.shown = true; });
  let linksShown = links.length;

  nodes.forEach((n) => {
    const k = kind(n);
    const attrs = { class: "node " + k, "data-id": n.node_id };
    if (k === "feature") n.el = el("circle", Object.assign(attrs, { cx: n.x, cy: n.y, r: 5 }), nodeLayer);
    else n.el = el("rect", Object.assign(attrs, { x: n.x - 5, y: n.y - 5, width: 10, height: 10, rx: k === "error" ? 0 : 2 }), nodeLayer);
    n.el.addEventListener("mouseenter", () => { state.hovered = n; render(); });
    n.el.addEventListener("mouseleave", () => { state.hovered = null; render(); });
    n.el.addEventListener("click", (event) => {
      if (event.shiftKey) toggle(state.selected, n.node_id);
      else { toggle(state.pinned, n.node_id); state.clickedId = n.node_id; }
      render();
    });
  });

  // --- controls -------------------------------------------------------------------------------
  document.getElementById("title").textContent = `${meta.slug} · ${meta.molab ? meta.molab.model_name : meta.scan}`;
  document.getElementById("prompt").textContent = meta.prompt;
  document.title = `${meta.slug}: attribution graph`;
  const slider = document.getElementById("influence");
  slider.value = "1";
  slider.addEventListener("input", () => { state.limit = Number(slider.value); render(); });
  document.getElementById("group").addEventListener("click", () => {
    if (!state.selected.size) return setStatus("select nodes first (shift+click)", true);
    const input = document.getElementById("supernode-label");
    const label = input.value.trim() || "supernode " + (state.supernodes.length + 1);
    const members = Array.from(state.selected);
    state.supernodes = state.supernodes
      .map(([l, ...ids]) => [l, ...ids.filter((id) => !state.selected.has(id))])
      .filter((s) => s.length > 1);
    state.supernodes.push([label, ...members]);
    state.selected.clear();
    input.value = "";
    setStatus(`grouped ${members.length} nodes as "${label}"`);
    render();
  });
  const saveButton = document.getElementById("save");
  if (config.saveUrl) {
    saveButton.hidden = false;
    saveButton.addEventListener("click", save);
  }
  document.getElementById("download").addEventListener("click", download);

  function qParams() {
    return Object.assign({}, q, {
      pinnedIds: Array.from(state.pinned),
      supernodes: state.supernodes,
      clickedId: state.clickedId,
    });
  }

  async function save() {
    try {
      const response = await fetch(config.saveUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ qParams: qParams() }),
      });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error || response.statusText);
      setStatus("saved to " + config.fileName);
    } catch (e) {
      setStatus("not saved: " + e.message, true);
    }
  }

  // a page that carries only some of the file's links offers them under another name, so the
  // download never replaces the full graph file by mistake
  function download() {
    const partial = graph.links.length < config.fileLinks;
    const name = partial ? config.fileName.replace(/(\.json)?$/, ".page.json") : config.fileName;
    const blob = new Blob([JSON.stringify(Object.assign({}, graph, { qParams: qParams() }), null, 2)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    if (partial) setStatus(`downloaded ${name}: the page's ${count(graph.links.length)} of ${count(config.fileLinks)} links, with the viewer state`);
  }

  function setStatus(text, error) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.classList.toggle("error", !!error);
  }

  function toggle(set, id) {
    if (set.has(id)) set.delete(id);
    else set.add(id);
  }

  function shortToken(t) {
    const s = t.replace(/\n/g, "⏎").replace(/\t/g, "→");
    return s.length > 10 ? s.slice(0, 9) + "…" : s;
  }

  const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

  // --- rendering ------------------------------------------------------------------------------
  function visible(n) {
    return alwaysShown(n) || n.influence === null || n.influence === undefined || n.influence <= state.limit + 1e-9;
  }

  // the links of nodes whose visibility changed; every link on the first render
  function updateLinks(changed) {
    const seen = new Set();
    changed.forEach((n) => [n.inputs, n.outputs].forEach((list) => list.forEach((l) => {
      if (seen.has(l)) return;
      seen.add(l);
      const v = l.source.shown && l.target.shown;
      if (v === l.shown) return;
      l.shown = v;
      linksShown += v ? 1 : -1;
      l.el.classList.toggle("hidden", !v);
    })));
  }

  // the focused node's shown links, drawn again on top while the others fade
  function renderFocus(focus) {
    focusLayer.textContent = "";
    linkSvg.classList.toggle("faded", !!focus);
    if (!focus) return;
    focus.inputs.concat(focus.outputs).forEach((l) => { if (l.shown) drawLink(l, focusLayer); });
  }

  const count = (x) => x.toLocaleString("en-US");
  const countsLine = document.getElementById("counts");
  if (links.length < config.fileLinks) {
    countsLine.title = `This page carries ${count(links.length)} of the graph file's ${count(config.fileLinks)} links: ` +
      "the strongest overall and each node's strongest incoming and outgoing links.";
  }

  function render() {
    document.getElementById("influence-value").textContent = state.limit.toFixed(2);
    const focus = state.hovered || byId.get(state.clickedId) || null;
    let shown = 0;
    const changed = [];
    nodes.forEach((n) => {
      const v = visible(n);
      shown += v;
      if (v !== n.shown) { n.shown = v; changed.push(n); }
      n.el.classList.toggle("hidden", !v);
      n.el.classList.toggle("pinned", state.pinned.has(n.node_id));
      n.el.classList.toggle("selected", state.selected.has(n.node_id));
      n.el.classList.toggle("hovered", n === state.hovered);
    });
    updateLinks(changed);
    renderFocus(focus);
    countsLine.textContent = `${count(shown)} of ${count(nodes.length)} nodes, ${count(linksShown)} of ${count(config.fileLinks)} links drawn`;
    document.getElementById("selection").textContent = state.selected.size
      ? `${state.selected.size} selected`
      : "Shift+click nodes to select them";
    renderRings();
    renderDetails(focus);
    renderLists();
  }

  const PALETTE = ["#8e44ad", "#16a085", "#d35400", "#2c3e50", "#c0392b", "#27ae60", "#f39c12", "#7f8c8d"];
  function renderRings() {
    ringLayer.textContent = "";
    state.supernodes.forEach(([label, ...ids], i) => {
      const color = PALETTE[i % PALETTE.length];
      ids.forEach((id, j) => {
        const n = byId.get(id);
        if (!n) return;
        const hidden = visible(n) ? "" : " hidden";
        el("circle", { class: "supernode-ring" + hidden, cx: n.x, cy: n.y, r: 8.5, stroke: color }, ringLayer);
        if (j === 0) el("text", { class: "supernode-tag" + hidden, x: n.x + 9, y: n.y - 8, fill: color }, ringLayer).textContent = label;
      });
    });
  }

  function h(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function describe(n) {
    const k = kind(n);
    if (n.clerp) return n.clerp;
    const token = meta.prompt_tokens[n.ctx_idx] ?? "";
    if (k === "feature") return `Feature ${featureIndex(n)} of layer ${n.layer} at "${token}"`;
    if (k === "error") return `Error of layer ${n.layer} at "${token}"`;
    if (k === "embedding") return `Token "${token}" (position ${n.ctx_idx})`;
    return n.node_id;
  }

  function renderDetails(n) {
    const box = document.getElementById("details");
    box.textContent = "";
    if (!n) {
      box.appendChild(h("p", "Hover over a node for its details; click to pin it.", "hint"));
      return;
    }
    box.appendChild(h("div", describe(n), "clerp"));
    const table = h("table");
    const row = (k, v) => { const tr = h("tr"); tr.appendChild(h("td", k)); tr.appendChild(h("td", v)); table.appendChild(tr); };
    row("node", n.node_id);
    row("type", n.feature_type);
    row("layer", n.layer);
    row("position", `${n.ctx_idx} "${meta.prompt_tokens[n.ctx_idx] ?? ""}"`);
    if (n.activation !== null && n.activation !== undefined) row("activation", fmt(n.activation));
    if (n.influence !== null && n.influence !== undefined) row("influence", fmt(n.influence));
    if (kind(n) === "logit") row("probability", fmt(n.token_prob));
    box.appendChild(table);
    if (kind(n) === "feature") renderFeature(box, features[`${n.layer}_${featureIndex(n)}`], n);
    renderLinks(box, "Strongest inputs", n.inputs, (l) => l.source);
    renderLinks(box, "Strongest outputs", n.outputs, (l) => l.target);
  }

  function renderLinks(box, title, list, other) {
    if (!list.length) return;
    box.appendChild(h("h2", title));
    const table = h("table", null, "links-table");
    list.slice().sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 6).forEach((l) => {
      const tr = h("tr");
      tr.appendChild(h("td", describe(other(l))));
      tr.appendChild(h("td", fmt(l.weight)));
      table.appendChild(tr);
    });
    box.appendChild(table);
  }

  function renderFeature(box, record, n) {
    if (!record) {
      box.appendChild(h("p", "No feature file record for this feature (molab circuits features).", "hint"));
      return;
    }
    const table = h("table");
    const add = (k, v) => { const tr = h("tr"); tr.appendChild(h("td", k)); tr.appendChild(h("td", v)); table.appendChild(tr); };
    add("fires on", (100 * record.activation_frequency).toFixed(3) + "% of tokens");
    add("max activation", fmt(record.act_max));
    box.appendChild(table);
    if (record.histogram && record.histogram.length) box.appendChild(histogram(record, n.activation));
    for (const [name, list, cls] of [["Top logits", record.top_logits, "chips"], ["Bottom logits", record.bottom_logits, "chips bottom"]]) {
      if (!list || !list.length) continue;
      box.appendChild(h("h2", name));
      const chips = h("div", null, cls);
      list.forEach((t) => chips.appendChild(h("span", t)));
      box.appendChild(chips);
    }
    box.appendChild(h("h2", "Examples"));
    const top = record.act_max || 1;
    record.examples_quantiles.forEach((quantile) => {
      if (!quantile.examples.length) return;
      box.appendChild(h("div", quantile.quantile_name, "quantile"));
      quantile.examples.forEach((ex) => {
        const line = h("div", null, "example");
        ex.tokens.forEach((tok, i) => {
          const a = ex.tokens_acts_list[i] || 0;
          const span = h("span", tok, "tok" + (i === ex.train_token_ind ? " hl" : ""));
          if (a > 0) span.style.background = `rgba(230, 126, 34, ${Math.min(1, a / top).toFixed(3)})`;
          span.title = fmt(a);
          line.appendChild(span);
        });
        box.appendChild(line);
      });
    });
  }

  function histogram(record, activation) {
    const W = 340, H = 70, counts = record.histogram, most = Math.max(...counts, 1);
    const s = document.createElementNS(SVG, "svg");
    s.setAttribute("width", W);
    s.setAttribute("height", H + 14);
    const bw = W / counts.length;
    counts.forEach((c, i) => {
      const r = document.createElementNS(SVG, "rect");
      const bh = (c / most) * H;
      Object.entries({ x: i * bw, y: H - bh, width: Math.max(bw - 1, 1), height: bh, fill: "#e67e22" }).forEach(([k, v]) => r.setAttribute(k, v));
      s.appendChild(r);
    });
    if (activation !== null && activation !== undefined && record.act_max > record.act_min) {
      const x = Math.min(W, Math.max(0, ((activation - record.act_min) / (record.act_max - record.act_min)) * W));
      const line = document.createElementNS(SVG, "line");
      Object.entries({ x1: x, x2: x, y1: 0, y2: H, stroke: "#2980b9", "stroke-width": 2, "stroke-dasharray": "4 2" }).forEach(([k, v]) => line.setAttribute(k, v));
      s.appendChild(line);
    }
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", 0);
    label.setAttribute("y", H + 12);
    label.textContent = `activation histogram, 0 to ${fmt(record.act_max)}`;
    s.appendChild(label);
    return s;
  }

  function renderLists() {
    const pinned = document.getElementById("pinned");
    pinned.textContent = "";
    state.pinned.forEach((id) => {
      const n = byId.get(id);
      const li = h("li", n ? describe(n) : id);
      li.addEventListener("click", () => { state.clickedId = id; render(); });
      pinned.appendChild(li);
    });
    const list = document.getElementById("supernodes");
    list.textContent = "";
    state.supernodes.forEach(([label, ...ids], i) => {
      const li = h("li", `${label} (${ids.length} nodes)`);
      li.style.color = PALETTE[i % PALETTE.length];
      const remove = h("button", "ungroup");
      remove.type = "button";
      remove.addEventListener("click", (event) => {
        event.stopPropagation();
        state.supernodes.splice(i, 1);
        render();
      });
      li.appendChild(remove);
      li.addEventListener("click", () => { state.selected = new Set(ids); render(); });
      list.appendChild(li);
    });
  }

  render();
  document.body.dataset.ready = "1";
})();
