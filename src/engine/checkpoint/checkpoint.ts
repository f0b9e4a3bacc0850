import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { FileHandles } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { ADAPTER_WEIGHTS, CHECKPOINT_MARKERS, loneWeightFiles, MODEL_WEIGHTS, SHARD_INDEXES } from '../../shared/weights/files';
import { readWeightsIndex } from '../../shared/weights/read';
import { AdapterConfig, parseAdapterConfig } from './adapterConfig';
import { DiffusersComponent, findComponents } from './diffusers';
import { readJson } from './json';
import { shardFiles } from './shards';

export type CheckpointKind = 'model' | 'sharded-model' | 'adapter' | 'task-vector' | 'file' | 'diffusers';

/** What a path on disk is: its tensors (headers only, nothing read), configs and the files holding them. */
export interface Checkpoint {
  kind: CheckpointKind;
  /** The path the user gave. */
  path: string;
  /** The folder holding config files (the file's folder for a bare file). */
  dir: string;
  /** Tensors in file order (shard by shard). */
  tensors: TensorInfo[];
  byName: Map<string, TensorInfo>;
  /** config.json of a model folder, when present. */
  config?: Record<string, unknown>;
  /** adapter_config.json of an adapter folder. */
  adapter?: AdapterConfig;
  /** The weight files (safetensors, or PyTorch pickles read in place), in order. */
  files: string[];
  metadata: Record<string, string>;
  handles: FileHandles;
  /** A diffusers pipeline folder's weight components (`unet`, `text_encoder`, …): tensor names carry `component.`. */
  components?: DiffusersComponent[];
}

export const TASK_VECTOR_KIND = 'lora-lens/task-vector';

/**
 * Opens a model folder (single or sharded), a PEFT adapter folder, or a single weights file; each in
 * safetensors or, read-only, as a PyTorch pickle (`pytorch_model.bin`, shards with
 * `pytorch_model.bin.index.json`, `adapter_model.bin`, a `.bin` / `.pt` / `.pth` file).
 */
export function openCheckpoint(p: string): Checkpoint {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new LensError(p, 'no such file or folder');
  }
  if (st.isFile()) {
    if (path.basename(p) === 'config.json' || path.basename(p) === 'adapter_config.json') return openCheckpoint(path.dirname(p));
    return fromFiles(p, path.dirname(p), [p]);
  }
  const has = (f: string): boolean => fs.existsSync(path.join(p, f));
  if (has('model_index.json')) return openDiffusers(p);
  if (has('adapter_config.json')) {
    const adapter = parseAdapterConfig(path.join(p, 'adapter_config.json'));
    const names = adapterWeightNames(adapter);
    const weights = names.find(has);
    if (weights === undefined) throw new LensError(p, `adapter folder has no ${names.join(' or ')}`);
    return { ...fromFiles(p, p, [path.join(p, weights)]), kind: 'adapter', adapter };
  }
  const config = has('config.json') ? readJson(path.join(p, 'config.json')) : undefined;
  const index = SHARD_INDEXES.find(has);
  if (index !== undefined) {
    const files = shardFiles(p, path.join(p, index));
    return { ...fromFiles(p, p, files.files, files.weightMap, '', index), kind: 'sharded-model', config };
  }
  const single = MODEL_WEIGHTS.find(has);
  if (single !== undefined) return { ...fromFiles(p, p, [path.join(p, single)]), kind: 'model', config };
  // A diffusers model folder (unet/, vae/, transformer/ alone): diffusion_pytorch_model.safetensors, sharded or not.
  if (has('diffusion_pytorch_model.safetensors.index.json')) {
    const files = shardFiles(p, path.join(p, 'diffusion_pytorch_model.safetensors.index.json'));
    return { ...fromFiles(p, p, files.files, files.weightMap, '', 'diffusion_pytorch_model.safetensors.index.json'), kind: 'sharded-model', config };
  }
  const singles = loneWeightFiles(fs.readdirSync(p));
  if (singles.length === 1) return { ...fromFiles(p, p, [path.join(p, singles[0])]), config };
  throw new LensError(p, `not a model or adapter folder: no ${[...MODEL_WEIGHTS, ...SHARD_INDEXES].join(', ')} or adapter_config.json`);
}

/** The files that can hold an adapter's weights, by its config's format: PEFT's safetensors or pickle, mlx-lm's own file. */
function adapterWeightNames(adapter: AdapterConfig): string[] {
  return adapter.weightsFile === 'adapter_model.safetensors' ? ADAPTER_WEIGHTS : [adapter.weightsFile];
}

/** The weights file of an adapter folder (by what its adapter_config.json says it is), or undefined when it has none. */
export function adapterWeights(dir: string): string | undefined {
  const f = adapterWeightNames(parseAdapterConfig(path.join(dir, 'adapter_config.json'))).find((n) => fs.existsSync(path.join(dir, n)));
  return f === undefined ? undefined : path.join(dir, f);
}

/** Whether a folder holds model or adapter weights in any form openCheckpoint reads (not only a config). */
export function folderHoldsWeights(dir: string): boolean {
  const names = fs.readdirSync(dir);
  return names.some((f) => CHECKPOINT_MARKERS.includes(f) && f !== 'adapter_config.json') || loneWeightFiles(names).length > 0;
}

/** The checkpoint of weight `files`; `prefix` goes before every tensor name (a diffusers component's `unet.`). */
function fromFiles(p: string, dir: string, files: string[], weightMap?: Map<string, string>, prefix = '', indexName = 'the index'): Checkpoint {
  const tensors: TensorInfo[] = [];
  const byName = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const f of files) {
    const h = readWeightsIndex(f);
    if (files.length === 1) metadata = h.metadata;
    const named = prefix === '' ? h.tensors : h.tensors.map((t) => ({ ...t, name: prefix + t.name }));
    for (const t of named) {
      const prev = byName.get(t.name);
      if (prev) throw new LensError(f, `tensor also present in ${path.basename(prev.file)}`, t.name);
      if (weightMap && weightMap.get(t.name.slice(prefix.length)) !== f) {
        throw new LensError(f, `tensor is not listed for this shard in ${indexName}`, t.name);
      }
      byName.set(t.name, t);
    }
    // A loop, not push(...): a header may hold more tensors than a call takes arguments.
    for (const t of [...named].sort((a, b) => a.offset - b.offset)) tensors.push(t);
  }
  if (weightMap) {
    for (const [name, f] of weightMap) {
      if (!byName.has(prefix + name)) throw new LensError(f, `tensor listed in ${indexName} is missing from its shard`, name);
    }
  }
  const kind: CheckpointKind = metadata.lora_lens === TASK_VECTOR_KIND ? 'task-vector' : 'file';
  return { kind, path: p, dir, tensors, byName, files, metadata, handles: new FileHandles() };
}

/** A diffusers pipeline folder as one checkpoint: each component's tensors under `component.`. */
function openDiffusers(p: string): Checkpoint {
  const components = findComponents(p);
  const tensors: TensorInfo[] = [];
  const byName = new Map<string, TensorInfo>();
  for (const c of components) {
    const part = fromFiles(c.dir, c.dir, c.files, c.weightMap, `${c.name}.`);
    for (const t of part.tensors) byName.set(t.name, t);
    for (const t of part.tensors) tensors.push(t);
  }
  const files = components.flatMap((c) => c.files);
  return { kind: 'diffusers', path: p, dir: p, tensors, byName, files, metadata: {}, handles: new FileHandles(), components };
}

/** Total bytes of tensor data. */
export function dataBytes(c: Checkpoint): number {
  return c.tensors.reduce((a, t) => a + t.byteLength, 0);
}

export function closeCheckpoint(c: Checkpoint): void {
  c.handles.close();
}
