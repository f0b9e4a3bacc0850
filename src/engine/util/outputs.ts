/**
 * Outputs are never written over inputs. Checked once, before a command does any work, for the paths
 * it writes (`--out`, `--json FILE`) against every path it reads (positional arguments and the input
 * flags), so that a refused output leaves nothing behind.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { writeFileAtomic } from '../safetensors/writer';

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

/**
 * The folders whose files an input stands for: a folder itself, or the folder of a `config.json` /
 * `adapter_config.json` given in place of its folder (other single files stand only for themselves).
 */
function inputFolders(input: string): string[] {
  if (isDir(input)) return [input];
  const b = path.basename(input);
  if (isFile(input) && (b === 'config.json' || b === 'adapter_config.json')) return [path.dirname(input)];
  return [];
}

/**
 * Refuses `output` (`what` names it) when writing it would replace or change an input: it is an input,
 * a folder holding one, an existing file directly inside an input folder (a model's `config.json`, a
 * shard), or a new `.safetensors` file there (a folder with one unnamed weights file is a checkpoint,
 * which a second would break). A new folder, or another new file, inside an input folder is allowed.
 */
export function assertNotOverInputs(output: string, what: string, inputs: string[]): void {
  const o = realish(output);
  for (const input of inputs) {
    const i = realish(input);
    if (o === i) throw new LensError(output, `${what} would overwrite the input ${input}`);
    if (i.startsWith(o + path.sep)) throw new LensError(output, `${what} would replace a folder holding the input ${input}`);
    for (const folder of inputFolders(i)) {
      if (path.dirname(o) === folder && (isFile(o) || o.endsWith('.safetensors'))) {
        throw new LensError(output, `${what} would ${isFile(o) ? 'overwrite' : 'add'} ${path.basename(o)}, a file of the input ${input}`);
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
  assertNotOverInputs(json, '--json', inputs);
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

/** Writes a report file, creating its folder; a failure is an input error naming the file. */
export function writeReportFile(target: string, text: string): void {
  try {
    fs.mkdirSync(path.dirname(path.resolve(target)), { recursive: true });
    writeFileAtomic(target, text);
  } catch (e) {
    throw new LensError(target, `cannot write the report: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
