/**
 * Synthetic Hugging Face model folders: config.json plus model.safetensors (or shards with
 * model.safetensors.index.json) holding every tensor of `modelLayout(config)` with seeded random values,
 * written tensor by tensor in chunks so multi-GB models need only a few MiB of memory.
 *
 * With `sparse`, each file gets a real header and a data region that is a hole (ftruncate): the file
 * has its true size and reads as zeros, costs no disk, and is written in milliseconds. For census and
 * header benches on 12 GB layouts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LayoutTensor, modelLayout } from '../census/architectures';
import { Dtype } from '../../shared/safetensors/dtypes';
import { buildHeader, planShards, tempPathFor, writeFileAtomic } from '../safetensors/writer';
import { nameHash, streamValues, ValueSpec } from './values';

export interface SyntheticModelOptions {
  /** Seed of the values (default 1); each tensor's stream also depends on its name. */
  seed?: number;
  /** Storage dtype (F32, F16, BF16); default the config's torch_dtype. config.json is updated to match. */
  dtype?: Dtype;
  /** Largest shard in bytes; above it the model is sharded with an index (default: one file). */
  shardBytes?: number;
  /** Header-true files whose data region is a hole reading as zeros. */
  sparse?: boolean;
}

export interface SyntheticModel {
  dir: string;
  tensors: LayoutTensor[];
  /** The safetensors files written, in order. */
  files: string[];
  /** Bytes of tensor data. */
  dataBytes: number;
}

const TORCH_NAMES: Partial<Record<Dtype, string>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** Values like a trained model's: weights of std ~0.02, norm scales near 1, small biases. */
export function valueSpec(t: LayoutTensor): ValueSpec {
  if (t.moduleType === 'norm' && t.name.endsWith('.weight')) return { center: 1, spread: 0.05 };
  return { center: 0, spread: 0.035 };
}

/** Seed of one tensor's value stream. */
export function tensorSeed(seed: number, name: string): number {
  return (Math.imul(seed, 0x9e3779b1) ^ nameHash(name)) >>> 0;
}

/** Writes a model folder for `config` into `dir` (created if needed); see the module comment. */
export function writeSyntheticModel(dir: string, config: Record<string, unknown>, opts: SyntheticModelOptions = {}): SyntheticModel {
  const tensors = modelLayout(config, opts.dtype);
  const dtype = tensors[0]?.dtype ?? 'F32';
  fs.mkdirSync(dir, { recursive: true });
  writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify({ ...config, torch_dtype: TORCH_NAMES[dtype] ?? config.torch_dtype }, null, 2) + '\n');
  const files = writeSyntheticWeights(dir, tensors, opts);
  const dataBytes = files.reduce((a, f) => a + f.bytes, 0);
  return { dir, tensors, files: files.map((f) => f.file), dataBytes };
}

/**
 * Writes `tensors` as `<prefix>.safetensors`, or as shards plus `<prefix>.safetensors.index.json` when
 * they exceed `shardBytes`, with values from `values` (default `valueSpec`).
 */
export function writeSyntheticWeights(
  dir: string,
  tensors: LayoutTensor[],
  opts: SyntheticModelOptions = {},
  prefix = 'model',
  values: (t: LayoutTensor) => ValueSpec = valueSpec,
): Array<{ file: string; bytes: number }> {
  const shards = planShards(tensors, opts.shardBytes ?? Infinity) as LayoutTensor[][];
  const pad = (i: number): string => String(i).padStart(5, '0');
  const names = shards.length === 1 ? [`${prefix}.safetensors`] : shards.map((_, i) => `${prefix}-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`);
  const written = shards.map((shard, i) => ({
    file: path.join(dir, names[i]),
    bytes: writeFile(path.join(dir, names[i]), shard, opts.seed ?? 1, opts.sparse === true, values),
  }));
  if (shards.length > 1) {
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => shard.forEach((t) => (weightMap[t.name] = names[i])));
    const total = written.reduce((a, w) => a + w.bytes, 0);
    writeFileAtomic(path.join(dir, `${prefix}.safetensors.index.json`), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
  }
  return written;
}

/** One safetensors file, atomically (temp then rename); returns its data bytes. */
function writeFile(target: string, tensors: LayoutTensor[], seed: number, sparse: boolean, values: (t: LayoutTensor) => ValueSpec): number {
  const { header, sizes } = buildHeader(tensors);
  const dataBytes = sizes.reduce((a, b) => a + b, 0);
  const tmp = tempPathFor(target);
  const fd = fs.openSync(tmp, 'wx');
  try {
    writeAll(fd, header, 0);
    if (sparse) fs.ftruncateSync(fd, header.length + dataBytes);
    else {
      let pos = header.length;
      for (const t of tensors) {
        const numel = t.shape.reduce((a, b) => a * b, 1);
        streamValues(numel, t.dtype, tensorSeed(seed, t.name), values(t), (bytes) => {
          writeAll(fd, bytes, pos);
          pos += bytes.byteLength;
        });
      }
    }
    fs.closeSync(fd);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return dataBytes;
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.byteLength; ) done += fs.writeSync(fd, bytes, done, bytes.byteLength - done, position + done);
}
