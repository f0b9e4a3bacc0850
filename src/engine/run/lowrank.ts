/** Runners of the low-rank toolbox: spectrum, resize, extract-lora, combine. */
import { LensError } from '../errors';
import { need } from '../../shared/jobs/request';
import { combineJob } from '../jobs/combine';
import { extractLoraJob } from '../jobs/extractLora';
import { resizeJob } from '../jobs/resize';
import { spectrumJob } from '../jobs/spectrum';
import { formatInt } from '../../shared/format';
import { Runner } from './runner';

function fmt(x: number): string {
  return x === 0 ? '0' : x.toExponential(3);
}

export const spectrum: Runner<'spectrum'> = async (req, ctx) => {
  const r = await spectrumJob({ adapter: need(req, 'adapter') }, ctx);
  const width = Math.max(...r.modules.map((m) => m.name.length));
  const s = r.summary;
  const text = [
    `${s.modules} modules, total rank ${s.totalRank}; 99% of each delta's energy lies in ${s.totalEnergyRank99} of those ranks (${(100 * s.rankUsage99).toFixed(1)}%), at most ${s.maxEnergyRank99} in one module`,
    `${'module'.padEnd(width)}  rank  e99  ‖ΔW‖_F     σ1         σ_last`,
    ...r.modules.map((m) => `${m.name.padEnd(width)}  ${String(m.rank).padStart(4)}  ${String(m.energyRank99).padStart(3)}  ${fmt(m.frobeniusNorm).padEnd(9)}  ${fmt(m.spectralNorm).padEnd(9)}  ${fmt(m.singularValues[m.singularValues.length - 1] ?? 0)}`),
  ];
  return { report: r, text: text.join('\n') };
};

export const resize: Runner<'resize'> = async (req, ctx) => {
  const r = await resizeJob(
    { adapter: need(req, 'adapter'), out: need(req, 'out'), base: req.base, rank: req.rank, energy: req.energy },
    ctx,
  );
  const s = r.summary;
  const text = [
    `${s.modules} modules resized: ${formatInt(s.fromParams)} -> ${formatInt(s.params)} parameters; mean energy kept ${(100 * s.meanEnergyKept).toFixed(2)}%, largest relative error ${fmt(s.maxRelError)}`,
    ...r.modules.map((m) => `  ${m.name}: rank ${m.fromRank} -> ${m.rank}, energy kept ${(100 * m.energyKept).toFixed(2)}%, relError ${fmt(m.relError)} (optimum ${fmt(m.optimalRelError)})`),
    `wrote ${r.out}`,
  ];
  return { report: r, text: text.join('\n') };
};

export const extractLora: Runner<'extract-lora'> = async (req, ctx) => {
      const r = await extractLoraJob(
    {
      base: need(req, 'base'),
      finetuned: need(req, 'finetuned'),
      out: need(req, 'out'),
      rank: req.rank,
      energy: req.energy,
      oversample: req.oversample,
      powerIterations: req.powerIterations,
    },
    ctx,
  );
  const s = r.summary;
  const noisy = r.modules.filter((m) => m.roundingNoise);
  const text = [
    `${s.modules} modules extracted (${formatInt(s.params)} parameters), ${s.unchanged} linear weights unchanged, ${s.notCaptured} changed tensors not captured; mean energy kept ${(100 * s.meanEnergyKept).toFixed(2)}%, largest relative error ${fmt(s.maxRelError)}`,
    ...r.modules.map(
      (m) =>
        `  ${m.name}: rank ${m.rank}, energy kept ${(100 * m.energyKept).toFixed(2)}%, relError ${fmt(m.relError)}` +
        (m.roundingNoise ? `; ${m.roundingNoise.dtype} rounding noise ${(100 * m.roundingNoise.fraction).toFixed(2)}% of the energy, ${m.roundingNoise.signalRank} singular values above it` : ''),
    ),
    ...r.notCaptured.map((t) => `  not captured: ${t.name} (${t.category}, norm ${fmt(t.l2Norm)})`),
    ...(noisy.length ? [`rounding noise: each element of the half-precision finetuned weights rounded once (variance ulp²/12); singular values below √(noise/mn)·(√m+√n) are indistinguishable from it`] : []),
    `wrote ${r.out}`,
  ];
  return { report: r, text: text.join('\n') };
};

export const combine: Runner<'combine'> = async (req, ctx) => {
  const c = 'combine';
  const w = req.weights;
  const weights = w?.split(',').map((x) => {
    const n = Number(x);
    if (x.trim() === '' || !Number.isFinite(n)) throw new LensError(`lora-lens ${c}`, `--weights must be numbers separated by commas (got ${JSON.stringify(w)})`);
    return n;
  });
  const r = await combineJob({ adapters: need(req, 'adapters'), weights, out: need(req, 'out'), rank: req.rank }, ctx);
  const s = r.summary;
  const text = [
    `${s.modules} modules from ${r.adapters.length} adapter(s), weights ${r.weights.join(', ')}${r.rank === null ? ', exact' : `, best rank ${r.rank}`}: ${formatInt(s.params)} parameters; largest relative error ${fmt(s.maxRelError)}`,
    ...r.modules.map((m) => `  ${m.name}: rank ${m.rank}${m.exact ? ' (exact)' : `, energy kept ${(100 * m.energyKept).toFixed(2)}%`}, relError ${fmt(m.relError)}`),
    `wrote ${r.out}`,
  ];
  return { report: r, text: text.join('\n') };
};
