import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import { readHeader } from '../../shared/safetensors/file';
import { SafetensorsHeader } from '../../shared/safetensors/header';
import { renderHeaderPage } from './headerPage';

export const SAFETENSORS_VIEW_TYPE = 'loraLens.safetensorsViewer';

/**
 * A read-only editor for .safetensors files: reads and validates the header only (at most 100 MB by the
 * format's rule, a few KB in practice), never the tensor data, so any size opens at once.
 */
export class SafetensorsEditorProvider implements vscode.CustomReadonlyEditorProvider {
  openCustomDocument(uri: vscode.Uri): vscode.CustomDocument {
    return { uri, dispose: () => {} };
  }

  resolveCustomEditor(document: vscode.CustomDocument, panel: vscode.WebviewPanel): void {
    panel.webview.options = { enableScripts: true, localResourceRoots: [] };
    const file = document.uri.fsPath;
    let header: SafetensorsHeader | undefined;
    let error: string | undefined;
    if (document.uri.scheme !== 'file') error = `only files on disk can be read (this is ${document.uri.scheme}:)`;
    else {
      try {
        header = readHeader(file);
      } catch (e) {
        error = (e as Error).message;
      }
    }
    panel.webview.html = renderHeaderPage({ file, header, error, nonce: randomBytes(16).toString('base64') });
  }
}
