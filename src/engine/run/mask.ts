import { need } from '../../shared/jobs/request';
import { maskJob } from '../jobs/mask';
import { MASK_JSON, MASK_TENSORS } from '../unmerge/maskFile';
import { formatInt } from '../../shared/format';
import { Runner } from './runner';

export const mask: Runner<'mask'> = async (req, ctx) => {
  const [base, adapters, budget, out] = [need(req, 'base'), need(req, 'adapters'), need(req, 'budget'), need(req, 'out')];
  const report = await maskJob({ base, adapters, budget, out }, ctx);
  const pct = (x: number | null): string => (x === null ? 'n/a (zero delta)' : `${(100 * x).toFixed(2)}%`);
  const text = [
    `mask: ${formatInt(report.selected)} of ${formatInt(report.elements)} elements kept in ${report.modules} modules (k = ${report.k} per module, budget ${report.budget})`,
    `per projection: ${Object.entries(report.perProjection).map(([p, n]) => `${p} ${n}`).join(', ')}`,
    'norm kept per adapter (||mask * delta|| / ||delta||):',
    ...Object.entries(report.normPreservation).map(([n, x]) => `  ${n}: ${pct(x)}`),
    `wrote ${out}/${MASK_TENSORS} and ${MASK_JSON}`,
  ];
  return { report, text: text.join('\n') };
};
