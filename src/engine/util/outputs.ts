/**
 * Outputs are never written over inputs. Checked once, before a command does any work, for the paths
 * it writes (`--out`, `--json FILE`) against every path it reads (positional arguments and the input
 * flags), so that a refused output leaves nothing behind.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { writeFileAtomic } from '../safetensors/writer';
import { chargeWrite } from '../safetensors/faults';
import { fsErrorText } from '../../shared/files';
import { removeDeadPartialFiles } from '../../shared/leftovers';

/** Flags that name files or folders a command reads. */
export const INPUT_FLAGS = ['in', 'base', 'adapter', 'adapters', 'finetuned', 'task-vector', 'mask', 'dictionary', 'truth'] as const;
/** Flags that name what a command writes. */
export const OUTPUT_FLAGS = ['out', 'json'] as const;

/** The real path of `p` where it exists (symlinks resolved), else its absolute path under the real path of its nearest existing ancestor. */
export function realish(p: string): string {
  const abs = path.resolve(p);
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return path.join(fs.realpathSync(cur), ...missing.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      missing.push(path.basename(cur));
      cur = parent;
    }
  }
}

function stat(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined; // ENOENT, or ENOTDIR under a file
  }
}

function isDir(p: string): boolean {
  return stat(p)?.isDirectory() === true;
}

function isFile(p: string): boolean {
  const st = stat(p);
  return st !== undefined && !st.isDirectory();
}

/** Files whose presence makes a folder a checkpoint or adapter folder (where a new file could change how it reads). */
const CHECKPOINT_FILES = /^(config\.json|adapter_config\.json|model_index\.json|.*\.index\.json)$/;

/**
 * The folders whose files an input stands for: a folder itself, and the folder of a file given in place
 * of its folder (`config.json`, a shard) when that folder is a checkpoint or adapter folder.
 */
function inputFolders(input: string): string[] {
  if (isDir(input)) return [input];
  const dir = path.dirname(input);
  if (!isFile(input)) return [];
  try {
    return fs.readdirSync(dir).some((f) => CHECKPOINT_FILES.test(f)) ? [dir] : [];
  } catch {
    return []; // an unreadable folder: the input's own open reports it
  }
}

/**
 * Refuses `output` (`what` names it) when writing it would replace or change an input: it is an input,
 * a folder holding one, an existing file directly inside an input folder (a model's `config.json`, a
 * shard), or a new file there when the output is a file (`kind`) or a `.safetensors` name (a report or
 * a second weights file beside a checkpoint's can change how it reads: `model.safetensors.index.json`).
 * A new folder inside an input folder is allowed.
 */
export function assertNotOverInputs(output: string, what: string, inputs: string[], kind: 'file' | 'folder' | 'either' = 'either'): void {
  const o = realish(output);
  for (const input of inputs) {
    const i = realish(input);
    if (o === i) throw new LensError(output, `${what} would overwrite the input ${input}`);
    if (i.startsWith(o + path.sep)) throw new LensError(output, `${what} would replace a folder holding the input ${input}`);
    for (const folder of inputFolders(i)) {
      if (path.dirname(o) === folder && (isFile(o) || kind === 'file' || o.endsWith('.safetensors'))) {
        throw new LensError(output, `${what} would ${isFile(o) ? 'overwrite' : 'add'} ${path.basename(o)} in the folder of the input ${input}; write it elsewhere`);
      }
    }
  }
}

/**
 * Checks the --json target before any work: not over an input or the command's own --out, not a
 * folder, and under a folder that exists or can be created (no file in the way).
 */
export function assertJsonTarget(json: string, inputs: string[], out: string | undefined): void {
  if (json === '-') return;
  if (json === '') throw new LensError('--json', 'needs a file name (or - for stdout)');
  assertNotOverInputs(json, '--json', inputs, 'file');
  if (out !== undefined && realish(out) === realish(json)) throw new LensError(json, '--json names the same path as --out');
  if (isDir(json)) throw new LensError(json, '--json names a folder; give a file name');
  let parent = path.dirname(path.resolve(json));
  while (stat(parent) === undefined && path.dirname(parent) !== parent) parent = path.dirname(parent);
  if (!isDir(parent)) throw new LensError(json, `cannot write the report: ${parent} is a file, not a folder`);
}

/** What a parsed command line reads, for the checks above. */
export function inputPaths(positional: string[], flags: Record<string, unknown>, spec: Record<string, { kind: string }>): string[] {
  const out: string[] = [...positional];
  const names: string[] = [...INPUT_FLAGS];
  // decompose --target DIR is a model; census/estimate --target a,b are module names.
  if (spec.target?.kind === 'string') names.push('target');
  for (const n of names) {
    const v = flags[n];
    if (typeof v === 'string') out.push(v);
    else if (Array.isArray(v)) out.push(...v.filter((x): x is string => typeof x === 'string'));
  }
  return out.filter((p) => p !== '' && p !== '-');
}

/** Every output check of a parsed command line. */
export function assertSafeOutputs(positional: string[], flags: Record<string, unknown>, spec: Record<string, { kind: string }>): void {
  const inputs = inputPaths(positional, flags, spec);
  const out = typeof flags.out === 'string' ? flags.out : undefined;
  if (out !== undefined) assertNotOverInputs(out, '--out', inputs);
  if (typeof flags.json === 'string') assertJsonTarget(flags.json, inputs, out);
}

/**
 * Writes a report file (`--json FILE`): a new path or a regular file is replaced atomically (through a
 * symlink to a file, the file), a character device or a pipe (`/dev/stdout`, `>(jq .)`) is written in
 * place (a pipe only when a reader is there, so nothing blocks), anything else is refused. A failure
 * (a full disk included: the data is synced before the rename) is bad input naming the file.
 */
export function writeReportFile(target: string, text: string): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new LensError(target, `cannot write the report: ${fsErrorText(e)}`);
  }
  try {
    if (st === undefined || st.isFile()) {
      const real = realish(target);
      fs.mkdirSync(path.dirname(real), { recursive: true });
      // The temporary files of runs killed while writing this report go first.
      removeDeadPartialFiles(real);
      writeFileAtomic(real, text);
    } else if (st.isCharacterDevice() || st.isFIFO()) {
      writeInPlace(target, text, st.isFIFO());
    } else {
      throw new LensError(target, `cannot write the report: it ${st.isDirectory() ? 'is a folder' : 'is not a regular file'}; give a file name`);
    }
  } catch (e) {
    if (e instanceof LensError) throw e;
    throw new LensError(target, `cannot write the report: ${fsErrorText(e)}`);
  }
}

function writeInPlace(target: string, text: string, pipe: boolean): void {
  let fd: number;
  if (pipe) {
    // Non-blocking open fails (ENXIO) when no one reads; with a reader there, the blocking open returns at once.
    const probe = fs.openSync(target, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    try {
      fd = fs.openSync(target, fs.constants.O_WRONLY);
    } finally {
      fs.closeSync(probe);
    }
  } else {
    fd = fs.openSync(target, fs.constants.O_WRONLY);
  }
  try {
    const bytes = Buffer.from(text, 'utf8');
    chargeWrite(bytes.length);
    for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, bytes.length - done);
  } finally {
    fs.closeSync(fd);
  }
}
