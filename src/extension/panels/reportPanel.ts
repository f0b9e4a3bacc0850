/**
 * One report panel: a WebviewPanel showing one report of one kind. The page announces `ready` before
 * anything is posted to it (a message sent earlier would be lost); every message from it is validated;
 * exports are written by the host, to a place the user picks, from the report the host itself holds.
 */
import * as crypto from 'node:crypto';
import * as vscode from 'vscode';
import { HostMessage, PanelContent, parseWebviewMessage, WebviewMessage } from '../../shared/webviewProtocol';
import { makeNonce, panelHtml } from './html';

export const REPORT_VIEW_TYPE = 'loraLens.report';

export class ReportPanel {
  private ready = false;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly extensionUri: vscode.Uri,
    private content: PanelContent,
    private readonly onOpenTensor: (name: string) => void,
    onDispose: () => void,
  ) {
    panel.webview.options = webviewOptions(extensionUri);
    panel.title = content.title;
    this.disposables.push(
      panel.webview.onDidReceiveMessage((raw: unknown) => this.receive(raw)),
      panel.onDidDispose(() => {
        onDispose();
        for (const d of this.disposables) d.dispose();
      }),
    );
    panel.webview.html = this.html();
  }

  get kind(): PanelContent['kind'] {
    return this.content.kind;
  }

  /** Shows another report in this panel (now if the page listens, else once it says ready). */
  show(content: PanelContent): void {
    this.content = content;
    this.panel.title = content.title;
    if (this.ready) this.post({ type: 'show', ...content });
    this.panel.reveal(undefined, true);
  }

  private html(): string {
    const webview = this.panel.webview;
    const dist = vscode.Uri.joinPath(this.extensionUri, 'dist');
    return panelHtml({
      cspSource: webview.cspSource,
      nonce: makeNonce((n) => crypto.randomBytes(n)),
      scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.js')).toString(),
      styleUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.css')).toString(),
      title: this.content.title,
    });
  }

  private post(m: HostMessage): void {
    void this.panel.webview.postMessage(m);
  }

  private receive(raw: unknown): void {
    const m = parseWebviewMessage(raw);
    if (m === null) return; // malformed or unknown: ignored, never acted on
    void this.handle(m).catch((e: unknown) => vscode.window.showErrorMessage(`LoRA Lens: ${e instanceof Error ? e.message : String(e)}`));
  }

  private async handle(m: WebviewMessage): Promise<void> {
    switch (m.type) {
      case 'ready':
        this.ready = true;
        this.post({ type: 'show', ...this.content });
        return;
      case 'exportJson': {
        const file = await this.saveAs(`${this.content.kind}-report.json`, { JSON: ['json'] }, new TextEncoder().encode(JSON.stringify(this.content.report, null, 2) + '\n'));
        this.post({ type: 'exported', what: 'json', file });
        return;
      }
      case 'exportPng': {
        const bytes = Buffer.from(m.dataUrl.slice(m.dataUrl.indexOf(',') + 1), 'base64');
        const file = await this.saveAs(`${this.content.kind}-${m.name}.png`, { PNG: ['png'] }, bytes);
        this.post({ type: 'exported', what: 'png', file });
        return;
      }
      case 'openTensor':
        this.onOpenTensor(m.name);
        return;
    }
  }

  /** Asks where to save, writes, and returns the path (null when the user cancelled). */
  private async saveAs(fileName: string, filters: Record<string, string[]>, bytes: Uint8Array): Promise<string | null> {
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
    const uri = await vscode.window.showSaveDialog({ defaultUri: folder ? vscode.Uri.joinPath(folder, fileName) : undefined, filters, title: `Save ${fileName}` });
    if (!uri) return null;
    await vscode.workspace.fs.writeFile(uri, bytes);
    return uri.fsPath;
  }
}

/** Scripts on; local files only from the bundle (dist/) and media/. */
export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions {
  return {
    enableScripts: true,
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist'), vscode.Uri.joinPath(extensionUri, 'media')],
  };
}
