/**
 * Where Dawn's native addon is loaded from: the copy a platform .vsix carries beside the bundles
 * (dist/dawn/<platform>/dawn.node, scripts/package-platform.mjs) before the `webgpu` package's; and
 * that copy loads from a folder with no node_modules around it, as an installed extension has it.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { DAWN_PLATFORM, dawnAddonPath } from '../../src/engine/kernels/gpu/dawn';

function packageAddon(): string | undefined {
  try {
    return path.join(path.dirname(require.resolve('webgpu/package.json')), 'dist', DAWN_PLATFORM, 'dawn.node');
  } catch {
    return undefined;
  }
}

const fromPackage = packageAddon();

test('dawnAddonPath takes the packaged copy beside the bundles first, and it loads there', { skip: fromPackage && fs.existsSync(fromPackage) ? false : 'the optional webgpu package has no binary for this platform' }, () => {
  const bundleDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-dawn-'));
  try {
    assert.equal(dawnAddonPath(bundleDir), fromPackage, 'no packaged copy: the webgpu package');
    const packaged = path.join(bundleDir, 'dawn', DAWN_PLATFORM, 'dawn.node');
    fs.mkdirSync(path.dirname(packaged), { recursive: true });
    fs.copyFileSync(fromPackage!, packaged);
    assert.equal(dawnAddonPath(bundleDir), packaged);
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a native addon, loaded by path as dawn.ts does
    const addon = require(packaged) as { create?: unknown };
    assert.equal(typeof addon.create, 'function');
  } finally {
    fs.rmSync(bundleDir, { recursive: true, force: true });
  }
});
