import { need } from '../../shared/jobs/request';
import { compressJob } from '../jobs/compress';
import { formatInt } from '../../shared/format';
import { Runner } from './runner';

export const compress: Runner<'compress'> = async (req, ctx) => {
  const inputs = (req.inputs ?? []).map((t) => ({ kind: t.flag, path: t.value }));
  const [mask, base, out] = [need(req, 'mask'), need(req, 'base'), need(req, 'out')];
  const report = await compressJob({ mask, base, inputs, out }, ctx);
  const text = [
    `compress: ${report.inputs.length} task vector(s) of ${formatInt(report.selected)} masked elements (${report.modules.length} modules)`,
    ...report.inputs.map((r) => `  ${r.name} (${r.kind}): ${r.file}, norm ${r.norm.toPrecision(6)}, ${r.normKept === null ? 'zero task vector' : `${(100 * r.normKept).toFixed(2)}% of its norm kept`}`),
    `wrote ${out}/compress.json`,
  ];
  return { report, text: text.join('\n') };
};
