import * as vscode from 'vscode';
import { MARKER_FILES, RecognisedFolders, recogniseFolders } from './folders';

const GLOB = `**/{${MARKER_FILES.join(',')}}`;
const EXCLUDE = '**/{node_modules,.git,.venv}/**';
const RESCAN_DELAY_MS = 500;

/**
 * Keeps the list of adapter and model folders in the workspace up to date, and publishes it as the
 * context keys `loraLens.adapterFolders` / `loraLens.modelFolders` / `loraLens.pickleFolders` for the
 * Explorer menus' `when` clauses.
 */
export class WorkspaceScanner implements vscode.Disposable {
  private current: RecognisedFolders = { adapters: [], models: [], pickles: [] };
  private timer: NodeJS.Timeout | undefined;
  private readonly watcher: vscode.FileSystemWatcher;
  private readonly folderChanges: vscode.Disposable;

  constructor() {
    this.watcher = vscode.workspace.createFileSystemWatcher(GLOB);
    const later = (): void => this.scheduleScan();
    this.watcher.onDidCreate(later);
    this.watcher.onDidDelete(later);
    this.folderChanges = vscode.workspace.onDidChangeWorkspaceFolders(later);
  }

  get folders(): RecognisedFolders {
    return this.current;
  }

  async scan(): Promise<RecognisedFolders> {
    const uris = await vscode.workspace.findFiles(GLOB, EXCLUDE);
    this.current = recogniseFolders(uris.map((u) => u.fsPath));
    await vscode.commands.executeCommand('setContext', 'loraLens.adapterFolders', this.current.adapters);
    await vscode.commands.executeCommand('setContext', 'loraLens.modelFolders', this.current.models);
    await vscode.commands.executeCommand('setContext', 'loraLens.pickleFolders', this.current.pickles);
    return this.current;
  }

  private scheduleScan(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.scan(), RESCAN_DELAY_MS);
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.watcher.dispose();
    this.folderChanges.dispose();
  }
}
