/**
 * Test-data builders: tiny checkpoints written in the exact Hugging Face and PEFT on-disk formats.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after } from 'node:test';
import { AdaptedModule, LowRankRule } from '../../../src/engine/checkpoint/deltaRule';
import { Dtype } from '../../../src/shared/safetensors/dtypes';
import { encodeBf16, encodeF16 } from '../../../src/shared/safetensors/half';
import { ShardedWriter, TensorSpec } from '../../../src/engine/safetensors/writer';

/** A fresh temporary folder, removed when the test file ends. */
export function tmpDir(prefix = 'lora-lens-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Deterministic pseudo-random numbers (xorshift32), uniform in [-1, 1). */
export function rng(seed = 1): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 31 - 1;
  };
}

export function randomF32(n: number, seed = 1, scale = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r() * scale;
  return a;
}

export interface TestTensor {
  name: string;
  dtype?: Dtype;
  shape: number[];
  /** Values (encoded to `dtype` for F32/F16/BF16), raw bytes, or a seed for random values. */
  data?: Float32Array | Uint8Array | number;
}

/** The bytes of a test tensor at its dtype. */
export function tensorBytes(t: TestTensor): Uint8Array {
  const dtype = t.dtype ?? 'F32';
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data instanceof Uint8Array) return t.data;
  const values = t.data instanceof Float32Array ? t.data : randomF32(n, t.data ?? hash(t.name), 0.05);
  if (values.length !== n) throw new Error(`test tensor ${t.name}: ${values.length} values for shape ${t.shape}`);
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case 'F16':
      return new Uint8Array(encodeF16(values, new Uint16Array(n)).buffer);
    case 'BF16':
      return new Uint8Array(encodeBf16(values, new Uint16Array(n)).buffer);
    default:
      throw new Error(`test tensor ${t.name}: give raw bytes for ${dtype}`);
  }
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** Writes tensors as safetensors weights into `dir` (sharded above `shardBytes`). */
export function writeWeights(dir: string, tensors: TestTensor[], shardBytes = Infinity, prefix = 'model'): void {
  fs.mkdirSync(dir, { recursive: true });
  const specs: TensorSpec[] = tensors.map((t) => ({ name: t.name, dtype: t.dtype ?? 'F32', shape: t.shape }));
  const w = new ShardedWriter(dir, specs, shardBytes, prefix);
  for (const t of tensors) w.write(t.name, tensorBytes(t));
  w.finish();
}

/** A Hugging Face model folder: config.json + model.safetensors (or shards with an index). */
export function writeModel(dir: string, config: Record<string, unknown>, tensors: TestTensor[], shardBytes = Infinity): string {
  writeWeights(dir, tensors, shardBytes);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return dir;
}

/** PEFT's LoraConfig as saved by save_pretrained(), with overrides. */
export function peftConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: 'test/base',
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: 16,
    lora_dropout: 0.0,
    modules_to_save: null,
    peft_type: 'LORA',
    r: 8,
    rank_pattern: {},
    revision: null,
    target_modules: ['q_proj', 'v_proj'],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
    ...overrides,
  };
}

/** A PEFT adapter folder: adapter_config.json + adapter_model.safetensors. */
export function writeAdapter(dir: string, config: Record<string, unknown>, tensors: TestTensor[]): string {
  writeWeights(dir, tensors, Infinity, 'adapter_model');
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  return dir;
}

/** lora_A / lora_B tensors for a module, under PEFT's saved key names. */
export function loraPair(module: string, r: number, inFeatures: number, outFeatures: number, seed = 7): TestTensor[] {
  return [
    { name: `base_model.model.${module}.lora_A.weight`, shape: [r, inFeatures], data: randomF32(r * inFeatures, seed, 0.1) },
    { name: `base_model.model.${module}.lora_B.weight`, shape: [outFeatures, r], data: randomF32(outFeatures * r, seed + 1, 0.1) },
  ];
}

/** Real PEFT adapters and base configs (copied from the project's shared fixtures, with provenance). */
export const FIXTURES = path.resolve(__dirname, '../../../../test/fixtures');

/** The low-rank rule of an adapted module (asserting that it is one). */
export function lowRank(m: AdaptedModule): LowRankRule {
  if (m.rule.kind !== 'low-rank') throw new Error(`${m.module}: a ${m.rule.kind} rule, not low-rank`);
  return m.rule;
}
