/**
 * The report panels' page, and the weights viewer's. It draws what the host sends and nothing else: the host posts `show` with a
 * report after this page says `ready`; the page keeps that content as its state so VS Code can restore
 * the panel after a reload.
 */
import '@vscode-elements/elements/dist/vscode-button/index.js';
import { Chart } from 'chart.js';
import { panelModel } from '../src/shared/charts/panels';
import { HostMessage, PanelContent, parseHostMessage, WebviewMessage } from '../src/shared/webviewProtocol';
import { renderError, renderPanel, showStatus } from './render';

interface VsCodeApi {
  postMessage(message: WebviewMessage): void;
  setState(state: PanelContent): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();
const app = document.getElementById('app')!;
let charts: Chart[] = [];
let current: PanelContent | null = null;

function draw(content: PanelContent): void {
  for (const c of charts) c.destroy();
  charts = [];
  try {
    charts = renderPanel(app, panelModel(content), {
      exportJson: () => vscode.postMessage({ type: 'exportJson' }),
      exportPng: (name, canvas) => vscode.postMessage({ type: 'exportPng', name, dataUrl: canvas.toDataURL('image/png') }),
      exportCsv: (section) => vscode.postMessage({ type: 'exportCsv', section }),
      exportHtml: () => vscode.postMessage({ type: 'exportHtml', body: exportedBody(), theme: themeVariables() }),
      openTensor: (name) => vscode.postMessage({ type: 'openTensor', name }),
      openInCensus: () => vscode.postMessage({ type: 'openInCensus' }),
      resize: () => vscode.postMessage({ type: 'resize' }),
      tensorStats: (name) => vscode.postMessage({ type: 'tensorStats', name }),
    });
  } catch (e) {
    renderError(app, `This report cannot be drawn: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * The drawn panel for an HTML report: charts as PNG images, sections open, without the buttons that
 * only work in VS Code; tensor links become plain text.
 */
function exportedBody(): string {
  const panel = document.getElementById('panel');
  if (!panel) return '';
  const copy = panel.cloneNode(true) as HTMLElement;
  const canvases = Array.from(panel.querySelectorAll('canvas'));
  copy.querySelectorAll('canvas').forEach((c, i) => {
    const img = document.createElement('img');
    img.src = canvases[i].toDataURL('image/png');
    img.alt = c.getAttribute('aria-label') ?? '';
    img.className = 'chart-image';
    c.replaceWith(img);
  });
  copy.querySelectorAll('vscode-button, .section-tools, .header-tools, .filter-bar, #status, .row-action, .heatmap-tools select, .heatmap-tools label, .heatmap-hover').forEach((e) => e.remove());
  copy.querySelectorAll('tr[hidden]').forEach((r) => r.removeAttribute('hidden'));
  copy.querySelectorAll('details').forEach((d) => d.setAttribute('open', ''));
  copy.querySelectorAll('a').forEach((a) => a.replaceWith(...Array.from(a.childNodes)));
  copy.querySelectorAll('button.sort').forEach((b) => b.replaceWith(b.textContent ?? ''));
  return copy.outerHTML;
}

/** The theme's colours and fonts as CSS variables (VS Code sets them on <html>). */
function themeVariables(): string {
  const style = document.documentElement.style;
  const out: string[] = [];
  for (let i = 0; i < style.length; i++) {
    const name = style[i];
    if (name.startsWith('--vscode-')) out.push(`${name}: ${style.getPropertyValue(name)};`);
  }
  return out.join(' ');
}

function receive(m: HostMessage): void {
  if (m.type === 'show') {
    const { type: _, ...content } = m;
    current = content;
    vscode.setState(content);
    draw(content);
  } else {
    showStatus(m.file === null ? '' : `Saved ${m.file}`);
  }
}

window.addEventListener('message', (e: MessageEvent) => {
  const m = parseHostMessage(e.data);
  if (m) receive(m);
});

// Chart colours come from the theme: redraw when the user switches between light and dark.
new MutationObserver(() => {
  if (!current) return;
  const y = window.scrollY;
  draw(current);
  window.scrollTo(0, y);
}).observe(document.body, { attributes: true, attributeFilter: ['class'] });

vscode.postMessage({ type: 'ready' });
