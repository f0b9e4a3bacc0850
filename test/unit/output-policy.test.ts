/**
 * The output policy (util/outputDir.ts) through the built CLI: an existing --out is used only when it is
 * empty or an earlier output of the same job; reports go to regular files, devices and pipes without
 * replacing them; a full disk is exit 2 naming the user's --out; a second writer loses; a killed run's
 * leftovers are removed by the next run.
 */
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { OUTPUT_MARKER } from '../../src/engine/util/outputDir';
import { WRITE_FAULT_ENV } from '../../src/engine/safetensors/faults';
import { loraPair, peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { assertOneLineError, CLI, CliRun, runCli } from './helpers/cli';
import { snapshot } from './helpers/files';

const config = { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 8, num_hidden_layers: 1 };

function fixture(root: string): void {
  writeModel(path.join(root, 'base'), config, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] },
    { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8] },
    { name: 'model.norm.weight', shape: [8] },
  ]);
  writeModel(path.join(root, 'ft'), config, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8], data: 5 },
    { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8] },
    { name: 'model.norm.weight', shape: [8] },
  ]);
  writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8));
}

const merge = (root: string, out: string, ...more: string[]): CliRun =>
  runCli(['merge', '--base', 'base', '--adapter', 'adapter', '--out', out, '--dtype', 'fp32', '--device', 'cpu', ...more], { cwd: root });

/** Names in `dir` that are LoRA Lens work files (partials, locks). */
const leftovers = (dir: string): string[] => fs.readdirSync(dir).filter((f) => /\.partial-|\.lock$|\.stale-/.test(f));

describe('an existing --out', () => {
  const root = tmpDir('lora-lens-policy-');
  fixture(root);

  it('holding the user\'s files is refused with one line and left byte for byte as it was', () => {
    const mine = path.join(root, 'mywork');
    fs.mkdirSync(path.join(mine, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(mine, 'thesis.tex'), 'years of work\n');
    fs.writeFileSync(path.join(mine, 'sub', 'data.csv'), '1,2\n');
    const before = snapshot(mine);
    assertOneLineError(merge(root, 'mywork'), 'mywork', 'holding other files');
    assertOneLineError(runCli(['compare', '--base', 'base', '--adapter', 'adapter', '--finetuned', 'ft', '--out', 'mywork', '--device', 'cpu'], { cwd: root }), 'mywork');
    assertOneLineError(runCli(['validate', '--base', 'base', '--adapter', 'adapter', '--out', 'mywork', '--device', 'cpu'], { cwd: root }), 'mywork');
    assert.deepEqual(snapshot(mine), before);
    assert.deepEqual(leftovers(root), []);
  });

  it('empty, or an earlier output of the same job, is written; the rerun replaces exactly what the first wrote', () => {
    fs.mkdirSync(path.join(root, 'empty'));
    assert.equal(merge(root, 'empty').status, 0);
    assert.ok(fs.existsSync(path.join(root, 'empty', 'model.safetensors')));

    const first = merge(root, 'merged', '--shard-size', '300');
    assert.equal(first.status, 0, first.stderr);
    const shards = fs.readdirSync(path.join(root, 'merged')).filter((f) => f.startsWith('model-'));
    assert.ok(shards.length > 1);
    const marker = JSON.parse(fs.readFileSync(path.join(root, 'merged', OUTPUT_MARKER), 'utf8'));
    assert.equal(marker.job, 'merge');
    // The rerun writes one file: the first run's shards and index go, nothing else is left.
    const again = merge(root, 'merged');
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(fs.readdirSync(path.join(root, 'merged')).sort(), [OUTPUT_MARKER, 'config.json', 'model.safetensors'].sort());
    assert.deepEqual(leftovers(root), []);
  });

  it('of another job, or with a file the job did not write, is refused untouched', () => {
    assert.equal(merge(root, 'out2').status, 0);
    const before = snapshot(path.join(root, 'out2'));
    assertOneLineError(runCli(['compare', '--base', 'base', '--adapter', 'adapter', '--finetuned', 'ft', '--out', 'out2', '--device', 'cpu'], { cwd: root }), 'out2', "'lora-lens merge'");
    fs.writeFileSync(path.join(root, 'out2', 'notes.md'), 'mine\n');
    assertOneLineError(merge(root, 'out2'), 'out2', 'notes.md');
    assert.deepEqual(snapshot(path.join(root, 'out2')), { ...before, 'notes.md': snapshot(path.join(root, 'out2'))['notes.md'] });
  });

  it('file: extract replaces its own task vector, never a file it did not write', () => {
    const ex = (out: string): CliRun => runCli(['extract', '--base', 'base', '--finetuned', 'ft', '--out', out, '--device', 'cpu'], { cwd: root });
    assert.equal(ex('tv.safetensors').status, 0);
    assert.equal(ex('tv.safetensors').status, 0, 'a rerun replaces its own output');
    fs.copyFileSync(path.join(root, 'base', 'model.safetensors'), path.join(root, 'precious.safetensors'));
    const before = fs.readFileSync(path.join(root, 'precious.safetensors'));
    assertOneLineError(ex('precious.safetensors'), 'precious.safetensors', 'not a task vector');
    assert.deepEqual(fs.readFileSync(path.join(root, 'precious.safetensors')), before);
    assert.deepEqual(leftovers(root), []);
  });
});

describe('reports (--json) and devices', () => {
  const root = tmpDir('lora-lens-policy-json-');
  fixture(root);
  const census = (json: string): CliRun => runCli(['census', 'base', '--json', json], { cwd: root });

  it('a character device is written in place, never replaced by a file', () => {
    assert.equal(census('/dev/null').status, 0);
    assert.ok(fs.statSync('/dev/null').isCharacterDevice());
  });

  it('a full device or an injected full disk is exit 2 naming the report', { skip: !fs.existsSync('/dev/full') && 'no /dev/full' }, () => {
    assertOneLineError(census('/dev/full'), '/dev/full', 'ENOSPC');
    const r = runCli(['census', 'base', '--json', 'r.json'], { cwd: root, env: { ...process.env, [WRITE_FAULT_ENV]: 'ENOSPC' } });
    assertOneLineError(r, 'r.json', 'ENOSPC');
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.startsWith('.r.json') || f === 'r.json'), []);
  });

  it('a FIFO without a reader is refused at once; with one it gets the report', async () => {
    const fifo = path.join(root, 'pipe');
    if (spawnSync('mkfifo', [fifo]).status !== 0) return;
    const t0 = Date.now();
    assertOneLineError(census(fifo), 'pipe');
    assert.ok(Date.now() - t0 < 10_000);
    const reader = spawn('cat', [fifo]);
    let got = '';
    reader.stdout.on('data', (d) => (got += d));
    const closed = new Promise((r) => reader.on('close', r));
    await new Promise((r) => setTimeout(r, 200));
    const w = spawn(process.execPath, [CLI, 'census', 'base', '--json', fifo], { cwd: root });
    await Promise.all([closed, new Promise((r) => w.on('close', r))]);
    assert.equal(JSON.parse(got).summary.tensors, 3);
    assert.ok(fs.lstatSync(fifo).isFIFO(), 'the FIFO is still a FIFO');
  });

  it('a symlink to a report file stays a symlink; the file behind it gets the report', () => {
    fs.writeFileSync(path.join(root, 'real.json'), '{}');
    fs.symlinkSync('real.json', path.join(root, 'link.json'));
    assert.equal(census('link.json').status, 0);
    assert.ok(fs.lstatSync(path.join(root, 'link.json')).isSymbolicLink());
    assert.equal(JSON.parse(fs.readFileSync(path.join(root, 'real.json'), 'utf8')).summary.tensors, 3);
  });
});

describe('full disk, concurrent writers, killed runs', () => {
  const root = tmpDir('lora-lens-policy-faults-');
  fixture(root);

  it('a full disk while merging is exit 2 naming --out (not a .partial path), and leaves nothing', () => {
    for (const at of ['0', '300', '900']) {
      const r = runCli(['merge', '--base', 'base', '--adapter', 'adapter', '--out', 'full/merged', '--dtype', 'fp32', '--device', 'cpu'], { cwd: root, env: { ...process.env, [WRITE_FAULT_ENV]: `ENOSPC@${at}` } });
      assertOneLineError(r, 'full/merged', 'ENOSPC');
      assert.doesNotMatch(r.stderr, /partial/);
      assert.equal(fs.existsSync(path.join(root, 'full')), false, `fault at ${at}: the folders made for --out are gone`);
    }
    const ex = runCli(['extract', '--base', 'base', '--finetuned', 'ft', '--out', 'tv.safetensors', '--device', 'cpu'], { cwd: root, env: { ...process.env, [WRITE_FAULT_ENV]: 'EIO@100' } });
    assertOneLineError(ex, 'tv.safetensors', 'EIO');
    assert.deepEqual(leftovers(root), []);
  });

  it('a second writer of the same --out loses with one line while the first holds it; a dead holder\'s lock and partials are taken over', () => {
    // A live holder: this test process.
    fs.writeFileSync(path.join(root, '.held.lock'), JSON.stringify({ pid: process.pid, host: os.hostname() }));
    assertOneLineError(merge(root, 'held'), 'held', 'another LoRA Lens job');
    assert.equal(fs.existsSync(path.join(root, 'held')), false);
    fs.rmSync(path.join(root, '.held.lock'));
    // A dead holder (a process that has exited), with the partial folder it left.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    fs.writeFileSync(path.join(root, '.held.lock'), JSON.stringify({ pid: Number(dead), host: os.hostname() }));
    fs.mkdirSync(path.join(root, `.held.partial-${dead}-abcdef`));
    fs.writeFileSync(path.join(root, `.held.partial-${dead}-abcdef`, 'model.safetensors'), Buffer.alloc(1000));
    const r = merge(root, 'held');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(leftovers(root), []);
  });

  it('runs racing into one --out: each exits 0 or 2 with one line, the survivor\'s output is whole', async () => {
    const runs = await Promise.all(
      [0, 1, 2].map(
        () =>
          new Promise<CliRun>((resolve) => {
            const c = spawn(process.execPath, [CLI, 'merge', '--base', 'base', '--adapter', 'adapter', '--out', 'race', '--dtype', 'fp32', '--device', 'cpu'], { cwd: root });
            let stdout = '';
            let stderr = '';
            c.stdout.on('data', (d) => (stdout += d));
            c.stderr.on('data', (d) => (stderr += d));
            c.on('close', (status) => resolve({ status, stdout, stderr }));
          }),
      ),
    );
    for (const r of runs) if (r.status !== 0) assertOneLineError(r, 'race');
    assert.ok(runs.some((r) => r.status === 0));
    assert.deepEqual(fs.readdirSync(path.join(root, 'race')).sort(), [OUTPUT_MARKER, 'config.json', 'model.safetensors'].sort());
    assert.deepEqual(leftovers(root), []);
  });
});
