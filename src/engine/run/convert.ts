import { need } from '../../shared/jobs/request';
import { convertJob } from '../jobs/convert';
import { convertAdapterJob, isConvertibleAdapter } from '../jobs/convertAdapter';
import { formatInt } from '../../shared/format';
import { Runner } from './runner';

export const convert: Runner<'convert'> = async (req, ctx) => {
  const input = need(req, 'in');
  const out = need(req, 'out');
  if (isConvertibleAdapter(input)) {
    const r = await convertAdapterJob({ input, out, base: req.base }, ctx);
    return { report: r, text: `converted ${r.modules} ${r.from} modules (${r.tensors} tensors) of ${r.in} to a PEFT ${r.peftType} adapter\nwrote ${r.out}/ (${r.files.join(', ')})` };
  }
  const r = await convertJob({ input, out }, ctx);
  return { report: r, text: `converted ${r.tensors} tensors (${formatInt(r.bytes)} bytes) of ${r.in}\nwrote ${r.out}${r.kind === 'file' ? '' : `/ (${r.files.join(', ')})`}` };
};
