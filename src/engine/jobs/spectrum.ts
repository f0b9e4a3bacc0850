/**
 * spectrum: the singular values of every module's delta s·B@A, exactly, from the QR of each factor and
 * the SVD of the r×r core (no [out, in] matrix is formed), with how much of its rank the delta uses.
 */
import { classifyTensor } from '../../shared/census/classify';
import { energyRank } from '../linalg/lowrank';
import { LinalgPool } from '../kernels/linalgPool';
import { factorRank, lowRankRule, openFactorAdapter, readFactorArrays } from '../lowrank/factors';
import { wholeTensor } from '../checkpoint/deltaRule';
import { LensError } from '../errors';
import { JobContext, throwIfCancelled } from '../util/job';
import type { SpectrumModule, SpectrumReport } from '../../shared/jobs/reports/lowrank';
export type { SpectrumModule, SpectrumReport };

export interface SpectrumOptions {
  adapter: string;
}

export function spectrumModule(name: string, rank: number, out: number, inn: number, scale: number, s: Float64Array, dora: boolean): SpectrumModule {
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
  };
}

export async function spectrum(opts: SpectrumOptions, ctx: JobContext): Promise<SpectrumReport> {
  const t0 = performance.now();
  const { checkpoint, layout, lowRank, other } = openFactorAdapter(opts.adapter);
  const warnings = [...layout.warnings];
  const modules: SpectrumModule[] = [];
  const products = new LinalgPool();
  try {
    if (lowRank.length === 0) throw new LensError(opts.adapter, `no module has a B·A factor form (${other[0].rule} adapter): its spectrum would need the expanded deltas`);
    // Modules go to the workers as they are read, a few ahead; their reports are made in order.
    const inFlight: Promise<SpectrumModule>[] = [];
    const settle = async (): Promise<void> => {
      modules.push(await inFlight.shift()!);
      ctx.progress({ phase: 'spectrum', done: modules.length, total: lowRank.length, tensor: modules[modules.length - 1].name });
    };
    for (const m of lowRank) {
      throwIfCancelled(ctx);
      const { A, B, rank, release } = readFactorArrays(checkpoint, m, products);
      const rule = lowRankRule(m);
      inFlight.push(
        products
          .factorSingularValues(A, B, rank, m.in, m.out)
          .then((s) => spectrumModule(m.module, factorRank(m), m.out, m.in, rule.scale, s.map((x) => x * Math.abs(rule.scale)), wholeTensor(m)))
          .finally(release),
      );
      if (inFlight.length > products.threads) await settle();
    }
    while (inFlight.length) await settle();
  } finally {
    await products.dispose();
    checkpoint.handles.close();
  }
  modules.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  if (other.length) warnings.push(`${other.length} module(s) have no B·A factor form and are not in the report (${other[0].name}: ${other[0].rule})`);
  if (modules.some((m) => m.dora)) warnings.push('DoRA adapter: the spectra are those of s·B@A; the magnitude vectors rescale W + ΔW per output feature on top of them');
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
