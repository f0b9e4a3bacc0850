import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import { readWeightsIndex, WeightsIndex } from '../../shared/weights/read';
import { renderHeaderPage } from './headerPage';

export const SAFETENSORS_VIEW_TYPE = 'loraLens.safetensorsViewer';
/** The same viewer for PyTorch checkpoints (its own view type: package.json opens it by default only for torch's file names). */
export const PYTORCH_VIEW_TYPE = 'loraLens.pytorchViewer';

/**
 * A read-only editor for .safetensors files, and for PyTorch .bin / .pt / .pth checkpoints: reads the
 * header (at most 100 MB by the format's rule, a few KB in practice) or the zip directory and pickle
 * (interpreted, never executed), never the tensor data, so any size opens at once.
 */
export class SafetensorsEditorProvider implements vscode.CustomReadonlyEditorProvider {
  openCustomDocument(uri: vscode.Uri): vscode.CustomDocument {
    return { uri, dispose: () => {} };
  }

  resolveCustomEditor(document: vscode.CustomDocument, panel: vscode.WebviewPanel): void {
    panel.webview.options = { enableScripts: true, localResourceRoots: [] };
    const file = document.uri.fsPath;
    let header: WeightsIndex | undefined;
    let error: string | undefined;
    if (document.uri.scheme !== 'file') error = `only files on disk can be read (this is ${document.uri.scheme}:)`;
    else {
      try {
        header = readWeightsIndex(file);
      } catch (e) {
        error = (e as Error).message;
      }
    }
    panel.webview.html = renderHeaderPage({ file, header, error, nonce: randomBytes(16).toString('base64') });
  }
}
