import { need } from '../../shared/jobs/request';
import { mergeJob } from '../jobs/merge';
import { Runner } from './runner';

export const merge: Runner<'merge'> = async (req, ctx) => {
  const r = await mergeJob(
    { base: need(req, 'base'), adapter: need(req, 'adapter'), out: need(req, 'out'), dtype: need(req, 'dtype'), rule: req.rule, shardSize: req.shardSize },
    ctx,
  );
  const text = [
    `merged ${r.loraTensors} adapted tensors${r.doraTensors ? ` (${r.doraTensors} DoRA)` : ''}, replaced ${r.replacedTensors}, added ${r.addedTensors}, re-encoded ${r.castTensors}, copied ${r.copiedTensors}: ${r.tensors} tensors at ${r.dtype} (rule ${r.rule})`,
    `wrote ${r.out}/ (${r.files.join(', ')}) in ${r.seconds.toFixed(1)} s`,
  ];
  return { report: r, text: text.join('\n') };
};
