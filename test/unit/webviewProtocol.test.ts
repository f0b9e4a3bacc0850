/** Messages from the webview are untrusted: only well-formed ones of known types get through. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseHostMessage, parsePanelContent, parseWebviewMessage } from '../../src/shared/webviewProtocol';
import { contentSecurityPolicy, escapeHtml, makeNonce, panelHtml } from '../../src/extension/panels/html';

const PNG = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

test('well-formed webview messages parse to their typed form, extra fields dropped', () => {
  assert.deepEqual(parseWebviewMessage({ type: 'ready', extra: 1 }), { type: 'ready' });
  assert.deepEqual(parseWebviewMessage({ type: 'exportJson' }), { type: 'exportJson' });
  assert.deepEqual(parseWebviewMessage({ type: 'exportPng', name: 'max-abs-diff', dataUrl: PNG }), { type: 'exportPng', name: 'max-abs-diff', dataUrl: PNG });
  assert.deepEqual(parseWebviewMessage({ type: 'openTensor', name: 'model.layers.0.self_attn.q_proj.weight' }), { type: 'openTensor', name: 'model.layers.0.self_attn.q_proj.weight' });
});

test('malformed webview messages are refused', () => {
  for (const bad of [
    null,
    undefined,
    'ready',
    42,
    [],
    {},
    { type: 'runCommand', command: 'rm -rf /' },
    { type: 'exportPng', name: '../../etc/passwd', dataUrl: PNG },
    { type: 'exportPng', name: '.hidden', dataUrl: PNG },
    { type: 'exportPng', name: 'chart', dataUrl: 'data:text/html;base64,PGI+' },
    { type: 'exportPng', name: 'chart', dataUrl: `${PNG}"<script>` },
    { type: 'exportPng', name: 'chart' },
    { type: 'exportPng', dataUrl: PNG },
    { type: 'openTensor', name: '' },
    { type: 'openTensor', name: 7 },
    { type: 'openTensor', name: 'x'.repeat(2000) },
  ]) {
    assert.equal(parseWebviewMessage(bad), null, JSON.stringify(bad));
  }
});

test('panel state round-trips and rejects unknown kinds or missing reports', () => {
  const content = { kind: 'compare', title: 'Compare', report: { summary: {} } };
  assert.deepEqual(parsePanelContent(content), content);
  assert.deepEqual(parsePanelContent({ ...content, comparisons: { fp32: { tensors: [] } } })?.comparisons, { fp32: { tensors: [] } });
  assert.equal(parsePanelContent({ ...content, kind: 'merge' }), null);
  assert.equal(parsePanelContent({ ...content, report: null }), null);
  assert.equal(parsePanelContent({ kind: 'compare', report: {} }), null);
  assert.deepEqual(parseHostMessage({ type: 'show', ...content }), { type: 'show', ...content });
  assert.deepEqual(parseHostMessage({ type: 'exported', what: 'png', file: null }), { type: 'exported', what: 'png', file: null });
  assert.equal(parseHostMessage({ type: 'exported', what: 'exe', file: '/x' }), null);
});

test('the panel HTML allows nothing but its own nonce script and extension styles', () => {
  const nonce = makeNonce((n) => new Uint8Array(n).map((_, i) => i * 7));
  assert.match(nonce, /^[A-Za-z0-9]{32}$/);
  const csp = contentSecurityPolicy('https://ext.vscode-cdn.net', nonce);
  assert.match(csp, /^default-src 'none'; /);
  assert.ok(csp.includes(`script-src 'nonce-${nonce}'`));
  assert.ok(!csp.includes('unsafe-inline') && !csp.includes('unsafe-eval'));
  const html = panelHtml({ cspSource: 'https://ext.vscode-cdn.net', nonce, scriptUri: 'https://x/dist/webview.js', styleUri: 'https://x/dist/webview.css', title: '<Compare & "x">' });
  const scripts = html.match(/<script[^>]*>/g) ?? [];
  assert.equal(scripts.length, 1);
  assert.ok(scripts[0].includes(`nonce="${nonce}"`) && scripts[0].includes('src="https://x/dist/webview.js"'));
  assert.ok(html.includes('<title>&lt;Compare &amp; &quot;x&quot;&gt;</title>'));
  assert.equal(escapeHtml(`<a href='x'>`), '&lt;a href=&#39;x&#39;&gt;');
});
