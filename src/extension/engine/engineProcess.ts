/**
 * The engine child process as seen from the extension: forks dist/engine-host.js on the first job (and
 * again after a crash), sends run / cancel requests and routes the answers to each job by `inReplyTo`.
 * Plain Node, no `vscode` import, so unit tests drive it against the real engine.
 */
import { ChildProcess, fork } from 'node:child_process';
import * as path from 'node:path';
import { JobRequest } from '../../shared/jobs/jobs';
import { argvOf } from '../../shared/jobs/request';
import { ErrorKind, FromEngine, isFromEngine, ProgressInfo, ToEngine } from '../../shared/protocol';
import { escapeControl } from '../../shared/errors';
import { removeLeftoversOf } from '../../shared/leftovers';

/** After a cancel, how long the engine gets to stop and clean up before it is killed. */
const CANCEL_GRACE_MS = 10_000;

export interface JobOptions {
  onProgress?(p: ProgressInfo): void;
  onLog?(level: 'info' | 'warn', message: string): void;
  /** Output paths of the job: partial files the engine leaves there if it dies are removed. */
  outputs?: string[];
}

/**
 * The engine's answer. The report arrives as data, like a report file: whoever reads a field reads it
 * with its job's reader (shared/jobs/reports), the panels included.
 */
export interface JobResult {
  report: unknown;
  text?: string;
}

/** A job that did not produce a report: bad input, cancelled, an engine bug, or the engine died. */
export class JobError extends Error {
  constructor(
    readonly kind: ErrorKind | 'crashed',
    message: string,
  ) {
    super(message);
    this.name = 'JobError';
  }
}

export interface Job {
  readonly id: number;
  readonly done: Promise<JobResult>;
  cancel(): void;
}

interface Pending {
  opts: JobOptions;
  resolve(r: JobResult): void;
  reject(e: JobError): void;
  killTimer?: NodeJS.Timeout;
  cancelled: boolean;
}

export class EngineProcess {
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly hostScript: string,
    private readonly log: (line: string) => void,
  ) {}

  get running(): boolean {
    return this.child !== undefined;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  run(request: JobRequest, opts: JobOptions = {}): Job {
    const id = this.nextId++;
    const child = this.ensureChild();
    let pending!: Pending;
    const done = new Promise<JobResult>((resolve, reject) => {
      pending = { opts, resolve, reject, cancelled: false };
    });
    this.pending.set(id, pending);
    this.log(`[job ${id}] lora-lens ${argvOf(request).map(quote).join(' ')}`);
    this.send(child, { type: 'run', messageId: id, request });
    const cancel = (): void => {
      if (!this.pending.has(id) || pending.cancelled) return;
      pending.cancelled = true;
      this.log(`[job ${id}] cancel requested`);
      this.send(child, { type: 'cancel', inReplyTo: id });
      pending.killTimer = setTimeout(() => {
        this.log(`[job ${id}] the engine did not stop within ${CANCEL_GRACE_MS} ms; killing it`);
        child.kill('SIGKILL');
      }, CANCEL_GRACE_MS);
    };
    return { id, done, cancel };
  }

  dispose(): void {
    const child = this.child;
    this.child = undefined;
    if (child) {
      child.removeAllListeners('exit');
      child.kill();
    }
    this.failAll(child, 'cancelled', 'the extension is shutting down');
  }

  private ensureChild(): ChildProcess {
    if (this.child) return this.child;
    // ELECTRON_RUN_AS_NODE makes the desktop app's binary (process.execPath) behave as plain Node;
    // execArgv [] keeps the extension host's debug flags away from the child.
    const child = fork(this.hostScript, [], {
      execPath: process.execPath,
      execArgv: [],
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'json',
    });
    this.child = child;
    this.log(`engine started (pid ${child.pid})`);
    child.stdout?.on('data', (b: Buffer) => this.log(escapeControl(b.toString().trimEnd())));
    child.stderr?.on('data', (b: Buffer) => this.log(escapeControl(b.toString().trimEnd())));
    child.on('message', (m: unknown) => this.receive(m));
    child.on('error', (e) => this.log(`engine process error: ${e.message}`));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      this.log(`engine stopped (${how})`);
      // Jobs in flight fail; the next job forks a fresh engine.
      this.failAll(child, 'crashed', `the LoRA Lens engine stopped unexpectedly (${how})`);
    });
    return child;
  }

  private send(child: ChildProcess, m: ToEngine): void {
    if (child.connected) child.send(m);
  }

  private receive(m: unknown): void {
    if (!isFromEngine(m)) {
      this.log(`ignored a malformed message from the engine: ${JSON.stringify(m)?.slice(0, 200)}`);
      return;
    }
    if (m.type === 'ready') return;
    const p = this.pending.get(m.inReplyTo);
    if (!p) return;
    this.handle(m.inReplyTo, p, shown(m));
  }

  private handle(id: number, p: Pending, m: Exclude<FromEngine, { type: 'ready' }>): void {
    switch (m.type) {
      case 'progress':
        p.opts.onProgress?.(m.progress);
        return;
      case 'log':
        this.log(`[job ${id}] ${m.level === 'warn' ? 'warning: ' : ''}${m.message}`);
        p.opts.onLog?.(m.level, m.message);
        return;
      case 'result':
        this.settle(id, p);
        this.log(`[job ${id}] done`);
        p.resolve({ report: m.report, text: m.text });
        return;
      case 'error':
        this.settle(id, p);
        this.log(`[job ${id}] ${m.kind === 'cancelled' ? 'cancelled' : `failed (${m.kind}): ${m.message}`}`);
        p.reject(new JobError(m.kind, m.message));
        return;
    }
  }

  private settle(id: number, p: Pending): void {
    if (p.killTimer) clearTimeout(p.killTimer);
    this.pending.delete(id);
  }

  /** Rejects every job of a dead engine and removes the partial outputs it left (named by its pid). */
  private failAll(child: ChildProcess | undefined, kind: 'crashed' | 'cancelled', message: string): void {
    for (const [id, p] of this.pending) {
      this.settle(id, p);
      if (child?.pid !== undefined) for (const out of p.opts.outputs ?? []) removeLeftoversOf(path.resolve(out), child.pid);
      if (p.cancelled) {
        this.log(`[job ${id}] cancelled`);
        p.reject(new JobError('cancelled', 'cancelled; nothing was written'));
      } else {
        this.log(`[job ${id}] failed (${kind}): ${message}; partial output removed`);
        p.reject(new JobError(kind, message));
      }
    }
  }
}

/**
 * A message with every text the user sees (log, notifications, toasts) safe to show: tensor and file
 * names can hold control characters (`ESC[2J`), shown as escapes as the CLI shows them. Reports stay as
 * they are: they are data, and the panels draw them as text.
 */
function shown(m: Exclude<FromEngine, { type: 'ready' }>): Exclude<FromEngine, { type: 'ready' }> {
  switch (m.type) {
    case 'progress': {
      const progress: ProgressInfo = { ...m.progress, phase: escapeControl(m.progress.phase, false) };
      if (m.progress.tensor !== undefined) progress.tensor = escapeControl(m.progress.tensor, false);
      return { ...m, progress };
    }
    case 'log':
      return { ...m, message: escapeControl(m.message, false) };
    case 'error':
      // An internal error's stack keeps its lines.
      return { ...m, message: escapeControl(m.message, m.kind === 'internal') };
    case 'result':
      return m.text === undefined ? m : { ...m, text: escapeControl(m.text) };
  }
}

function quote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}
