/**
 * One report panel: a WebviewPanel showing one report of one kind (or the weights viewer's page, in its
 * custom editor), wired to a PanelController (the message logic) through VS Code: posting, the save
 * dialog, and the extension's files for the page.
 */
import * as crypto from 'node:crypto';
import * as vscode from 'vscode';
import * as fs from 'node:fs';
import { ExportKind, PanelContent } from '../../shared/webviewProtocol';
import { PanelController } from './controller';
import { makeNonce, panelHtml } from './html';

export const REPORT_VIEW_TYPE = 'loraLens.report';

const FILTERS: Record<ExportKind, Record<string, string[]>> = {
  json: { JSON: ['json'] },
  png: { 'PNG image': ['png'] },
  csv: { CSV: ['csv'] },
  html: { 'HTML report': ['html'] },
};

export class ReportPanel {
  private readonly controller: PanelController;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly extensionUri: vscode.Uri,
    content: PanelContent,
    onOpenTensor: (name: string) => void,
    onDispose: () => void,
    onOpenInCensus?: () => void,
    onTensorStats?: (name: string) => void,
    onResize?: () => void,
  ) {
    this.controller = new PanelController(content, {
      post: (m) => void panel.webview.postMessage(m),
      saveAs: (fileName, kind, bytes) => saveAs(fileName, FILTERS[kind], bytes),
      openTensor: onOpenTensor,
      openInCensus: onOpenInCensus,
      tensorStats: onTensorStats,
      resize: onResize,
      stylesheet: () => fs.readFileSync(vscode.Uri.joinPath(extensionUri, 'dist', 'webview.css').fsPath, 'utf8'),
      savedHtml: (file) =>
        void vscode.window.showInformationMessage(`Saved the report as ${file}: one file, charts included.`, 'Open in Browser').then(
          (a) => a && vscode.env.openExternal(vscode.Uri.file(file)),
        ),
    });
    panel.webview.options = webviewOptions(extensionUri);
    panel.title = content.title;
    this.disposables.push(
      panel.webview.onDidReceiveMessage((raw: unknown) =>
        this.controller.receive(raw).catch((e: unknown) => vscode.window.showErrorMessage(`LoRA Lens: ${e instanceof Error ? e.message : String(e)}`)),
      ),
      panel.onDidDispose(() => {
        onDispose();
        for (const d of this.disposables) d.dispose();
      }),
    );
    panel.webview.html = this.html(content.title);
  }

  /** Shows another report in this panel and brings it to the front. */
  show(content: PanelContent): void {
    this.panel.title = content.title;
    this.controller.show(content);
    this.panel.reveal(undefined, true);
  }

  private html(title: string): string {
    const webview = this.panel.webview;
    const dist = vscode.Uri.joinPath(this.extensionUri, 'dist');
    return panelHtml({
      cspSource: webview.cspSource,
      nonce: makeNonce((n) => crypto.randomBytes(n)),
      scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.js')).toString(),
      styleUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.css')).toString(),
      title,
    });
  }
}

/** Asks where to save (in the first workspace folder by default), writes, returns the path or null. */
async function saveAs(fileName: string, filters: Record<string, string[]>, bytes: Uint8Array): Promise<string | null> {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
  const uri = await vscode.window.showSaveDialog({ defaultUri: folder ? vscode.Uri.joinPath(folder, fileName) : undefined, filters, title: `Save ${fileName}` });
  if (!uri) return null;
  await vscode.workspace.fs.writeFile(uri, bytes);
  return uri.fsPath;
}

/** Scripts on; local files only from the bundle (dist/) and media/. */
export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions {
  return {
    enableScripts: true,
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist'), vscode.Uri.joinPath(extensionUri, 'media')],
  };
}
