import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { expandPattern } from './workspace/folders';
import { WorkspaceScanner } from './workspace/scanner';

export type FolderKind = 'adapter' | 'model';

interface PathItem extends vscode.QuickPickItem {
  path?: string;
  browse?: 'folder' | 'file';
}

/**
 * The questions the commands ask: recognised adapter and model folders of the workspace first, the
 * last choice of each question on top (workspaceState), "Browse…" for anything else.
 */
export class Pickers {
  constructor(
    private readonly state: vscode.Memento,
    private readonly scanner: WorkspaceScanner,
  ) {}

  private last(key: string): string | undefined {
    return this.state.get<string>(`loraLens.last.${key}`);
  }

  remember(key: string, value: string): void {
    void this.state.update(`loraLens.last.${key}`, value);
  }

  private candidates(kinds: FolderKind[]): Array<{ path: string; kind: FolderKind }> {
    const f = this.scanner.folders;
    return kinds.flatMap((k) => (k === 'adapter' ? f.adapters : f.models).map((p) => ({ path: p, kind: k })));
  }

  /**
   * One path: `key` names the question (remembered per question), `kinds` the folders offered,
   * `files` adds a "Browse for a .safetensors file…" entry (a task vector, a single-file checkpoint).
   */
  async path(key: string, title: string, kinds: FolderKind[], opts: { files?: boolean; preferred?: string } = {}): Promise<string | undefined> {
    const last = this.last(key);
    const items: PathItem[] = this.candidates(kinds).map((c) => ({
      label: path.basename(c.path),
      description: vscode.workspace.asRelativePath(c.path),
      detail: c.kind === 'adapter' ? 'PEFT adapter' : 'model',
      path: c.path,
    }));
    const first = opts.preferred ?? last;
    if (first !== undefined && fs.existsSync(first)) {
      const i = items.findIndex((it) => it.path === first);
      const top = i >= 0 ? items.splice(i, 1)[0] : { label: path.basename(first), description: first, path: first };
      items.unshift({ ...top, detail: [top.detail, first === last ? 'last used' : 'suggested'].filter(Boolean).join(' · ') });
    }
    items.push({ label: '$(folder-opened) Browse for a folder…', browse: 'folder', alwaysShow: true });
    if (opts.files) items.push({ label: '$(file) Browse for a .safetensors file…', browse: 'file', alwaysShow: true });
    const pick = await vscode.window.showQuickPick(items, { title, placeHolder: title, matchOnDescription: true, ignoreFocusOut: true });
    if (!pick) return undefined;
    let chosen = pick.path;
    if (pick.browse) {
      const uris = await vscode.window.showOpenDialog({
        title,
        canSelectFolders: pick.browse === 'folder',
        canSelectFiles: pick.browse === 'file',
        filters: pick.browse === 'file' ? { Safetensors: ['safetensors'] } : undefined,
        defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri,
      });
      chosen = uris?.[0]?.fsPath;
    }
    if (chosen !== undefined) this.remember(key, chosen);
    return chosen;
  }

  /** Several adapter folders (an UNMERGE dictionary); the last selection is preselected. */
  async adapters(key: string, title: string): Promise<string[] | undefined> {
    const lastSet = new Set((this.last(key) ?? '').split('\n').filter((s) => s !== ''));
    const items: PathItem[] = this.candidates(['adapter']).map((c) => ({
      label: path.basename(c.path),
      description: vscode.workspace.asRelativePath(c.path),
      path: c.path,
      picked: lastSet.has(c.path),
    }));
    if (items.length === 0) {
      const uris = await vscode.window.showOpenDialog({ title, canSelectFolders: true, canSelectMany: true });
      const paths = uris?.map((u) => u.fsPath);
      if (paths?.length) this.remember(key, paths.join('\n'));
      return paths?.length ? paths : undefined;
    }
    const picks = await vscode.window.showQuickPick(items, { title, canPickMany: true, ignoreFocusOut: true });
    if (!picks || picks.length === 0) return undefined;
    const paths = picks.map((p) => p.path as string);
    this.remember(key, paths.join('\n'));
    return paths;
  }

  /** One of fixed choices, the setting's default (or the last choice) first. */
  async choice<T extends string>(key: string, title: string, choices: Array<{ value: T; detail?: string }>, fallback: T): Promise<T | undefined> {
    const last = this.last(key);
    const first = last ?? fallback;
    const items = choices.map((c) => ({ label: c.value, detail: c.detail, description: c.value === first ? (last !== undefined ? 'last used' : 'default') : undefined }));
    items.sort((a, b) => Number(b.label === first) - Number(a.label === first));
    const pick = await vscode.window.showQuickPick(items, { title, placeHolder: title, ignoreFocusOut: true });
    if (pick) this.remember(key, pick.label);
    return choices.find((c) => c.value === pick?.label)?.value;
  }

  async number(key: string, title: string, fallback: number, min = 1): Promise<number | undefined> {
    const v = await vscode.window.showInputBox({
      title,
      value: this.last(key) ?? String(fallback),
      ignoreFocusOut: true,
      validateInput: (s) => (Number.isInteger(Number(s)) && Number(s) >= min ? undefined : `a whole number ≥ ${min}`),
    });
    if (v === undefined) return undefined;
    this.remember(key, v);
    return Number(v);
  }

  async text(key: string, title: string, fallback: string, validate?: (s: string) => string | undefined): Promise<string | undefined> {
    const v = await vscode.window.showInputBox({ title, value: this.last(key) ?? fallback, ignoreFocusOut: true, validateInput: validate });
    if (v !== undefined) this.remember(key, v);
    return v;
  }

  /**
   * The output path from the loraLens.outputFolderPattern setting, shown for confirmation. Variables:
   * ${workspaceFolder}, ${name} (the main input's folder name), ${job} (merged-bf16, compare…).
   */
  async output(title: string, name: string, job: string, near: string, ext = ''): Promise<string | undefined> {
    const pattern = vscode.workspace.getConfiguration('loraLens').get<string>('outputFolderPattern', '${workspaceFolder}/lora-lens-out/${name}-${job}');
    const ws = vscode.workspace.getWorkspaceFolder(vscode.Uri.file(near))?.uri.fsPath ?? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? path.dirname(near);
    const proposed = path.resolve(ws, expandPattern(pattern, { workspaceFolder: ws, name, job })) + ext;
    const v = await vscode.window.showInputBox({
      title,
      prompt: fs.existsSync(proposed) ? 'This path exists: an earlier output of this job is replaced when the job succeeds; a folder holding other files is refused.' : 'Written atomically: nothing appears there unless the job succeeds.',
      value: proposed,
      valueSelection: [proposed.length - path.basename(proposed).length, proposed.length - ext.length],
      ignoreFocusOut: true,
      validateInput: (s) => (s.trim() === '' ? 'an output path is needed' : undefined),
    });
    return v === undefined ? undefined : path.resolve(ws, v.trim());
  }
}
