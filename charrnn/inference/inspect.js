// Draws what a model made of a text (charrnn inspect, charrnn neurons, and the server page's inspect view):
// each character coloured by its surprise, by a unit's value or by a head's attention, and on hover its
// probability and the characters the model found likeliest before reading it.
//
//   charrnnInspect.render(root, data)
//   data: {chars: [c, ...], logprob: [lnp or null, ...], top: [[[c, p], ...] or null, ...],
//          units: [{label, r, scale, values: [...]}, ...], show: "units" (to start with the first unit), summary,
//          attention: {layers, heads, span, row: [...], pos: [...], weights: base64 uint8 (row, layer, head, d)}}
//   every field but chars optional.
"use strict";
const charrnnInspect = (() => {
  const MAX_BITS = 8;  // surprise colours saturate here
  const heat = (t) => `hsl(${Math.round(55 - 55 * t)}, 100%, ${Math.round(96 - 46 * t)}%)`;  // pale yellow to red
  const diverging = (v) => {  // v in [-1, 1]: blue, white, red
    const t = Math.min(1, Math.abs(v));
    return `hsl(${v < 0 ? 215 : 5}, 85%, ${Math.round(97 - 45 * t)}%)`;
  };
  const STYLE = `
    .inspect-bar { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin-bottom: 10px;
                   font-size: 13px; }
    .inspect-swatch { display: inline-block; min-width: 26px; padding: 0 4px; margin-right: 2px; text-align: center;
                      color: #111; border-radius: 3px; }
    .inspect-summary { color: #6b6b70; }
    .inspect-text { white-space: pre-wrap; word-wrap: break-word; tab-size: 8; color: #111;
                    font: 13px/1.55 ui-monospace, SFMono-Regular, Menlo, monospace; }
    .inspect-text span:hover { outline: 1px solid #2f6fdf; }
    .inspect-tip { position: fixed; z-index: 10; margin: 0; padding: 6px 9px; background: #1d1d1f; color: #f0f0f0;
                   border-radius: 6px; font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
                   pointer-events: none; white-space: pre; }`;
  const shown = (c) => ({"\n": "\u23ce", "\t": "\u21e5", " ": "\u2423"}[c] || c);

  function element(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function bits(data, i) {
    const lp = data.logprob ? data.logprob[i] : null;
    return lp === null || lp === undefined ? null : -lp / Math.LN2;
  }

  function modes(data) {  // [{name, colour(i) -> css colour, legend}]
    const list = [];
    if (data.logprob) {
      list.push({name: "surprise (bits per character)", legend: "surprise", colour: (i) => {
        const b = bits(data, i);
        return b === null ? "#d0d0d0" : heat(Math.min(b, MAX_BITS) / MAX_BITS);
      }});
    }
    for (const unit of data.units || []) {
      const r = unit.r === null || unit.r === undefined ? "" : ` (r = ${unit.r.toFixed(3)})`;
      list.push({name: unit.label + r, legend: "unit", unit,
                 colour: (i) => diverging(unit.values[i] / unit.scale)});
    }
    const att = data.attention;
    if (att) {
      for (let l = 0; l < att.layers; l++) {
        for (let h = 0; h < att.heads; h++) {
          list.push({name: `attention: layer ${l + 1}, head ${h + 1}`, legend: "attention", layer: l, head: h,
                     colour: () => ""});
        }
      }
    }
    return list;
  }

  function legend(mode) {
    const box = element("div", "inspect-legend");
    const swatch = (colour, label) => {
      const s = element("span", "inspect-swatch", label);
      s.style.background = colour;
      box.append(s);
    };
    if (mode.legend === "surprise") {
      box.append("bits per character: ");
      for (let b = 0; b <= MAX_BITS; b += 2) swatch(heat(b / MAX_BITS), b === MAX_BITS ? `${b}+` : `${b}`);
      swatch("#d0d0d0", "not scored");
    } else if (mode.legend === "unit") {
      box.append(`${mode.unit.label}: `);
      for (const v of [-1, -0.5, 0, 0.5, 1]) swatch(diverging(v), (v * mode.unit.scale).toPrecision(2));
    } else {
      box.append("hover a character: the characters it attends to, darker for more weight");
    }
    return box;
  }

  function tooltipText(data, i, mode) {
    const lines = [`${JSON.stringify(data.chars[i])}  (character ${i + 1})`];
    const b = bits(data, i);
    if (data.logprob) {
      lines.push(b === null ? "not scored" : `p = ${Math.exp(data.logprob[i]).toPrecision(3)}  \u00b7  ${b.toFixed(2)} bits`);
    }
    if (mode && mode.unit) lines.push(`${mode.unit.label} = ${mode.unit.values[i].toPrecision(3)}`);
    const top = data.top ? data.top[i] : null;
    if (top) {
      lines.push("likeliest before it:");
      for (const [c, p] of top) lines.push(`  ${shown(c).padEnd(3)} ${(100 * p).toFixed(1)}%`);
    }
    return lines.join("\n");
  }

  function render(root, data) {
    if (!document.getElementById("inspect-style")) {
      const style = element("style", null, STYLE);
      style.id = "inspect-style";
      document.head.append(style);
    }
    root.textContent = "";
    const list = modes(data);
    const bar = element("div", "inspect-bar");
    const select = element("select", "inspect-mode");
    list.forEach((m, k) => select.append(new Option(m.name, String(k))));
    if (list.length > 1) bar.append(select);
    const legendSlot = element("div");
    bar.append(legendSlot);
    if (data.summary) bar.append(element("div", "inspect-summary", data.summary));
    const text = element("div", "inspect-text");
    const tip = element("pre", "inspect-tip");
    tip.hidden = true;
    const spans = [];
    const fragment = document.createDocumentFragment();
    data.chars.forEach((c, i) => {
      const s = element("span", null, c);
      s.dataset.i = i;
      spans.push(s);
      fragment.append(s);
    });
    text.append(fragment);
    root.append(bar, text, tip);
    const first = data.show === "units" ? Math.max(0, list.findIndex((m) => m.unit)) : 0;
    select.value = String(first);
    let mode = list[first] || null, weights = null, lit = [];
    if (data.attention) weights = Uint8Array.from(atob(data.attention.weights), (ch) => ch.charCodeAt(0));

    function paint() {
      lit = [];
      for (let i = 0; i < spans.length; i++) spans[i].style.background = mode ? mode.colour(i) : "";
      legendSlot.replaceChildren(mode ? legend(mode) : "");
    }
    function attend(i) {  // colour what character i attends to, in the chosen head
      for (const j of lit) spans[j].style.background = "";
      lit = [];
      const att = data.attention, row = att.row[i];
      if (row < 0) return;
      const base = ((row * att.layers + mode.layer) * att.heads + mode.head) * att.span;
      for (let d = 0; d < att.span && row - d >= 0; d++) {
        const w = weights[base + d] / 255, j = att.pos[row - d];
        if (w > 0.004) { spans[j].style.background = `rgba(47, 111, 223, ${Math.min(1, 0.08 + w)})`; lit.push(j); }
      }
    }
    select.onchange = () => { mode = list[Number(select.value)]; paint(); };
    text.addEventListener("mouseover", (e) => {
      const i = e.target.dataset ? Number(e.target.dataset.i) : NaN;
      if (Number.isNaN(i) || e.target.parentNode !== text) return;
      if (mode && mode.legend === "attention") attend(i);
      tip.textContent = tooltipText(data, i, mode);
      tip.hidden = false;
      const box = e.target.getBoundingClientRect();
      tip.style.left = `${Math.min(box.left, window.innerWidth - 260)}px`;
      tip.style.top = `${box.bottom + 6}px`;
    });
    text.addEventListener("mouseleave", () => { tip.hidden = true; });
    paint();
    return {spans, tip, select};
  }

  return {render, tooltipText};
})();
