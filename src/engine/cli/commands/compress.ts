import { runCompress } from '../../jobs/compress';
import { SourceKind } from '../../unmerge/sources';
import { required } from '../args';
import { CliCommand } from '../command';

export const compressCommand: CliCommand = {
  name: 'compress',
  summary: 'UNMERGE: apply a mask to task vectors (adapters, or fine-tuned models minus the base)',
  usage: 'compress --mask DIR --base DIR (--adapter DIR | --finetuned DIR)... --out DIR',
  flags: { mask: { kind: 'string' }, base: { kind: 'string' }, adapter: { kind: 'list' }, finetuned: { kind: 'list' }, out: { kind: 'string' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'compress';
    const inputs = (args.ordered ?? [])
      .filter((f) => f.name === 'adapter' || f.name === 'finetuned')
      .map((f) => ({ kind: f.name as SourceKind, path: f.value }));
    const report = await runCompress(
      { mask: required(c, args.flags, 'mask'), base: required(c, args.flags, 'base'), inputs, out: required(c, args.flags, 'out') },
      ctx.kernels,
      ctx,
    );
    const text = [
      `compress: ${report.inputs.length} task vector(s) of ${report.selected.toLocaleString('en')} masked elements (${report.modules.length} modules)`,
      ...report.inputs.map((r) => `  ${r.name} (${r.kind}): ${r.file}, norm ${r.norm.toPrecision(6)}, ${r.normKept === null ? 'zero task vector' : `${(100 * r.normKept).toFixed(2)}% of its norm kept`}`),
      `wrote ${args.flags.out}/compress.json`,
    ];
    return { report, text: text.join('\n') };
  },
};
