import * as path from 'node:path';
import { LensError } from '../../errors';
import { DEFAULT_TOLERANCE, compareAdapter } from '../../jobs/compare';
import { required } from '../args';
import { CliCommand } from '../command';

export const compareCommand: CliCommand = {
  name: 'compare',
  summary: "compare an adapter's deltas with a task vector (a file, or a finetuned model)",
  usage: 'compare --base DIR --adapter DIR (--finetuned DIR | --task-vector FILE) --out DIR [--tolerance T] [--save-deltas]',
  flags: {
    base: { kind: 'string' },
    adapter: { kind: 'string' },
    finetuned: { kind: 'string' },
    'task-vector': { kind: 'string' },
    out: { kind: 'string' },
    tolerance: { kind: 'number', default: DEFAULT_TOLERANCE },
    'save-deltas': { kind: 'bool' },
  },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'compare';
    const f = args.flags;
    const tolerance = f.tolerance as number;
    if (!(tolerance >= 0)) throw new LensError('--tolerance', `must be a non-negative number (got ${tolerance})`);
    const r = await compareAdapter(
      required(c, f, 'base'),
      required(c, f, 'adapter'),
      { finetuned: f.finetuned as string | undefined, taskVector: f['task-vector'] as string | undefined },
      required(c, f, 'out'),
      { tolerance, saveDeltas: f['save-deltas'] === true },
      await ctx.kernels(),
      ctx,
    );
    return { report: r, text: `${r.summary.verdict}\nwrote ${r.files.map((x) => path.join(f.out as string, x)).join(', ')}` };
  },
};
