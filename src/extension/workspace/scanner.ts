import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { hubCacheDir } from '../../shared/weights/hfCache';
import { eventMatters, MARKER_FILES, markerFilesUnder, RecognisedFolders, recogniseFolders } from './folders';

const GLOB = `**/{${MARKER_FILES.join(',')}}`;
const EXCLUDE = '**/{node_modules,.git,.venv}/**';
const RESCAN_DELAY_MS = 500;
const CACHE_KEY = 'loraLens.scan';

/**
 * The folders outside the workspace where checkpoints are found too: the Hugging Face hub cache
 * (`loraLens.scanHuggingFaceCache`, on by default) and the `loraLens.modelRoots` setting.
 */
export function extraRoots(): string[] {
  const cfg = vscode.workspace.getConfiguration('loraLens');
  const roots = cfg.get<string[]>('modelRoots', []).filter((r) => typeof r === 'string' && r !== '');
  return cfg.get<boolean>('scanHuggingFaceCache', true) ? [hubCacheDir(), ...roots] : roots;
}

/**
 * Keeps the list of adapter and model folders in the workspace (and in extraRoots) up to date, and publishes it as the
 * context keys `loraLens.adapterFolders` / `loraLens.modelFolders` / `loraLens.pickleFolders` for the
 * Explorer menus' `when` clauses.
 * The last scan is kept per workspace and published at once on activation, so the menus are there
 * from the first right-click; `ready` resolves when the first scan of this session is done.
 */
export class WorkspaceScanner implements vscode.Disposable {
  private current: RecognisedFolders;
  private timer: NodeJS.Timeout | undefined;
  private readonly watcher: vscode.FileSystemWatcher;
  private readonly folderChanges: vscode.Disposable;
  private readonly changed = new vscode.EventEmitter<RecognisedFolders>();
  readonly onDidChange = this.changed.event;
  private scanned = false;
  /** Resolves once the first scan of this session is done. */
  readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(private readonly state: vscode.Memento) {
    this.current = { adapters: [], models: [], pickles: [], ...state.get<Partial<RecognisedFolders>>(CACHE_KEY) };
    void this.publish();
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    // Every path, not the marker glob: a folder moved in whole reports only itself (eventMatters).
    this.watcher = vscode.workspace.createFileSystemWatcher('**/*', false, true, false);
    const later = (): void => this.scheduleScan();
    const isDirectory = (p: string): boolean => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
    this.watcher.onDidCreate((u) => eventMatters(u.fsPath, true, this.current, isDirectory) && later());
    this.watcher.onDidDelete((u) => eventMatters(u.fsPath, false, this.current, isDirectory) && later());
    this.folderChanges = vscode.Disposable.from(
      vscode.workspace.onDidChangeWorkspaceFolders(later),
      vscode.workspace.onDidChangeConfiguration((e) => (e.affectsConfiguration('loraLens.modelRoots') || e.affectsConfiguration('loraLens.scanHuggingFaceCache')) && later()),
    );
  }

  get folders(): RecognisedFolders {
    return this.current;
  }

  /** Whether the first scan of this session is done (before that, `folders` is the last session's). */
  get isReady(): boolean {
    return this.scanned;
  }

  async scan(): Promise<RecognisedFolders> {
    try {
      const uris = await vscode.workspace.findFiles(GLOB, EXCLUDE);
      this.current = recogniseFolders([...uris.map((u) => u.fsPath), ...markerFilesUnder(extraRoots())]);
      void this.state.update(CACHE_KEY, this.current);
      await this.publish();
      this.changed.fire(this.current);
    } finally {
      this.scanned = true;
      this.markReady();
    }
    return this.current;
  }

  private async publish(): Promise<void> {
    await vscode.commands.executeCommand('setContext', 'loraLens.adapterFolders', this.current.adapters);
    await vscode.commands.executeCommand('setContext', 'loraLens.modelFolders', this.current.models);
    await vscode.commands.executeCommand('setContext', 'loraLens.pickleFolders', this.current.pickles);
  }

  private scheduleScan(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.scan(), RESCAN_DELAY_MS);
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.watcher.dispose();
    this.folderChanges.dispose();
    this.changed.dispose();
  }
}
