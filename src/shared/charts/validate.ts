/**
 * Validation panel, from a validate `summary.json`: one verdict per dtype (PASS, EXPECTED-LOSS, FAIL),
 * the comparison figures side by side, and, when the host also sends each dtype's compare report, the
 * full equivalence charts of every dtype.
 */
import { formatCell } from './format';
import { PanelModel, Section, SummaryItem, Tone } from './model';
import { readValidateReport, ValidateView } from '../jobs/reports/validate';
import { equivalenceSections, equivalenceSummary } from './equivalence';

const STATUS_TONE: Record<string, Tone> = { PASS: 'good', 'EXPECTED-LOSS': 'neutral', FAIL: 'bad' };
/** An expected loss that swallows this share of the delta's elements or more is drawn as a warning. */
export const WARN_DELTA_LOST = 0.01;

type Dtype = ValidateView['dtypes'][number] & { dtype: string };

function statusTone(d: Dtype): Tone {
  const status = d.status ?? '';
  const lost = d.precision?.deltaLostFraction ?? null;
  return status === 'EXPECTED-LOSS' && lost !== null && lost >= WARN_DELTA_LOST ? 'warn' : (STATUS_TONE[status] ?? 'neutral');
}

export function validatePanel(report: unknown, title: string, comparisons: Record<string, unknown> = {}): PanelModel {
  const r = readValidateReport(report);
  const dtypes = r.dtypes.filter((d): d is Dtype => d.dtype !== null);
  const ok = r.ok;
  const tolerance = r.tolerance;
  const labels = dtypes.map((d) => d.dtype);

  const summary: SummaryItem[] = [
    { id: 'summary-ok', label: 'All dtypes as expected', text: formatCell(ok), value: ok, tone: ok === null ? 'neutral' : ok ? 'good' : 'bad' },
    { id: 'summary-rule', label: 'Merge rule', text: formatCell(r.rule), value: r.rule },
    { id: 'summary-tolerance', label: 'Tolerance (max abs)', text: formatCell(tolerance, 'exp'), value: tolerance },
    ...dtypes.map((d): SummaryItem => {
      const status = d.status;
      const lost = d.precision?.deltaLostFraction ?? null;
      const text = status === 'EXPECTED-LOSS' && lost !== null ? `${status} (${formatCell(lost, 'percent')} of the delta lost)` : formatCell(status);
      return { id: `status-${d.dtype}`, label: d.dtype, text, value: status, tone: statusTone(d) };
    }),
  ];

  const overview: Section[] = [
    {
      id: 'dtypes',
      title: 'Merged model vs base + adapter, per dtype',
      note: 'Shared: tensors non-zero in both the adapter\'s delta and the merged model\'s task vector. Task-vector-only: tensors the merge changed although the adapter does not touch them.',
      chart: {
        type: 'bar',
        labels,
        series: [
          { label: 'shared', color: 'blue', data: dtypes.map((d) => d.compare?.shared ?? null) },
          { label: 'perfect matches', color: 'green', data: dtypes.map((d) => d.compare?.perfectMatches ?? null) },
          { label: 'task-vector only', color: 'orange', data: dtypes.map((d) => d.compare?.taskVectorOnly ?? null) },
        ],
        x: { title: 'dtype' },
        y: { title: 'tensors', min: 0, integer: true },
      },
      table: {
        columns: [
          { key: 'dtype', label: 'dtype' },
          { key: 'status', label: 'status' },
          { key: 'shared', label: 'shared', format: 'int' },
          { key: 'perfectMatches', label: 'perfect', format: 'int' },
          { key: 'taskVectorOnly', label: 'task-vector only', format: 'int' },
          { key: 'meanCosine', label: 'mean cosine', format: 'cosine' },
          { key: 'maxAbsDiff', label: 'max abs diff', format: 'exp' },
          { key: 'deltaLostFraction', label: 'delta lost', format: 'percent' },
        ],
        rows: dtypes.map((d) => [
          d.dtype,
          d.status,
          d.compare?.shared ?? null,
          d.compare?.perfectMatches ?? null,
          d.compare?.taskVectorOnly ?? null,
          d.compare?.meanCosine ?? null,
          d.compare?.maxAbsDiff ?? null,
          d.precision?.deltaLostFraction ?? null,
        ]),
      },
    },
    {
      id: 'dtype-max-abs-diff',
      title: 'Max absolute difference per dtype (log scale)',
      note: 'fp32 must stay under the tolerance; fp16 and bf16 cannot, by their rounding.',
      chart: {
        type: 'bar',
        labels,
        series: [
          { label: 'max abs diff', color: 'purple', data: dtypes.map((d) => { const v = d.compare?.maxAbsDiff ?? null; return v !== null && v > 0 ? v : null; }) },
          ...(tolerance !== null && tolerance > 0 ? [{ label: 'tolerance', color: 'red' as const, data: labels.map(() => tolerance), asLine: true, dashed: true }] : []),
        ],
        x: { title: 'dtype' },
        y: { title: 'max |ΔW − τ|', log: true },
      },
      table: {
        columns: [{ key: 'dtype', label: 'dtype' }, { key: 'maxAbsDiff', label: 'max abs diff', format: 'exp' }, { key: 'equivalent', label: 'within tolerance' }, { key: 'status', label: 'status' }],
        rows: dtypes.map((d) => [d.dtype, d.compare?.maxAbsDiff ?? null, d.compare?.equivalent ?? null, d.status]),
      },
    },
  ];

  const perDtype = dtypes.flatMap((d): Section[] => {
    const dtype = d.dtype;
    // A half-precision merge cannot be equivalent within an fp32 tolerance: where that loss is the
    // expected one, "Equivalent: no" is a fact, not an alarm, so it is not drawn as an error.
    const expected = d.status === 'EXPECTED-LOSS';
    const summary = equivalenceSummary(d.compare, `${dtype}-`).map((s) => (expected && s.tone === 'bad' ? { ...s, tone: 'neutral' as const } : s));
    const head: Section = { id: `${dtype}-summary`, title: `${dtype}: ${formatCell(d.status)}`, note: d.verdict ?? undefined, summary };
    const full = comparisons[dtype];
    return full === undefined ? [head] : [head, ...equivalenceSections(full, `${dtype}-`).map((s) => ({ ...s, title: `${dtype}: ${s.title}` }))];
  });

  const verdict = r.verdict;
  return {
    kind: 'validate',
    heading: title,
    verdict: verdict !== null ? { text: verdict, tone: ok === null ? 'neutral' : ok ? 'good' : 'bad' } : null,
    summary,
    warnings: r.warnings,
    sections: [...overview, ...perDtype],
  };
}
