// Hand-drawn SVG time charts (stacked bars or lines), redrawn to the width
// they are given, with a hover tooltip. Text only ever enters as text nodes.

import { el, svg, replace } from './dom.js';
import { fmtTick, fmtTime } from './format.js';

const HEIGHT = 220;
const MARGIN = { top: 14, right: 14, bottom: 28, left: 56 };

/** Round numbers for an axis from 0 to at least `max`. */
function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks.length < 2) ticks.push(step);
  return ticks;
}

/**
 * Fills gaps between `from` and `to` (ms) with empty buckets of `widthMs`,
 * aligned like the server's buckets (multiples of the width since the epoch).
 * `points`: Map of bucket start (ms) → value object.
 */
export function fillBuckets(points, from, to, widthMs, emptyValue) {
  const out = [];
  const first = Math.floor(from / widthMs) * widthMs;
  // Guard against a runaway loop on bad input.
  const max = 2000;
  for (let t = first, i = 0; t <= to && i < max; t += widthMs, i += 1) {
    out.push({ t, values: points.get(t) ?? emptyValue() });
  }
  for (const [t, values] of points) {
    if (t < first || t > to) out.push({ t, values });
  }
  out.sort((a, b) => a.t - b.t);
  return out;
}

/**
 * A time chart.
 * opts: testid, label (accessible name), kind 'bar' (stacked) | 'line',
 * series [{key, label, cls}], buckets [{t (ms), values {key: number|null}}],
 * widthMs, yFormat (n → text), yMax (fixed top, e.g. 1 for scores).
 */
export function timeChart(opts) {
  const node = svg('svg', {
    class: `chart-svg chart-${opts.kind}`, 'data-testid': opts.testid, role: 'img', 'aria-label': opts.label,
    preserveAspectRatio: 'none', height: String(HEIGHT),
  });
  const tooltip = el('div', { class: 'chart-tooltip', hidden: true, 'aria-hidden': 'true' });
  const legend = el('div', { class: 'chart-legend' }, opts.series.map((s) =>
    el('span', { class: 'legend-item' }, el('span', { class: `legend-swatch ${s.cls}` }), s.label)));
  const wrap = el('div', { class: 'chart' }, legend, el('div', { class: 'chart-area' }, node, tooltip));

  let lastWidth = 0;
  const redraw = () => {
    const width = Math.max(280, Math.floor(wrap.clientWidth || 640));
    if (width === lastWidth) return;
    lastWidth = width;
    draw(node, tooltip, width, opts);
  };
  draw(node, tooltip, 640, opts);
  if (typeof ResizeObserver === 'function') {
    let frame = 0;
    const observer = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => {
        if (!wrap.isConnected) { observer.disconnect(); return; }
        redraw();
      });
    });
    observer.observe(wrap);
  }
  return wrap;
}

function draw(node, tooltip, width, opts) {
  const { kind, series, buckets, yFormat = String, widthMs = 3_600_000 } = opts;
  replace(node, svg('title', {}, opts.label));
  node.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`);
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const n = buckets.length;

  const stackTotal = (b) => series.reduce((sum, s) => sum + (Number(b.values[s.key]) || 0), 0);
  let max = 0;
  for (const b of buckets) {
    if (kind === 'bar') max = Math.max(max, stackTotal(b));
    else for (const s of series) { const v = b.values[s.key]; if (typeof v === 'number' && v > max) max = v; }
  }
  const ticks = opts.yMax ? [0, opts.yMax * 0.25, opts.yMax * 0.5, opts.yMax * 0.75, opts.yMax] : niceTicks(max);
  const top = ticks[ticks.length - 1] || 1;
  const y = (v) => MARGIN.top + plotH - (v / top) * plotH;
  const band = n > 0 ? plotW / n : plotW;
  const xCenter = (i) => MARGIN.left + band * i + band / 2;

  const grid = svg('g', { class: 'chart-gridlines' });
  for (const t of ticks) {
    const yy = y(t);
    grid.appendChild(svg('line', { x1: MARGIN.left, x2: width - MARGIN.right, y1: yy, y2: yy }));
    grid.appendChild(svg('text', { x: MARGIN.left - 8, y: yy + 4, 'text-anchor': 'end', class: 'chart-label' }, yFormat(t)));
  }
  node.appendChild(grid);

  // X labels: at most one per ~90 px.
  const xAxis = svg('g', { class: 'chart-axis' });
  xAxis.appendChild(svg('line', { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(0), y2: y(0) }));
  if (n > 0) {
    const span = n * widthMs;
    const labels = buckets.map((b) => fmtTick(new Date(b.t), widthMs, span));
    // About 6.5 px per character at 11 px, plus a gap.
    const labelW = Math.max(...labels.map((l) => l.length)) * 6 + 18;
    const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / labelW))));
    for (let i = 0; i < n; i += every) {
      const half = (labels[i].length * 6.5) / 2;
      const x = Math.min(Math.max(xCenter(i), MARGIN.left + half - 8), width - half - 2);
      xAxis.appendChild(svg('text', { x, y: HEIGHT - 8, 'text-anchor': 'middle', class: 'chart-label' }, labels[i]));
    }
  }
  node.appendChild(xAxis);

  if (n === 0 || (max === 0 && !opts.yMax && kind === 'line')) {
    node.appendChild(svg('text', { x: MARGIN.left + plotW / 2, y: MARGIN.top + plotH / 2, 'text-anchor': 'middle', class: 'chart-nodata' }, 'No data in this range'));
  }

  if (kind === 'bar') {
    const barW = Math.max(1, Math.min(band * 0.72, 48));
    series.forEach((s) => {
      const g = svg('g', { class: `chart-series ${s.cls}` });
      buckets.forEach((b, i) => {
        const below = series.slice(0, series.indexOf(s)).reduce((sum, o) => sum + (Number(b.values[o.key]) || 0), 0);
        const v = Number(b.values[s.key]) || 0;
        if (v <= 0) return;
        const y1 = y(below + v);
        const h = Math.max(1, y(below) - y1);
        g.appendChild(svg('rect', { x: xCenter(i) - barW / 2, y: y1, width: barW, height: h, rx: Math.min(2, barW / 4) }));
      });
      node.appendChild(g);
    });
  } else {
    series.forEach((s) => {
      const g = svg('g', { class: `chart-series ${s.cls}` });
      let d = '';
      let pen = false;
      const dots = [];
      buckets.forEach((b, i) => {
        const v = b.values[s.key];
        if (typeof v !== 'number' || !Number.isFinite(v)) { pen = false; return; }
        const px = xCenter(i).toFixed(1);
        const py = y(v).toFixed(1);
        d += `${pen ? 'L' : 'M'}${px} ${py} `;
        const prev = i > 0 ? buckets[i - 1].values[s.key] : null;
        const next = i < n - 1 ? buckets[i + 1].values[s.key] : null;
        if (typeof prev !== 'number' && typeof next !== 'number') dots.push([px, py]);
        pen = true;
      });
      if (d) g.appendChild(svg('path', { d: d.trim(), class: 'chart-line' }));
      for (const [cx, cy] of dots) g.appendChild(svg('circle', { cx, cy, r: 3, class: 'chart-dot' }));
      node.appendChild(g);
    });
  }

  // Hover targets, one per bucket, with the bucket's figures in a tooltip.
  const hover = svg('g', { class: 'chart-hover' });
  const marker = svg('line', { class: 'chart-marker', x1: 0, x2: 0, y1: MARGIN.top, y2: MARGIN.top + plotH, visibility: 'hidden' });
  hover.appendChild(marker);
  buckets.forEach((b, i) => {
    const rect = svg('rect', { x: MARGIN.left + band * i, y: MARGIN.top, width: Math.max(band, 1), height: plotH, class: 'chart-hit' },
      svg('title', {}, tooltipLines(b, series, yFormat, opts).join('\n')));
    rect.addEventListener('mouseenter', () => {
      marker.setAttribute('x1', xCenter(i));
      marker.setAttribute('x2', xCenter(i));
      marker.setAttribute('visibility', 'visible');
      replace(tooltip, ...tooltipLines(b, series, yFormat, opts).map((line, k) => el('div', { class: k === 0 ? 'tip-title' : '' }, line)));
      tooltip.hidden = false;
      const pct = (xCenter(i) / width) * 100;
      tooltip.style.left = `${pct}%`;
      tooltip.classList.toggle('tip-left', pct > 60);
    });
    rect.addEventListener('mouseleave', () => {
      marker.setAttribute('visibility', 'hidden');
      tooltip.hidden = true;
    });
    hover.appendChild(rect);
  });
  node.appendChild(hover);
}

function tooltipLines(b, series, yFormat, opts) {
  const lines = [fmtTime(new Date(b.t).toISOString())];
  for (const s of series) {
    const v = b.values[s.key];
    lines.push(`${s.label}: ${typeof v === 'number' ? yFormat(v) : '—'}`);
  }
  if (opts.extraTip) lines.push(...opts.extraTip(b));
  return lines;
}
