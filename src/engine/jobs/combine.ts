/**
 * combine: one PEFT adapter whose delta is Σ wᵢ·ΔWᵢ per module. Exact by concatenating the factors
 * (B = [w₁s₁B₁ | w₂s₂B₂ | …], A = [A₁; A₂; …], rank Σrᵢ), or the best rank-R approximation of that sum
 * from the QR of the concatenated factors and the SVD of the small core.
 */
import { AdaptedModule } from '../checkpoint/deltaRule';
import { LensError } from '../errors';
import { hconcat, Mat } from '../linalg/dense';
import { productSVD, truncatedFactors } from '../linalg/lowrank';
import { assertPlainLowRank, FactorAdapter, factorRank, openFactorAdapter, readFactors } from '../lowrank/factors';
import { loraConfig, openWritten, OutModuleSpec, PeftAdapterWriter, writtenRelError } from '../lowrank/peftOut';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import type { CombineModule, CombineReport } from '../../shared/jobs/reports/lowrank';
export type { CombineModule, CombineReport };

export interface CombineOptions {
  adapters: string[];
  /** One per adapter (default 1 each). */
  weights?: number[];
  out: string;
  /** Best rank-R approximation; absent: the exact sum (rank Σrᵢ). */
  rank?: number;
}

function usage(msg: string): never {
  throw new LensError('lora-lens combine', msg);
}

interface Part {
  adapter: FactorAdapter;
  module: AdaptedModule;
  weight: number;
}

/** Modules by name with the adapters that adapt them; every mismatch between adapters is bad input. */
function gatherModules(sources: FactorAdapter[], paths: string[], weights: number[]): Map<string, Part[]> {
  const first = sources[0].checkpoint.adapter!;
  const byName = new Map<string, Part[]>();
  sources.forEach((a, i) => {
    const cfg = a.checkpoint.adapter!;
    if (cfg.baseModel !== null && first.baseModel !== null && cfg.baseModel !== first.baseModel) {
      throw new LensError(cfg.file, `made for base '${cfg.baseModel}' but ${paths[0]} for '${first.baseModel}': adapters of different bases cannot be combined`);
    }
    if (cfg.fanInFanOut !== first.fanInFanOut) throw new LensError(cfg.file, `fan_in_fan_out=${cfg.fanInFanOut} but ${paths[0]} has ${first.fanInFanOut}: the adapters store their deltas differently`);
    if (a.layout.replacements.length > 0) {
      throw new LensError(paths[i], 'the adapter saves full tensors (modules_to_save or a task head); combine adds LoRA deltas only', a.layout.replacements[0].source.name);
    }
    for (const m of a.lowRank) {
      const parts = byName.get(m.module) ?? [];
      const ref = parts[0]?.module;
      if (ref && (ref.out !== m.out || ref.in !== m.in || ref.embedding !== m.embedding)) {
        throw new LensError(paths[i], `module ${m.module} has a delta of shape [${m.out}, ${m.in}] but [${ref.out}, ${ref.in}] in ${paths[sources.indexOf(parts[0].adapter)]}: the adapters are for models of different shapes`, m.tensors[0].name);
      }
      parts.push({ adapter: a, module: m, weight: weights[i] });
      byName.set(m.module, parts);
    }
  });
  return new Map([...byName].sort((a, b) => a[0].localeCompare(b[0], 'en', { numeric: true })));
}

/** The concatenated factors of Σ wᵢ·sᵢ·Bᵢ·Aᵢ: L = [w₁s₁B₁ | …] (out × Σr), R = [A₁ᵀ | …] (in × Σr). */
function concatenated(parts: Part[]): { L: Mat; R: Mat } {
  const Ls: Mat[] = [];
  const Rs: Mat[] = [];
  for (const p of parts) {
    const { L, R } = readFactors(p.adapter.checkpoint, p.module);
    for (let i = 0; i < L.data.length; i++) L.data[i] *= p.weight;
    Ls.push(L);
    Rs.push(R);
  }
  return { L: hconcat(Ls), R: hconcat(Rs) };
}

export async function combineJob(opts: CombineOptions, ctx: JobContext): Promise<CombineReport> {
  const t0 = performance.now();
  if (opts.adapters.length === 0) usage('--adapters needs at least one adapter folder');
  const weights = opts.weights ?? opts.adapters.map(() => 1);
  if (weights.length !== opts.adapters.length) usage(`--weights has ${weights.length} value(s) for ${opts.adapters.length} adapter(s)`);
  const badWeight = weights.find((w) => !Number.isFinite(w));
  if (badWeight !== undefined) usage(`--weights must be finite numbers (got ${badWeight})`);
  if (opts.rank !== undefined && !(Number.isInteger(opts.rank) && opts.rank >= 1)) usage(`--rank must be a positive integer (got ${opts.rank})`);
  const sources: FactorAdapter[] = [];
  try {
    for (const p of opts.adapters) {
      const a = openFactorAdapter(p);
      sources.push(a);
      if (a.source !== 'peft') throw new LensError(p, `a ${a.source} file: combine adds PEFT-style adapter folders (convert it first: lora-lens convert --in FILE --out DIR --base BASE)`);
      assertPlainLowRank(a, 'combine');
    }
    const byName = gatherModules(sources, opts.adapters, weights);
    const specs: OutModuleSpec[] = [];
    for (const [name, parts] of byName) {
      const m = parts[0].module;
      const total = parts.reduce((a, p) => a + factorRank(p.module), 0);
      if (opts.rank !== undefined && opts.rank > Math.min(m.out, m.in)) {
        throw new LensError(opts.adapters[sources.indexOf(parts[0].adapter)], `--rank ${opts.rank} is larger than module ${name} allows (its delta is [${m.out}, ${m.in}])`, m.tensors[0].name);
      }
      specs.push({ module: name, embedding: m.embedding, out: m.out, in: m.in, rank: opts.rank === undefined ? total : Math.min(opts.rank, total) });
    }
    const results: CombineModule[] = [];
    await withOutputDir('combine', opts.out, opts.adapters, async (out) => {
      const writer = new PeftAdapterWriter(out, specs, []);
      const kept = new Map<string, number>();
      try {
        for (const spec of specs) {
          throwIfCancelled(ctx);
          const { L, R } = concatenated(byName.get(spec.module)!);
          if (spec.rank === L.cols) {
            writer.writeModule(spec, L, R);
            kept.set(spec.module, 1);
          } else {
            const p = productSVD(L, R);
            const { left, right } = truncatedFactors(p, spec.rank);
            writer.writeModule(spec, left, right);
            let total = 0;
            let head = 0;
            p.core.s.forEach((x, i) => {
              total += x * x;
              if (i < spec.rank) head += x * x;
            });
            kept.set(spec.module, total === 0 ? 1 : head / total);
          }
          ctx.progress({ phase: 'combine', done: kept.size, total: specs.length, tensor: spec.module });
          await new Promise((r) => setImmediate(r));
        }
        const baseModel = sources.map((s) => s.checkpoint.adapter!.baseModel).find((b) => b !== null) ?? null;
        writer.finish({
          ...loraConfig(sources[0].checkpoint.adapter!, specs),
          base_model_name_or_path: baseModel,
          target_modules: specs.map((s) => s.module),
          modules_to_save: null,
          layers_to_transform: null,
          layers_pattern: null,
        });
      } catch (e) {
        writer.abort();
        throw e;
      }
      const written = openWritten(out);
      try {
        for (const spec of specs) {
          throwIfCancelled(ctx);
          const parts = byName.get(spec.module)!;
          const { L, R } = concatenated(parts);
          results.push({
            name: spec.module,
            rank: spec.rank,
            relError: writtenRelError(written, spec.module, L, R),
            sources: parts.length,
            exact: spec.rank === L.cols,
            energyKept: kept.get(spec.module)!,
          });
          ctx.progress({ phase: 'measure', done: results.length, total: specs.length, tensor: spec.module });
        }
      } finally {
        written.checkpoint.handles.close();
      }
    });
    const warnings = sources.flatMap((s) => s.layout.warnings);
    for (const w of warnings) ctx.warn(w);
    return {
      adapters: opts.adapters,
      weights,
      out: opts.out,
      rank: opts.rank ?? null,
      modules: results,
      summary: {
        modules: results.length,
        params: specs.reduce((a, s) => a + s.rank * (s.out + s.in), 0),
        maxRelError: Math.max(...results.map((m) => m.relError)),
      },
      warnings,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    for (const s of sources) s.checkpoint.handles.close();
  }
}
