import * as path from 'node:path';
import { need } from '../../shared/jobs/request';
import { LensError } from '../errors';
import { compareJob } from '../jobs/compare';
import { Runner } from './runner';

export const compare: Runner<'compare'> = async (req, ctx) => {
  const tolerance = req.tolerance;
  if (!(tolerance >= 0)) throw new LensError('--tolerance', `must be a non-negative number (got ${tolerance})`);
  const [base, adapter, out] = [need(req, 'base'), need(req, 'adapter'), need(req, 'out')];
  const r = await compareJob({ base, adapter, finetuned: req.finetuned, taskVector: req.taskVector, out, tolerance, saveDeltas: req.saveDeltas === true }, ctx);
  return { report: r, text: `${r.summary.verdict}\nwrote ${r.files.map((x) => path.join(out, x)).join(', ')}` };
};
