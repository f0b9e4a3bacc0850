import { mergeModel } from '../../jobs/merge';
import { MergeRule } from '../../kernels/kernels';
import { MERGE_RULES } from '../../kernels/kernels';
import { CLI_DTYPES } from '../../../shared/safetensors/dtypes';
import { required } from '../args';
import { CliCommand } from '../command';

export const mergeCommand: CliCommand = {
  name: 'merge',
  summary: 'merge an adapter into its base: a Hugging Face model folder at fp32, fp16 or bf16',
  usage: 'merge --base DIR --adapter DIR --out DIR --dtype fp32|fp16|bf16 [--rule peft|peft-safe|fp32-cast] [--shard-size BYTES]',
  flags: {
    base: { kind: 'string' },
    adapter: { kind: 'string' },
    out: { kind: 'string' },
    dtype: { kind: 'string', choices: Object.keys(CLI_DTYPES) },
    rule: { kind: 'string', choices: MERGE_RULES, default: 'peft' },
    'shard-size': { kind: 'number' },
  },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'merge';
    const f = args.flags;
    const r = await mergeModel(
      required(c, f, 'base'),
      required(c, f, 'adapter'),
      required(c, f, 'out'),
      { dtype: required(c, f, 'dtype'), rule: f.rule as MergeRule, shardSize: f['shard-size'] as number | undefined },
      await ctx.kernels(),
      ctx,
    );
    const text = [
      `merged ${r.loraTensors} adapted tensors${r.doraTensors ? ` (${r.doraTensors} DoRA)` : ''}, replaced ${r.replacedTensors}, added ${r.addedTensors}, re-encoded ${r.castTensors}, copied ${r.copiedTensors}: ${r.tensors} tensors at ${r.dtype} (rule ${r.rule})`,
      `wrote ${r.out}/ (${r.files.join(', ')}) in ${r.seconds.toFixed(1)} s`,
    ];
    return { report: r, text: text.join('\n') };
  },
};
