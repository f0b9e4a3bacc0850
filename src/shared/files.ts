/**
 * One path-kind check for everything the engine reads: a file must be a regular file. A folder, a FIFO,
 * a device, a socket or a symlink loop is bad input named by its path, never a stack trace, and a FIFO
 * is never opened blocking (an `open` that waits for a writer would hang the job).
 */
import * as fs from 'node:fs';
import { LensError } from './errors';

/** What the user should read for an errno code of the file system. */
export function fsErrorText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file or folder (ENOENT)';
    case 'EISDIR':
      return 'is a folder, not a file (EISDIR)';
    case 'ENOTDIR':
      return 'a part of the path is a file, not a folder (ENOTDIR)';
    case 'ELOOP':
      return 'symbolic link loop (ELOOP)';
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${code})`;
    case 'ENOSPC':
    case 'EDQUOT':
      return `the disk is full (${code})`;
    case 'EFBIG':
      return 'file too large for the file system (EFBIG)';
    case 'EROFS':
      return 'read-only file system (EROFS)';
    case 'EIO':
      return 'input/output error of the disk (EIO)';
    case 'ENAMETOOLONG':
      return 'name too long (ENAMETOOLONG)';
    case 'EMFILE':
    case 'ENFILE':
      return `too many open files (${code})`;
    case 'EEXIST':
      return 'already exists (EEXIST)';
    case 'ENXIO':
      return 'no reader on the other end (ENXIO)';
    default:
      return code ?? (e as Error)?.message ?? String(e);
  }
}

/** An errno error of the file system (it carries a code and the syscall that failed). */
export function isFsError(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' && typeof (e as NodeJS.ErrnoException).syscall === 'string';
}

function kindOf(st: fs.Stats): string | undefined {
  if (st.isFile()) return undefined;
  if (st.isDirectory()) return 'is a folder, not a file';
  if (st.isFIFO()) return 'is a FIFO (named pipe), not a file';
  if (st.isSocket()) return 'is a socket, not a file';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'is a device, not a file';
  return 'is not a regular file';
}

/**
 * Opens `file` for reading as a regular file: non-blocking open (a FIFO returns at once instead of
 * waiting for a writer), then fstat of the open descriptor, so there is no check-then-open race.
 */
export function openRegularFile(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new LensError(file, `cannot open: ${fsErrorText(e)}`);
  }
  const problem = kindOf(fs.fstatSync(fd));
  if (problem !== undefined) {
    fs.closeSync(fd);
    throw new LensError(file, problem);
  }
  return fd;
}

/** The whole of a small regular file (configs, indexes), through openRegularFile. */
export function readRegularFile(file: string): Buffer {
  const fd = openRegularFile(file);
  try {
    return fs.readFileSync(fd);
  } catch (e) {
    throw new LensError(file, `cannot read: ${fsErrorText(e)}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** A path as the user knows it: a job's temporary `.NAME.partial-PID-…` component shown as NAME. */
export function userPath(p: string): string {
  return p.replace(/(^|[\\/])\.([^\\/]+)\.partial-\d+-[a-z0-9]+(?=[\\/]|$)/g, '$1$2');
}

/**
 * Any file-system error that reaches the top of a job (EISDIR, ELOOP, EACCES, ENOSPC…) as bad input
 * naming the path the user gave, instead of an internal error with a stack; other errors unchanged.
 */
export function asInputError(e: unknown): unknown {
  if (e instanceof LensError || !isFsError(e)) return e;
  const p = e.path ?? (e as { dest?: string }).dest;
  return new LensError(p !== undefined ? userPath(p) : `${e.syscall} failed`, fsErrorText(e));
}
