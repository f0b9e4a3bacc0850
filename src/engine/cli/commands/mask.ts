import { runMask } from '../../jobs/mask';
import { MASK_JSON, MASK_TENSORS } from '../../unmerge/maskFile';
import { required } from '../args';
import { CliCommand } from '../command';

export const maskCommand: CliCommand = {
  name: 'mask',
  summary: 'UNMERGE: unified top-k mask of the modules a dictionary of adapters targets',
  usage: 'mask --base DIR --adapters DIR... --budget N --out DIR',
  flags: { base: { kind: 'string' }, adapters: { kind: 'list' }, budget: { kind: 'number' }, out: { kind: 'string' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'mask';
    const report = await runMask(
      { base: required(c, args.flags, 'base'), adapters: required(c, args.flags, 'adapters'), budget: required(c, args.flags, 'budget'), out: required(c, args.flags, 'out') },
      ctx.kernels,
      ctx,
    );
    const pct = (x: number | null): string => (x === null ? 'n/a (zero delta)' : `${(100 * x).toFixed(2)}%`);
    const text = [
      `mask: ${report.selected.toLocaleString('en')} of ${report.elements.toLocaleString('en')} elements kept in ${report.modules} modules (k = ${report.k} per module, budget ${report.budget})`,
      `per projection: ${Object.entries(report.perProjection).map(([p, n]) => `${p} ${n}`).join(', ')}`,
      'norm kept per adapter (||mask * delta|| / ||delta||):',
      ...Object.entries(report.normPreservation).map(([n, x]) => `  ${n}: ${pct(x)}`),
      `wrote ${args.flags.out}/${MASK_TENSORS} and ${MASK_JSON}`,
    ];
    return { report, text: text.join('\n') };
  },
};
