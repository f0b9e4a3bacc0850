/**
 * Writing low-rank results as a PEFT LoRA adapter folder: `adapter_model.safetensors` (fp32 factors
 * under PEFT's key names) and `adapter_config.json` whose r / lora_alpha, with per-module
 * rank_pattern / alpha_pattern where ranks differ, give every module a scale of 1, so the written
 * B'·A' is the delta itself. And reading the written factors back, to measure what was really written.
 */
import { adapterLayout } from '../checkpoint/adapter';
import { AdapterConfig } from '../checkpoint/adapterConfig';
import { AdaptedModule } from '../checkpoint/deltaRule';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { hconcat, Mat } from '../linalg/dense';
import { productNorm } from '../linalg/lowrank';
import { readFactors } from './factors';
import { Dtype } from '../../shared/safetensors/dtypes';
import { SafetensorsWriter, writeFileAtomic } from '../safetensors/writer';
import { OutputDir } from '../util/outputDir';

/** One module of the output; its delta is left·rightᵀ (left out × k, right in × k). */
export interface OutModuleSpec {
  module: string;
  embedding: boolean;
  out: number;
  in: number;
  rank: number;
  /** A convolution's kernel [kh, kw] where the source states it: A is written [k, in / (kh·kw), kh, kw] and B [out, k, 1, 1]. */
  kernel?: number[];
}

/** The shapes A and B of a module are written with: [k, in] and [out, k], or a convolution's. */
export function factorShapes(s: OutModuleSpec): { A: number[]; B: number[] } {
  if (!s.kernel) return { A: [s.rank, s.in], B: [s.out, s.rank] };
  const K = s.kernel.reduce((a, b) => a * b, 1);
  return { A: [s.rank, s.in / K, ...s.kernel], B: [s.out, s.rank, ...s.kernel.map(() => 1)] };
}

/** The fp32 factors A' = rightᵀ [k, in] and B' = left [out, k], rounded once (columns past left/right's are zero). */
export function factorArrays(spec: OutModuleSpec, left: Mat, right: Mat): { A: Float32Array; B: Float32Array } {
  const k = spec.rank;
  const A = new Float32Array(k * spec.in);
  for (let j = 0; j < spec.in; j++) for (let c = 0; c < k; c++) A[c * spec.in + j] = c < right.cols ? right.data[j * right.cols + c] : 0;
  const B = new Float32Array(spec.out * k);
  for (let i = 0; i < spec.out; i++) for (let c = 0; c < k; c++) B[i * k + c] = c < left.cols ? left.data[i * left.cols + c] : 0;
  return { A, B };
}

export interface PassThrough {
  name: string;
  dtype: Dtype;
  shape: number[];
  bytes: Uint8Array;
}

const PREFIX = 'base_model.model.';

export function factorNames(m: Pick<OutModuleSpec, 'module' | 'embedding'>): { A: string; B: string } {
  return m.embedding ? { A: `${PREFIX}${m.module}.lora_embedding_A`, B: `${PREFIX}${m.module}.lora_embedding_B` } : { A: `${PREFIX}${m.module}.lora_A.weight`, B: `${PREFIX}${m.module}.lora_B.weight` };
}

/**
 * The config to write beside new factors: a PEFT LoRA adapter's own (its target modules, task type,
 * modules_to_save…), or for another method (AdaLoRA, VeRA, mlx-lm) a LoRA config naming the modules.
 * r, lora_alpha and the patterns are set by PeftAdapterWriter.finish.
 */
export function loraConfig(cfg: AdapterConfig, specs: OutModuleSpec[]): Record<string, unknown> {
  if (cfg.method === 'LORA') return { ...cfg.raw };
  return {
    peft_type: 'LORA',
    base_model_name_or_path: cfg.baseModel,
    target_modules: specs.map((s) => s.module),
    fan_in_fan_out: cfg.fanInFanOut,
    bias: 'none',
    lora_dropout: 0,
    modules_to_save: cfg.modulesToSave.length ? cfg.modulesToSave : null,
    init_lora_weights: true,
    inference_mode: true,
    task_type: cfg.taskType,
  };
}

/** r is the most common rank (the larger on a tie); the others go to rank_pattern / alpha_pattern by full module name. */
export function rankConfig(specs: OutModuleSpec[]): {
  r: number;
  lora_alpha: number;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
} {
  const counts = new Map<number, number>();
  for (const s of specs) counts.set(s.rank, (counts.get(s.rank) ?? 0) + 1);
  const r = [...counts].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0][0];
  const rank_pattern: Record<string, number> = {};
  const alpha_pattern: Record<string, number> = {};
  for (const s of specs) {
    if (s.rank === r) continue;
    rank_pattern[s.module] = s.rank;
    alpha_pattern[s.module] = s.rank;
  }
  return { r, lora_alpha: r, rank_pattern, alpha_pattern };
}

/**
 * A streaming writer of a PEFT adapter into `out`: modules are written one at a time in `specs` order
 * (so no more than one module's factors is held), then `finish` writes the config.
 */
export class PeftAdapterWriter {
  private readonly writer: SafetensorsWriter;

  constructor(
    private readonly out: OutputDir,
    private readonly specs: OutModuleSpec[],
    private readonly passThrough: PassThrough[],
  ) {
    const tensors = specs.flatMap((s) => {
      const n = factorNames(s);
      const shape = factorShapes(s);
      return [
        { name: n.A, dtype: 'F32' as const, shape: shape.A },
        { name: n.B, dtype: 'F32' as const, shape: shape.B },
      ];
    });
    for (const p of passThrough) tensors.push({ name: p.name, dtype: p.dtype as 'F32', shape: p.shape });
    this.writer = new SafetensorsWriter(out.file('adapter_model.safetensors'), tensors, { format: 'pt' });
  }

  /** The next module's factors: A' = rightᵀ [k, in], B' = left [out, k], rounded once to fp32. */
  writeModule(spec: OutModuleSpec, left: Mat, right: Mat): void {
    const { A, B } = factorArrays(spec, left, right);
    this.writeFactors(spec, A, B);
  }

  /** The next module's fp32 factors as they are: A' [k, in], B' [out, k]. */
  writeFactors(spec: OutModuleSpec, A: Float32Array, B: Float32Array): void {
    const n = factorNames(spec);
    this.writer.write(n.A, new Uint8Array(A.buffer, A.byteOffset, A.byteLength));
    this.writer.write(n.B, new Uint8Array(B.buffer, B.byteOffset, B.byteLength));
  }

  /** Writes the pass-through tensors and the config (`config` overridden by the ranks and scale 1). */
  finish(config: Record<string, unknown>): Record<string, unknown> {
    for (const p of this.passThrough) this.writer.write(p.name, p.bytes);
    this.writer.finish();
    const written = { ...config, ...rankConfig(this.specs), use_rslora: false, use_dora: false };
    writeFileAtomic(this.out.file('adapter_config.json'), JSON.stringify(written, null, 2) + '\n');
    return written;
  }

  abort(): void {
    this.writer.abort();
  }
}

/** The adapter just written into `out` (its temporary folder: a PEFT folder, or one LoRA file), its modules by name. */
export function openWritten(out: OutputDir): { checkpoint: Checkpoint; modules: Map<string, AdaptedModule> } {
  const checkpoint = openCheckpoint(out.tmp);
  return { checkpoint, modules: new Map(adapterLayout(checkpoint).modules.map((m) => [m.module, m])) };
}

/** ‖L·Rᵀ − L'·R'ᵀ‖_F / ‖L·Rᵀ‖_F with L', R' the written factors of `module` (0 when both are zero). */
export function writtenRelError(written: { checkpoint: Checkpoint; modules: Map<string, AdaptedModule> }, module: string, L: Mat, R: Mat): number {
  const w = readFactors(written.checkpoint, written.modules.get(module)!);
  for (let i = 0; i < w.L.data.length; i++) w.L.data[i] = -w.L.data[i];
  const diff = productNorm(hconcat([L, w.L]), hconcat([R, w.R]));
  const norm = productNorm(L, R);
  return norm === 0 ? (diff === 0 ? 0 : Infinity) : diff / norm;
}
