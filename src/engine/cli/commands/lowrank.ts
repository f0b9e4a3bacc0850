/** The CLI blocks of the low-rank toolbox: spectrum, resize, extract-lora, combine. */
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
