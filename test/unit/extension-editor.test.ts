/** The .safetensors viewer's page (src/extension/editor/headerPage.ts), from real headers written by the test builders. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { escapeHtml, renderHeaderPage } from '../../src/extension/editor/headerPage';
import { readHeader } from '../../src/shared/safetensors/file';
import { readWeightsIndex } from '../../src/shared/weights/read';
import { tmpDir, writeWeights } from './helpers/builders';

const dir = tmpDir('lora-lens-editor-');
writeWeights(dir, [
  { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [8, 8] },
  { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [16, 8] },
  { name: 'weird<script>', dtype: 'F16', shape: [3] },
]);
const file = path.join(dir, 'model.safetensors');

test('a valid file: verdict, one row per tensor with offsets, strict CSP with a nonce', () => {
  const header = readWeightsIndex(file);
  const html = renderHeaderPage({ file, header, nonce: 'N0NCE' });
  assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'nonce-N0NCE'; script-src 'nonce-N0NCE';">/);
  assert.match(html, /id="verdict" class="good" data-valid="true">Valid safetensors: 3 tensors, 195 elements \(BF16, F32, F16\)/);
  const rows = html.match(/<tr data-index=/g) ?? [];
  assert.equal(rows.length, 3);
  assert.match(html, /data-name="model.layers.0.self_attn.q_proj.weight" data-dtype="BF16" data-shape="8x8" data-numel="64" data-bytes="128" data-begin="0"/);
  assert.match(html, /<td class="num">128 – 640<\/td>/); // embed_tokens: 512 bytes after q_proj's 128
  assert.match(html, /attention · layer 0/);
  assert.ok(!html.includes('weird<script>'), 'tensor names are escaped');
  assert.ok(html.includes('weird&lt;script&gt;'));
  // Every script and style carries the nonce.
  for (const tag of html.match(/<(script|style)[^>]*>/g) ?? []) assert.match(tag, /nonce="N0NCE"/);
});

test('an invalid file: the reader\'s error as the verdict, no table', () => {
  const bad = path.join(dir, 'bad.safetensors');
  fs.writeFileSync(bad, Buffer.concat([fs.readFileSync(file), Buffer.from([0])]));
  let error = '';
  try {
    readHeader(bad);
  } catch (e) {
    error = (e as Error).message;
  }
  assert.match(error, /trailing bytes/);
  const html = renderHeaderPage({ file: bad, error, nonce: 'n' });
  assert.match(html, /data-valid="false">Not a valid safetensors file: .*1 trailing bytes after the last tensor/);
  assert.ok(!html.includes('<table id="tensors"'));
});

test('escapeHtml', () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
});
