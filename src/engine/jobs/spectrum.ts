/**
 * spectrum: the singular values of every module's delta, exactly, with how much of its rank the delta
 * uses, for every adapter format the engine reads. A LoRA's s·B@A from the QR of each factor and the SVD
 * of the r×r core (no [out, in] matrix is formed), on the worker pool; LoHa and full diffs through their
 * factor form L·Rᵀ (lowrank/factors.ts) the same way; LoKr as the products of its two factors' singular values.
 */
import { classifyTensor } from '../../shared/census/classify';
import { energyRank } from '../../shared/energy';
import { LinalgPool } from '../kernels/linalgPool';
import { factorRank, isBiasDiff, kronSingularValues, lowRankRule, openFactorAdapter, readFactorArrays, readFactors, sourceParams } from '../lowrank/factors';
import { AdaptedModule, ruleName, wholeTensor } from '../checkpoint/deltaRule';
import { productSingularValues } from '../linalg/lowrank';
import { LensError } from '../errors';
import { JobContext, throwIfCancelled } from '../util/job';
import type { SpectrumModule, SpectrumReport } from '../../shared/jobs/reports/lowrank';
export type { SpectrumModule, SpectrumReport };

export interface SpectrumOptions {
  adapter: string;
}

export function spectrumModule(
  name: string,
  rule: string,
  rank: number,
  out: number,
  inn: number,
  scale: number,
  s: Float64Array,
  dora: boolean,
  params: number,
  biasDiff: boolean,
): SpectrumModule {
  let total = 0;
  let sum = 0;
  for (const x of s) {
    total += x * x;
    sum += x;
  }
  let entropy = 0;
  for (const x of s) if (x > 0) entropy -= (x / sum) * Math.log(x / sum);
  const { layer, projection } = classifyTensor(`${name}.weight`);
  const floor = Math.max(out, inn) * Number.EPSILON * (s[0] ?? 0);
  return {
    name,
    rule,
    rank,
    out,
    in: inn,
    scale,
    layer,
    projection,
    singularValues: Array.from(s),
    energyRank99: energyRank(s, 0.99),
    energyRank90: energyRank(s, 0.9),
    energyRank95: energyRank(s, 0.95),
    numericalRank: s.filter((x) => x > floor).length,
    frobeniusNorm: Math.sqrt(total),
    spectralNorm: s[0] ?? 0,
    stableRank: total > 0 ? total / (s[0] * s[0]) : 0,
    effectiveRank: sum > 0 ? Math.exp(entropy) : 0,
    dora,
    params,
    biasDiff,
  };
}

export async function spectrumJob(opts: SpectrumOptions, ctx: JobContext): Promise<SpectrumReport> {
  const t0 = performance.now();
  const { checkpoint, layout, factored, other } = openFactorAdapter(opts.adapter);
  const warnings = [...layout.warnings];
  const modules: SpectrumModule[] = [];
  const products = new LinalgPool();
  try {
    if (factored.length === 0) throw new LensError(opts.adapter, `no module has a factor form (${other[0].rule}: ${other[0].reason})`);
    // Modules go to the workers as they are read, a few ahead; their reports are made in order.
    const inFlight: Promise<SpectrumModule>[] = [];
    const settle = async (): Promise<void> => {
      modules.push(await inFlight.shift()!);
      ctx.progress({ phase: 'spectrum', done: modules.length, total: factored.length, tensor: modules[modules.length - 1].name });
    };
    const report = (m: AdaptedModule, s: Float64Array): SpectrumModule =>
      spectrumModule(m.module, ruleName(m), factorRank(m), m.out, m.in, 'scale' in m.rule ? m.rule.scale : 1, s, wholeTensor(m), sourceParams(m), isBiasDiff(m));
    for (const m of factored) {
      throwIfCancelled(ctx);
      if (m.rule.kind === 'low-rank') {
        const { A, B, rank, release } = readFactorArrays(checkpoint, m, products);
        const scale = Math.abs(lowRankRule(m).scale);
        inFlight.push(
          products
            .factorSingularValues(A, B, rank, m.in, m.out)
            .then((s) => report(m, s.map((x) => x * scale)))
            .finally(release),
        );
      } else {
        // LoKr from its factors' spectra; LoHa and full diffs from their L·Rᵀ, here (they are few and small).
        const f = m.rule.kind === 'kronecker' ? undefined : readFactors(checkpoint, m);
        inFlight.push(Promise.resolve(report(m, f ? productSingularValues(f.L, f.R) : kronSingularValues(checkpoint, m))));
      }
      if (inFlight.length > products.threads) await settle();
    }
    while (inFlight.length) await settle();
  } finally {
    await products.dispose();
    checkpoint.handles.close();
  }
  modules.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  if (other.length) warnings.push(`${other.length} module(s) have no exact factor form and are not in the report (${other[0].name}, ${other[0].rule}: ${other[0].reason})`);
  if (modules.some((m) => m.dora)) warnings.push('DoRA adapter: the spectra are those of the additive delta ΔW; the magnitude vectors rescale W + ΔW per feature on top of it');
  for (const w of warnings) ctx.warn(w);
  const totalRank = modules.reduce((a, m) => a + m.rank, 0);
  const totalEnergyRank99 = modules.reduce((a, m) => a + m.energyRank99, 0);
  return {
    adapter: opts.adapter,
    modules,
    noFactorForm: other,
    summary: {
      modules: modules.length,
      totalRank,
      totalEnergyRank99,
      rankUsage99: totalRank > 0 ? totalEnergyRank99 / totalRank : 0,
      meanEnergyRank99: totalEnergyRank99 / modules.length,
      maxEnergyRank99: Math.max(...modules.map((m) => m.energyRank99)),
    },
    warnings,
    seconds: (performance.now() - t0) / 1000,
  };
}
