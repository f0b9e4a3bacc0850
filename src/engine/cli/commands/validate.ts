import { LensError } from '../../errors';
import { DEFAULT_TOLERANCE } from '../../jobs/compare';
import { validate } from '../../jobs/validate';
import { MergeRule } from '../../kernels/kernels';
import { MERGE_RULES } from '../../kernels/kernels';
import { CliDtype } from '../../../shared/safetensors/dtypes';
import { CLI_DTYPES } from '../../../shared/safetensors/dtypes';
import { required, splitList } from '../args';
import { CliCommand } from '../command';

export const validateCommand: CliCommand = {
  name: 'validate',
  summary: 'merge, extract, compare and precision for each dtype in one go, with a verdict',
  usage: 'validate --base DIR --adapter DIR --out DIR [--dtypes fp32,fp16,bf16] [--rule R] [--tolerance T] [--keep-models]',
  flags: {
    base: { kind: 'string' },
    adapter: { kind: 'string' },
    out: { kind: 'string' },
    dtypes: { kind: 'list' },
    rule: { kind: 'string', choices: MERGE_RULES, default: 'peft' },
    tolerance: { kind: 'number', default: DEFAULT_TOLERANCE },
    'keep-models': { kind: 'bool' },
  },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'validate';
    const f = args.flags;
    const dtypes = [...new Set(splitList((f.dtypes as string[] | undefined) ?? ['fp32', 'fp16', 'bf16']))];
    for (const d of dtypes) if (!(d in CLI_DTYPES)) throw new LensError('--dtypes', `must be fp32, fp16 and/or bf16 (got ${JSON.stringify(d)})`);
    if (!((f.tolerance as number) >= 0)) throw new LensError('--tolerance', `must be a non-negative number (got ${f.tolerance})`);
    const r = await validate(
      required(c, f, 'base'),
      required(c, f, 'adapter'),
      required(c, f, 'out'),
      { dtypes: dtypes as CliDtype[], rule: f.rule as MergeRule, tolerance: f.tolerance as number, keepModels: f['keep-models'] === true },
      await ctx.kernels(),
      ctx,
    );
    return { report: r, text: [r.verdict, ...r.dtypes.map((d) => `[${d.dtype}] ${d.verdict}`), `wrote ${f.out}/summary.json and report.txt${r.keptModels ? ', and each dtype\'s merged model and task vector' : ''}`].join('\n') };
  },
};
