/**
 * The messages between the extension host and the webview (the report panels and the weights viewer
 * share one page), declared once for both sides. The host only sends; the webview asks. Everything that arrives from the webview is untrusted
 * (a compromised or buggy page must not make the host write arbitrary files), so it goes through
 * `parseWebviewMessage`, which returns a typed message or null.
 */
import { JobName } from './jobs/jobs';
import { parseWeightsView, WeightsView } from './weights/view';

/** The jobs whose reports have a panel. */
export const REPORT_KINDS = ['compare', 'validate', 'precision', 'mask', 'decompose', 'census', 'spectrum', 'resize', 'extract-lora', 'combine', 'stats'] as const satisfies readonly JobName[];
export type ReportKind = (typeof REPORT_KINDS)[number];

export function isReportKind(x: unknown): x is ReportKind {
  return typeof x === 'string' && (REPORT_KINDS as readonly string[]).includes(x);
}

/** What a report panel shows; also the state the webview keeps so a panel can be restored after a reload. */
export interface ReportContent {
  kind: ReportKind;
  title: string;
  report: unknown;
  /** validate only: each dtype's full compare report (its `comparison_results.json`), by dtype. */
  comparisons?: Record<string, unknown>;
}

/** What the weights viewer (a custom editor of `.safetensors` and PyTorch files) shows. */
export interface WeightsContent {
  kind: 'weights';
  title: string;
  weights: WeightsView;
}

export type PanelContent = ReportContent | WeightsContent;

/** Host -> webview. */
export type HostMessage =
  | ({ type: 'show' } & PanelContent)
  /** The outcome of an export the webview asked for, shown as a transient note. */
  | { type: 'exported'; what: ExportKind; file: string | null };

export type ExportKind = 'json' | 'png' | 'csv' | 'html';
const EXPORT_KINDS: readonly string[] = ['json', 'png', 'csv', 'html'];

/** Webview -> host. */
export type WebviewMessage =
  /** The page listens: the host may post `show` now (nothing is posted before). */
  | { type: 'ready' }
  /** Save the report the host sent, as JSON, where the user chooses. */
  | { type: 'exportJson' }
  /** Save one chart as a PNG; `name` suggests the file name. */
  | { type: 'exportPng'; name: string; dataUrl: string }
  /** The user picked a tensor in a table: reveal it in the census tree. */
  | { type: 'openTensor'; name: string }
  /** The viewer's per-tensor "Statistics": the tensor's statistics, histogram and heat map. */
  | { type: 'tensorStats'; name: string }
  /** The viewer's "Open in Census": open its file in the census tree. */
  | { type: 'openInCensus' }
  /** The spectrum panel's "Resize…": resize the adapter the report is of (the host knows which). */
  | { type: 'resize' }
  /** Save one section's table as CSV (built by the host from the content it holds). */
  | { type: 'exportCsv'; section: string }
  /**
   * Save the panel as one HTML file: `body` is the page's drawn panel (charts as data: images), `theme`
   * the page's CSS variables; the host wraps them in a document whose CSP runs no script.
   */
  | { type: 'exportHtml'; body: string; theme: string };

/** A PNG of a chart drawn at up to a few thousand pixels is well below this. */
export const MAX_PNG_DATA_URL = 32 * 1024 * 1024;
const PNG_DATA_URL = /^data:image\/png;base64,[A-Za-z0-9+/]+={0,2}$/;
/** A chart id used as a file name stem: no path separators, no dots up front. */
const FILE_STEM = /^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$/;
const MAX_TENSOR_NAME = 1024;
/** A panel with all its charts as PNGs stays far below this. */
export const MAX_HTML_EXPORT = 64 * 1024 * 1024;

/** The typed message, or null for anything malformed (unknown type, missing or ill-typed fields). */
export function parseWebviewMessage(raw: unknown): WebviewMessage | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const m = raw as Record<string, unknown>;
  switch (m.type) {
    case 'ready':
      return { type: 'ready' };
    case 'exportJson':
      return { type: 'exportJson' };
    case 'openInCensus':
      return { type: 'openInCensus' };
    case 'resize':
      return { type: 'resize' };
    case 'exportPng': {
      const { name, dataUrl } = m;
      if (typeof name !== 'string' || !FILE_STEM.test(name)) return null;
      if (typeof dataUrl !== 'string' || dataUrl.length > MAX_PNG_DATA_URL || !PNG_DATA_URL.test(dataUrl)) return null;
      return { type: 'exportPng', name, dataUrl };
    }
    case 'openTensor':
    case 'tensorStats': {
      const { name } = m;
      if (typeof name !== 'string' || name.length === 0 || name.length > MAX_TENSOR_NAME) return null;
      return { type: m.type, name };
    }
    case 'exportCsv': {
      const { section } = m;
      if (typeof section !== 'string' || !FILE_STEM.test(section)) return null;
      return { type: 'exportCsv', section };
    }
    case 'exportHtml': {
      const { body, theme } = m;
      if (typeof body !== 'string' || typeof theme !== 'string' || body.length + theme.length > MAX_HTML_EXPORT) return null;
      return { type: 'exportHtml', body, theme };
    }
    default:
      return null;
  }
}

/** Panel content kept by the webview (and handed back by VS Code on restore), or null when unusable. */
export function parsePanelContent(raw: unknown): PanelContent | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const s = raw as Record<string, unknown>;
  if (s.kind === 'weights' && typeof s.title === 'string') {
    const weights = parseWeightsView(s.weights);
    return weights && { kind: 'weights', title: s.title, weights };
  }
  if (!isReportKind(s.kind) || typeof s.title !== 'string') return null;
  if (typeof s.report !== 'object' || s.report === null) return null;
  const content: ReportContent = { kind: s.kind, title: s.title, report: s.report };
  if (typeof s.comparisons === 'object' && s.comparisons !== null) content.comparisons = s.comparisons as Record<string, unknown>;
  return content;
}

/** Host messages as the webview receives them (the host is trusted, but a stale page may see old shapes). */
export function parseHostMessage(raw: unknown): HostMessage | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const m = raw as Record<string, unknown>;
  if (m.type === 'show') {
    const content = parsePanelContent(m);
    return content && { type: 'show', ...content };
  }
  if (m.type === 'exported' && typeof m.what === 'string' && EXPORT_KINDS.includes(m.what) && (typeof m.file === 'string' || m.file === null)) {
    return { type: 'exported', what: m.what as ExportKind, file: m.file };
  }
  return null;
}
