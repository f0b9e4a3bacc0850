import { need } from '../../shared/jobs/request';
import { extractJob } from '../jobs/extract';
import { formatInt } from '../../shared/format';
import { Runner } from './runner';

export const extract: Runner<'extract'> = async (req, ctx) => {
  const r = await extractJob({ base: need(req, 'base'), finetuned: need(req, 'finetuned'), out: need(req, 'out') }, ctx);
  const s = r.summary;
  const text = [
    `task vector: ${s.nonzeroTensors} non-zero tensors, ${s.zeroTensors} zero, of ${s.tensors}; ${formatInt(s.nonzeroElements)} non-zero elements of ${formatInt(s.elements)}; norm ${s.l2Norm.toExponential(3)}`,
    ...(s.nonFiniteTensors ? [`NaN/Inf in ${s.nonFiniteTensors} tensor(s): ${r.nonFinite.slice(0, 5).map((x) => `${x.name} (${x.elements})`).join(', ')}`] : []),
    `wrote ${r.out}`,
  ];
  return { report: r, text: text.join('\n') };
};
