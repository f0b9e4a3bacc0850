import { need } from '../../shared/jobs/request';
import { convertCheckpoint } from '../jobs/convert';
import { Runner } from './runner';

export const convert: Runner<'convert'> = async (req, ctx) => {
  const r = await convertCheckpoint(need(req, 'in'), need(req, 'out'), ctx);
  return { report: r, text: `converted ${r.tensors} tensors (${r.bytes.toLocaleString('en')} bytes) of ${r.in}\nwrote ${r.out}${r.kind === 'file' ? '' : `/ (${r.files.join(', ')})`}` };
};
