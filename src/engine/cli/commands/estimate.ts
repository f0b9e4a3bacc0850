import { LensError } from '../../errors';
import { estimateText, runEstimate } from '../../jobs/estimate';
import { ParsedArgs } from '../args';
import { CliCommand } from '../command';

export const estimateCommand: CliCommand = {
  name: 'estimate',
  summary: 'exact LoRA trainable parameters from the real shapes of a model (folder or config.json)',
  usage: 'estimate MODEL_DIR_OR_CONFIG (--adapter DIR | --r N --target a,b,... [--alpha A]) [--json F]',
  flags: { adapter: { kind: 'string' }, r: { kind: 'number' }, alpha: { kind: 'number' }, target: { kind: 'list' } },
  maxPositional: 1,
  async run(args: ParsedArgs, ctx) {
    const p = args.positional[0];
    if (p === undefined) throw new LensError('lora-lens estimate', 'give a model folder or config.json');
    const targets = (args.flags.target as string[] | undefined)?.flatMap((t) => t.split(',')).filter((t) => t !== '');
    if (args.flags.adapter !== undefined && (args.flags.r !== undefined || targets !== undefined)) {
      throw new LensError('lora-lens estimate', 'give either --adapter or --r/--target, not both');
    }
    const report = runEstimate(p, { adapter: args.flags.adapter as string | undefined, r: args.flags.r as number | undefined, alpha: args.flags.alpha as number | undefined, targets }, ctx);
    return { report, text: estimateText(report) };
  },
};
