import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { expandPattern } from './workspace/folders';
import { WorkspaceScanner } from './workspace/scanner';
import { snapshotRepoId } from '../shared/weights/hfCache';

export type FolderKind = 'adapter' | 'model';

interface PathItem extends vscode.QuickPickItem {
  path?: string;
  browse?: 'folder' | 'file';
}

export interface Choice {
  value: string;
  label?: string;
  detail?: string;
  description?: string;
}

/** The user pressed a question's Back button: `Pickers.run` asks the command's previous question again. */
export class BackRequested extends Error {
  constructor() {
    super('back');
  }
}

/**
 * The questions the commands ask: recognised adapter and model folders of the workspace first, the
 * last choice of each question on top (workspaceState), "Browse…" for anything else. Lists of folders
 * wait for the first workspace scan (busy, "Looking for checkpoints…") instead of showing a partial list.
 * A command announces how many questions it asks (`steps`), and each shows "k/n".
 *
 * Back: every question after the first has VS Code's Back button. A command is plain sequential code, so
 * going back runs it again (`run`) with the answers before the previous question replayed silently; the
 * previous question is asked anew, its last answer on top. Only a command's opening questions can be
 * replayed: once `steps` starts a new series after answers (a follow-up after a job ran), Back is not offered.
 */
export class Pickers {
  private step = 0;
  private totalSteps: number | undefined;
  /** Answers given (or replayed) in this run of the command, and those still to replay. */
  private answers: unknown[] = [];
  private replay: unknown[] = [];
  private replayable = true;

  constructor(
    private readonly state: vscode.Memento,
    private readonly scanner: WorkspaceScanner,
  ) {}

  /**
   * Runs a command's questions and work; Back in a question reruns it, replaying the answers before the
   * previous question.
   */
  async run(command: () => Promise<void>): Promise<void> {
    this.answers = [];
    this.replay = [];
    for (;;) {
      this.step = 0;
      this.totalSteps = undefined;
      this.replayable = true;
      try {
        return await command();
      } catch (e) {
        if (!(e instanceof BackRequested)) throw e;
        this.replay = this.answers.slice(0, -1);
        this.answers = [];
      }
    }
  }

  /** The next questions are `total` steps of one command (shown as "1/4", "2/4"…). */
  steps(total: number): void {
    this.step = 0;
    this.totalSteps = total;
    if (this.answers.length > 0) this.replayable = false;
  }

  /** An answer: replayed after a Back, else asked (and kept for a later Back). */
  private async answer<T>(ask: () => Promise<T | undefined>): Promise<T | undefined> {
    if (this.replay.length > 0) {
      this.nextStep();
      const v = this.replay.shift() as T;
      this.answers.push(v);
      return v;
    }
    const v = await ask();
    if (v !== undefined) this.answers.push(v);
    return v;
  }

  /** Offers Back on `input` when there is a question to go back to; pressing it rejects with BackRequested. */
  private backButton(input: vscode.QuickPick<vscode.QuickPickItem> | vscode.InputBox, back: () => void): void {
    if (!this.replayable || this.answers.length === 0) return;
    input.buttons = [vscode.QuickInputButtons.Back];
    input.onDidTriggerButton((b) => b === vscode.QuickInputButtons.Back && back());
  }

  /** A question the command skips (the Explorer gave its answer): the next one still shows its own number. */
  skip(): void {
    this.step++;
  }

  private nextStep(): { step?: number; totalSteps?: number } {
    if (this.totalSteps === undefined) return {};
    this.step++;
    return this.step <= this.totalSteps ? { step: this.step, totalSteps: this.totalSteps } : {};
  }

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
   * A quick pick whose items may depend on the workspace scan: shown at once, busy until the scan is done.
   * Resolves to the accepted items (one unless canPickMany), or undefined when dismissed.
   */
  private pickFrom<T extends vscode.QuickPickItem>(
    title: string,
    items: () => T[],
    opts: { canPickMany?: boolean; needsScan?: boolean; placeholder?: string } = {},
  ): Promise<readonly T[] | undefined> {
    const qp = vscode.window.createQuickPick<T>();
    Object.assign(qp, this.nextStep());
    qp.title = title;
    qp.placeholder = opts.placeholder ?? title;
    qp.matchOnDescription = true;
    qp.ignoreFocusOut = true;
    qp.canSelectMany = opts.canPickMany ?? false;
    const fill = (): void => {
      const list = items();
      qp.items = list;
      if (qp.canSelectMany) qp.selectedItems = list.filter((i) => i.picked);
    };
    const waiting = opts.needsScan && !this.scanner.isReady;
    if (waiting) {
      qp.busy = true;
      qp.placeholder = 'Looking for checkpoints in the workspace…';
      void this.scanner.ready.then(() => {
        fill();
        qp.busy = false;
        qp.placeholder = opts.placeholder ?? title;
      });
    }
    fill();
    return new Promise((resolve, reject) => {
      let done = false;
      this.backButton(qp, () => {
        done = true;
        reject(new BackRequested());
        qp.hide();
      });
      qp.onDidAccept(() => {
        const picked = qp.canSelectMany ? qp.selectedItems : qp.activeItems.slice(0, 1);
        if (picked.length === 0 || qp.busy) return;
        done = true;
        resolve(picked);
        qp.hide();
      });
      qp.onDidHide(() => {
        if (!done) resolve(undefined);
        qp.dispose();
      });
      qp.show();
    });
  }

  /**
   * One path: `key` names the question (remembered per question), `kinds` the folders offered,
   * `files` adds a "Browse for a .safetensors file…" entry (a task vector, a single-file checkpoint).
   */
  path(key: string, title: string, kinds: FolderKind[], opts: { files?: boolean; preferred?: string } = {}): Promise<string | undefined> {
    return this.answer(() => this.askPath(key, title, kinds, opts));
  }

  private async askPath(key: string, title: string, kinds: FolderKind[], opts: { files?: boolean; preferred?: string }): Promise<string | undefined> {
    const last = this.last(key);
    const items = (): PathItem[] => {
      const list: PathItem[] = this.candidates(kinds).map((c) => ({
        // A Hugging Face cache snapshot is named by its repository, not by its commit.
        label: snapshotRepoId(c.path) ?? path.basename(c.path),
        description: vscode.workspace.asRelativePath(c.path),
        detail: c.kind === 'adapter' ? 'PEFT adapter' : 'model',
        path: c.path,
      }));
      const first = opts.preferred ?? last;
      if (first !== undefined && fs.existsSync(first)) {
        const i = list.findIndex((it) => it.path === first);
        const top = i >= 0 ? list.splice(i, 1)[0] : { label: snapshotRepoId(first) ?? path.basename(first), description: first, path: first };
        list.unshift({ ...top, detail: [top.detail, first === last ? 'last used' : 'suggested'].filter(Boolean).join(' · ') });
      }
      list.push({ label: '$(folder-opened) Browse for a folder…', browse: 'folder', alwaysShow: true });
      if (opts.files) list.push({ label: '$(file) Browse for a .safetensors file…', browse: 'file', alwaysShow: true });
      return list;
    };
    const pick = (await this.pickFrom(title, items, { needsScan: kinds.length > 0 }))?.[0];
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
  /**
   * The base and the fine-tuned (or merged) model of a two-model job. A model the command was started on
   * (`clicked`, from the Explorer or the tree) may be either side, so the user is asked which; `steps`
   * counts the job's questions without that one.
   */
  async modelPair(steps: number, clicked?: { path: string; name: string }): Promise<{ base: string; finetuned: string } | undefined> {
    let finetuned: string | undefined;
    let base: string | undefined;
    this.steps(clicked ? steps + 1 : steps);
    if (clicked) {
      const role = await this.choice('extractRole', `What is ${clicked.name}?`, [
        { value: 'finetuned', label: 'The fine-tuned (or merged) model', detail: 'then pick its base model' },
        { value: 'base', label: 'The base model', detail: 'then pick the fine-tuned (or merged) model' },
      ], 'finetuned');
      if (!role) return undefined;
      if (role === 'finetuned') finetuned = clicked.path;
      else base = clicked.path;
    }
    if (finetuned) this.skip();
    finetuned ??= await this.path('finetuned', 'Fine-tuned (or merged) model folder', ['model']);
    if (!finetuned) return undefined;
    if (base) this.skip();
    base ??= await this.path('base', 'Base model folder', ['model']);
    return base ? { base, finetuned } : undefined;
  }

  adapters(key: string, title: string): Promise<string[] | undefined> {
    return this.answer(() => this.askAdapters(key, title));
  }

  private async askAdapters(key: string, title: string): Promise<string[] | undefined> {
    await this.scanner.ready;
    const lastSet = new Set((this.last(key) ?? '').split('\n').filter((s) => s !== ''));
    const items = (): PathItem[] =>
      this.candidates(['adapter']).map((c) => ({
        label: path.basename(c.path),
        description: vscode.workspace.asRelativePath(c.path),
        path: c.path,
        picked: lastSet.has(c.path),
      }));
    if (items().length === 0) {
      const uris = await vscode.window.showOpenDialog({ title, canSelectFolders: true, canSelectMany: true });
      const paths = uris?.map((u) => u.fsPath);
      if (paths?.length) this.remember(key, paths.join('\n'));
      return paths?.length ? paths : undefined;
    }
    const picks = await this.pickFrom(title, items, { canPickMany: true });
    if (!picks || picks.length === 0) return undefined;
    const paths = picks.map((p) => p.path as string);
    this.remember(key, paths.join('\n'));
    return paths;
  }

  /** One of fixed choices, the setting's default (or the last choice) first. */
  choice<T extends string>(key: string, title: string, choices: Array<Choice & { value: T }>, fallback: T): Promise<T | undefined> {
    return this.answer(() => this.askChoice(key, title, choices, fallback));
  }

  private async askChoice<T extends string>(key: string, title: string, choices: Array<Choice & { value: T }>, fallback: T): Promise<T | undefined> {
    const last = this.last(key);
    const first = last ?? fallback;
    const items = choices.map((c) => ({
      label: c.label ?? c.value,
      value: c.value,
      detail: c.detail,
      description: [c.description, c.value === first ? (last !== undefined ? 'last used' : 'default') : undefined].filter(Boolean).join(' · ') || undefined,
    }));
    items.sort((a, b) => Number(b.value === first) - Number(a.value === first));
    const pick = (await this.pickFrom(title, () => items))?.[0];
    if (pick) this.remember(key, pick.value);
    return choices.find((c) => c.value === pick?.value)?.value;
  }

  /** Several of fixed choices (`picked` preselected), the last selection preselected instead when there is one. */
  many(key: string, title: string, choices: Array<Choice & { picked?: boolean }>): Promise<string[] | undefined> {
    return this.answer(() => this.askMany(key, title, choices));
  }

  private async askMany(key: string, title: string, choices: Array<Choice & { picked?: boolean }>): Promise<string[] | undefined> {
    const last = this.last(key)?.split(',');
    const lastSet = last ? new Set(last) : undefined;
    const useLast = lastSet !== undefined && choices.some((c) => lastSet.has(c.value));
    const items = choices.map((c) => ({
      label: c.label ?? c.value,
      value: c.value,
      detail: c.detail,
      description: c.description,
      picked: useLast ? lastSet.has(c.value) : c.picked === true,
    }));
    const picks = await this.pickFrom(title, () => items, { canPickMany: true });
    if (!picks || picks.length === 0) return undefined;
    const values = picks.map((p) => p.value);
    this.remember(key, values.join(','));
    return values;
  }

  /** `describe`: a prompt that follows the value (what the typed rank would do), shown while it is valid. */
  private input(opts: {
    title: string;
    value: string;
    prompt?: string;
    valueSelection?: [number, number];
    validate?: (s: string) => string | undefined;
    describe?: (s: string) => string;
  }): Promise<string | undefined> {
    const box = vscode.window.createInputBox();
    Object.assign(box, this.nextStep());
    box.title = opts.title;
    box.value = opts.value;
    box.prompt = opts.prompt;
    box.ignoreFocusOut = true;
    if (opts.valueSelection) box.valueSelection = opts.valueSelection;
    const check = (): void => {
      box.validationMessage = opts.validate?.(box.value);
      if (opts.describe && box.validationMessage === undefined) box.prompt = opts.describe(box.value);
    };
    check();
    return new Promise((resolve, reject) => {
      let done = false;
      this.backButton(box, () => {
        done = true;
        reject(new BackRequested());
        box.hide();
      });
      box.onDidChangeValue(check);
      box.onDidAccept(() => {
        if (opts.validate?.(box.value)) return;
        done = true;
        resolve(box.value);
        box.hide();
      });
      box.onDidHide(() => {
        if (!done) resolve(undefined);
        box.dispose();
      });
      box.show();
    });
  }

  number(key: string, title: string, fallback: number, min = 1, max = Infinity, describe?: (n: number) => string): Promise<number | undefined> {
    return this.answer(() => this.askNumber(key, title, fallback, min, max, describe));
  }

  private async askNumber(
    key: string,
    title: string,
    fallback: number,
    min: number,
    max: number,
    describe?: (n: number) => string,
  ): Promise<number | undefined> {
    const v = await this.input({
      title,
      describe: describe && ((s) => describe(Number(s))),
      value: this.last(key) ?? String(fallback),
      validate: (s) => (Number.isInteger(Number(s)) && Number(s) >= min && Number(s) <= max ? undefined : max < Infinity ? `a whole number from ${min} to ${max}` : `a whole number ≥ ${min}`),
    });
    if (v === undefined) return undefined;
    this.remember(key, v);
    return Number(v);
  }

  /** Free text checked by `validate` (an error message, or undefined when the text will do). */
  text(key: string, title: string, fallback: string, validate: (s: string) => string | undefined, prompt?: string): Promise<string | undefined> {
    return this.answer(() => this.askText(key, title, fallback, validate, prompt));
  }

  private async askText(
    key: string,
    title: string,
    fallback: string,
    validate: (s: string) => string | undefined,
    prompt?: string,
  ): Promise<string | undefined> {
    const last = this.last(key);
    const v = await this.input({ title, prompt, value: last !== undefined && validate(last) === undefined ? last : fallback, validate });
    if (v !== undefined) this.remember(key, v);
    return v;
  }

  /**
   * The output path from the loraLens.outputFolderPattern setting, shown for confirmation. Variables:
   * ${workspaceFolder}, ${name} (the main input's folder name), ${job} (merged-bf16, compare…).
   */
  output(title: string, name: string, job: string, near: string, ext = ''): Promise<string | undefined> {
    return this.answer(() => this.askOutput(title, name, job, near, ext));
  }

  private async askOutput(title: string, name: string, job: string, near: string, ext: string): Promise<string | undefined> {
    const pattern = vscode.workspace.getConfiguration('loraLens').get<string>('outputFolderPattern', '${workspaceFolder}/lora-lens-out/${name}-${job}');
    const ws =
      vscode.workspace.getWorkspaceFolder(vscode.Uri.file(near))?.uri.fsPath ?? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? path.dirname(near);
    const proposed = path.resolve(ws, expandPattern(pattern, { workspaceFolder: ws, name, job })) + ext;
    const v = await this.input({
      title,
      prompt: fs.existsSync(proposed) ? 'This path exists: an earlier output of this job is replaced when the job succeeds; a folder holding other files is refused.' : 'Written atomically: nothing appears there unless the job succeeds.',
      value: proposed,
      valueSelection: [proposed.length - path.basename(proposed).length, proposed.length - ext.length],
      validate: (s) => (s.trim() === '' ? 'an output path is needed' : undefined),
    });
    return v === undefined ? undefined : path.resolve(ws, v.trim());
  }
}
