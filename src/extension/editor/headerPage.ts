/**
 * The HTML of the weights viewer (`.safetensors`, and PyTorch `.bin` / `.pt` / `.pth` read-only):
 * verdict, metadata and the tensor index as a table that the page's small script filters and sorts.
 * Built from the header (or the pickle's index) alone, no tensor data is read, so a 12 GB file opens at
 * once. No `vscode` import: unit tests render it.
 */
import { classifyTensor } from '../../shared/census/classify';
import { trainingMetadata, trainingMetadataLines } from '../../shared/safetensors/trainingMetadata';
import { WeightsIndex } from '../../shared/weights/read';
import { formatBytes, formatInt } from '../census/treeModel';

export interface HeaderPageInput {
  file: string;
  /** The validated tensor index, or undefined when the file cannot be read. */
  header?: WeightsIndex;
  /** Why the file is not valid (the engine's error line). */
  error?: string;
  /** The page's script and style run only with this nonce (CSP `default-src 'none'`). */
  nonce: string;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

const COLUMNS = [
  { key: 'index', title: '#', numeric: true },
  { key: 'name', title: 'Name', numeric: false },
  { key: 'dtype', title: 'dtype', numeric: false },
  { key: 'shape', title: 'Shape', numeric: false },
  { key: 'numel', title: 'Elements', numeric: true },
  { key: 'bytes', title: 'Bytes', numeric: true },
  { key: 'begin', title: 'Offsets', numeric: true },
  { key: 'category', title: 'Category', numeric: false },
] as const;

function rows(h: WeightsIndex): string {
  return h.tensors
    .map((t, i) => {
      const begin = t.offset - h.dataStart;
      const c = classifyTensor(t.name);
      const category = c.category + (c.layer !== null ? ` · layer ${c.layer}` : '');
      const cells = [
        String(i),
        // Break opportunities after the dots only: a name never breaks inside a word.
        `<code>${t.name.split(/(?<=\.)/).map(escapeHtml).join('<wbr>')}</code>`,
        t.dtype,
        `[${t.shape.join(', ')}]`,
        formatInt(t.numel),
        formatInt(t.byteLength),
        `${formatInt(begin)} – ${formatInt(begin + t.byteLength)}`,
        escapeHtml(category),
      ];
      const data = `data-index="${i}" data-name="${escapeHtml(t.name)}" data-dtype="${t.dtype}" data-shape="${t.shape.join('x')}" data-numel="${t.numel}" data-bytes="${t.byteLength}" data-begin="${begin}" data-category="${escapeHtml(category)}"`;
      return `<tr ${data}>${cells.map((x, j) => `<td${COLUMNS[j].numeric ? ' class="num"' : COLUMNS[j].key === 'name' ? ' class="name"' : ''}>${x}</td>`).join('')}</tr>`;
    })
    .join('\n');
}

function verdict(input: HeaderPageInput): string {
  const h = input.header;
  const pytorch = /\.(bin|pt|pth)$/i.test(input.file);
  if (!h) return `<p id="verdict" class="bad" data-valid="false">Not a ${pytorch ? 'readable PyTorch checkpoint' : 'valid safetensors file'}: ${escapeHtml(input.error ?? 'unknown error')}</p>`;
  const elements = h.tensors.reduce((a, t) => a + t.numel, 0);
  const dtypes = [...new Set(h.tensors.map((t) => t.dtype))].join(', ');
  if (h.format === 'pytorch') {
    return (
      `<p id="verdict" class="good" data-valid="true">PyTorch checkpoint (torch.save zip), read without running its pickle: ${formatInt(h.tensors.length)} tensors, ${formatInt(elements)} elements (${escapeHtml(dtypes || 'none')}), ` +
      `${formatBytes(h.fileSize)}. Offsets are positions in the file; every tensor is a contiguous range of a stored entry. Read-only: <code>lora-lens convert</code> writes it as safetensors.</p>`
    );
  }
  return (
    `<p id="verdict" class="good" data-valid="true">Valid safetensors: ${formatInt(h.tensors.length)} tensors, ${formatInt(elements)} elements (${escapeHtml(dtypes || 'none')}), ` +
    `${formatBytes(h.fileSize)}. Header ${formatInt(h.dataStart - 8)} bytes; offsets contiguous from 0 with no gaps or overlaps; sizes match shape × dtype; data ends exactly at the end of the file.</p>`
  );
}

/** A metadata value: JSON objects and lists (kohya's ss_tag_frequency, ss_dataset_dirs) folded and pretty-printed. */
function metadataValue(v: string): string {
  if (!/^\s*[[{]/.test(v)) return escapeHtml(v);
  try {
    const parsed: unknown = JSON.parse(v);
    const n = Array.isArray(parsed) ? parsed.length : Object.keys(parsed as object).length;
    return `<details><summary>${Array.isArray(parsed) ? `${n} items` : `${n} keys`}</summary><pre>${escapeHtml(JSON.stringify(parsed, null, 2))}</pre></details>`;
  } catch {
    return escapeHtml(v);
  }
}

function metadata(h: WeightsIndex): string {
  const entries = Object.entries(h.metadata);
  if (h.format === 'pytorch') return '<p class="muted">A PyTorch checkpoint carries no metadata.</p>';
  if (entries.length === 0) return '<p class="muted">No <code>__metadata__</code>.</p>';
  const training = trainingMetadata(h.metadata);
  const summary = training ? `<ul id="training">${trainingMetadataLines(training).map((l) => `<li>${escapeHtml(l)}</li>`).join('')}</ul>` : '';
  return `${summary}<table id="metadata"><thead><tr><th>Key</th><th>Value</th></tr></thead><tbody>${entries
    .map(([k, v]) => `<tr><td><code>${escapeHtml(k)}</code></td><td>${metadataValue(v)}</td></tr>`)
    .join('')}</tbody></table>`;
}

/** Filter by any text of a row, sort by clicking a column (numbers as numbers); the data never leaves the page. */
const SCRIPT = `
const body = document.querySelector('#tensors tbody');
const filter = document.getElementById('filter');
const count = document.getElementById('count');
const all = Array.from(body.rows);
let sortKey = 'index', dir = 1;
function apply() {
  const q = filter.value.trim().toLowerCase();
  let shown = 0;
  for (const r of all) { const hit = q === '' || r.textContent.toLowerCase().includes(q); r.hidden = !hit; if (hit) shown++; }
  count.textContent = shown + ' of ' + all.length + ' tensors';
}
function sort(key, numeric) {
  dir = key === sortKey ? -dir : 1; sortKey = key;
  const v = (r) => numeric ? Number(r.dataset[key]) : r.dataset[key];
  all.sort((a, b) => (v(a) < v(b) ? -1 : v(a) > v(b) ? 1 : 0) * dir);
  body.append(...all);
  for (const th of document.querySelectorAll('#tensors th')) th.setAttribute('aria-sort', th.dataset.key === key ? (dir > 0 ? 'ascending' : 'descending') : 'none');
}
filter.addEventListener('input', apply);
for (const th of document.querySelectorAll('#tensors th')) {
  const go = () => sort(th.dataset.key, th.dataset.numeric === 'true');
  th.addEventListener('click', go);
  th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); go(); } });
}
apply();
`;

const STYLE = `
body { font-family: var(--vscode-font-family); font-size: var(--vscode-font-size); color: var(--vscode-foreground); padding: 0 16px 16px; }
h1 { font-size: 1.3em; font-weight: 600; word-break: break-all; }
h2 { font-size: 1.1em; font-weight: 600; margin-top: 1.4em; }
/* The verdict reads in the text colour of every theme; a coloured bar says good or bad (as in the report panels). */
#verdict { padding: 8px 12px; border-left: 4px solid var(--vscode-charts-green); background: var(--vscode-textBlockQuote-background); }
#verdict.bad { border-left-color: var(--vscode-errorForeground); }
.muted { color: var(--vscode-descriptionForeground); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--vscode-panel-border, var(--vscode-widget-border, transparent)); vertical-align: top; }
th { position: sticky; top: 0; background: var(--vscode-editor-background); cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort=ascending]::after { content: ' ▲'; } th[aria-sort=descending]::after { content: ' ▼'; }
td { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
/* Only the name may wrap (a narrow editor): shapes, offsets and categories stay on one line. */
td.name { white-space: normal; overflow-wrap: break-word; }
/* No code background: a wrapped line's background would cover the underscores of the line above. */
td.name code { background: none; padding: 0; line-height: 1.5; }
tbody tr:hover { background: var(--vscode-list-hoverBackground); }
code { font-family: var(--vscode-editor-font-family); }
#filter { width: min(480px, 100%); padding: 4px 6px; color: var(--vscode-input-foreground); background: var(--vscode-input-background); border: 1px solid var(--vscode-input-border, transparent); }
#filter:focus { outline: 1px solid var(--vscode-focusBorder); }
.bar { display: flex; gap: 12px; align-items: center; margin: 8px 0; }
`;

export function renderHeaderPage(input: HeaderPageInput): string {
  const h = input.header;
  const csp = `default-src 'none'; style-src 'nonce-${input.nonce}'; script-src 'nonce-${input.nonce}';`;
  const body = h
    ? `<h2>Metadata</h2>${metadata(h)}
<h2>Tensors</h2>
<div class="bar"><input id="filter" type="search" placeholder="Filter by name, dtype, shape, category" aria-label="Filter tensors"><span id="count" aria-live="polite"></span></div>
<table id="tensors"><thead><tr>${COLUMNS.map((c) => `<th tabindex="0" data-key="${c.key}" data-numeric="${c.numeric}" aria-sort="${c.key === 'index' ? 'ascending' : 'none'}">${c.title}</th>`).join('')}</tr></thead>
<tbody>
${rows(h)}
</tbody></table>
<script nonce="${input.nonce}">${SCRIPT}</script>`
    : '';
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<style nonce="${input.nonce}">${STYLE}</style>
<title>${escapeHtml(input.file)}</title></head>
<body>
<h1 id="file">${escapeHtml(input.file)}</h1>
${verdict(input)}
${body}
</body></html>`;
}
