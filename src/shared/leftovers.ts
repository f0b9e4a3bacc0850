/**
 * The work files a LoRA Lens job keeps beside an output `NAME` while it runs, and their removal once the
 * job that made them is gone (killed, crashed, or stopped by the CLI's supervisor):
 * - `.NAME.partial-PID-XXXXXX`: a temporary file or folder (the engine's `tempPathFor`), renamed into
 *   place when the job succeeds;
 * - `.NAME.lock` (JSON `{pid, host}`): the output's lock; `.NAME.lock.stale-PID`: a dead owner's lock
 *   being taken over.
 * Only names of exactly these forms are touched, and only those of the process named (or of dead ones):
 * a user's file that merely looks alike stays. Used by the engine and by the extension (a dead engine).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** `.NAME.partial-PID-XXXXXX` beside `target`: its PID, or undefined when `entry` is not one. */
export function partialOwner(target: string, entry: string): number | undefined {
  const m = new RegExp(`^\\.${escapeRegExp(path.basename(target))}\\.partial-(\\d{1,10})-[0-9a-z]{1,6}$`).exec(entry);
  return m ? Number(m[1]) : undefined;
}

/** Whether process `pid` exists on this machine (EPERM: it does, under another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function entries(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** The lock file of output `target`. */
export function lockPath(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.lock`);
}

/** The owner a lock file names, or undefined when it is unreadable or not a lock. */
export function lockOwner(file: string): { pid: number; host: string } | undefined {
  try {
    const { pid, host } = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid: unknown; host: unknown };
    return Number.isSafeInteger(pid) && typeof host === 'string' ? { pid: pid as number, host } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Removes what process `pid` (gone now) left of output `target`: its partial files and folders, its lock
 * (only while the lock still names it on this machine: another job may hold it since) with that lock's
 * own partials, and its stale-lock file.
 */
export function removeLeftoversOf(target: string, pid: number): void {
  const dir = path.dirname(target);
  const lock = lockPath(target);
  for (const e of entries(dir)) {
    if (partialOwner(target, e) === pid || partialOwner(lock, e) === pid || e === `${path.basename(lock)}.stale-${pid}`) {
      fs.rmSync(path.join(dir, e), { recursive: true, force: true });
    }
  }
  const owner = lockOwner(lock);
  if (owner?.pid === pid && owner.host === os.hostname()) fs.rmSync(lock, { force: true });
}

/**
 * Removes the partial FILES beside `target` whose process is dead: the temporary report files
 * (`--json`) of killed runs, which no lock covers. Folders, and files of live processes, stay.
 */
export function removeDeadPartialFiles(target: string): void {
  const dir = path.dirname(target);
  for (const e of entries(dir)) {
    const pid = partialOwner(target, e);
    if (pid === undefined || pid === process.pid || pidAlive(pid)) continue;
    const p = path.join(dir, e);
    try {
      if (fs.lstatSync(p).isFile()) fs.rmSync(p, { force: true });
    } catch {
      // gone meanwhile
    }
  }
}
