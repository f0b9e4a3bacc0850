import { LensError } from '../../errors';
import { censusText, runCensus } from '../../jobs/census';
import { ParsedArgs } from '../args';
import { CliCommand } from '../command';

export const censusCommand: CliCommand = {
  name: 'census',
  summary: 'tensors of a checkpoint (or a config.json), classified, with LoRA targets; headers only',
  usage: 'census PATH [--adapter DIR] [--target a,b,...] [--json F]',
  flags: { adapter: { kind: 'string' }, target: { kind: 'list' } },
  maxPositional: 1,
  async run(args: ParsedArgs, ctx) {
    const p = args.positional[0];
    if (p === undefined) throw new LensError('lora-lens census', 'give a model folder, adapter folder, .safetensors file or config.json');
    const targets = (args.flags.target as string[] | undefined)?.flatMap((t) => t.split(',')).filter((t) => t !== '');
    const report = runCensus(p, { adapter: args.flags.adapter as string | undefined, targets }, ctx);
    return { report, text: censusText(report) };
  },
};
