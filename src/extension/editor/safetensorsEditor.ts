import * as path from 'node:path';
import * as vscode from 'vscode';
import { readWeightsIndex } from '../../shared/weights/read';
import { unreadableWeightsView, weightsView, WeightsView } from '../../shared/weights/view';
import { WeightsContent } from '../../shared/webviewProtocol';
import { ReportPanel, webviewOptions } from '../panels/reportPanel';

export const SAFETENSORS_VIEW_TYPE = 'loraLens.safetensorsViewer';
/** The same viewer for PyTorch checkpoints (its own view type: package.json opens it by default only for torch's file names). */
export const PYTORCH_VIEW_TYPE = 'loraLens.pytorchViewer';

/** What the viewer asks of the rest of the extension (the census tree). */
export interface ViewerLinks {
  openInCensus(file: string): Promise<void>;
  /** Reveals a tensor of `file` in the census tree, opening the file there first if needed. */
  revealTensor(file: string, name: string): Promise<void>;
  /** A tensor's statistics (the census tree's "Show Tensor Statistics…" on it). */
  tensorStats(file: string, name: string): Promise<void>;
}

/** The viewer's content: the file's tensor index, or why it cannot be read. */
export function viewerContent(uri: vscode.Uri): WeightsContent {
  const file = uri.fsPath;
  let weights: WeightsView;
  if (uri.scheme !== 'file') weights = unreadableWeightsView(file, `only files on disk can be read (this is ${uri.scheme}:)`);
  else {
    try {
      weights = weightsView(file, readWeightsIndex(file));
    } catch (e) {
      weights = unreadableWeightsView(file, (e as Error).message);
    }
  }
  return { kind: 'weights', title: path.basename(file), weights };
}

/**
 * A read-only editor for .safetensors files, and for PyTorch .bin / .pt / .pth checkpoints: reads the
 * header (at most 100 MB by the format's rule, a few KB in practice) or the zip directory and pickle
 * (interpreted, never executed), never the tensor data, so any size opens at once. The page is the
 * report panels' webview, sent the index as typed data.
 */
export class SafetensorsEditorProvider implements vscode.CustomReadonlyEditorProvider {
  constructor(private readonly extensionUri: vscode.Uri, private readonly links: ViewerLinks) {}

  openCustomDocument(uri: vscode.Uri): vscode.CustomDocument {
    return { uri, dispose: () => {} };
  }

  resolveCustomEditor(document: vscode.CustomDocument, panel: vscode.WebviewPanel): void {
    panel.webview.options = webviewOptions(this.extensionUri);
    const file = document.uri.fsPath;
    const report = (e: unknown): void => void vscode.window.showErrorMessage(`LoRA Lens: ${e instanceof Error ? e.message : String(e)}`);
    new ReportPanel(
      panel,
      this.extensionUri,
      viewerContent(document.uri),
      (name) => void this.links.revealTensor(file, name).catch(report),
      () => undefined,
      () => void this.links.openInCensus(file).catch(report),
      (name) => void this.links.tensorStats(file, name).catch(report),
    );
  }
}
