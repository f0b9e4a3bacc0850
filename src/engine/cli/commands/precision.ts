import { DEFAULT_RULE, parsePrecisionDtypes, precisionReport, precisionText } from '../../jobs/precision';
import { MERGE_RULES, MergeRule } from '../../kernels/kernels';
import { required, splitList } from '../args';
import { CliCommand } from '../command';

export const precisionCommand: CliCommand = {
  name: 'precision',
  summary: 'what merging at fp16 / bf16 loses, per rule, without writing a model',
  usage: 'precision --base DIR --adapter DIR [--dtypes fp16,bf16] [--rule peft|peft-safe|fp32-cast] [--json F]',
  flags: { base: { kind: 'string' }, adapter: { kind: 'string' }, dtypes: { kind: 'list' }, rule: { kind: 'string', choices: MERGE_RULES } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'precision';
    const f = args.flags;
    const dtypes = parsePrecisionDtypes(splitList((f.dtypes as string[] | undefined) ?? ['fp16', 'bf16']));
    // No --rule: every rule, the default first (the dtype-level figures are the default rule's).
    const rules = f.rule !== undefined ? [f.rule as MergeRule] : [DEFAULT_RULE, ...MERGE_RULES.filter((r) => r !== DEFAULT_RULE)];
    const r = await precisionReport(required(c, f, 'base'), required(c, f, 'adapter'), { dtypes, rules }, await ctx.kernels(), ctx);
    return { report: r, text: precisionText(r) };
  },
};
