/**
 * A merged model written back in its base's own layout and file names: a Hugging Face folder
 * (`model.safetensors` or shards), a diffusers pipeline folder (each component in its subfolder under its
 * own file stem, `model_index.json` and every config copied), or a single-file checkpoint (same file name).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Checkpoint } from '../checkpoint/checkpoint';
import { readJson } from '../checkpoint/json';
import { DiffusersComponent } from '../checkpoint/diffusers';
import { LensError } from '../errors';
import { CliDtype, TORCH_DTYPE } from '../../shared/safetensors/dtypes';
import { ShardedWriter, TensorSpec, writeFileAtomic } from '../safetensors/writer';

export interface ModelWriter {
  /** Output files, relative to the output folder. */
  readonly fileNames: string[];
  writePartAsync(name: string, bytes: Uint8Array): Promise<void>;
  finishAsync(): Promise<void>;
  abortAsync(): Promise<void>;
}

/** The component a tensor of a diffusers checkpoint belongs to, and its name inside that component. */
function componentOf(c: Checkpoint, name: string): { component: DiffusersComponent; local: string } {
  for (const component of c.components ?? []) {
    if (name.startsWith(`${component.name}.`)) return { component, local: name.slice(component.name.length + 1) };
  }
  throw new LensError(c.path, 'tensor belongs to no component of the diffusers folder', name);
}

/** One ShardedWriter per output file group, each tensor routed to its group under its local name. */
class RoutedWriter implements ModelWriter {
  constructor(
    private readonly writers: Array<{ sub: string; writer: ShardedWriter }>,
    private readonly route: (name: string) => { index: number; local: string },
  ) {}

  get fileNames(): string[] {
    return this.writers.flatMap((w) => w.writer.fileNames.map((f) => (w.sub === '' ? f : `${w.sub}/${f}`)));
  }

  writePartAsync(name: string, bytes: Uint8Array): Promise<void> {
    const r = this.route(name);
    return this.writers[r.index].writer.writePartAsync(r.local, bytes);
  }

  async finishAsync(): Promise<void> {
    for (const w of this.writers) await w.writer.finishAsync();
  }

  async abortAsync(): Promise<void> {
    for (const w of this.writers) await w.writer.abortAsync();
  }
}

/** The writer of a merged model of `base` into the folder `dir`, tensors in `specs` order. */
export function modelWriter(base: Checkpoint, dir: string, specs: TensorSpec[], shardSize: number): ModelWriter {
  if (base.components) {
    const comps = base.components;
    const groups = comps.map(() => [] as TensorSpec[]);
    const route = (name: string): { index: number; local: string } => {
      const { component, local } = componentOf(base, name);
      return { index: comps.indexOf(component), local };
    };
    for (const s of specs) {
      const r = route(s.name);
      groups[r.index].push({ ...s, name: r.local });
    }
    const writers = comps.map((c, i) => {
      fs.mkdirSync(path.join(dir, c.name), { recursive: true });
      return { sub: c.name, writer: new ShardedWriter(path.join(dir, c.name), groups[i], shardSize, c.stem) };
    });
    return new RoutedWriter(writers, route);
  }
  // A single-file checkpoint (`v1-5-pruned-emaonly.safetensors`) stays one file of the same name.
  const single = base.path === base.files[0] && base.kind !== 'adapter';
  const stem = single ? path.basename(base.path).replace(/\.safetensors$/, '') : 'model';
  return new RoutedWriter([{ sub: '', writer: new ShardedWriter(dir, specs, single ? Infinity : shardSize, stem) }], (name) => ({ index: 0, local: name }));
}

/** Files of a model folder that describe it rather than hold weights: configs, tokenizer, chat template. */
const MODEL_FILE = /\.(json|txt|model|tiktoken|jinja)$/;
const WEIGHT_INDEX = /\.(safetensors|bin|pt|pth)\.index(\.[^.]+)?\.json$/;

/** config.json with `torch_dtype` (and transformers' newer `dtype`) set to the merged dtype; other files as they are. */
function copyDescriptive(from: string, to: string, dtype: CliDtype, setDtype: (config: Record<string, unknown>) => boolean): void {
  for (const name of fs.readdirSync(from)) {
    const src = path.join(from, name);
    // stat, not the entry type: a Hugging Face cache snapshot holds its files as symlinks.
    if (!MODEL_FILE.test(name) || WEIGHT_INDEX.test(name) || name.startsWith('.') || !fs.statSync(src).isFile()) continue;
    if (name === 'config.json') {
      const config = readJson(src);
      if (setDtype(config)) {
        config.torch_dtype = TORCH_DTYPE[dtype];
        // transformers >= 4.56 writes `dtype` and reads it first.
        if ('dtype' in config) config.dtype = TORCH_DTYPE[dtype];
      }
      writeFileAtomic(path.join(to, name), JSON.stringify(config, null, 2) + '\n');
    } else fs.copyFileSync(src, path.join(to, name));
  }
}

/**
 * Copies what describes the base beside the merged weights: config.json (torch_dtype set) and tokenizer
 * files of a model folder; for a diffusers folder, model_index.json and every subfolder's configs, and
 * whole the subfolders whose weights were not read (a pickle-only safety checker).
 */
export function copyModelFiles(base: Checkpoint, to: string, dtype: CliDtype): string[] {
  // A lone checkpoint file has no configs of its own, unless it is a model folder's model.safetensors.
  if (base.path === base.files[0] && path.basename(base.path) !== 'model.safetensors') return [];
  if (!base.components) {
    copyDescriptive(base.dir, to, dtype, () => true);
    return [];
  }
  const copiedWhole: string[] = [];
  copyDescriptive(base.dir, to, dtype, () => false);
  const merged = new Set(base.components.map((c) => c.name));
  for (const name of fs.readdirSync(base.dir)) {
    const from = path.join(base.dir, name);
    if (name.startsWith('.') || !fs.statSync(from).isDirectory()) continue;
    const dest = path.join(to, name);
    fs.mkdirSync(dest, { recursive: true });
    if (merged.has(name)) {
      // Only transformers configs (text encoders) carry a dtype; diffusers model configs do not.
      copyDescriptive(from, dest, dtype, (config) => 'torch_dtype' in config || 'dtype' in config);
    } else {
      fs.cpSync(from, dest, { recursive: true, dereference: true });
      if (fs.readdirSync(from).some((f) => /\.(bin|pt|pth|ckpt|safetensors)$/.test(f))) copiedWhole.push(name);
    }
  }
  return copiedWhole;
}
