/** The CLI blocks of the low-rank toolbox: spectrum, resize, extract-lora, combine. */
import { combineAdapters } from '../../jobs/combine';
import { extractLora } from '../../jobs/extractLora';
import { resizeAdapter } from '../../jobs/resize';
import { LensError } from '../../errors';
import { spectrum } from '../../jobs/spectrum';
import { required } from '../args';
import { CliCommand } from '../command';

function fmt(x: number): string {
  return x === 0 ? '0' : x.toExponential(3);
}

export const spectrumCommand: CliCommand = {
  name: 'spectrum',
  summary: "singular values of every module's delta s·B@A, exactly (from the r×r core), and the rank it uses",
  usage: 'spectrum --adapter DIR [--json F]',
  flags: { adapter: { kind: 'string' } },
  maxPositional: 0,
  async run(args, ctx) {
    const r = await spectrum({ adapter: required('spectrum', args.flags, 'adapter') }, ctx);
    const width = Math.max(...r.modules.map((m) => m.name.length));
    const s = r.summary;
    const text = [
      `${s.modules} modules, total rank ${s.totalRank}; 99% of each delta's energy lies in ${s.totalEnergyRank99} of those ranks (${(100 * s.rankUsage99).toFixed(1)}%), at most ${s.maxEnergyRank99} in one module`,
      `${'module'.padEnd(width)}  rank  e99  ‖ΔW‖_F     σ1         σ_last`,
      ...r.modules.map((m) => `${m.name.padEnd(width)}  ${String(m.rank).padStart(4)}  ${String(m.energyRank99).padStart(3)}  ${fmt(m.frobeniusNorm).padEnd(9)}  ${fmt(m.spectralNorm).padEnd(9)}  ${fmt(m.singularValues[m.singularValues.length - 1] ?? 0)}`),
    ];
    return { report: r, text: text.join('\n') };
  },
};

export const resizeCommand: CliCommand = {
  name: 'resize',
  summary: "a PEFT adapter whose every delta is the best rank-R (or smallest rank keeping energy E) approximation of the original's",
  usage: 'resize --adapter DIR --out DIR (--rank R | --energy E) [--json F]',
  flags: { adapter: { kind: 'string' }, out: { kind: 'string' }, rank: { kind: 'number' }, energy: { kind: 'number' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'resize';
    const r = await resizeAdapter(
      { adapter: required(c, args.flags, 'adapter'), out: required(c, args.flags, 'out'), rank: args.flags.rank as number | undefined, energy: args.flags.energy as number | undefined },
      ctx,
    );
    const s = r.summary;
    const text = [
      `${s.modules} modules resized: ${s.fromParams.toLocaleString('en')} -> ${s.params.toLocaleString('en')} parameters; mean energy kept ${(100 * s.meanEnergyKept).toFixed(2)}%, largest relative error ${fmt(s.maxRelError)}`,
      ...r.modules.map((m) => `  ${m.name}: rank ${m.fromRank} -> ${m.rank}, energy kept ${(100 * m.energyKept).toFixed(2)}%, relError ${fmt(m.relError)} (optimum ${fmt(m.optimalRelError)})`),
      `wrote ${r.out}`,
    ];
    return { report: r, text: text.join('\n') };
  },
};

export const combineCommand: CliCommand = {
  name: 'combine',
  summary: 'one PEFT adapter whose delta is Σ wᵢ·ΔWᵢ: exact (factors concatenated, rank Σrᵢ), or its best rank-R approximation',
  usage: 'combine --adapters DIR… [--weights w,…] --out DIR [--rank R] [--json F]',
  flags: { adapters: { kind: 'list' }, weights: { kind: 'string' }, out: { kind: 'string' }, rank: { kind: 'number' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'combine';
    const w = args.flags.weights as string | undefined;
    const weights = w?.split(',').map((x) => {
      const n = Number(x);
      if (x.trim() === '' || !Number.isFinite(n)) throw new LensError(`lora-lens ${c}`, `--weights must be numbers separated by commas (got ${JSON.stringify(w)})`);
      return n;
    });
    const r = await combineAdapters({ adapters: required(c, args.flags, 'adapters'), weights, out: required(c, args.flags, 'out'), rank: args.flags.rank as number | undefined }, ctx);
    const s = r.summary;
    const text = [
      `${s.modules} modules from ${r.adapters.length} adapter(s), weights ${r.weights.join(', ')}${r.rank === null ? ', exact' : `, best rank ${r.rank}`}: ${s.params.toLocaleString('en')} parameters; largest relative error ${fmt(s.maxRelError)}`,
      ...r.modules.map((m) => `  ${m.name}: rank ${m.rank}${m.exact ? ' (exact)' : `, energy kept ${(100 * m.energyKept).toFixed(2)}%`}, relError ${fmt(m.relError)}`),
      `wrote ${r.out}`,
    ];
    return { report: r, text: text.join('\n') };
  },
};

export const extractLoraCommand: CliCommand = {
  name: 'extract-lora',
  summary: "a PEFT LoRA adapter from the difference of two models: truncated SVD of each changed 2-D linear weight's task vector",
  usage: 'extract-lora --base DIR --finetuned DIR --out DIR (--rank R | --energy E) [--oversample P] [--power-iterations Q] [--json F]',
  flags: { base: { kind: 'string' }, finetuned: { kind: 'string' }, out: { kind: 'string' }, rank: { kind: 'number' }, energy: { kind: 'number' }, oversample: { kind: 'number' }, 'power-iterations': { kind: 'number' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'extract-lora';
    const f = args.flags;
    const r = await extractLora(
      {
        base: required(c, f, 'base'),
        finetuned: required(c, f, 'finetuned'),
        out: required(c, f, 'out'),
        rank: f.rank as number | undefined,
        energy: f.energy as number | undefined,
        oversample: f.oversample as number | undefined,
        powerIterations: f['power-iterations'] as number | undefined,
      },
      ctx,
    );
    const s = r.summary;
    const noisy = r.modules.filter((m) => m.roundingNoise);
    const text = [
      `${s.modules} modules extracted (${s.params.toLocaleString('en')} parameters), ${s.unchanged} linear weights unchanged, ${s.notCaptured} changed tensors not captured; mean energy kept ${(100 * s.meanEnergyKept).toFixed(2)}%, largest relative error ${fmt(s.maxRelError)}`,
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
  },
};
