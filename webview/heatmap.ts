/**
 * HeatmapSpec -> a canvas of one pixel per cell (scaled up by CSS without smoothing), coloured from the
 * theme: the editor background for 0, through the theme's blue, to its red for the largest value; cells
 * without a finite value take the panel border's colour. A select switches between the spec's layers,
 * a legend gives the scale, and the hover line names the cell's element ranges and value.
 */
import { formatCell } from '../src/shared/charts/format';
import { HeatmapSpec } from '../src/shared/charts/model';

type Rgb = [number, number, number];

/** Any CSS colour as RGB, through the canvas's own parser (theme variables come as hex, rgb() or names). */
function rgbOf(color: string, fallback: Rgb): Rgb {
  const ctx = document.createElement('canvas').getContext('2d');
  if (!ctx || color === '') return fallback;
  ctx.fillStyle = '#000';
  ctx.fillStyle = color;
  ctx.fillRect(0, 0, 1, 1);
  const d = ctx.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2]];
}

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** The colour ramp of the current theme, as a function of t in [0, 1]. */
function ramp(): (t: number) => Rgb {
  const stops: Rgb[] = [
    rgbOf(cssVar('--vscode-editor-background'), [255, 255, 255]),
    rgbOf(cssVar('--vscode-charts-blue'), [55, 148, 255]),
    rgbOf(cssVar('--vscode-charts-red'), [241, 76, 76]),
  ];
  return (t) => {
    const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x));
    const f = x - i;
    return [0, 1, 2].map((c) => Math.round(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * f)) as Rgb;
  };
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** The canvas's shown size: the matrix's aspect (clamped so a vector or a tall matrix stays readable). */
function displaySize(h: HeatmapSpec): { width: number; height: number } {
  const aspect = Math.max(0.5, Math.min(8, h.matrixCols / Math.max(1, h.matrixRows)));
  const height = Math.max(48, Math.min(560, 720 / aspect));
  return { width: Math.min(720, height * aspect), height };
}

/** The heat map's DOM: `canvas` is what Export PNG saves. */
export function heatmapFigure(id: string, title: string, h: HeatmapSpec): { root: HTMLElement; canvas: HTMLCanvasElement } {
  const canvas = el('canvas');
  canvas.id = `heatmap-${id}`;
  canvas.width = h.cols;
  canvas.height = h.rows;
  const size = displaySize(h);
  canvas.style.width = `${size.width}px`;
  canvas.style.height = `${size.height}px`;
  canvas.style.maxWidth = '100%';
  canvas.setAttribute('role', 'img');
  canvas.dataset.rows = String(h.rows);
  canvas.dataset.cols = String(h.cols);
  const legendRamp = el('canvas');
  legendRamp.width = 160;
  legendRamp.height = 1;
  const lo = el('span', undefined, '0');
  const hi = el('span');
  const legend = el('div', 'heatmap-legend');
  legend.append(lo, legendRamp, hi);
  const axes = el('p', 'heatmap-axes', `Rows ↓ 0–${h.matrixRows - 1}${h.y ? `: ${h.y}` : ''} · columns → 0–${h.matrixCols - 1}${h.x ? `: ${h.x}` : ''}`);
  const hover = el('div', 'heatmap-hover');
  hover.id = `heatmap-hover-${id}`;
  hover.setAttribute('aria-live', 'polite');
  const select = el('select');
  select.id = `heatmap-layer-${id}`;
  select.setAttribute('aria-label', 'Value of each cell');
  h.layers.forEach((l, i) => {
    const o = el('option', undefined, l.label);
    o.value = String(i);
    select.append(o);
  });
  const tools = el('div', 'heatmap-tools');
  tools.append(el('label', undefined, 'Each cell:'), select, legend);

  let layer = 0;
  const paint = (): void => {
    const values = h.layers[layer]?.values ?? [];
    const max = values.reduce<number>((m, v) => (v !== null && v > m ? v : m), 0);
    const color = ramp();
    const none = rgbOf(cssVar('--vscode-panel-border'), [128, 128, 128]);
    const ctx = canvas.getContext('2d')!;
    const img = ctx.createImageData(h.cols, h.rows);
    for (let k = 0; k < h.rows * h.cols; k++) {
      const v = values[k] ?? null;
      const [r, g, b] = v === null ? none : color(max > 0 ? v / max : 0);
      img.data.set([r, g, b, 255], 4 * k);
    }
    ctx.putImageData(img, 0, 0);
    const lctx = legendRamp.getContext('2d')!;
    const limg = lctx.createImageData(160, 1);
    for (let x = 0; x < 160; x++) limg.data.set([...color(x / 159), 255], 4 * x);
    lctx.putImageData(limg, 0, 0);
    hi.textContent = formatCell(max);
    canvas.dataset.max = String(max);
    canvas.setAttribute('aria-label', `${title}: ${h.rows} × ${h.cols} cells of ${h.layers[layer]?.label ?? ''}, largest ${formatCell(max)}`);
  };
  select.addEventListener('change', () => {
    layer = Number(select.value);
    paint();
  });
  canvas.addEventListener('mousemove', (e) => {
    const rect = canvas.getBoundingClientRect();
    const i = Math.min(h.rows - 1, Math.floor(((e.clientY - rect.top) / rect.height) * h.rows));
    const j = Math.min(h.cols - 1, Math.floor(((e.clientX - rect.left) / rect.width) * h.cols));
    const v = h.layers[layer]?.values[i * h.cols + j] ?? null;
    const r0 = i * h.cellRows;
    const c0 = j * h.cellCols;
    const r1 = Math.min(h.matrixRows, r0 + h.cellRows) - 1;
    const c1 = Math.min(h.matrixCols, c0 + h.cellCols) - 1;
    hover.textContent = `rows ${r0}–${r1}, columns ${c0}–${c1}: ${h.layers[layer]?.label ?? ''} ${v === null ? 'none finite' : formatCell(v)}`;
  });
  canvas.addEventListener('mouseleave', () => (hover.textContent = ''));
  paint();
  const root = el('div', 'heatmap-box');
  root.append(tools, axes, canvas, hover);
  return { root, canvas };
}
