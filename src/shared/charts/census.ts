/** Census panel: tensors and elements per category, and per layer, of one checkpoint. */
import { readCensusReport } from '../jobs/reports/census';
import { formatCell } from './format';
import { PanelModel, SummaryItem } from './model';
import { layerLabel } from './tensors';

export function censusPanel(report: unknown, title: string): PanelModel {
  const r = readCensusReport(report);
  const s = r.summary;
  const tensors = s?.categories ?? {};
  const params = s?.categoryParams ?? {};
  const categories = [...new Set([...Object.keys(tensors), ...Object.keys(params)])];
  // Per stack, then by layer: an encoder-decoder's encoder layers before its decoder layers.
  const layers = r.perLayer.flatMap((l) => (l.layer === null ? [] : [{ ...l, layer: l.layer, stack: l.stack ?? '' }])).sort((a, b) => a.stack.localeCompare(b.stack) || a.layer - b.layer);
  const outside = r.outsideLayers;
  // The census counts LoRA targets per layer only, not outside the layers.
  const layerRows = [...layers.map((l) => ({ label: `${l.stack ? `${l.stack} ` : ''}${layerLabel(l.layer)}`, tensors: l.tensors, params: l.params, targets: l.loraTargetTensors })), ...(outside ? [{ label: layerLabel(null), tensors: outside.tensors, params: outside.params, targets: null }] : [])];
  const item = (id: string, label: string, v: number | null | undefined, fmt: Parameters<typeof formatCell>[1]): SummaryItem => ({
    id,
    label,
    text: formatCell(v ?? null, fmt),
    value: v ?? null,
  });
  const dtypeTensors = s?.dtypes ?? {};
  const dtypeParams = s?.dtypeParams ?? {};
  const dtypes = [...new Set([...Object.keys(dtypeTensors), ...Object.keys(dtypeParams)])];
  const adapter = r.adapter;
  const arch = r.architecture ?? r.modelType;
  return {
    kind: 'census',
    heading: title,
    verdict: { text: [r.path, r.kind, arch].filter(Boolean).join(' · '), tone: 'neutral' },
    summary: [
      item('summary-tensors', 'Tensors', s?.tensors, 'int'),
      item('summary-params', 'Elements (parameters)', s?.params, 'int'),
      item('summary-bytes', 'Bytes', s?.bytes, 'int'),
      item('summary-layers', 'Layers', s?.layers, 'int'),
      item('summary-lora-targets', 'LoRA target tensors', s?.loraTargetTensors, 'int'),
      item('summary-non-targets', 'Other tensors', s?.nonTargetTensors, 'int'),
      ...(adapter
        ? [
            item('summary-adapter-r', 'Adapter rank r', adapter.r, 'int'),
            item('summary-adapter-alpha', 'lora_alpha', adapter.alpha, 'general'),
            item('summary-lora-modules', 'LoRA modules', adapter.loraModules, 'int'),
            item('summary-trainable-params', 'Trainable parameters', adapter.trainableParams, 'int'),
          ]
        : []),
    ],
    warnings: r.warnings,
    sections: [
      {
        id: 'categories',
        title: 'Parameters per category',
        note: 'Elements (parameters), not tensor counts: attention has more tensors, the MLP usually more parameters. Tensor counts are in the table.',
        chart: { type: 'bar', labels: categories, series: [{ label: 'elements', color: 'blue', data: categories.map((c) => params[c] ?? null) }], x: { title: 'category' }, y: { title: 'elements (parameters)', min: 0 } },
        table: { columns: [{ key: 'category', label: 'category' }, { key: 'params', label: 'elements', format: 'int' }, { key: 'tensors', label: 'tensors', format: 'int' }], rows: categories.map((c) => [c, params[c] ?? null, tensors[c] ?? null]) },
      },
      {
        id: 'layers',
        title: 'Elements per layer',
        chart: { type: 'bar', labels: layerRows.map((l) => l.label), series: [{ label: 'elements', color: 'purple', data: layerRows.map((l) => l.params) }], x: { title: 'layer' }, y: { title: 'elements', min: 0 } },
        table: { columns: [{ key: 'layer', label: 'layer' }, { key: 'tensors', label: 'tensors', format: 'int' }, { key: 'params', label: 'elements', format: 'int' }, { key: 'targets', label: 'LoRA targets', format: 'int' }], rows: layerRows.map((l) => [l.label, l.tensors, l.params, l.targets]) },
      },
      {
        id: 'dtypes',
        title: 'Elements per storage dtype',
        chart: { type: 'bar', horizontal: true, labels: dtypes, series: [{ label: 'elements', color: 'green', data: dtypes.map((d) => dtypeParams[d] ?? null) }], x: { title: 'elements', min: 0 }, y: { title: 'dtype' } },
        table: { columns: [{ key: 'dtype', label: 'dtype' }, { key: 'tensors', label: 'tensors', format: 'int' }, { key: 'params', label: 'elements', format: 'int' }], rows: dtypes.map((d) => [d, dtypeTensors[d] ?? null, dtypeParams[d] ?? null]) },
      },
    ],
  };
}
