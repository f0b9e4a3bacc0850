/**
 * Precision panel, from a precision report: what merging at fp16 / bf16 does. Non-zero tensors against
 * the fp32 base per dtype (483 where the adapter touches 120), each cast artifact's norm by category,
 * and the fraction of each adapted tensor's delta lost, by layer, per dtype and rule.
 */
import { formatCell } from './format';
import { Cell, PanelModel, Point, SERIES_COLORS, Section, Series, SummaryItem } from './model';
import { at, num, obj, Obj, objs, str, strs } from './read';
import { placeTensor } from './tensors';

const DTYPE_COLORS: Record<string, Series['color']> = { fp16: 'blue', bf16: 'orange' };

interface DtypeFigures {
  dtype: string;
  rule: string | null;
  figures: Obj;
  rules: Array<[string, Obj]>;
}

function dtypesOf(report: unknown): DtypeFigures[] {
  const d = obj(obj(report)?.dtypes) ?? {};
  return Object.entries(d).flatMap(([dtype, v]): DtypeFigures[] => {
    const figures = obj(v);
    if (figures === null) return [];
    const rules = Object.entries(obj(figures.rules) ?? {}).flatMap(([rule, f]): Array<[string, Obj]> => (obj(f) ? [[rule, obj(f)!]] : []));
    return [{ dtype, rule: str(figures.rule), figures, rules }];
  });
}

function summary(dtypes: DtypeFigures[]): SummaryItem[] {
  return dtypes.flatMap(({ dtype, figures: f }) => {
    const item = (id: string, label: string, v: number | null, fmt: Parameters<typeof formatCell>[1]): SummaryItem => ({ id: `${id}-${dtype}`, label, text: formatCell(v, fmt), value: v, group: dtype });
    return [
      item('nonzero-tensors', 'Non-zero tensors vs fp32 base', num(f.nonzeroTensors), 'int'),
      item('adapted-tensors', 'Adapted tensors', num(f.adaptedTensors), 'int'),
      item('cast-artifact-tensors', 'Cast-artifact tensors', num(f.castArtifactTensors), 'int'),
      item('cast-artifact-norm', 'Cast-artifact norm', num(f.castArtifactNorm), 'exp'),
      item('delta-lost', 'Delta elements lost', num(f.deltaLostFraction), 'percent'),
      item('recovered-rel-err', 'Recovered delta rel. error', num(f.recoveredRelErr), 'exp'),
    ];
  });
}

export function precisionSections(report: unknown): Section[] {
  const dtypes = dtypesOf(report);
  const tensors = objs(obj(report)?.tensors).filter((t) => str(t.name) !== null);
  // Classified once per record: the sorts below ask for a tensor's place many times.
  const places = new Map(tensors.map((t) => [t, placeTensor(t, String(t.name))]));
  const ruleOf = new Map(dtypes.map((d) => [d.dtype, d.rule]));
  // Cast artifacts do not depend on the rule (an untouched tensor is r_D(W) under all): one rule per dtype.
  const artifacts = tensors.filter((t) => num(t.castArtifactTensors)! > 0 && (ruleOf.get(String(t.dtype)) ?? t.rule) === t.rule);
  const categoryOf = (t: Obj): string => places.get(t)!.category;
  const categories = [...new Set(artifacts.map(categoryOf))].sort();
  const stripLabels = categories.flatMap((c) => dtypes.map((d) => `${c} · ${d.dtype}`));
  const strip: Series[] = dtypes.map((d) => ({
    label: d.dtype,
    color: DTYPE_COLORS[d.dtype] ?? 'purple',
    data: artifacts.filter((t) => t.dtype === d.dtype && (num(t.castArtifactNorm) ?? 0) > 0).map((t): Point => ({ x: `${categoryOf(t)} · ${d.dtype}`, y: num(t.castArtifactNorm)!, label: String(t.name) })),
    tensorPoints: true,
  }));

  const lost = tensors.filter((t) => num(t.deltaLostFraction) !== null);
  const combos = [...new Set(lost.map((t) => `${t.dtype} ${t.rule}`))].sort();
  const layerOf = (t: Obj): number | null => places.get(t)!.layer;
  // Colour by dtype, marker by rule: six series stay apart where six colours would not.
  const ruleStyles = [...new Set(lost.map((t) => String(t.rule)))].sort();
  const STYLES: Array<NonNullable<Series['pointStyle']>> = ['circle', 'triangle', 'rect', 'rectRot'];
  const lostSeries: Series[] = combos.map((combo, i) => ({
    label: combo,
    color: DTYPE_COLORS[combo.split(' ')[0]] ?? SERIES_COLORS[i % SERIES_COLORS.length],
    pointStyle: STYLES[ruleStyles.indexOf(combo.split(' ')[1]) % STYLES.length],
    data: lost.filter((t) => `${t.dtype} ${t.rule}` === combo && layerOf(t) !== null).map((t): Point => ({ x: layerOf(t)!, y: num(t.deltaLostFraction)!, label: String(t.name) })),
    tensorPoints: true,
  }));
  const outside = lost.filter((t) => layerOf(t) === null).length;

  const rules = [...new Set(dtypes.flatMap((d) => d.rules.map(([r]) => r)))];
  const ruleRows: Cell[][] = dtypes.flatMap((d) =>
    d.rules.map(([rule, f]): Cell[] => [
      d.dtype,
      rule,
      num(f.deltaLostFraction),
      num(f.recoveredRelErr),
      num(f.nonzeroTensors),
      num(f.castArtifactTensors),
      num(f.castArtifactNorm),
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
          { label: 'non-zero tensors', color: 'blue', data: dtypes.map((d) => num(d.figures.nonzeroTensors)) },
          { label: 'adapted tensors', color: 'green', data: dtypes.map((d) => num(d.figures.adaptedTensors)) },
          { label: 'cast artifacts', color: 'orange', data: dtypes.map((d) => num(d.figures.castArtifactTensors)) },
        ],
        x: { title: 'dtype' },
        y: { title: 'tensors', min: 0, integer: true },
      },
      table: {
        columns: [{ key: 'dtype', label: 'dtype' }, { key: 'rule', label: 'rule' }, { key: 'nonzeroTensors', label: 'non-zero tensors', format: 'int' }, { key: 'adaptedTensors', label: 'adapted', format: 'int' }, { key: 'castArtifactTensors', label: 'cast artifacts', format: 'int' }],
        rows: dtypes.map((d) => [d.dtype, d.rule, num(d.figures.nonzeroTensors), num(d.figures.adaptedTensors), num(d.figures.castArtifactTensors)]),
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
          .sort((a, b) => (num(b.castArtifactNorm) ?? 0) - (num(a.castArtifactNorm) ?? 0))
          .map((t) => [String(t.name), categoryOf(t), str(t.dtype), num(t.castArtifactNorm)]),
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
          .sort((a, b) => (layerOf(a) ?? Infinity) - (layerOf(b) ?? Infinity) || String(a.name).localeCompare(String(b.name)))
          .map((t) => [String(t.name), str(t.dtype), str(t.rule), num(t.deltaLostFraction), num(t.recoveredRelErr)]),
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
        series: dtypes.map((d) => ({ label: d.dtype, color: DTYPE_COLORS[d.dtype] ?? 'purple', data: rules.map((r) => num(d.rules.find(([x]) => x === r)?.[1].deltaLostFraction)) })),
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
  const dtypes = dtypesOf(report);
  const words = dtypes.map((d) => `${d.dtype}${d.rule ? ` (${d.rule})` : ''}: ${formatCell(num(d.figures.deltaLostFraction), 'percent')} of the delta's non-zero elements lost, ${formatCell(num(d.figures.castArtifactTensors), 'int')} cast-artifact tensors`);
  return {
    kind: 'precision',
    heading: title,
    verdict: words.length ? { text: words.join('; ') + '.', tone: 'neutral' } : null,
    summary: summary(dtypes),
    warnings: strs(at(report, 'warnings')),
    sections: precisionSections(report),
  };
}
