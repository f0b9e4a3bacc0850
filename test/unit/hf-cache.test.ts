/**
 * The Hugging Face hub cache as huggingface_hub lays it out: `models--ORG--NAME/refs/main`,
 * `snapshots/<commit>/` whose files are relative symbolic links into `../../blobs/<hash>`. Found by the
 * extension's scan and base guess, resolved from an adapter's base_model_name_or_path by the engine
 * (census), and read through the links by every job. Nothing here touches the network.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { guessBase, markerFilesUnder, recogniseFolders } from '../../src/extension/workspace/folders';
import { cachedSnapshot, cachedSnapshots, hubCacheDir, isRepoId, snapshotRepoId } from '../../src/shared/weights/hfCache';
import { runCli } from './helpers/cli';
import { loraPair, peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';

const root = tmpDir('lora-lens-hf-');
const hub = path.join(root, 'hf-home', 'hub');
const REPO = path.join(hub, 'models--openai-community--gpt2');
const OLD = 'a'.repeat(40);
const MAIN = 'b'.repeat(40);

/** Writes a model as the cache stores it: each file a blob, linked from the snapshot by a relative link. */
function cacheSnapshot(repo: string, commit: string, files: string): string {
  const snap = path.join(repo, 'snapshots', commit);
  fs.mkdirSync(snap, { recursive: true });
  fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  for (const f of fs.readdirSync(files)) {
    const blob = `${commit.slice(0, 8)}-${f.replace(/\W/g, '')}`;
    fs.copyFileSync(path.join(files, f), path.join(repo, 'blobs', blob));
    fs.symlinkSync(path.join('..', '..', 'blobs', blob), path.join(snap, f));
  }
  return snap;
}

const Q = 'h.0.attn.c_attn';
const model = writeModel(path.join(root, 'gpt2-files'), { model_type: 'gpt2' }, [
  { name: `${Q}.weight`, shape: [8, 24], data: 1 },
  { name: 'ln_f.weight', shape: [8], data: 2 },
]);
const oldSnap = cacheSnapshot(REPO, OLD, model);
const mainSnap = cacheSnapshot(REPO, MAIN, model);
fs.utimesSync(oldSnap, new Date(), new Date(Date.now() + 60_000)); // the old one is the newest by time
fs.mkdirSync(path.join(REPO, 'refs'));
fs.writeFileSync(path.join(REPO, 'refs', 'main'), MAIN);
const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ base_model_name_or_path: 'openai-community/gpt2', r: 2, lora_alpha: 2, target_modules: ['c_attn'], fan_in_fan_out: true }), loraPair(Q, 2, 8, 24));

describe('the Hugging Face hub cache', () => {
  it('the cache folder comes from HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub', () => {
    assert.equal(hubCacheDir({ HF_HUB_CACHE: '/x/hub', HF_HOME: '/y' }), '/x/hub');
    assert.equal(hubCacheDir({ HF_HOME: '/y' }), path.join('/y', 'hub'));
    assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/c' }), path.join('/c', 'huggingface', 'hub'));
    assert.ok(['gpt2', 'meta-llama/Llama-2-7b-hf', 'Qwen/Qwen2.5-0.5B-Instruct'].every(isRepoId));
    assert.ok(!['/abs/model', './model', '../m', 'a/b/c', 'x--y'].some(isRepoId));
  });

  it('a repository resolves to the snapshot refs/main names, else to the newest snapshot; its id comes back from the path', () => {
    assert.equal(cachedSnapshot('openai-community/gpt2', hub), mainSnap);
    assert.equal(cachedSnapshot('gpt2', hub), undefined);
    assert.deepEqual(cachedSnapshots(hub), [oldSnap, mainSnap]);
    assert.equal(snapshotRepoId(mainSnap), 'openai-community/gpt2');
    assert.equal(snapshotRepoId(model), undefined);
    const noRef = path.join(root, 'hub2', 'models--openai-community--gpt2');
    const a = cacheSnapshot(noRef, OLD, model);
    cacheSnapshot(noRef, MAIN, model);
    fs.utimesSync(a, new Date(), new Date(Date.now() + 60_000));
    assert.equal(cachedSnapshot('openai-community/gpt2', path.join(root, 'hub2')), a);
  });

  it("the extension's scan finds the snapshots as model folders through their links, and proposes an adapter's base from the cache", () => {
    const found = recogniseFolders(markerFilesUnder([hub]));
    assert.deepEqual(found.models, [oldSnap, mainSnap]);
    assert.equal(guessBase('openai-community/gpt2', found.models, hub), mainSnap);
    // A local folder of that path wins; an uncached name falls back to the folder of that last name.
    assert.equal(guessBase(model, [model, mainSnap], hub), model);
    assert.equal(guessBase('someone/gpt2-files', [model], hub), model);
  });

  it('the engine reads a snapshot through its links (census, merge) and names the cached base of an adapter; nothing is fetched', () => {
    const env = { ...process.env, HF_HOME: path.join(root, 'hf-home'), HF_HUB_CACHE: '', HUGGINGFACE_HUB_CACHE: '', HF_HUB_OFFLINE: '1' };
    const census = runCli(['census', adapter, '--json', '-'], { env });
    assert.equal(census.status, 0, census.stderr);
    const a = JSON.parse(census.stdout).adapter;
    assert.deepEqual([a.baseModel, a.cachedBase], ['openai-community/gpt2', mainSnap]);
    const merged = path.join(root, 'merged');
    const m = runCli(['merge', '--base', a.cachedBase, '--adapter', adapter, '--out', merged, '--dtype', 'fp32'], { env });
    assert.equal(m.status, 0, m.stderr);
    assert.ok(fs.statSync(path.join(merged, 'config.json')).isFile() && !fs.lstatSync(path.join(merged, 'config.json')).isSymbolicLink());
  });
});
