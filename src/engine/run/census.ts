import { censusText, censusJob } from '../jobs/census';
import { LensError } from '../errors';
import { Runner } from './runner';

export const census: Runner<'census'> = async (r, ctx) => {
  if (r.path === undefined) throw new LensError('lora-lens census', 'give a model folder, adapter folder, .safetensors file or config.json');
  const targets = r.target?.flatMap((t) => t.split(',')).filter((t) => t !== '');
  const report = censusJob({ path: r.path, adapter: r.adapter, targets }, ctx);
  return { report, text: censusText(report) };
};
