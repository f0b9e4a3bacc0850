/**
 * The one output policy of every job that writes a folder or a file (`--out`).
 *
 * A job deletes or replaces only what it itself wrote:
 * - an output folder is built in a temporary sibling (`.NAME.partial-PID-…`) and moved into place only
 *   when the job succeeds, so a failed or cancelled job leaves nothing behind;
 * - an existing `--out` folder is accepted only when it is empty, or when it carries the marker file
 *   `.lora-lens-output.json` of the SAME job, written by an earlier run, and holds nothing that marker
 *   does not list. Then only the entries that marker lists are replaced (the folder ends up holding
 *   exactly this run's files); anything else is refused (exit 2, one line) before any work and nothing
 *   is touched. Re-running a job into its own output (the extension's default `lora-lens-out/NAME-JOB`)
 *   keeps working; a user's folder is never emptied;
 * - an existing `--out` file is replaced only when the job can tell it wrote it (`ours`);
 * - one writer per output: an exclusive lock file beside it (`.NAME.lock`, created with link(2), which
 *   is atomic) makes a second concurrent job into the same `--out` lose with exit 2; a lock whose owner
 *   died is taken over, and under the lock every leftover `.NAME.partial-*` of a killed run is removed
 *   (no live writer of this output can exist while we hold its lock);
 * - file-system errors of the output (a full disk, EACCES, EIO, a file in the path) are exit 2 naming
 *   the user's `--out`, never an internal `.partial` path.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CancelledError, LensError } from '../errors';
import { tempPathFor } from '../safetensors/writer';
import { chargeWrite } from '../safetensors/faults';
import { fsErrorText, isFsError } from '../../shared/files';
import { assertNotOverInputs, realish } from './outputs';
import { lockPath, pidAlive } from '../../shared/leftovers';

/** The file that says which job wrote an output folder, and which of its entries are that job's. */
export const OUTPUT_MARKER = '.lora-lens-output.json';

interface Marker {
  tool: 'lora-lens';
  job: string;
  entries: string[];
}

/** Syscalls that only an output write makes (they carry no path). */
const WRITE_SYSCALLS = new Set(['write', 'fsync', 'fdatasync', 'ftruncate']);

function lstat(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

function readMarker(dir: string): Marker | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, OUTPUT_MARKER), 'utf8')) as Marker;
    if (m?.tool === 'lora-lens' && typeof m.job === 'string' && Array.isArray(m.entries) && m.entries.every((e) => typeof e === 'string')) return m;
  } catch {
    // missing or not ours
  }
  return undefined;
}

function writeMarker(dir: string, job: string, entries: string[]): void {
  const text = JSON.stringify({ tool: 'lora-lens', job, entries: [...entries].sort() } satisfies Marker, null, 2) + '\n';
  const file = path.join(dir, OUTPUT_MARKER);
  const tmp = tempPathFor(file);
  chargeWrite(text.length);
  fs.writeFileSync(tmp, text, { flag: 'wx' });
  fs.renameSync(tmp, file);
}

/**
 * What is at an output folder's path: nothing, an empty folder, or an earlier output of `job` (its
 * marker's entries). Anything else is refused here, naming `shown` (the path as the user gave it).
 */
function existingFolder(dir: string, job: string, shown: string): { kind: 'new' } | { kind: 'empty' } | { kind: 'ours'; entries: string[] } {
  const st = lstat(dir);
  if (st === undefined) return { kind: 'new' };
  if (!st.isDirectory()) throw new LensError(shown, 'exists and is not a folder; give a new or empty folder as --out');
  const entries = fs.readdirSync(dir);
  if (entries.length === 0) return { kind: 'empty' };
  const marker = readMarker(dir);
  const refuse = (why: string): never => {
    throw new LensError(shown, `${why}; LoRA Lens writes only into a new or empty folder, or over its own earlier output of the same job (nothing was touched)`);
  };
  if (marker === undefined) refuse(`is a folder holding other files (${entries.length} entries, e.g. ${JSON.stringify(entries.sort()[0])})`);
  if (marker!.job !== job) refuse(`holds the output of 'lora-lens ${marker!.job}', not of '${job}'`);
  const listed = new Set(marker!.entries);
  const foreign = entries.filter((e) => e !== OUTPUT_MARKER && !listed.has(e));
  if (foreign.length > 0) refuse(`holds ${JSON.stringify(foreign.sort()[0])}, which the earlier '${job}' run did not write`);
  return { kind: 'ours', entries: marker!.entries.filter((e) => entries.includes(e)) };
}

/** An exclusive lock on one output path, beside it. */
class OutputLock {
  private readonly file: string;

  constructor(target: string, shown: string) {
    this.file = lockPath(target);
    const me = JSON.stringify({ pid: process.pid, host: os.hostname() });
    const busy = (owner: string): LensError => new LensError(shown, `another LoRA Lens job (${owner}) is writing this output now; wait for it to finish or give another --out`);
    for (let attempt = 0; attempt < 5; attempt++) {
      if (this.tryCreate(me)) return;
      // Held: by a live job (we lose), or by a killed one (its lock is taken over atomically by rename:
      // of several runs that find the same stale lock, one gets it).
      const owner = this.owner(this.file);
      if (owner === undefined) continue; // released meanwhile
      if (owner.alive) throw busy(owner.label);
      const aside = `${this.file}.stale-${process.pid}`;
      try {
        fs.renameSync(this.file, aside);
      } catch {
        continue; // another run took it over first
      }
      const taken = this.owner(aside);
      if (taken?.alive) {
        // A fresh lock of a live job was taken between our look and the rename: give it back.
        try {
          fs.linkSync(aside, this.file);
        } catch {
          // a third run holds it now
        }
        fs.rmSync(aside, { force: true });
        throw busy(taken.label);
      }
      fs.rmSync(aside, { force: true });
    }
    throw busy('unknown');
  }

  /** Creates the lock with its content in one step (link of a complete file), so it is never seen empty. */
  private tryCreate(content: string): boolean {
    const tmp = tempPathFor(this.file);
    fs.writeFileSync(tmp, content, { flag: 'wx' });
    try {
      fs.linkSync(tmp, this.file);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      // A file system without hard links: exclusive create instead.
      try {
        fs.writeFileSync(this.file, content, { flag: 'wx' });
        return true;
      } catch (e2) {
        if ((e2 as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw e2;
      }
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  private owner(file: string): { alive: boolean; label: string } | undefined {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const { pid, host } = JSON.parse(text) as { pid: number; host: string };
      // A lock from another machine (a shared disk) cannot be checked: it counts as held.
      const alive = host !== os.hostname() || (Number.isSafeInteger(pid) && pid > 0 && pidAlive(pid));
      return { alive, label: `pid ${pid}${host !== os.hostname() ? ` on ${host}` : ''}` };
    } catch {
      return { alive: false, label: 'unreadable lock' };
    }
  }

  release(): void {
    fs.rmSync(this.file, { force: true });
  }
}

/** Removes the `.NAME.partial-*` leftovers of `target` (only while holding its lock). */
function removeLeftovers(target: string): void {
  const prefix = `.${path.basename(target)}.partial-`;
  const dir = path.dirname(target);
  for (const e of fs.readdirSync(dir)) if (e.startsWith(prefix)) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
}

/**
 * The claim of one output path: its missing parent folders made, its lock held, its leftovers removed.
 * `fail` turns a file-system error of the output into bad input naming the user's path.
 */
class OutputClaim {
  readonly target: string;
  private readonly madeParents: string[] = [];
  private readonly lock: OutputLock;

  constructor(
    readonly shown: string,
    inputs: string[],
    kind: 'file' | 'folder',
  ) {
    assertNotOverInputs(shown, 'the output', inputs, kind);
    this.target = realish(shown);
    try {
      const parent = path.dirname(this.target);
      for (let p = parent; lstat(p) === undefined; p = path.dirname(p)) this.madeParents.push(p);
      if (this.madeParents.length > 0) fs.mkdirSync(parent, { recursive: true });
      if (!fs.statSync(parent).isDirectory()) throw new LensError(shown, `cannot write: ${parent} is not a folder`);
      this.lock = new OutputLock(this.target, shown);
    } catch (e) {
      this.removeParents();
      throw this.fail(e);
    }
    try {
      removeLeftovers(this.target);
    } catch (e) {
      this.release();
      throw this.fail(e);
    }
  }

  /** `e` as bad input naming the output when it is a file-system error of writing it, else `e`. */
  fail(e: unknown): unknown {
    if (e instanceof LensError || e instanceof CancelledError || !isFsError(e)) return e;
    const p = e.path === undefined ? undefined : path.resolve(e.path);
    const parent = path.dirname(this.target);
    const ours =
      WRITE_SYSCALLS.has(e.syscall!) ||
      (p !== undefined &&
        (          p === this.target ||
          p.startsWith(this.target + path.sep) ||
          this.madeParents.includes(p) ||
          (path.dirname(p) === parent && path.basename(p).startsWith(`.${path.basename(this.target)}.`)) ||
          p.includes(`${path.sep}.${path.basename(this.target)}.partial-`)));
    return ours ? new LensError(this.shown, `cannot write the output: ${fsErrorText(e)}`) : e;
  }

  private removeParents(): void {
    // Innermost first; a folder something else has written into meanwhile stays.
    for (const p of this.madeParents) {
      try {
        fs.rmdirSync(p);
      } catch {
        break;
      }
    }
  }

  /** Ends the claim; `failed` removes the parent folders it made. */
  release(failed = false): void {
    if (failed) {
      // Whatever a failed writer left of this output goes (we still hold the lock).
      try {
        removeLeftovers(this.target);
      } catch {
        // the next run removes them
      }
    }
    this.lock?.release();
    if (failed) this.removeParents();
  }
}

/**
 * An output folder of `job` built in a temporary sibling (`tmp`) and moved into place by `commit()`
 * under the policy above.
 */
export class OutputDir {
  readonly tmp: string;
  private done = false;
  private readonly claim: OutputClaim;

  constructor(
    readonly job: string,
    readonly target: string,
    inputs: string[],
  ) {
    this.claim = new OutputClaim(target, inputs, 'folder');
    try {
      existingFolder(this.claim.target, job, target);
      this.tmp = tempPathFor(this.claim.target);
      fs.mkdirSync(this.tmp);
    } catch (e) {
      this.claim.release(true);
      throw this.claim.fail(e);
    }
  }

  file(name: string): string {
    return path.join(this.tmp, name);
  }

  commit(): void {
    if (this.done) return;
    const dir = this.claim.target;
    const entries = fs.readdirSync(this.tmp).filter((e) => e !== OUTPUT_MARKER);
    // Checked again: the user may have put something there while the job ran.
    const existing = existingFolder(dir, this.job, this.target);
    if (existing.kind === 'new') {
      writeMarker(this.tmp, this.job, entries);
      fs.renameSync(this.tmp, dir);
    } else {
      const old = existing.kind === 'ours' ? existing.entries : [];
      // The marker lists old and new entries while they are swapped, so an interrupted swap stays ours.
      writeMarker(dir, this.job, [...new Set([...old, ...entries])]);
      const trash = path.join(this.tmp, `.${OUTPUT_MARKER}.replaced`);
      fs.mkdirSync(trash);
      for (const e of old) fs.renameSync(path.join(dir, e), path.join(trash, e));
      for (const e of entries) fs.renameSync(path.join(this.tmp, e), path.join(dir, e));
      writeMarker(dir, this.job, entries);
      fs.rmSync(this.tmp, { recursive: true, force: true });
    }
    this.done = true;
    this.claim.release();
  }

  abort(): void {
    if (this.done) return;
    fs.rmSync(this.tmp, { recursive: true, force: true });
    this.done = true;
    this.claim.release(true);
  }

  /** `e` as bad input naming the output when it is a file-system error of writing it. */
  fail(e: unknown): unknown {
    return this.claim.fail(e);
  }
}

/** Runs `work` in an OutputDir of `job`, committing on success and removing everything on failure. */
export async function withOutputDir<T>(job: string, target: string, inputs: string[], work: (out: OutputDir) => Promise<T>): Promise<T> {
  const out = new OutputDir(job, target, inputs);
  try {
    const result = await work(out);
    out.commit();
    return result;
  } catch (e) {
    const err = out.fail(e);
    out.abort();
    throw err;
  }
}

/**
 * Runs `work` writing the single file `target` (the writer writes a temporary sibling and renames it
 * into place itself). An existing `target` is replaced only when it is a regular file `ours` says the
 * same job wrote earlier; anything else there is refused before any work.
 */
export async function withOutputFile<T>(target: string, inputs: string[], ours: (file: string) => boolean, what: string, work: () => Promise<T>): Promise<T> {
  const claim = new OutputClaim(target, inputs, 'file');
  let ok = false;
  try {
    const st = lstat(claim.target);
    if (st !== undefined && !(st.isFile() && ours(claim.target))) {
      throw new LensError(target, `exists and is not ${what} written by LoRA Lens; it is left alone (remove it or give a new --out)`);
    }
    const result = await work();
    ok = true;
    return result;
  } catch (e) {
    throw claim.fail(e);
  } finally {
    claim.release(!ok);
  }
}
