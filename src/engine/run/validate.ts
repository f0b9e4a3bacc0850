import { need } from '../../shared/jobs/request';
import { CLI_DTYPES, CliDtype } from '../../shared/safetensors/dtypes';
import { LensError } from '../errors';
import { validateJob } from '../jobs/validate';
import { Runner, splitList } from './runner';

export const validate: Runner<'validate'> = async (req, ctx) => {
  const dtypes = [...new Set(splitList(req.dtypes ?? ['fp32', 'fp16', 'bf16']))];
  for (const d of dtypes) if (!(d in CLI_DTYPES)) throw new LensError('--dtypes', `must be fp32, fp16 and/or bf16 (got ${JSON.stringify(d)})`);
  if (!(req.tolerance >= 0)) throw new LensError('--tolerance', `must be a non-negative number (got ${req.tolerance})`);
  const [base, adapter, out] = [need(req, 'base'), need(req, 'adapter'), need(req, 'out')];
  const r = await validateJob(
    { base, adapter, out, dtypes: dtypes as CliDtype[], rule: req.rule, tolerance: req.tolerance, keepModels: req.keepModels === true },
    ctx,
  );
  return { report: r, text: [r.verdict, ...r.dtypes.map((d) => `[${d.dtype}] ${d.verdict}`), `wrote ${out}/summary.json and report.txt`].join('\n') };
};
