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
import { RANDOMIZED_DEFAULTS } from '../linalg/randomized';
import { LinalgPool } from '../kernels/linalgPool';
import { ModuleFactors } from '../linalg/moduleFactors';
import { rankOrEnergy } from '../lowrank/factors';
import { OutModuleSpec, PeftAdapterWriter } from '../lowrank/peftOut';
import { bytesToF32 } from '../safetensors/reader';
import { histogramEnergy } from '../linalg/taskVector';
import { FloatDtype } from '../../shared/safetensors/dtypes';
import { pairingProblems, pairTensors, TensorPair } from '../tensors/pairing';
import { Block, blockInfo, blocksOf, readBlock, sameBytes, sameRows } from '../tensors/stream';
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

interface TaskVector {
  tau: Float32Array;
  normSq: number;
  changed: boolean;
}

/**
 * τ of one tensor pair, read block by block (kept in `keep`'s array for a linear weight), and into
 * `hist` the exponent histogram of the finetuned side; NaN or Inf in either model is bad input.
 */
async function taskVector(
  base: Checkpoint,
  ft: Checkpoint,
  p: TensorPair,
  products: LinalgPool,
  keep: ((n: number) => Float32Array) | undefined,
  hist: Float64Array | undefined,
): Promise<TaskVector> {
  const tau = keep ? keep(p.base.numel) : new Float32Array(0);
  const acc = { normSq: 0 };
  const same: Block[] = [];
  for (const b of blocksOf(p.base)) {
    const fb = sameRows(b, p.other);
    const [wi, fi] = [blockInfo(b), blockInfo(fb)];
    const rb = await readBlock(base.handles, b, products.staging('base', wi.byteLength));
    const rf = await readBlock(ft.handles, fb, products.staging('ft', fi.byteLength));
    const out = keep ? tau.subarray(b.start, b.start + b.numel) : f32View(products.staging('tau', b.numel * 4));
    if (wi.dtype === fi.dtype && sameBytes(rb, rf)) {
      same.push(fb);
      continue;
    }
    if (hist) products.countExponents(fi.dtype as 'F16' | 'BF16', rf, hist);
    const bad = products.taskVectorBlock(wi.dtype as FloatDtype, rb, fi.dtype as FloatDtype, rf, b.numel, out, acc);
    if (bad >= 0) {
      const eb = rb.byteLength / b.numel;
      const w = bytesToF32({ ...wi, numel: 1 }, rb.slice(bad * eb, (bad + 1) * eb), new Float32Array(1))[0];
      throw new LensError((Number.isFinite(w) ? ft : base).path, `NaN or Inf at element ${b.start + bad} (a task vector needs finite weights)`, p.name);
    }
  }
  const changed = acc.normSq > 0;
  // Unchanged blocks of a changed tensor (rare): zeros in τ, and read again for the histogram, which is of the whole finetuned tensor.
  if (changed) {
    for (const fb of same) {
      if (keep) tau.fill(0, fb.start, fb.start + fb.numel);
      if (hist) products.countExponents(fb.tensor.dtype as 'F16' | 'BF16', await readBlock(ft.handles, fb, products.staging('ft', blockInfo(fb).byteLength)), hist);
    }
  }
  return { tau, normSq: acc.normSq, changed };
}

const f32View = (b: Uint8Array): Float32Array => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);

function nameSeed(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

export async function extractLoraJob(opts: ExtractLoraOptions, ctx: JobContext): Promise<ExtractLoraReport> {
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

    // Modules in pair order; each is filled in when its factorization (on a worker) comes back.
    const records: { module: ExtractLoraModule; spec: OutModuleSpec; A: Float32Array; B: Float32Array }[] = [];
    const notCaptured: ExtractLoraReport['notCaptured'] = [];
    let unchanged = 0;
    let done = 0;
    // While the workers factor up to `threads` modules, this thread reads the next task vector.
    const inflight = new Set<Promise<void>>();
    const failures: unknown[] = [];
    const settled = async (all: boolean): Promise<void> => {
      while (inflight.size > 0 && (all || inflight.size >= products.threads)) await Promise.race(inflight);
      if (failures.length) throw failures[0];
    };
    const progress = (p: TensorPair): void => ctx.progress({ phase: 'extract-lora', done: ++done, total: pairing.pairs.length, tensor: p.name });
    // Tensors that are not linear weights (norms, biases, embeddings: at most listed) are read while
    // every worker is busy, and the rest at the end.
    const others: TensorPair[] = [];
    const readOther = async (p: TensorPair): Promise<void> => {
      throwIfCancelled(ctx);
      const tv = await taskVector(base, ft, p, products, undefined, undefined);
      if (tv.changed) notCaptured.push({ name: p.name, l2Norm: Math.sqrt(tv.normSq), category: classifyTensor(p.name).category, shape: p.base.shape });
      progress(p);
    };
    for (const p of pairing.pairs) {
      throwIfCancelled(ctx);
      if (!isLinearWeight(p)) {
        others.push(p);
        continue;
      }
      const half = p.other.dtype === 'F16' || p.other.dtype === 'BF16' ? p.other.dtype : undefined;
      const hist = half ? new Float64Array(256) : undefined;
      const tv = await taskVector(base, ft, p, products, (n) => products.floats(n, false), hist);
      let handedOver = false;
      try {
        if (!tv.changed) unchanged++;
        else {
          const [m, n] = p.base.shape;
          const module = p.name.slice(0, -'.weight'.length);
          if (opts.rank !== undefined && opts.rank > Math.min(m, n)) {
            throw new LensError(opts.finetuned, `--rank ${opts.rank} is larger than the ${Math.min(m, n)} a [${m}, ${n}] weight allows`, p.name);
          }
          const transposed = isConv1D(base.config, module) === true;
          const noiseEnergy = half && histogramEnergy(half, hist!);
          const finish = (f: ModuleFactors): (typeof records)[number] => {
            let kept = 0;
            for (let i = 0; i < f.k; i++) kept += f.s[i] * f.s[i];
            let roundingNoise: RoundingNoise | null = null;
            if (half && noiseEnergy !== undefined) {
              const sigma = Math.sqrt(noiseEnergy / (m * n)) * (Math.sqrt(m) + Math.sqrt(n));
              const fraction = Math.min(1, noiseEnergy / tv.normSq);
              roundingNoise = { dtype: half, energy: noiseEnergy, fraction, sigma, signalRank: f.s.filter((x) => x > sigma).length };
            }
            const [out, inn] = transposed ? [n, m] : [m, n];
            const record: ExtractLoraModule = {
              name: module,
              tensor: p.name,
              out,
              in: inn,
              rank: f.k,
              energyKept: Math.min(1, kept / tv.normSq),
              relError: Math.sqrt(f.residualSq / tv.normSq),
              taskVectorNorm: Math.sqrt(tv.normSq),
              transposed,
              singularValues: Array.from(f.s),
              roundingNoise,
            };
            return { module: record, spec: { module, embedding: false, out, in: inn, rank: f.k }, A: f.A, B: f.B };
          };
          while (inflight.size >= products.threads && others.length > 0) await readOther(others.shift()!);
          await settled(false);
          const index = records.length;
          records.length++;
          const spec = {
            m,
            n,
            rank: opts.rank,
            energy: opts.energy,
            oversample: opts.oversample ?? RANDOMIZED_DEFAULTS.oversample,
            powerIterations: opts.powerIterations ?? RANDOMIZED_DEFAULTS.powerIterations,
            seed: nameSeed(p.name),
            transposed,
            normSq: tv.normSq,
          };
          const job: Promise<void> = products
            .factorModule(tv.tau, spec)
            .then((f) => void (records[index] = finish(f)))
            .catch((e: unknown) => void failures.push(e))
            .finally(() => {
              products.release(tv.tau);
              inflight.delete(job);
            });
          inflight.add(job);
          handedOver = true;
        }
      } finally {
        if (!handedOver) products.release(tv.tau);
      }
      progress(p);
      await new Promise((r) => setImmediate(r));
    }
    for (const p of others) await readOther(p);
    await settled(true);
    const order = new Map(pairing.pairs.map((p, i) => [p.name, i]));
    notCaptured.sort((a, b) => order.get(a.name)! - order.get(b.name)!);
    const modules = records.map((r) => r.module);
    if (modules.length === 0) {
      throw new LensError(opts.finetuned, `no 2-D linear weight differs from the base ${opts.base}${notCaptured.length ? ` (only ${notCaptured.length} other tensor(s) changed, first ${notCaptured[0].name})` : ''}: there is nothing for a LoRA to hold`);
    }
    const specs = records.map((r) => r.spec);
    await withOutputDir('extract-lora', opts.out, [opts.base, opts.finetuned], async (out) => {
      const writer = new PeftAdapterWriter(out, specs, []);
      try {
        for (const r of records) writer.writeFactors(r.spec, r.A, r.B);
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
