/** Runner of stats: one tensor's figures, histogram and heat map. */
import { need } from '../../shared/jobs/request';
import { statsJob } from '../jobs/stats';
import { Runner } from './runner';

const g = (x: number | null): string => (x === null ? 'n/a' : x.toPrecision(6));

export const stats: Runner<'stats'> = async (req, ctx) => {
  const r = await statsJob({ tensor: need(req, 'tensor'), model: req.model, base: req.base, adapter: req.adapter, bins: req.bins, grid: req.grid }, ctx);
  const s = r.summary;
  const what = r.source === 'values' ? 'values' : r.source === 'difference' ? 'fine-tuned minus base' : "the adapter's ΔW";
  const h = r.heatmap;
  const text = [
    `${r.tensor} [${r.shape.join(', ')}] ${r.dtype}, ${what}${r.transposed ? ' (stored [in, out])' : ''}`,
    `elements ${s.elements}, finite ${s.finite}, NaN ${s.nan}, +Inf ${s.posInf}, -Inf ${s.negInf}, zeros ${s.zeros}`,
    `min ${g(s.min)}  max ${g(s.max)}  mean ${g(s.mean)}  std ${g(s.std)}  ‖x‖₂ ${g(s.l2Norm)}  max|x| ${g(s.maxAbs)}`,
    ...(r.histogram ? [`histogram: ${r.histogram.counts.length} bins over [${g(r.histogram.edges[0])}, ${g(r.histogram.edges[r.histogram.edges.length - 1])}]`] : []),
    `heat map: ${h.rows} × ${h.cols} cells of ${h.cellRows} × ${h.cellCols} elements (max |x| and mean |x| per cell) in the --json report`,
  ];
  return { report: r, text: text.join('\n') };
};
