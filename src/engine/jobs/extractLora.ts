/**
 * extract-lora: a PEFT LoRA adapter from the difference of two models. Streaming one tensor at a time,
 * each changed 2-D linear weight's task vector τ = f32(finetuned) − f32(base) gets a truncated SVD in
 * float64 by a randomized range finder with power iterations (linalg/randomized.ts); its error is then
 * measured exactly against τ. Changed tensors that are not 2-D linear weights (norms, biases,
 * embeddings) are listed, not factored.
 */
import { isConv1D } from '../checkpoint/adapter';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { LinearOperator, RANDOMIZED_DEFAULTS, randomizedSVD, TruncatedSVD } from '../linalg/randomized';
import { LinalgPool } from '../kernels/linalgPool';
import { decodeBf16 } from '../kernels/wasm';
import { rankOrEnergy } from '../lowrank/factors';
import { OutModuleSpec, PeftAdapterWriter } from '../lowrank/peftOut';
import { bytesToF32, Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { pairingProblems, pairTensors, TensorPair } from '../tensors/pairing';
import { blockInfo, blocksOf, readBlock, sameBytes, sameRows } from '../tensors/stream';
import { classifyTensor } from '../../shared/census/classify';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import type { RoundingNoise, ExtractLoraModule, ExtractLoraReport } from '../../shared/jobs/reports/lowrank';
export type { RoundingNoise, ExtractLoraModule, ExtractLoraReport };

export interface ExtractLoraOptions {
  base: string;
  finetuned: string;
  out: string;
  /** Exactly one of rank (every module) and energy (per module, a fraction in (0, 1]). */
  rank?: number;
  energy?: number;
  /** Sketch columns beyond the rank (default 8) and power iterations (default 2). */
  oversample?: number;
  powerIterations?: number;
}

/** Whether a paired tensor is a 2-D linear weight a LoRA can stand for. */
function isLinearWeight(p: TensorPair): boolean {
  if (p.base.shape.length !== 2 || !p.name.endsWith('.weight')) return false;
  const c = classifyTensor(p.name).category;
  return c === 'attention' || c === 'mlp' || c === 'other';
}

/** Counts half-precision values by biased exponent (their ulp), into `hist`. */
function countExponents(dtype: 'F16' | 'BF16', raw: Uint8Array, hist: Float64Array): void {
  const h = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  if (dtype === 'BF16') for (let i = 0; i < h.length; i++) hist[(h[i] >> 7) & 0xff]++;
  else for (let i = 0; i < h.length; i++) hist[(h[i] >> 10) & 0x1f]++;
}

/** Σ ulp² / 12 over the counted values: the expected energy of rounding each of them once. */
function histogramEnergy(dtype: 'F16' | 'BF16', hist: Float64Array): number {
  const [bias, mantissa] = dtype === 'BF16' ? [127, 7] : [15, 10];
  let e = 0;
  hist.forEach((count, exp) => {
    const ulp = Math.pow(2, Math.max(exp, 1) - bias - mantissa);
    e += (count * ulp * ulp) / 12;
  });
  return e;
}

interface TaskVector {
  tau: Float32Array;
  normSq: number;
  changed: boolean;
}

/** The exponent histogram of a half-precision tensor, read again block by block (only for the modules extracted). */
async function exponentHistogram(c: Checkpoint, t: TensorInfo, dtype: 'F16' | 'BF16', scratch: Scratch): Promise<Float64Array> {
  const hist = new Float64Array(256);
  for (const b of blocksOf(t)) countExponents(dtype, await readBlock(c.handles, b, scratch.bytes('ft', blockInfo(b).byteLength)), hist);
  return hist;
}

/** bytesToF32, bf16 widened in WebAssembly (the same bits, a few times faster). */
function widen(t: TensorInfo, raw: Uint8Array, out: Float32Array): Float32Array {
  if (t.dtype !== 'BF16' || raw.byteOffset % 2 !== 0) return bytesToF32(t, raw, out);
  return decodeBf16(new Uint16Array(raw.buffer, raw.byteOffset, t.numel), out);
}

/** τ of one tensor pair, read block by block; NaN or Inf in either model is bad input. */
async function taskVector(base: Checkpoint, ft: Checkpoint, p: TensorPair, scratch: Scratch, keep: ((n: number) => Float32Array) | undefined): Promise<TaskVector> {
  const n = p.base.numel;
  const tau = keep ? keep(n) : new Float32Array(0);
  let normSq = 0;
  let changed = false;
  for (const b of blocksOf(p.base)) {
    const fb = sameRows(b, p.other);
    const rb = await readBlock(base.handles, b, scratch.bytes('base', blockInfo(b).byteLength));
    const rf = await readBlock(ft.handles, fb, scratch.bytes('ft', blockInfo(fb).byteLength));
    if (blockInfo(b).dtype === blockInfo(fb).dtype && sameBytes(rb, rf)) continue;
    const w = widen(blockInfo(b), rb, scratch.f32('w', b.numel));
    const f = widen(blockInfo(fb), rf, scratch.f32('f', b.numel));
    const out = keep ? tau.subarray(b.start, b.start + b.numel) : scratch.f32('tau', b.numel);
    for (let i = 0; i < b.numel; i++) {
      const d = Math.fround(f[i] - w[i]);
      if (!Number.isFinite(d)) {
        const which = Number.isFinite(w[i]) ? ft : base;
        throw new LensError(which.path, `NaN or Inf at element ${b.start + i} (a task vector needs finite weights)`, p.name);
      }
      out[i] = d;
      normSq += d * d;
    }
    if (normSq > 0) changed = true;
  }
  return { tau, normSq, changed };
}

/** The smallest k whose top-k estimated values hold `energy` of `total`, or undefined when the sketch holds less. */
function energyRankOf(s: Float64Array, total: number, energy: number): number | undefined {
  let acc = 0;
  const goal = energy * total * (1 - 1e-12);
  for (let k = 0; k < s.length; k++) {
    acc += s[k] * s[k];
    if (acc >= goal) return k + 1;
  }
  return undefined;
}

/** The truncated SVD and the rank: --rank as given; --energy by doubling the sketch until it holds the energy (or is complete). */
async function decompose(op: LinearOperator, normSq: number, opts: ExtractLoraOptions, seed: number): Promise<{ svd: TruncatedSVD; k: number }> {
  const ropts = { oversample: opts.oversample ?? RANDOMIZED_DEFAULTS.oversample, powerIterations: opts.powerIterations ?? RANDOMIZED_DEFAULTS.powerIterations, seed };
  if (opts.rank !== undefined) return { svd: await randomizedSVD(op, opts.rank, ropts), k: opts.rank };
  const full = Math.min(op.rows, op.cols);
  for (let want = Math.min(16, full); ; want = Math.min(2 * want, full)) {
    const svd = await randomizedSVD(op, want, ropts);
    const k = energyRankOf(svd.s, normSq, opts.energy!);
    if (k !== undefined) return { svd, k };
    if (svd.s.length >= full) return { svd, k: full };
  }
}

/** Factors in PEFT's orientation (A' [k, in], B' [out, k], fp32) from τ's SVD in its stored orientation. */
function peftFactors(svd: TruncatedSVD, k: number, m: number, n: number, transposed: boolean): { A: Float32Array; B: Float32Array } {
  // τ ≈ U_k Σ_k V_kᵀ; the delta is τ (Linear, [out, in]) or τᵀ (Conv1D, stored [in, out]).
  const [left, right, rows, cols] = transposed ? [svd.V, svd.U, n, m] : [svd.U, svd.V, m, n];
  const B = new Float32Array(rows * k);
  const A = new Float32Array(k * cols);
  for (let c = 0; c < k; c++) {
    const root = Math.sqrt(svd.s[c]);
    for (let i = 0; i < rows; i++) B[i * k + c] = left.data[i * left.cols + c] * root;
    for (let j = 0; j < cols; j++) A[c * cols + j] = right.data[j * right.cols + c] * root;
  }
  return { A, B };
}

/** The approximation's factors in τ's orientation: τ ≈ P·Qt with P m × k and Qt k × n. */
function inTauOrientation(A: Float32Array, B: Float32Array, k: number, m: number, n: number, transposed: boolean): { P: Float32Array; Qt: Float32Array } {
  if (!transposed) return { P: B, Qt: A };
  const P = new Float32Array(m * k);
  const Qt = new Float32Array(k * n);
  for (let c = 0; c < k; c++) for (let i = 0; i < m; i++) P[i * k + c] = A[c * m + i];
  for (let j = 0; j < n; j++) for (let c = 0; c < k; c++) Qt[c * n + j] = B[j * k + c];
  return { P, Qt };
}

function nameSeed(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

export async function extractLora(opts: ExtractLoraOptions, ctx: JobContext): Promise<ExtractLoraReport> {
  const t0 = performance.now();
  rankOrEnergy('extract-lora', opts.rank, opts.energy);
  for (const [flag, v] of [
    ['oversample', opts.oversample],
    ['power-iterations', opts.powerIterations],
  ] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new LensError('lora-lens extract-lora', `--${flag} must be a non-negative integer (got ${v})`);
  }
  const base = openCheckpoint(opts.base);
  const ft = openCheckpoint(opts.finetuned);
  const products = new LinalgPool();
  try {
    for (const c of [base, ft]) if (c.kind === 'adapter') throw new LensError(c.path, 'this is a PEFT adapter folder; extract-lora takes two full models');
    const pairing = pairTensors(base, ft);
    const mismatch = pairing.shapeMismatches[0];
    if (mismatch) throw new LensError(opts.finetuned, `shape ${JSON.stringify(mismatch.otherShape)} but ${JSON.stringify(mismatch.baseShape)} in the base ${opts.base}: the models have different shapes`, mismatch.name);
    if (pairing.pairs.length === 0) throw new LensError(opts.finetuned, `shares no float tensor (same name and shape) with the base ${opts.base}`);
    const warnings: string[] = [];
    const problems = pairingProblems(pairing, 'finetuned model');
    if (problems) warnings.push(problems);

    const scratch = new Scratch();
    const modules: ExtractLoraModule[] = [];
    const factors: { spec: OutModuleSpec; A: Float32Array; B: Float32Array }[] = [];
    const notCaptured: ExtractLoraReport['notCaptured'] = [];
    let unchanged = 0;
    let done = 0;
    for (const p of pairing.pairs) {
      throwIfCancelled(ctx);
      const linear = isLinearWeight(p);
      const tv = await taskVector(base, ft, p, scratch, linear ? (n) => products.floats(n) : undefined);
      try {
        if (!tv.changed) {
          if (linear) unchanged++;
        } else if (!linear) {
          notCaptured.push({ name: p.name, l2Norm: Math.sqrt(tv.normSq), category: classifyTensor(p.name).category, shape: p.base.shape });
        } else {
          const [m, n] = p.base.shape;
          const module = p.name.slice(0, -'.weight'.length);
          if (opts.rank !== undefined && opts.rank > Math.min(m, n)) {
            throw new LensError(opts.finetuned, `--rank ${opts.rank} is larger than the ${Math.min(m, n)} a [${m}, ${n}] weight allows`, p.name);
          }
          const transposed = isConv1D(base.config, module) === true;
          const { svd, k } = await decompose(products.operator(tv.tau, m, n), tv.normSq, opts, nameSeed(p.name));
          const { A, B } = peftFactors(svd, k, m, n, transposed);
          const { P, Qt } = inTauOrientation(A, B, k, m, n, transposed);
          const relError = Math.sqrt((await products.residualSq(tv.tau, m, n, P, Qt, k)) / tv.normSq);
          let kept = 0;
          for (let i = 0; i < k; i++) kept += svd.s[i] * svd.s[i];
          let roundingNoise: RoundingNoise | null = null;
          if (p.other.dtype === 'F16' || p.other.dtype === 'BF16') {
            const dtype = p.other.dtype;
            const energy = histogramEnergy(dtype, await exponentHistogram(ft, p.other, dtype, scratch));
            const sigma = Math.sqrt(energy / (m * n)) * (Math.sqrt(m) + Math.sqrt(n));
            roundingNoise = { dtype, energy, fraction: Math.min(1, energy / tv.normSq), sigma, signalRank: svd.s.filter((x) => x > sigma).length };
          }
          const [out, inn] = transposed ? [n, m] : [m, n];
          factors.push({ spec: { module, embedding: false, out, in: inn, rank: k }, A, B });
          modules.push({
            name: module,
            tensor: p.name,
            out,
            in: inn,
            rank: k,
            energyKept: Math.min(1, kept / tv.normSq),
            relError,
            taskVectorNorm: Math.sqrt(tv.normSq),
            transposed,
            singularValues: Array.from(svd.s),
            roundingNoise,
          });
        }
      } finally {
        products.release(tv.tau);
      }
      ctx.progress({ phase: 'extract-lora', done: ++done, total: pairing.pairs.length, tensor: p.name });
      await new Promise((r) => setImmediate(r));
    }
    if (modules.length === 0) {
      throw new LensError(opts.finetuned, `no 2-D linear weight differs from the base ${opts.base}${notCaptured.length ? ` (only ${notCaptured.length} other tensor(s) changed, first ${notCaptured[0].name})` : ''}: there is nothing for a LoRA to hold`);
    }
    const specs = factors.map((f) => f.spec);
    await withOutputDir('extract-lora', opts.out, [opts.base, opts.finetuned], async (out) => {
      const writer = new PeftAdapterWriter(out, specs, []);
      try {
        for (const f of factors) writer.writeFactors(f.spec, f.A, f.B);
        const nameOrPath = typeof base.config?._name_or_path === 'string' ? base.config._name_or_path : opts.base;
        writer.finish({
          peft_type: 'LORA',
          base_model_name_or_path: nameOrPath,
          target_modules: specs.map((s) => s.module),
          fan_in_fan_out: modules.some((m) => m.transposed),
          bias: 'none',
          lora_dropout: 0,
          modules_to_save: null,
          layers_to_transform: null,
          layers_pattern: null,
          init_lora_weights: true,
          inference_mode: true,
          task_type: null,
          revision: null,
        });
      } catch (e) {
        writer.abort();
        throw e;
      }
    });
    if (notCaptured.length) warnings.push(`${notCaptured.length} changed tensor(s) are not 2-D linear weights and are not in the adapter (notCaptured), first ${notCaptured[0].name}`);
    for (const w of warnings) ctx.warn(w);
    return {
      base: opts.base,
      finetuned: opts.finetuned,
      out: opts.out,
      rank: opts.rank ?? null,
      energy: opts.energy ?? null,
      oversample: opts.oversample ?? RANDOMIZED_DEFAULTS.oversample,
      powerIterations: opts.powerIterations ?? RANDOMIZED_DEFAULTS.powerIterations,
      modules,
      notCaptured,
      unchanged,
      summary: {
        modules: modules.length,
        notCaptured: notCaptured.length,
        unchanged,
        params: modules.reduce((a, m) => a + m.rank * (m.out + m.in), 0),
        meanEnergyKept: modules.reduce((a, m) => a + m.energyKept, 0) / modules.length,
        maxRelError: Math.max(...modules.map((m) => m.relError)),
      },
      warnings,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await products.dispose();
    base.handles.close();
    ft.handles.close();
  }
}
