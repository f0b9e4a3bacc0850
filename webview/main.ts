/**
 * The report panels' page. It draws what the host sends and nothing else: the host posts `show` with a
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
      exportPng: (name, chart) => vscode.postMessage({ type: 'exportPng', name, dataUrl: chart.toBase64Image('image/png') }),
      openTensor: (name) => vscode.postMessage({ type: 'openTensor', name }),
    });
  } catch (e) {
    renderError(app, `This report cannot be drawn: ${e instanceof Error ? e.message : String(e)}`);
  }
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
