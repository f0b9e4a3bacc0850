import { estimateText, estimateJob } from '../jobs/estimate';
import { LensError } from '../errors';
import { Runner } from './runner';

export const estimate: Runner<'estimate'> = async (r, ctx) => {
  if (r.path === undefined) throw new LensError('lora-lens estimate', 'give a model folder or config.json');
  const targets = r.target?.flatMap((t) => t.split(',')).filter((t) => t !== '');
  if (r.adapter !== undefined && (r.r !== undefined || targets !== undefined)) {
    throw new LensError('lora-lens estimate', 'give either --adapter or --r/--target, not both');
  }
  const report = estimateJob({ path: r.path, adapter: r.adapter, r: r.r, alpha: r.alpha, targets }, ctx);
  return { report, text: estimateText(report) };
};
