/**
 * resize: a PEFT adapter whose every delta is the best rank-k approximation of the original's
 * (Eckart–Young, from the SVD of each module's r×r core: exact, nothing expanded), k = --rank for
 * every module, or per module the smallest rank keeping an energy fraction (--energy).
 */
import { LensError } from '../errors';
import { energyRank, productSingularValues, productSVD, truncatedFactors } from '../linalg/lowrank';
import { assertPlainLowRank, factorRank, openFactorAdapter, rankOrEnergy, readFactors } from '../lowrank/factors';
import { loraConfig } from '../lowrank/peftOut';
import { openWritten, OutModuleSpec, PassThrough, PeftAdapterWriter, writtenRelError } from '../lowrank/peftOut';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import type { ResizeModule, ResizeReport } from '../../shared/jobs/reports/lowrank';
export type { ResizeModule, ResizeReport };

export interface ResizeOptions {
  adapter: string;
  out: string;
  /** Exactly one of rank (every module) and energy (fraction in (0, 1], per module). */
  rank?: number;
  energy?: number;
}

function tailNorm(s: Float64Array, k: number): { kept: number; optimal: number } {
  let total = 0;
  let tail = 0;
  s.forEach((x, i) => {
    total += x * x;
    if (i >= k) tail += x * x;
  });
  return total === 0 ? { kept: 1, optimal: 0 } : { kept: (total - tail) / total, optimal: Math.sqrt(tail / total) };
}

export async function resizeJob(opts: ResizeOptions, ctx: JobContext): Promise<ResizeReport> {
  const t0 = performance.now();
  rankOrEnergy('resize', opts.rank, opts.energy);
  const source = openFactorAdapter(opts.adapter);
  try {
    if (source.source !== 'peft') throw new LensError(opts.adapter, `a ${source.source} file: resize writes PEFT-style adapter folders from PEFT-style folders for now (convert it first: lora-lens convert)`);
    assertPlainLowRank(source, 'resize');
    const { checkpoint, layout } = source;
    const modules = source.lowRank;
    // What each module allows: its rank, and no more than its shape holds.
    for (const m of modules) {
      const allowed = Math.min(factorRank(m), m.out, m.in);
      if (opts.rank !== undefined && opts.rank > allowed) {
        throw new LensError(opts.adapter, `--rank ${opts.rank} is larger than the ${allowed} module ${m.module} allows (rank ${factorRank(m)}, shape [${m.out}, ${m.in}]); resize only lowers ranks (--energy picks a rank per module)`, m.tensors[0].name);
      }
    }
    const ranks = new Map<string, number>();
    for (const m of modules) {
      if (opts.rank !== undefined) ranks.set(m.module, opts.rank);
      else {
        throwIfCancelled(ctx);
        const { L, R } = readFactors(checkpoint, m);
        ranks.set(m.module, Math.max(1, energyRank(productSingularValues(L, R), opts.energy!)));
        ctx.progress({ phase: 'spectra', done: ranks.size, total: modules.length, tensor: m.module });
      }
    }
    const specs: OutModuleSpec[] = modules.map((m) => ({ module: m.module, embedding: m.embedding, out: m.out, in: m.in, rank: ranks.get(m.module)! }));
    const passThrough: PassThrough[] = layout.replacements.map((r) => ({
      name: r.source.name,
      dtype: r.source.dtype,
      shape: r.source.shape,
      bytes: checkpoint.handles.readBytesSync(r.source, new Uint8Array(r.source.byteLength)),
    }));
    const results: ResizeModule[] = [];
    await withOutputDir('resize', opts.out, [opts.adapter], async (out) => {
      const writer = new PeftAdapterWriter(out, specs, passThrough);
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
        writer.finish(loraConfig(checkpoint.adapter!, specs));
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
    for (const w of layout.warnings) ctx.warn(w);
    const params = (rank: (m: (typeof modules)[number]) => number): number => modules.reduce((a, m) => a + rank(m) * (m.out + m.in), 0);
    return {
      adapter: opts.adapter,
      out: opts.out,
      rank: opts.rank ?? null,
      energy: opts.energy ?? null,
      modules: results,
      summary: {
        modules: results.length,
        fromParams: params((m) => factorRank(m)),
        params: params((m) => ranks.get(m.module)!),
        meanEnergyKept: results.reduce((a, m) => a + m.energyKept, 0) / results.length,
        maxRelError: Math.max(...results.map((m) => m.relError)),
      },
      warnings: layout.warnings,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    source.checkpoint.handles.close();
  }
}
