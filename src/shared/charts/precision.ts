/**
 * Precision panel, from a precision report: what merging at fp16 / bf16 does. Non-zero tensors against
 * the fp32 base per dtype (483 where the adapter touches 120), each cast artifact's norm by category,
 * and the fraction of each adapted tensor's delta lost, by layer, per dtype and rule.
 */
import { formatCell } from './format';
import { Cell, PanelModel, Point, SERIES_COLORS, Section, Series, SummaryItem } from './model';
import { PrecisionView, readPrecisionReport } from '../jobs/reports/precision';
import { placeTensor } from './tensors';

const DTYPE_COLORS: Record<string, Series['color']> = { fp16: 'blue', bf16: 'orange' };

type Figures = PrecisionView['dtypes'][string];
type Tensor = PrecisionView['tensors'][number] & { name: string };

interface DtypeFigures {
  dtype: string;
  rule: string | null;
  figures: Figures;
  rules: Array<[string, Omit<Figures, 'rule' | 'rules'>]>;
}

function dtypesOf(r: PrecisionView): DtypeFigures[] {
  return Object.entries(r.dtypes).map(([dtype, figures]) => ({ dtype, rule: figures.rule, figures, rules: Object.entries(figures.rules ?? {}) }));
}

function summary(dtypes: DtypeFigures[]): SummaryItem[] {
  return dtypes.flatMap(({ dtype, figures: f }) => {
    const item = (id: string, label: string, v: number | null, fmt: Parameters<typeof formatCell>[1]): SummaryItem => ({ id: `${id}-${dtype}`, label, text: formatCell(v, fmt), value: v, group: dtype });
    return [
      item('nonzero-tensors', 'Non-zero tensors vs fp32 base', f.nonzeroTensors, 'int'),
      item('adapted-tensors', 'Adapted tensors', f.adaptedTensors, 'int'),
      item('cast-artifact-tensors', 'Cast-artifact tensors', f.castArtifactTensors, 'int'),
      item('cast-artifact-norm', 'Cast-artifact norm', f.castArtifactNorm, 'exp'),
      item('delta-lost', 'Delta elements lost', f.deltaLostFraction, 'percent'),
      item('recovered-rel-err', 'Recovered delta rel. error', f.recoveredRelErr, 'exp'),
    ];
  });
}

export function precisionSections(report: unknown): Section[] {
  const r = readPrecisionReport(report);
  const dtypes = dtypesOf(r);
  const tensors = r.tensors.filter((t): t is Tensor => t.name !== null);
  // Classified once per record: the sorts below ask for a tensor's place many times.
  const places = new Map(tensors.map((t) => [t, placeTensor(t, t.name)]));
  const ruleOf = new Map(dtypes.map((d) => [d.dtype, d.rule]));
  // Cast artifacts do not depend on the rule (an untouched tensor is r_D(W) under all): one rule per dtype.
  const artifacts = tensors.filter((t) => (t.castArtifactTensors ?? 0) > 0 && (ruleOf.get(String(t.dtype)) ?? t.rule) === t.rule);
  const categoryOf = (t: Tensor): string => places.get(t)!.category;
  const categories = [...new Set(artifacts.map(categoryOf))].sort();
  const stripLabels = categories.flatMap((c) => dtypes.map((d) => `${c} · ${d.dtype}`));
  const strip: Series[] = dtypes.map((d) => ({
    label: d.dtype,
    color: DTYPE_COLORS[d.dtype] ?? 'purple',
    data: artifacts.filter((t) => t.dtype === d.dtype && (t.castArtifactNorm ?? 0) > 0).map((t): Point => ({ x: `${categoryOf(t)} · ${d.dtype}`, y: t.castArtifactNorm!, label: t.name })),
    tensorPoints: true,
  }));

  const lost = tensors.filter((t) => t.deltaLostFraction !== null);
  const combos = [...new Set(lost.map((t) => `${t.dtype} ${t.rule}`))].sort();
  const layerOf = (t: Tensor): number | null => places.get(t)!.layer;
  // Colour by dtype, marker by rule: six series stay apart where six colours would not.
  const ruleStyles = [...new Set(lost.map((t) => String(t.rule)))].sort();
  const STYLES: Array<NonNullable<Series['pointStyle']>> = ['circle', 'triangle', 'rect', 'rectRot'];
  const lostSeries: Series[] = combos.map((combo, i) => ({
    label: combo,
    color: DTYPE_COLORS[combo.split(' ')[0]] ?? SERIES_COLORS[i % SERIES_COLORS.length],
    pointStyle: STYLES[ruleStyles.indexOf(combo.split(' ')[1]) % STYLES.length],
    data: lost.filter((t) => `${t.dtype} ${t.rule}` === combo && layerOf(t) !== null).map((t): Point => ({ x: layerOf(t)!, y: t.deltaLostFraction!, label: t.name })),
    tensorPoints: true,
  }));
  const outside = lost.filter((t) => layerOf(t) === null).length;

  const rules = [...new Set(dtypes.flatMap((d) => d.rules.map(([r]) => r)))];
  const ruleRows: Cell[][] = dtypes.flatMap((d) =>
    d.rules.map(([rule, f]): Cell[] => [
      d.dtype,
      rule,
      f.deltaLostFraction,
      f.recoveredRelErr,
      f.nonzeroTensors,
      f.castArtifactTensors,
      f.castArtifactNorm,
    ]),
  );

  return [
    {
      id: 'nonzero',
      title: 'Tensors that differ from the fp32 base, per dtype',
      note: 'Casting to fp16/bf16 changes tensors the adapter never touches: they are cast artifacts, not part of the fine-tune.',
      chart: {
        type: 'bar',
        labels: dtypes.map((d) => d.dtype),
        series: [
          { label: 'non-zero tensors', color: 'blue', data: dtypes.map((d) => d.figures.nonzeroTensors) },
          { label: 'adapted tensors', color: 'green', data: dtypes.map((d) => d.figures.adaptedTensors) },
          { label: 'cast artifacts', color: 'orange', data: dtypes.map((d) => d.figures.castArtifactTensors) },
        ],
        x: { title: 'dtype' },
        y: { title: 'tensors', min: 0, integer: true },
      },
      table: {
        columns: [{ key: 'dtype', label: 'dtype' }, { key: 'rule', label: 'rule' }, { key: 'nonzeroTensors', label: 'non-zero tensors', format: 'int' }, { key: 'adaptedTensors', label: 'adapted', format: 'int' }, { key: 'castArtifactTensors', label: 'cast artifacts', format: 'int' }],
        rows: dtypes.map((d) => [d.dtype, d.rule, d.figures.nonzeroTensors, d.figures.adaptedTensors, d.figures.castArtifactTensors]),
      },
    },
    {
      id: 'cast-artifacts',
      title: 'Cast-artifact norm per tensor, by category (log scale)',
      note: 'Each point is a tensor the adapter does not touch, changed by the cast alone: ‖r_D(W) − W‖.',
      chart: { type: 'scatter', labels: stripLabels, series: strip, x: { title: 'category · dtype' }, y: { title: '‖r_D(W) − W‖', log: true } },
      table: {
        columns: [{ key: 'name', label: 'tensor' }, { key: 'category', label: 'category' }, { key: 'dtype', label: 'dtype' }, { key: 'castArtifactNorm', label: 'norm', format: 'exp' }],
        rows: [...artifacts]
          .sort((a, b) => (b.castArtifactNorm ?? 0) - (a.castArtifactNorm ?? 0))
          .map((t) => [t.name, categoryOf(t), t.dtype, t.castArtifactNorm]),
        tensorColumn: 0,
      },
    },
    {
      id: 'delta-lost',
      title: 'Fraction of the delta lost per adapted tensor, by layer',
      note: `Delta elements smaller than half an ulp of their weight vanish in the merge. One point per tensor, for each dtype and rule.${outside ? ` ${outside} adapted tensor(s) outside the layers are in the table only.` : ''}`,
      chart: { type: 'scatter', series: lostSeries, x: { title: 'layer', integer: true }, y: { title: 'delta elements lost', min: 0, format: 'percent' } },
      table: {
        columns: [{ key: 'name', label: 'tensor' }, { key: 'dtype', label: 'dtype' }, { key: 'rule', label: 'rule' }, { key: 'deltaLostFraction', label: 'lost', format: 'percent' }, { key: 'recoveredRelErr', label: 'recovered rel. error', format: 'exp' }],
        rows: [...lost]
          .sort((a, b) => (layerOf(a) ?? Infinity) - (layerOf(b) ?? Infinity) || a.name.localeCompare(b.name))
          .map((t) => [t.name, t.dtype, t.rule, t.deltaLostFraction, t.recoveredRelErr]),
        tensorColumn: 0,
      },
    },
    {
      id: 'rules',
      title: 'Delta lost per dtype and merge rule',
      note: 'peft: r_D(fp32(r_D(W)) + d); peft-safe: r_D(r_D(W) + r_D(d)); fp32-cast: r_D(fp32(W) + d), the most accurate.',
      chart: {
        type: 'bar',
        labels: rules,
        series: dtypes.map((d) => ({ label: d.dtype, color: DTYPE_COLORS[d.dtype] ?? 'purple', data: rules.map((rule) => d.rules.find(([x]) => x === rule)?.[1].deltaLostFraction ?? null) })),
        x: { title: 'rule' },
        y: { title: 'delta elements lost', min: 0, format: 'percent' },
      },
      table: {
        columns: [{ key: 'dtype', label: 'dtype' }, { key: 'rule', label: 'rule' }, { key: 'deltaLostFraction', label: 'lost', format: 'percent' }, { key: 'recoveredRelErr', label: 'recovered rel. error', format: 'exp' }, { key: 'nonzeroTensors', label: 'non-zero tensors', format: 'int' }, { key: 'castArtifactTensors', label: 'cast artifacts', format: 'int' }, { key: 'castArtifactNorm', label: 'cast-artifact norm', format: 'exp' }],
        rows: ruleRows,
      },
    },
  ];
}

export function precisionPanel(report: unknown, title: string): PanelModel {
  const r = readPrecisionReport(report);
  const dtypes = dtypesOf(r);
  const words = dtypes.map((d) => `${d.dtype}${d.rule ? ` (${d.rule})` : ''}: ${formatCell(d.figures.deltaLostFraction, 'percent')} of the delta's non-zero elements lost, ${formatCell(d.figures.castArtifactTensors, 'int')} cast-artifact tensors`);
  return {
    kind: 'precision',
    heading: title,
    verdict: words.length ? { text: words.join('; ') + '.', tone: 'neutral' } : null,
    summary: summary(dtypes),
    warnings: r.warnings,
    sections: precisionSections(report),
  };
}
