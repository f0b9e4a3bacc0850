/** Messages from the webview are untrusted: only well-formed ones of known types get through, and the host acts on them safely. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HostMessage, parseHostMessage, parsePanelContent, parseWebviewMessage } from '../../src/shared/webviewProtocol';
import { PanelController } from '../../src/extension/panels/controller';
import { contentSecurityPolicy, escapeHtml, makeNonce, panelHtml } from '../../src/extension/panels/html';

const PNG = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

test('well-formed webview messages parse to their typed form, extra fields dropped', () => {
  assert.deepEqual(parseWebviewMessage({ type: 'ready', extra: 1 }), { type: 'ready' });
  assert.deepEqual(parseWebviewMessage({ type: 'exportJson' }), { type: 'exportJson' });
  assert.deepEqual(parseWebviewMessage({ type: 'exportPng', name: 'max-abs-diff', dataUrl: PNG }), { type: 'exportPng', name: 'max-abs-diff', dataUrl: PNG });
  assert.deepEqual(parseWebviewMessage({ type: 'openTensor', name: 'model.layers.0.self_attn.q_proj.weight' }), { type: 'openTensor', name: 'model.layers.0.self_attn.q_proj.weight' });
  assert.deepEqual(parseWebviewMessage({ type: 'tensorStats', name: 'lm_head.weight', x: 1 }), { type: 'tensorStats', name: 'lm_head.weight' });
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
    { type: 'tensorStats', name: '' },
    { type: 'tensorStats' },
  ]) {
    assert.equal(parseWebviewMessage(bad), null, JSON.stringify(bad));
  }
});

test('panel state round-trips and rejects unknown kinds or missing reports', () => {
  const content = { kind: 'compare', title: 'Compare', report: { summary: {} } };
  assert.deepEqual(parsePanelContent(content), content);
  const withComparisons = parsePanelContent({ ...content, comparisons: { fp32: { tensors: [] } } });
  assert.deepEqual(withComparisons?.kind === 'compare' && withComparisons.comparisons, { fp32: { tensors: [] } });
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

function harness(): {
  c: PanelController;
  posted: HostMessage[];
  saved: Array<[string, string, Uint8Array]>;
  opened: string[];
  answer: { file: string | null };
} {
  const posted: HostMessage[] = [];
  const saved: Array<[string, string, Uint8Array]> = [];
  const opened: string[] = [];
  const answer = { file: '/tmp/out' as string | null };
  const c = new PanelController({ kind: 'compare', title: 'A', report: { summary: { shared: 1 } } }, {
    post: (m) => posted.push(m),
    saveAs: async (name, kind, bytes) => {
      saved.push([name, kind, bytes]);
      return answer.file;
    },
    openTensor: (n) => opened.push(n),
    stylesheet: () => 'body { color: red; }',
  });
  return { c, posted, saved, opened, answer };
}

test('the host posts nothing before the page is ready, then the latest content, again after a reload', async () => {
  const h = harness();
  h.c.show({ kind: 'compare', title: 'B', report: { summary: { shared: 2 } } });
  assert.equal(h.posted.length, 0);
  await h.c.receive({ type: 'ready' });
  assert.deepEqual(h.posted, [{ type: 'show', kind: 'compare', title: 'B', report: { summary: { shared: 2 } } }]);
  h.c.show({ kind: 'compare', title: 'C', report: {} });
  await h.c.receive({ type: 'ready' });
  assert.deepEqual(h.posted.map((m) => m.type === 'show' && m.title), ['B', 'C', 'C']);
});

test('exports write the host\'s report and the decoded PNG; malformed messages do nothing', async () => {
  const h = harness();
  await h.c.receive({ type: 'exportJson', report: { forged: true } });
  assert.equal(h.saved[0][0], 'compare-report.json');
  assert.deepEqual(JSON.parse(new TextDecoder().decode(h.saved[0][2])), { summary: { shared: 1 } });
  await h.c.receive({ type: 'exportPng', name: 'cosine', dataUrl: PNG });
  assert.equal(h.saved[1][0], 'compare-cosine.png');
  assert.deepEqual([...h.saved[1][2].slice(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'PNG signature');
  h.answer.file = null;
  await h.c.receive({ type: 'exportJson' });
  assert.deepEqual(h.posted, [{ type: 'exported', what: 'json', file: '/tmp/out' }, { type: 'exported', what: 'png', file: '/tmp/out' }, { type: 'exported', what: 'json', file: null }]);
  await h.c.receive({ type: 'exportPng', name: '../x', dataUrl: PNG });
  await h.c.receive({ type: 'openTensor', name: 42 });
  await h.c.receive({ type: 'openTensor', name: 'model.embed_tokens.weight' });
  assert.equal(h.saved.length, 3);
  assert.deepEqual(h.opened, ['model.embed_tokens.weight']);
});

test('CSV export: the host builds it from its own content, raw values, RFC 4180 quoting; unknown sections do nothing', async () => {
  const h = harness();
  h.c.show({
    kind: 'compare',
    title: 'A',
    report: { summary: { shared: 1 }, tensors: [{ name: 'model.layers.0.self_attn.q_proj.weight', cosine: 0.123456789, maxAbsDiff: 1e-7, loraNorm: 1, taskVectorNorm: 1 }, { name: 'a,"b"', cosine: 1, maxAbsDiff: 0, loraNorm: 2, taskVectorNorm: 2 }] },
  });
  await h.c.receive({ type: 'exportCsv', section: 'cosine' });
  assert.equal(h.saved[0][0], 'compare-cosine.csv');
  const lines = new TextDecoder().decode(h.saved[0][2]).split('\r\n');
  assert.equal(lines[0], 'tensor,layer,projection,cosine,relative Frobenius error');
  assert.ok(lines.some((l) => l.startsWith('model.layers.0.self_attn.q_proj.weight,0,') && l.includes(',0.123456789,')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('"a,""b""",')), 'quoted');
  await h.c.receive({ type: 'exportCsv', section: 'no-such-section' });
  await h.c.receive({ type: 'exportCsv', section: '../x' });
  assert.equal(h.saved.length, 1);
});

test('HTML export: one document with the stylesheet and theme inlined, a CSP that runs no script', async () => {
  const h = harness();
  await h.c.receive({ type: 'exportHtml', body: '<div id="panel"><img src="data:image/png;base64,AA=="></div>', theme: '--vscode-foreground: #ccc;</style><script>x()</script>' });
  assert.equal(h.saved[0][0], 'compare-report.html');
  const html = new TextDecoder().decode(h.saved[0][2]);
  assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">/);
  assert.ok(html.includes('body { color: red; }') && html.includes('--vscode-foreground: #ccc;'));
  assert.ok(!/<\/style><script>/.test(html), 'the theme cannot close the style element');
  assert.ok(html.includes('<div id="panel"><img src="data:image/png;base64,AA=="></div>'));
  assert.deepEqual(h.posted, [{ type: 'exported', what: 'html', file: '/tmp/out' }]);
  await h.c.receive({ type: 'exportHtml', body: 42, theme: '' });
  assert.equal(h.saved.length, 1);
});
