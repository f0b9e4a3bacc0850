/**
 * The weights viewer's page (`.safetensors`, PyTorch `.bin` / `.pt` / `.pth` read-only): the verdict,
 * kohya training metadata, the `__metadata__` table and the tensor index, from the header (or the
 * pickle's index) alone, so a 12 GB file opens at once. Drawn by the same webview as the report panels.
 */
import { classifyTensor } from '../census/classify';
import { formatBytes, formatInt } from '../format';
import { trainingMetadata, trainingMetadataLines } from '../safetensors/trainingMetadata';
import { WeightsView } from '../weights/view';
import { PanelModel, Section, Tone } from './model';

function verdict(v: WeightsView): { text: string; tone: Tone } {
  const pytorch = /\.(bin|pt|pth)$/i.test(v.file);
  const h = v.index;
  if (!h) return { text: `Not a ${pytorch ? 'readable PyTorch checkpoint' : 'valid safetensors file'}: ${v.error ?? 'unknown error'}`, tone: 'bad' };
  const elements = h.tensors.reduce((a, t) => a + t.numel, 0);
  const dtypes = [...new Set(h.tensors.map((t) => t.dtype))].join(', ') || 'none';
  const counts = `${formatInt(h.tensors.length)} tensors, ${formatInt(elements)} elements (${dtypes}), ${formatBytes(h.fileSize)}.`;
  if (h.format === 'pytorch') {
    return {
      text: `PyTorch checkpoint (torch.save zip), read without running its pickle: ${counts} Offsets are positions in the file; every tensor is a contiguous range of a stored entry. Read-only: lora-lens convert writes it as safetensors.`,
      tone: 'good',
    };
  }
  return {
    text: `Valid safetensors: ${counts} Header ${formatInt(h.headerBytes)} bytes; offsets contiguous from 0 with no gaps or overlaps; sizes match shape × dtype; data ends exactly at the end of the file.`,
    tone: 'good',
  };
}

function metadataSections(h: NonNullable<WeightsView['index']>): Section[] {
  if (h.format === 'pytorch') return [{ id: 'metadata', title: 'Metadata', note: 'A PyTorch checkpoint carries no metadata.' }];
  const entries = Object.entries(h.metadata);
  if (entries.length === 0) return [{ id: 'metadata', title: 'Metadata', note: 'No __metadata__.' }];
  const training = trainingMetadata(h.metadata);
  return [
    ...(training ? [{ id: 'training', title: 'Training (kohya metadata)', note: trainingMetadataLines(training).join('\n') }] : []),
    {
      id: 'metadata',
      title: 'Metadata',
      table: { columns: [{ key: 'key', label: 'Key' }, { key: 'value', label: 'Value', wrap: true }], rows: entries.map(([k, val]) => [k, val]) },
    },
  ];
}

function tensorsSection(h: NonNullable<WeightsView['index']>): Section {
  return {
    id: 'tensors',
    title: 'Tensors',
    table: {
      columns: [
        { key: 'index', label: '#', format: 'int' },
        { key: 'name', label: 'Name' },
        { key: 'dtype', label: 'dtype' },
        { key: 'shape', label: 'Shape' },
        { key: 'numel', label: 'Elements', format: 'int' },
        { key: 'bytes', label: 'Bytes', format: 'int' },
        { key: 'begin', label: 'Begin', format: 'int' },
        { key: 'end', label: 'End', format: 'int' },
        { key: 'category', label: 'Category' },
      ],
      rows: h.tensors.map((t, i) => {
        const c = classifyTensor(t.name);
        const category = c.category + (c.layer !== null ? ` · layer ${c.layer}` : '');
        return [i, t.name, t.dtype, `[${t.shape.join(', ')}]`, t.numel, t.byteLength, t.begin, t.begin + t.byteLength, category];
      }),
      tensorColumn: 1,
      tensorAction: { label: 'Statistics', title: 'Statistics, histogram and heat map of this tensor' },
      filter: { label: 'Filter by name, dtype, shape, category', noun: 'tensors' },
    },
  };
}

/** Headed by the file's full path (the tab shows its name). */
export function weightsPanel(v: WeightsView): PanelModel {
  return {
    kind: 'weights',
    heading: v.file,
    verdict: verdict(v),
    summary: [],
    warnings: [],
    sections: v.index ? [...metadataSections(v.index), tensorsSection(v.index)] : [],
    openInCensus: v.index !== null,
  };
}
