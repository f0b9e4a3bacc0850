/**
 * What a report panel does with messages, apart from VS Code: hold the content, post it only once the
 * page says `ready`, drop anything malformed, and export from the content the host holds (never from
 * data the page sends, except a chart's PNG and the drawn page of an HTML report, which go only where
 * the user saves them, the HTML inside a document that runs no script). No vscode import, so the unit
 * tests drive it. The weights viewer (a custom editor) uses it too.
 */
import * as path from 'node:path';
import { sectionCsv } from '../../shared/charts/csv';
import { panelModel } from '../../shared/charts/panels';
import { ExportKind, HostMessage, PanelContent, parseWebviewMessage, WebviewMessage } from '../../shared/webviewProtocol';
import { escapeHtml } from './html';

export interface PanelIo {
  post(m: HostMessage): void;
  /** Asks the user where to save `fileName`, writes `bytes` there, returns the path (null: cancelled). */
  saveAs(fileName: string, kind: ExportKind, bytes: Uint8Array): Promise<string | null>;
  openTensor(name: string): void;
  /** The weights viewer: open its file in the census tree. */
  openInCensus?(): void;
  /** The spectrum panel: resize its adapter. */
  resize?(): void;
  /** The weights viewer: a tensor's statistics. */
  tensorStats?(name: string): void;
  /** The panels' stylesheet, inlined into an HTML report. */
  stylesheet(): string;
  /** After an HTML report is saved: offer to open it in the browser. */
  savedHtml?(file: string): void;
}

export class PanelController {
  private ready = false;

  constructor(private content: PanelContent, private readonly io: PanelIo) {}

  get current(): PanelContent {
    return this.content;
  }

  /** New content: posted now if the page listens, else when it says ready. */
  show(content: PanelContent): void {
    this.content = content;
    if (this.ready) this.io.post({ type: 'show', ...content });
  }

  /** A message from the page, validated first; returns once any export it asked for is written. */
  async receive(raw: unknown): Promise<void> {
    const m = parseWebviewMessage(raw);
    if (m !== null) await this.handle(m);
  }

  private async save(what: ExportKind, fileName: string, bytes: Uint8Array): Promise<string | null> {
    const file = await this.io.saveAs(fileName, what, bytes);
    this.io.post({ type: 'exported', what, file });
    return file;
  }

  private async handle(m: WebviewMessage): Promise<void> {
    const c = this.content;
    // Saved files are named after the report kind, or after the viewed weights file.
    const stem = c.kind === 'weights' ? path.basename(c.weights.file).replace(/\.[^.]*$/, '') : c.kind;
    switch (m.type) {
      case 'ready':
        // Also after the page was reloaded (a hidden panel is torn down): it gets the latest content.
        this.ready = true;
        this.io.post({ type: 'show', ...this.content });
        return;
      case 'exportJson':
        await this.save('json', `${stem}-${c.kind === 'weights' ? 'index' : 'report'}.json`, utf8(JSON.stringify(c.kind === 'weights' ? c.weights : c.report, null, 2) + '\n'));
        return;
      case 'exportPng':
        await this.save('png', `${stem}-${m.name}.png`, Uint8Array.from(Buffer.from(m.dataUrl.slice(m.dataUrl.indexOf(',') + 1), 'base64')));
        return;
      case 'exportCsv': {
        const section = panelModel(this.content).sections.find((s) => s.id === m.section);
        const csv = section && sectionCsv(section);
        if (csv !== undefined) await this.save('csv', `${stem}-${m.section}.csv`, utf8(csv));
        return;
      }
      case 'exportHtml': {
        const file = await this.save('html', `${stem}-report.html`, utf8(reportDocument(this.content.title, m.body, m.theme, this.io.stylesheet())));
        if (file !== null) this.io.savedHtml?.(file);
        return;
      }
      case 'openTensor':
        this.io.openTensor(m.name);
        return;
      case 'openInCensus':
        this.io.openInCensus?.();
        return;
      case 'resize':
        this.io.resize?.();
        return;
      case 'tensorStats':
        this.io.tensorStats?.(m.name);
        return;
    }
  }
}

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * One self-contained HTML file: the drawn panel, the panels' stylesheet and the theme's colours at
 * export time. Its CSP allows inline styles and data: images only, so nothing in it can run or load.
 */
export function reportDocument(title: string, body: string, theme: string, css: string): string {
  // The theme is `--name: value;` pairs; anything that could close the style element is dropped.
  const vars = theme.replace(/<\/?style/gi, '');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta name="generator" content="LoRA Lens">
<title>${escapeHtml(title)}</title>
<style>
:root { ${vars} }
body { background: var(--vscode-editor-background); color: var(--vscode-foreground); font-family: var(--vscode-font-family, sans-serif); }
${css.replace(/<\/style/gi, '')}
</style>
</head>
<body class="exported">
${body}
</body>
</html>
`;
}
