/**
 * ChartSpec -> chart.js, coloured from the current VS Code theme. Only the chart.js parts the panels use
 * are registered, which keeps the bundle small.
 */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  ChartConfiguration,
  ChartDataset,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  Plugin,
  PointElement,
  ScatterController,
  Tooltip,
} from 'chart.js';
import { formatCell, formatTick } from '../src/shared/charts/format';
import { Axis, ChartSpec, Point, SeriesColor } from '../src/shared/charts/model';

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  LinearScale,
  LogarithmicScale,
  LineController,
  LineElement,
  PointElement,
  ScatterController,
  Tooltip,
  Legend,
);

function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

interface Theme {
  foreground: string;
  grid: string;
  background: string;
  font: string;
  color(c: SeriesColor): string;
}

function theme(): Theme {
  const foreground = cssVar('--vscode-foreground', '#888888');
  return {
    foreground,
    grid: cssVar('--vscode-editorWidget-border', cssVar('--vscode-panel-border', 'rgba(128,128,128,0.3)')),
    background: cssVar('--vscode-editor-background', '#ffffff'),
    font: cssVar('--vscode-font-family', 'sans-serif'),
    color: (c) => (c === 'foreground' ? foreground : cssVar(`--vscode-charts-${c}`, { blue: '#3794ff', green: '#89d185', red: '#f14c4c', orange: '#d18616', purple: '#b180d7', yellow: '#cca700' }[c])),
  };
}

/** Fills the canvas with the editor background, so an exported PNG reads the same as the panel. */
const background: Plugin<'bar' | 'scatter' | 'line'> = {
  id: 'loraLensBackground',
  beforeDraw(chart) {
    const { ctx, width, height } = chart;
    ctx.save();
    ctx.globalCompositeOperation = 'destination-over';
    ctx.fillStyle = theme().background;
    ctx.fillRect(0, 0, width, height);
    ctx.restore();
  },
};

/** Theme colours are hex; canvas and chart.js's colour helpers need rgba for transparency. */
function translucent(color: string, alpha: number): string {
  const m = /^#([0-9a-f]{3}|[0-9a-f]{6})([0-9a-f]{2})?$/i.exec(color);
  if (!m) return color;
  const hex = m[1].length === 3 ? [...m[1]].map((c) => c + c).join('') : m[1];
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

function scale(a: Axis, t: Theme, stacked: boolean, category: boolean): Record<string, unknown> {
  return {
    type: category ? 'category' : a.log ? 'logarithmic' : 'linear',
    stacked,
    min: a.min,
    max: a.max,
    title: { display: true, text: a.title, color: t.foreground },
    ticks: {
      color: t.foreground,
      ...(category
        ? {}
        : {
            callback: (v: number | string, i: number, ticks: Array<{ value: number }>) => {
              // A log axis within one decade may hold no 1-2-5 tick: then its two ends are labelled.
              const label =
                a.log && (i === 0 || i === ticks.length - 1) && few125(ticks)
                  ? formatTick(Number(v), a.format)
                  : formatTick(Number(v), a.format, a.log, ticks.length > 1 ? Math.abs(ticks[1].value - ticks[0].value) : undefined);
              // One notation per log axis: 5e-4, 1e-3, 2e-3 rather than 5e-4, 0.001, 0.002.
              return label !== '' && a.log && a.format === undefined && Math.min(...ticks.map((t) => t.value)) < 1e-3 ? Number(v).toExponential(0) : label;
            },
          }),
      // precision 0, not stepSize 1: an axis of 483 ranks must not get 483 ticks.
      ...(a.integer ? { precision: 0 } : {}),
    },
    grid: { color: t.grid },
    border: { color: t.grid },
  };
}

/** True when fewer than two ticks of a log axis would get a 1-2-5 label. */
function few125(ticks: Array<{ value: number }>): boolean {
  return ticks.filter((t) => formatTick(t.value, undefined, true) !== '').length < 2;
}

/** `onTensor`: called with a tensor's name when the user clicks a point that stands for one. */
export function chartConfig(spec: ChartSpec, onTensor?: (name: string) => void): ChartConfiguration {
  const t = theme();
  const category = spec.type !== 'scatter' || spec.labels !== undefined;
  const datasets = spec.series.map((s): ChartDataset => {
    const color = t.color(s.color);
    const base = {
      label: s.label,
      data: s.data as never,
      borderColor: color,
      backgroundColor: translucent(color, spec.type === 'bar' && !s.asLine ? 0.75 : 0.6),
      borderDash: s.dashed ? [6, 4] : undefined,
    };
    if (s.asLine) return { ...base, type: spec.type === 'bar' ? 'line' : 'scatter', showLine: true, pointRadius: 0, borderWidth: 1.5, order: -1 } as ChartDataset;
    if (spec.type === 'scatter') return { ...base, pointRadius: s.pointStyle && s.pointStyle !== 'circle' ? 4 : 3, pointHoverRadius: 5, pointStyle: s.pointStyle ?? 'circle' } as ChartDataset;
    return (spec.type === 'line' ? { ...base, borderWidth: 1.5, pointRadius: 3 } : { ...base, borderWidth: 0 }) as ChartDataset;
  });
  const horizontal = spec.horizontal === true;
  const xAxis = scale(spec.x, t, spec.stacked === true, category && !horizontal);
  const yAxis = scale(spec.y, t, spec.stacked === true, category && horizontal);
  return {
    type: spec.type,
    data: { labels: spec.labels, datasets },
    plugins: [background],
    options: {
      indexAxis: horizontal ? 'y' : 'x',
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      onClick(_event, elements) {
        const hit = elements[0];
        const series = hit && spec.series[hit.datasetIndex];
        const point = series?.tensorPoints ? (series.data[hit.index] as Point | null) : null;
        if (point?.label && onTensor) onTensor(point.label);
      },
      font: { family: t.font },
      scales: { x: xAxis, y: yAxis } as never,
      plugins: {
        legend: { labels: { color: t.foreground, boxWidth: 12 } },
        tooltip: {
          callbacks: {
            label(item) {
              const raw = item.raw as Point | number | null;
              if (raw !== null && typeof raw === 'object') return `${raw.label ?? item.dataset.label}: (${formatCell(raw.x)}, ${formatCell(raw.y)})`;
              return `${item.dataset.label}: ${formatCell(raw)}`;
            },
          },
        },
      },
    },
  } as ChartConfiguration;
}

export function drawChart(canvas: HTMLCanvasElement, spec: ChartSpec, onTensor?: (name: string) => void): Chart {
  return new Chart(canvas, chartConfig(spec, onTensor));
}
