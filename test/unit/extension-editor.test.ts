/**
 * The weights viewer (`.safetensors` / PyTorch custom editor): the typed index the extension sends
 * (src/shared/weights/view.ts), the page model the webview draws from it (src/shared/charts/weights.ts)
 * and the host side of its messages (CSV export, Open in Census), from real headers written by the test
 * builders.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { panelModel } from '../../src/shared/charts/panels';
import { formatCell } from '../../src/shared/charts/format';
import { PanelController } from '../../src/extension/panels/controller';
import { readHeader } from '../../src/shared/safetensors/file';
import { readWeightsIndex } from '../../src/shared/weights/read';
import { parseWeightsView, unreadableWeightsView, weightsView } from '../../src/shared/weights/view';
import { HostMessage, parseHostMessage, WeightsContent } from '../../src/shared/webviewProtocol';
import { tmpDir, writeWeights } from './helpers/builders';
import { writeSafetensorsFile } from './helpers/diffusion';

const dir = tmpDir('lora-lens-editor-');
writeWeights(dir, [
  { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [8, 8] },
  { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [16, 8] },
  { name: 'weird<script>,"x"', dtype: 'F16', shape: [3] },
]);
const file = path.join(dir, 'model.safetensors');
const content = (): WeightsContent => ({ kind: 'weights', title: 'model.safetensors', weights: weightsView(file, readWeightsIndex(file)) });

test('a valid file: verdict, one row per tensor with offsets from the data region, categories', () => {
  const m = panelModel(content());
  assert.equal(m.kind, 'weights');
  assert.equal(m.heading, file);
  assert.equal(m.verdict?.tone, 'good');
  assert.match(m.verdict!.text, /^Valid safetensors: 3 tensors, 195 elements \(BF16, F32, F16\), 942 B\. Header 288 bytes;/);
  assert.equal(m.openInCensus, true);
  assert.deepEqual(m.sections.map((s) => s.id), ['metadata', 'tensors']);
  const t = m.sections[1].table!;
  assert.deepEqual(t.columns.map((c) => c.key), ['index', 'name', 'dtype', 'shape', 'numel', 'bytes', 'begin', 'end', 'category']);
  assert.equal(t.rows.length, 3);
  assert.deepEqual(t.rows[0], [0, 'model.layers.0.self_attn.q_proj.weight', 'BF16', '[8, 8]', 64, 128, 0, 128, 'attention · layer 0']);
  assert.deepEqual(t.rows[1].slice(4, 8), [128, 512, 128, 640]); // embed_tokens: 512 bytes after q_proj's 128
  assert.equal(t.tensorColumn, 1, 'names link to the census tree');
  assert.deepEqual(t.filter, { label: 'Filter by name, dtype, shape, category', noun: 'tensors' });
  assert.equal(formatCell(t.rows[1][5], t.columns[5].format), '512');
});

test('an invalid file: the reader\'s error as the verdict, no table, no census link', () => {
  const bad = path.join(dir, 'bad.safetensors');
  fs.writeFileSync(bad, Buffer.concat([fs.readFileSync(file), Buffer.from([0])]));
  let error = '';
  try {
    readHeader(bad);
  } catch (e) {
    error = (e as Error).message;
  }
  assert.match(error, /trailing bytes/);
  const m = panelModel({ kind: 'weights', title: 'bad.safetensors', weights: unreadableWeightsView(bad, error) });
  assert.equal(m.verdict?.tone, 'bad');
  assert.match(m.verdict!.text, /^Not a valid safetensors file: .*1 trailing bytes after the last tensor/);
  assert.deepEqual(m.sections, []);
  assert.equal(m.openInCensus, false);
});

test('metadata: a table of every key, kohya training metadata summarised above it', () => {
  const f = writeSafetensorsFile(path.join(tmpDir('lora-lens-editor-meta-'), 'model.safetensors'), [{ name: 'lora_unet_a.lora_down.weight', dtype: 'F32', shape: [2, 4] }], {
    ss_network_module: 'networks.lora',
    ss_network_dim: '4',
    ss_network_alpha: '1',
    note: 'a, "b"',
  });
  const m = panelModel({ kind: 'weights', title: 'model.safetensors', weights: weightsView(f, readWeightsIndex(f)) });
  assert.deepEqual(m.sections.map((s) => s.id), ['training', 'metadata', 'tensors']);
  assert.match(m.sections[0].note!, /network networks\.lora; rank 4, alpha 1/);
  const meta = m.sections[1].table!;
  assert.ok(meta.rows.some((r) => r[0] === 'note' && r[1] === 'a, "b"'));
  assert.equal(meta.columns[1].wrap, true);
});

test('the index travels as checked data: a malformed view is refused at the page', () => {
  const c = content();
  assert.deepEqual(parseHostMessage(JSON.parse(JSON.stringify({ type: 'show', ...c }))), { type: 'show', ...c });
  assert.equal(parseWeightsView({ ...c.weights, index: { ...c.weights.index, tensors: [{ name: 1 }] } }), null);
  assert.equal(parseWeightsView({ file: file, index: null }), null, 'an unreadable file says why');
  assert.equal(parseHostMessage({ type: 'show', kind: 'weights', title: 'x', weights: { file: 3 } }), null);
});

test('the viewer\'s host: CSV of its tables named after the file, JSON of the index, Open in Census', async () => {
  const posted: HostMessage[] = [];
  const saved: Array<[string, Uint8Array]> = [];
  const census: string[] = [];
  const c = new PanelController(content(), {
    post: (m) => posted.push(m),
    saveAs: async (name, _kind, bytes) => {
      saved.push([name, bytes]);
      return `/tmp/${name}`;
    },
    openTensor: () => undefined,
    openInCensus: () => census.push('open'),
    resize: () => census.push('resize'),
    stylesheet: () => '',
  });
  await c.receive({ type: 'exportCsv', section: 'tensors' });
  assert.equal(saved[0][0], 'model-tensors.csv');
  const lines = new TextDecoder().decode(saved[0][1]).split('\r\n');
  assert.equal(lines[0], '#,Name,dtype,Shape,Elements,Bytes,Begin,End,Category');
  assert.equal(lines[1], '0,model.layers.0.self_attn.q_proj.weight,BF16,"[8, 8]",64,128,0,128,attention · layer 0');
  assert.ok(lines[3].startsWith('2,"weird<script>,""x""",F16,'), lines[3]);
  await c.receive({ type: 'exportJson' });
  assert.equal(saved[1][0], 'model-index.json');
  assert.equal(JSON.parse(new TextDecoder().decode(saved[1][1])).index.tensors.length, 3);
  await c.receive({ type: 'openInCensus', file: '/etc/passwd' });
  assert.deepEqual(census, ['open']);
  // The controller forwards the spectrum panel's "Resize…" (a message with no payload the page could forge).
  await c.receive({ type: 'resize', adapter: '/etc' });
  assert.deepEqual(census, ['open', 'resize']);
});
