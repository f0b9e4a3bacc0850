import { extractTaskVector } from '../../jobs/extract';
import { required } from '../args';
import { CliCommand } from '../command';

export const extractCommand: CliCommand = {
  name: 'extract',
  summary: 'task vector = finetuned - base (fp32), as one safetensors file',
  usage: 'extract --base DIR --finetuned DIR --out FILE.safetensors [--json F]',
  flags: { base: { kind: 'string' }, finetuned: { kind: 'string' }, out: { kind: 'string' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'extract';
    const r = await extractTaskVector(required(c, args.flags, 'base'), required(c, args.flags, 'finetuned'), required(c, args.flags, 'out'), await ctx.kernels(), ctx);
    const s = r.summary;
    const text = [
      `task vector: ${s.nonzeroTensors} non-zero tensors, ${s.zeroTensors} zero, of ${s.tensors}; ${s.nonzeroElements.toLocaleString('en')} non-zero elements of ${s.elements.toLocaleString('en')}; norm ${s.l2Norm.toExponential(3)}`,
      ...(s.nonFiniteTensors ? [`NaN/Inf in ${s.nonFiniteTensors} tensor(s): ${r.nonFinite.slice(0, 5).map((x) => `${x.name} (${x.elements})`).join(', ')}`] : []),
      `wrote ${r.out}`,
    ];
    return { report: r, text: text.join('\n') };
  },
};
