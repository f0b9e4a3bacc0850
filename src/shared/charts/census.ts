/** Census panel: tensors and elements per category, and per layer, of one checkpoint. */
import { formatCell } from './format';
import { PanelModel, SummaryItem } from './model';
import { num, obj, objs, str, strs } from './read';
import { layerLabel } from './tensors';

export function censusPanel(report: unknown, title: string): PanelModel {
  const r = obj(report);
  const s = obj(r?.summary);
  const tensors = obj(s?.categories) ?? {};
  const params = obj(s?.categoryParams) ?? {};
  const categories = [...new Set([...Object.keys(tensors), ...Object.keys(params)])];
  // Per stack, then by layer: an encoder-decoder's encoder layers before its decoder layers.
  const stackOf = (l: Record<string, unknown>): string => (typeof l.stack === 'string' ? l.stack : '');
  const layers = objs(r?.perLayer).filter((l) => num(l.layer) !== null).sort((a, b) => stackOf(a).localeCompare(stackOf(b)) || num(a.layer)! - num(b.layer)!);
  const outside = obj(r?.outsideLayers);
  const layerRows = [...layers.map((l) => ({ label: `${stackOf(l) ? `${stackOf(l)} ` : ''}${layerLabel(num(l.layer))}`, tensors: num(l.tensors), params: num(l.params), targets: num(l.loraTargetTensors) })), ...(outside ? [{ label: layerLabel(null), tensors: num(outside.tensors), params: num(outside.params), targets: num(outside.loraTargetTensors) }] : [])];
  const item = (id: string, label: string, v: unknown, fmt: Parameters<typeof formatCell>[1]): SummaryItem => ({ id, label, text: formatCell(num(v), fmt), value: num(v) });
  const dtypeTensors = obj(s?.dtypes) ?? {};
  const dtypeParams = obj(s?.dtypeParams) ?? {};
  const dtypes = [...new Set([...Object.keys(dtypeTensors), ...Object.keys(dtypeParams)])];
  const adapter = obj(r?.adapter);
  const kind = str(r?.kind);
  const arch = str(r?.architecture) ?? str(r?.modelType);
  return {
    kind: 'census',
    heading: title,
    verdict: { text: [str(r?.path), kind, arch].filter(Boolean).join(' · '), tone: 'neutral' },
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
    warnings: strs(r?.warnings),
    sections: [
      {
        id: 'categories',
        title: 'Parameters per category',
        note: 'Elements (parameters), not tensor counts: attention has more tensors, the MLP usually more parameters. Tensor counts are in the table.',
        chart: { type: 'bar', labels: categories, series: [{ label: 'elements', color: 'blue', data: categories.map((c) => num(params[c])) }], x: { title: 'category' }, y: { title: 'elements (parameters)', min: 0 } },
        table: { columns: [{ key: 'category', label: 'category' }, { key: 'params', label: 'elements', format: 'int' }, { key: 'tensors', label: 'tensors', format: 'int' }], rows: categories.map((c) => [c, num(params[c]), num(tensors[c])]) },
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
        chart: { type: 'bar', horizontal: true, labels: dtypes, series: [{ label: 'elements', color: 'green', data: dtypes.map((d) => num(dtypeParams[d])) }], x: { title: 'elements', min: 0 }, y: { title: 'dtype' } },
        table: { columns: [{ key: 'dtype', label: 'dtype' }, { key: 'tensors', label: 'tensors', format: 'int' }, { key: 'params', label: 'elements', format: 'int' }], rows: dtypes.map((d) => [d, num(dtypeTensors[d]), num(dtypeParams[d])]) },
      },
    ],
  };
}
