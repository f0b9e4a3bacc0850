/**
 * resize: an adapter whose every delta is the best rank-k approximation of the original's (Eckart–Young,
 * from the SVD of each module's small core: exact, nothing expanded), k = --rank for every module, or per
 * module the smallest rank keeping an energy fraction (--energy). Any adapter the engine reads: LoRA, LoHa
 * and LoKr (whose best rank-k approximations are ordinary LoRAs), full diffs. What is written is what the
 * source's users load: from a PEFT-style folder (PEFT's methods, mlx-lm) a PEFT LoRA folder with
 * rank_pattern / alpha_pattern; from a kohya / LyCORIS / diffusers file one LoRA file of the same name in
 * the same naming (lowrank/loraFileOut.ts), per-module rank and alpha. A convolution's factors are written
 * conv-shaped (down [k, in, kh, kw], up [out, k, 1, 1]) with the kernel its tensors state, or, where they
 * flatten it (LyCORIS LoHa and LoKr without Tucker cores: [r, in·kh·kw]), the kernel of its base tensor
 * (--base, fitted as merge fits it).
 */
import * as path from 'node:path';
import { AdaptedModule } from '../checkpoint/deltaRule';
import { LensError } from '../errors';
import { energyRank } from '../../shared/energy';
import { productSingularValues, productSVD, truncatedFactors } from '../linalg/lowrank';
import { assertPlainLowRank, factorRank, isBiasDiff, kronSingularValues, openFactorAdapter, rankOrEnergy, readFactors, sourceParams } from '../lowrank/factors';
import { LoraFileWriter } from '../lowrank/loraFileOut';
import { loraConfig } from '../lowrank/peftOut';
import { openWritten, OutModuleSpec, PassThrough, PeftAdapterWriter, writtenRelError } from '../lowrank/peftOut';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import { adapterLayout } from '../checkpoint/adapter';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { TensorInfo } from '../../shared/safetensors/header';
import type { ResizeModule, ResizeReport } from '../../shared/jobs/reports/lowrank';
export type { ResizeModule, ResizeReport };

export interface ResizeOptions {
  adapter: string;
  out: string;
  /** The base model, read for the kernels of convolutions whose factors flatten them (headers only). */
  base?: string;
  /** Exactly one of rank (every module) and energy (fraction in (0, 1], per module). */
  rank?: number;
  energy?: number;
}

/** The largest factor-form rank resize works on (LoHa r₁·r₂, LoKr p₁·p₂): its QR and core SVD stay small. */
const MAX_FORM_RANK = 1024;

function tailNorm(s: Float64Array, k: number): { kept: number; optimal: number } {
  let total = 0;
  let tail = 0;
  s.forEach((x, i) => {
    total += x * x;
    if (i >= k) tail += x * x;
  });
  return total === 0 ? { kept: 1, optimal: 0 } : { kept: (total - tail) / total, optimal: Math.sqrt(tail / total) };
}

/** A module's singular values: LoKr from its factors', the others from their factor form. */
function singularValues(c: Checkpoint, m: AdaptedModule): Float64Array {
  if (m.rule.kind === 'kronecker') return kronSingularValues(c, m);
  const { L, R } = readFactors(c, m);
  return productSingularValues(L, R);
}

/** A convolution's kernel [kh, kw] where the module's tensors state it (a 4-D down, a Tucker core, a 4-D LoKr w2 or diff). */
function statedKernel(m: AdaptedModule): number[] | undefined {
  const r = m.rule;
  const tail = (t: TensorInfo | undefined): number[] | undefined => (t && t.shape.length > 2 ? t.shape.slice(2) : undefined);
  switch (r.kind) {
    case 'low-rank':
      return r.factors.form === 'tucker' ? tail(r.factors.mid) : r.factors.form === 'plain' ? tail(r.factors.A) : undefined;
    case 'hadamard':
      return tail(r.t1);
    case 'kronecker':
      return 'full' in r.w2 ? tail(r.w2.full) : tail(r.w2.t);
    case 'dense':
      return tail(r.diff);
    default:
      return undefined;
  }
}

/**
 * LoHa, and LoKr with a factored w2, without a Tucker core: on a convolution LyCORIS stores [r, in·kh·kw],
 * the kernel flattened (a whole w2 keeps it: [out2, in2, kh, kw]).
 */
function flattensKernel(m: AdaptedModule): boolean {
  const r = m.rule;
  return (r.kind === 'hadamard' && !r.t1) || (r.kind === 'kronecker' && 'a' in r.w2 && !r.w2.t);
}

/** A module's key across layouts of one adapter file: its tensors' names. */
const moduleKey = (m: AdaptedModule): string => m.tensors.map((t) => t.name).join('\n');

/** The base tensor of each module (by moduleKey), the adapter fitted to `base` as merge fits it (bad input where it does not fit). */
function baseTensors(adapter: Checkpoint, basePath: string): Map<string, TensorInfo> {
  const base = openCheckpoint(basePath);
  try {
    const fitted = adapterLayout(adapter, base).modules.filter((m) => m.base && m.rule.kind !== 'stacked');
    return new Map(fitted.map((m) => [moduleKey(m), m.base!]));
  } finally {
    closeCheckpoint(base);
  }
}

/** A convolution's kernel: as the module's tensors state it, else as its base tensor [out, in, kh, kw] does. */
function kernelOf(m: AdaptedModule, base: TensorInfo | undefined): number[] | undefined {
  return statedKernel(m) ?? (base && base.shape.length > 2 ? base.shape.slice(2) : undefined);
}

export async function resizeJob(opts: ResizeOptions, ctx: JobContext): Promise<ResizeReport> {
  const t0 = performance.now();
  rankOrEnergy('resize', opts.rank, opts.energy);
  const source = openFactorAdapter(opts.adapter);
  try {
    assertPlainLowRank(source, 'resize', false);
    const { checkpoint, layout } = source;
    const modules = source.factored.filter((m) => !isBiasDiff(m));
    // What each module allows: its rank, and no more than its shape holds.
    for (const m of modules) {
      const allowed = Math.min(factorRank(m), m.out, m.in);
      if (opts.rank !== undefined && opts.rank > allowed) {
        throw new LensError(opts.adapter, `--rank ${opts.rank} is larger than the ${allowed} module ${m.module} allows (rank ${factorRank(m)}, shape [${m.out}, ${m.in}]); resize only lowers ranks (--energy picks a rank per module)`, m.tensors[0].name);
      }
      if (factorRank(m) > MAX_FORM_RANK) {
        throw new LensError(opts.adapter, `module ${m.module} (${m.rule.kind}) has a factor form of rank ${factorRank(m)}, above the ${MAX_FORM_RANK} resize works on`, m.tensors[0].name);
      }
    }
    const bases = opts.base === undefined ? undefined : baseTensors(checkpoint, opts.base);
    const flattened = modules.filter(flattensKernel);
    const warnings = [...layout.warnings];
    if (!bases && flattened.length > 0) {
      warnings.push(
        `${flattened.length} LoHa / LoKr module(s) (${flattened[0].module}${flattened.length > 1 ? ', …' : ''}) flatten a convolution's kernel into their factors, so only the base knows it: ` +
          'any of them on a Conv2d is written with a 2-D down [k, in·kh·kw]; give --base to write those [k, in, kh, kw]',
      );
    }
    const ranks = new Map<string, number>();
    for (const m of modules) {
      if (opts.rank !== undefined) ranks.set(m.module, opts.rank);
      else {
        throwIfCancelled(ctx);
        ranks.set(m.module, Math.max(1, energyRank(singularValues(checkpoint, m), opts.energy!)));
        ctx.progress({ phase: 'spectra', done: ranks.size, total: modules.length, tensor: m.module });
      }
    }
    const specs: OutModuleSpec[] = modules.map((m) => ({
      module: m.module,
      embedding: m.embedding,
      out: m.out,
      in: m.in,
      rank: ranks.get(m.module)!,
      kernel: kernelOf(m, bases?.get(moduleKey(m))),
    }));
    const read = (t: TensorInfo): PassThrough => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      bytes: checkpoint.handles.readBytesSync(t, new Uint8Array(t.byteLength)),
    });
    const passThrough = [...layout.replacements.map((r) => read(r.source)), ...source.factored.filter(isBiasDiff).map((m) => read(m.tensors[0]))];
    const results: ResizeModule[] = [];
    await withOutputDir('resize', opts.out, [opts.adapter, ...(opts.base === undefined ? [] : [opts.base])], async (out) => {
      // A file keeps its name (as .safetensors) and naming; a folder becomes a PEFT folder.
      const format = source.source === 'peft' ? undefined : source.source;
      const file = path.basename(checkpoint.files[0]).replace(/\.[^.]+$/, '') + '.safetensors';
      const peft = format === undefined ? new PeftAdapterWriter(out, specs, passThrough) : undefined;
      const lora = format !== undefined ? new LoraFileWriter(out, file, format, specs, passThrough, checkpoint.metadata) : undefined;
      const writer = (peft ?? lora)!;
      const kept = new Map<string, { kept: number; optimal: number }>();
      try {
        for (const spec of specs) {
          throwIfCancelled(ctx);
          const m = modules.find((x) => x.module === spec.module)!;
          const { L, R } = readFactors(checkpoint, m);
          const p = productSVD(L, R);
          const { left, right } = truncatedFactors(p, Math.min(spec.rank, p.core.s.length));
          writer.writeModule(spec, left, right);
          kept.set(spec.module, tailNorm(p.core.s, spec.rank));
          ctx.progress({ phase: 'resize', done: kept.size, total: specs.length, tensor: spec.module });
          await new Promise((r) => setImmediate(r));
        }
        if (peft) peft.finish(loraConfig(checkpoint.adapter!, specs));
        else lora!.finish();
      } catch (e) {
        writer.abort();
        throw e;
      }
      const written = openWritten(out);
      try {
        for (const m of modules) {
          throwIfCancelled(ctx);
          const { L, R } = readFactors(checkpoint, m);
          const k = kept.get(m.module)!;
          results.push({
            name: m.module,
            fromRank: factorRank(m),
            rank: ranks.get(m.module)!,
            energyKept: k.kept,
            relError: writtenRelError(written, m.module, L, R),
            optimalRelError: k.optimal,
          });
          ctx.progress({ phase: 'measure', done: results.length, total: modules.length, tensor: m.module });
        }
      } finally {
        written.checkpoint.handles.close();
      }
    });
    for (const w of warnings) ctx.warn(w);
    const params = (count: (m: AdaptedModule) => number): number => modules.reduce((a, m) => a + count(m), 0);
    return {
      adapter: opts.adapter,
      out: opts.out,
      rank: opts.rank ?? null,
      energy: opts.energy ?? null,
      modules: results,
      summary: {
        modules: results.length,
        fromParams: params(sourceParams),
        params: params((m) => ranks.get(m.module)! * (m.out + m.in)),
        meanEnergyKept: results.reduce((a, m) => a + m.energyKept, 0) / results.length,
        maxRelError: Math.max(...results.map((m) => m.relError)),
      },
      warnings,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    source.checkpoint.handles.close();
  }
}
