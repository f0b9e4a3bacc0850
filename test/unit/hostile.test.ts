/**
 * The promise under hostile input and faults, through the built CLI (`npm run build` first): every run
 * ends with exit 0, or exit 2 and one stderr line without a stack; the inputs stay byte for byte as they
 * were; nothing is left beside the output (no partial, no lock); each run ends in bounded time.
 * fast-check generates hostile safetensors headers, shard indexes, adapter configs, model configs and
 * output paths; fixed cases pin the examples of issue 10; a killed merge and a full disk are injected.
 */
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as fc from 'fast-check';
import { blocksOf, BLOCK_ELEMENTS } from '../../src/engine/tensors/stream';
import { TensorInfo } from '../../src/shared/safetensors/header';
import { WRITE_FAULT_ENV } from '../../src/engine/safetensors/faults';
import { loraPair, peftConfig, randomF32, TestTensor, tmpDir, writeAdapter, writeModel, writeWeights } from './helpers/builders';
import { assertOneLineError, CLI, CliRun } from './helpers/cli';
import { snapshot } from './helpers/files';
import { writeSafetensorsFile } from './helpers/diffusion';

/** Longest any one hostile run may take (a loaded 2-core machine included); a hang fails the run. */
const RUN_LIMIT_MS = 20_000;
/** Property runs per generator: small enough for `npm test` on 2 cores, each a CLI process. */
const RUNS = 10;

const config = { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 8, intermediate_size: 16, num_attention_heads: 2, num_hidden_layers: 1, vocab_size: 16 };

let cases = 0;

function run(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): CliRun & { ms: number } {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: RUN_LIMIT_MS, killSignal: 'SIGKILL', env: { ...process.env, ...env } });
  cases++;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

/** Leftovers of LoRA Lens anywhere under `dir`: partial files or folders, locks. */
function leftovers(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => /\.partial-\d|\.lock$|\.stale-\d/.test(path.basename(f)));
}

/** The promise for one run: 0, or 2 with one line; never a stack, never a hang. */
function holds(r: CliRun & { ms: number }, what: string): void {
  assert.ok(r.status === 0 || r.status === 2, `${what}: exit ${r.status}\n${r.stderr}`);
  if (r.status === 2) assertOneLineError(r);
  else assert.doesNotMatch(r.stderr, /internal error|\n\s+at /, what);
}

/** A fresh base, adapter and fine-tuned model under a new folder of `root`. */
function fixture(root: string, name: string): string {
  const dir = path.join(root, name);
  writeModel(path.join(dir, 'base'), config, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] },
    { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8] },
    { name: 'model.norm.weight', shape: [8] },
  ]);
  writeModel(path.join(dir, 'ft'), config, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8], data: 3 },
    { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8] },
    { name: 'model.norm.weight', shape: [8] },
  ]);
  writeAdapter(path.join(dir, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8));
  return dir;
}

/** A safetensors file from a header object (or raw header text) and `dataBytes` of data. */
function safetensors(header: unknown, dataBytes: number): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
}

/** Runs the jobs that read `dir`'s base and adapter, and checks the promise, the inputs and the leftovers. */
function jobsHold(dir: string, what: string): void {
  const before = snapshot(dir);
  const runs: Array<[string, string[]]> = [
    ['census', ['census', 'base', '--json', 'out/census.json']],
    ['merge', ['merge', '--base', 'base', '--adapter', 'adapter', '--out', 'out/merged', '--dtype', 'bf16', '--device', 'cpu']],
    ['extract', ['extract', '--base', 'base', '--finetuned', 'ft', '--out', 'out/tv.safetensors', '--device', 'cpu']],
  ];
  for (const [job, args] of runs) {
    const r = run(dir, args);
    holds(r, `${what}: ${job}`);
    const after = snapshot(dir);
    for (const [f, h] of Object.entries(before)) assert.equal(after[f], h, `${what}: ${job} changed the input ${f}`);
    assert.deepEqual(leftovers(dir), [], `${what}: ${job} left work files`);
    fs.rmSync(path.join(dir, 'out'), { recursive: true, force: true });
  }
}

const DTYPES = ['F32', 'F16', 'BF16', 'BOOL', 'U8', 'I64', 'F8_E4M3', 'F4', 'X9', ''];
const dim = fc.oneof(fc.integer({ min: 0, max: 9 }), fc.constantFrom(-1, 2 ** 31, 2 ** 53, 1e308, 0.5), fc.string({ maxLength: 3 }));
const tensorEntry = fc.record({
  dtype: fc.oneof(fc.constantFrom(...DTYPES), fc.integer()),
  shape: fc.oneof(fc.array(dim, { maxLength: 4 }), fc.constant(null), fc.string()),
  data_offsets: fc.oneof(fc.tuple(fc.integer({ min: -4, max: 600 }), fc.integer({ min: -4, max: 600 })), fc.array(fc.integer(), { maxLength: 3 }), fc.constant('x')),
});
/** Tensor names, control characters and escapes included. */
const tensorName = fc.oneof(fc.constantFrom('model.layers.0.self_attn.q_proj.weight', 'model.norm.weight', '__metadata__', '\u001b[2J', 'a\nb', ''), fc.string({ maxLength: 12 }));

describe('hostile input: generated', () => {
  const root = tmpDir('lora-lens-hostile-');

  it('hostile safetensors headers in the base: every job answers 0 or 2 in one line, nothing changes or is left', () => {
    let n = 0;
    fc.assert(
      fc.property(fc.dictionary(tensorName, tensorEntry, { maxKeys: 4 }), fc.integer({ min: 0, max: 700 }), fc.boolean(), (header, data, truncate) => {
        const dir = fixture(root, `header-${n++}`);
        let bytes = safetensors(header, data);
        if (truncate) bytes = bytes.subarray(0, Math.max(0, bytes.length - 5));
        fs.writeFileSync(path.join(dir, 'base', 'model.safetensors'), bytes);
        jobsHold(dir, `header ${JSON.stringify(header)}`);
      }),
      { numRuns: RUNS, seed: 10 },
    );
  });

  it('hostile shard indexes: weight_map entries outside the folder, missing, not strings', () => {
    let n = 0;
    const shard = fc.oneof(fc.constantFrom('model.safetensors', '../ft/model.safetensors', '/etc/passwd', 'missing.safetensors', '.', '', 'config.json'), fc.integer(), fc.constant(null));
    fc.assert(
      fc.property(fc.dictionary(tensorName, shard, { maxKeys: 4 }), (weightMap) => {
        const dir = fixture(root, `index-${n++}`);
        fs.writeFileSync(path.join(dir, 'base', 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
        jobsHold(dir, `weight_map ${JSON.stringify(weightMap)}`);
      }),
      { numRuns: RUNS, seed: 11 },
    );
  });

  it('hostile adapter configs: ranks, alphas and regexes (catastrophic, invalid, lookaround) answer in bounded time', () => {
    let n = 0;
    const regex = fc.oneof(
      fc.constantFrom('(.|.)*Z', '(a+)+$', '[', '(?=(.|.)*Z).*', '^(?!.*v_proj).*q_proj', '.*q_proj', '(?P<x>q)_proj', 'q_proj\\Z', '(', '\\'),
      fc.stringMatching(/^[.*+?()|[\]a-z_\\^$]{0,12}$/),
    );
    const number = fc.oneof(fc.integer({ min: -3, max: 64 }), fc.constantFrom(1e308, -1e308, 0.5, 2 ** 53, 1e9), fc.constant('8'), fc.constant(null));
    const cfg = fc.record({
      r: number,
      lora_alpha: number,
      target_modules: fc.oneof(regex, fc.array(fc.oneof(regex, fc.constantFrom('q_proj', 'v_proj')), { maxLength: 3 }), fc.constant(null)),
      rank_pattern: fc.dictionary(regex, number, { maxKeys: 2 }),
      alpha_pattern: fc.dictionary(regex, number, { maxKeys: 2 }),
    });
    fc.assert(
      fc.property(cfg, (c) => {
        const dir = fixture(root, `config-${n++}`);
        const file = path.join(dir, 'adapter', 'adapter_config.json');
        fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), ...c }));
        jobsHold(dir, `adapter config ${JSON.stringify(c)}`);
      }),
      { numRuns: RUNS, seed: 12 },
    );
  });

  it('hostile model configs for estimate: sizes from a config are checked before anything is built', () => {
    const size = fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constantFrom(1e9, 2 ** 31, 2 ** 53, 1e308, -1, 0.5), fc.constant('8'));
    const cfg = fc.record({ num_hidden_layers: size, hidden_size: size, intermediate_size: size, vocab_size: size, num_attention_heads: size, num_key_value_heads: size });
    let n = 0;
    fc.assert(
      fc.property(cfg, fc.oneof(fc.integer({ min: 1, max: 64 }), fc.constantFrom(1e308, 2 ** 40)), (c, r) => {
        const dir = path.join(root, `estimate-${n++}`);
        fs.mkdirSync(dir);
        fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, ...c }));
        const before = snapshot(dir);
        const res = run(dir, ['estimate', 'config.json', '--r', String(r), '--target', 'q_proj,v_proj']);
        holds(res, `estimate ${JSON.stringify(c)} --r ${r}`);
        if (res.status === 0) assert.doesNotMatch(res.stdout, /NaN|Infinity/);
        assert.deepEqual(snapshot(dir), before);
      }),
      { numRuns: RUNS, seed: 13 },
    );
  });

  it('hostile output paths: user folders, files in the way, devices, an input folder', () => {
    const dir = fixture(root, 'paths');
    fs.mkdirSync(path.join(dir, 'mine'));
    fs.writeFileSync(path.join(dir, 'mine', 'notes.txt'), 'mine\n');
    fs.writeFileSync(path.join(dir, 'afile'), 'x');
    fs.symlinkSync('loop', path.join(dir, 'loop'));
    const target = fc.constantFrom('mine', 'afile', 'afile/sub', 'loop', 'loop/x', 'base', 'base/x', 'adapter', '/dev/null', '.', 'new/deep/out', 'mine/notes.txt');
    // A report replaces a regular file it is pointed at (as a shell redirection does): none of the user's here.
    const report = fc.constantFrom('mine', 'afile/sub', 'loop', 'loop/x', 'base', 'base/x.json', 'adapter', '/dev/null', '.', 'new/deep/r.json');
    fc.assert(
      fc.property(target, report, fc.constantFrom('merge', 'compare', 'extract', 'census'), (out, json, job) => {
        const before = snapshot(dir);
        const args: Record<string, string[]> = {
          merge: ['merge', '--base', 'base', '--adapter', 'adapter', '--out', out, '--dtype', 'fp32', '--json', json],
          compare: ['compare', '--base', 'base', '--adapter', 'adapter', '--finetuned', 'ft', '--out', out, '--json', json],
          extract: ['extract', '--base', 'base', '--finetuned', 'ft', '--out', out.startsWith('/') ? out : `${out}.safetensors`, '--json', json],
          census: ['census', 'base', '--json', json],
        };
        const r = run(dir, [...args[job], '--device', 'cpu']);
        holds(r, `${job} --out ${out} --json ${json}`);
        const after = snapshot(dir);
        for (const [f, h] of Object.entries(before)) assert.equal(after[f], h, `${job} --out ${out} --json ${json} changed ${f}`);
        assert.deepEqual(leftovers(dir), []);
        for (const f of Object.keys(after)) if (!(f in before)) fs.rmSync(path.join(dir, f.split(path.sep)[0]), { recursive: true, force: true });
      }),
      { numRuns: RUNS * 2, seed: 14 },
    );
  });
});

describe('hostile input: the examples of issue 10', () => {
  const root = tmpDir('lora-lens-hostile-fixed-');
  const dir = fixture(root, 'fixed');

  it('a folder, a device, a symlink loop or a FIFO where a file is expected is one line, at once', () => {
    const bad = path.join(root, 'bad');
    fs.mkdirSync(path.join(bad, 'dir-model', 'model.safetensors'), { recursive: true });
    fs.writeFileSync(path.join(bad, 'dir-model', 'config.json'), JSON.stringify(config));
    fs.symlinkSync('loop.safetensors', path.join(bad, 'loop.safetensors'));
    fs.mkdirSync(path.join(bad, 'fifo-model'));
    fs.writeFileSync(path.join(bad, 'fifo-model', 'config.json'), JSON.stringify(config));
    const fifo = spawnSync('mkfifo', [path.join(bad, 'fifo-model', 'model.safetensors')]).status === 0;
    for (const p of ['dir-model', 'dir-model/model.safetensors', '/dev/null', 'loop.safetensors', ...(fifo ? ['fifo-model', 'fifo-model/model.safetensors'] : [])]) {
      const r = run(bad, ['census', p]);
      assertOneLineError(r, p);
      assert.ok(r.ms < RUN_LIMIT_MS / 2, `${p}: ${r.ms} ms`);
    }
    assertOneLineError(run(dir, ['merge', '--base', 'base', '--adapter', 'adapter', '--out', 'base/config.json/sub', '--dtype', 'fp32']));
  });

  it('a mask.json with perModule [null] is one line', () => {
    const m = run(dir, ['mask', '--base', 'base', '--adapters', 'adapter', '--budget', '10', '--out', 'mask', '--device', 'cpu']);
    assert.equal(m.status, 0, m.stderr);
    const file = path.join(dir, 'mask', 'mask.json');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), perModule: [null] }));
    assertOneLineError(run(dir, ['compress', '--mask', 'mask', '--base', 'base', '--adapter', 'adapter', '--out', 'cmp', '--device', 'cpu']), 'mask.json');
    assertOneLineError(run(dir, ['decompose', '--mask', 'mask', '--base', 'base', '--dictionary', 'adapter', '--target', 'ft', '--device', 'cpu']), 'mask.json');
  });

  it('a header of 130,000 zero-size tensors is read, not a RangeError', () => {
    const big = path.join(root, 'zero-size');
    fs.mkdirSync(big);
    const header: Record<string, unknown> = {};
    for (let i = 0; i < 130_000; i++) header[`t${i}`] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] };
    fs.writeFileSync(path.join(big, 'model.safetensors'), safetensors(header, 0));
    const r = run(big, ['census', 'model.safetensors', '--json', 'c.json']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(fs.readFileSync(path.join(big, 'c.json'), 'utf8')).summary.tensors, 130_000);
  });

  it('blocks are capped by elements: a 1-D tensor over 2^31 elements and a [2, 6e8] one are split', () => {
    const info = (shape: number[]): TensorInfo => ({ name: 't', dtype: 'F32', shape, numel: shape.reduce((a, b) => a * b, 1), offset: 0, byteLength: 0, file: 'f' });
    for (const shape of [[2 ** 31 + 5], [2, 6e8], [3, 5, BLOCK_ELEMENTS + 1]]) {
      const t = info(shape);
      const blocks = blocksOf(t);
      let next = 0;
      for (const b of blocks) {
        assert.equal(b.start, next);
        assert.ok(b.numel <= BLOCK_ELEMENTS, `${shape}: a block of ${b.numel} elements`);
        next += b.numel;
      }
      assert.equal(next, t.numel);
      assert.ok(blocks[0].first && blocks[blocks.length - 1].last);
    }
    // A LoRA target keeps whole rows (its delta is computed per row).
    assert.ok(blocksOf(info([2, 6e8]), BLOCK_ELEMENTS, true).every((b) => !b.partial && b.numel === 6e8));
  });

  it('a 1-D tensor larger than a block is merged and extracted exactly', () => {
    const d = path.join(root, 'one-d');
    const n = BLOCK_ELEMENTS * 2 + 3;
    const w = new Float32Array(n).map((_, i) => i % 7);
    const f = new Float32Array(n).map((_, i) => (i % 7) + (i % 3));
    writeModel(path.join(d, 'base'), config, [{ name: 'model.norm.weight', shape: [n], data: w }, { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] }]);
    writeModel(path.join(d, 'ft'), config, [{ name: 'model.norm.weight', shape: [n], data: f }, { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] }]);
    const r = run(d, ['extract', '--base', 'base', '--finetuned', 'ft', '--out', 'tv.safetensors', '--json', 'r.json', '--device', 'cpu']);
    assert.equal(r.status, 0, r.stderr);
    const norm = JSON.parse(fs.readFileSync(path.join(d, 'r.json'), 'utf8')).tensors.find((t: { name: string }) => t.name === 'model.norm.weight');
    let want = 0;
    for (let i = 0; i < n; i++) want += (i % 3) ** 2;
    assert.ok(Math.abs(norm.l2Norm - Math.sqrt(want)) < 1e-6 * Math.sqrt(want));
  });

  it('estimate: num_hidden_layers 1e9, --r 1e308 and a 1e25-parameter config are one line, at once', () => {
    const e = path.join(root, 'estimate');
    fs.mkdirSync(e);
    fs.writeFileSync(path.join(e, 'layers.json'), JSON.stringify({ ...config, num_hidden_layers: 1e9 }));
    fs.writeFileSync(path.join(e, 'huge.json'), JSON.stringify({ ...config, hidden_size: 2 ** 26, intermediate_size: 2 ** 26, vocab_size: 2 ** 26, num_hidden_layers: 2 ** 20 }));
    fs.writeFileSync(path.join(e, 'config.json'), JSON.stringify(config));
    for (const [file, r] of [['layers.json', '8'], ['huge.json', '8'], ['config.json', '1e308']]) {
      const res = run(e, ['estimate', file, '--r', r, '--target', 'q_proj']);
      assertOneLineError(res);
      assert.ok(res.ms < 10_000, `${file}: ${res.ms} ms`);
    }
  });

  it('kohya, LyCORIS and diffusers files that adapt nothing are exit 2 naming the module that did not match', () => {
    const d = path.join(root, 'image-adapters');
    writeWeights(path.join(d, 'base'), [{ name: 'down_blocks.0.attn.to_q.weight', shape: [8, 8] }, { name: 'down_blocks.0.attn.to_k.weight', shape: [8, 8] }]);
    const k = 'lora_unet_down_blocks_0_attn_to_q';
    const none = new Float32Array(0);
    const files: Record<string, [TestTensor[], string]> = {
      'kohya-rank0': [[{ name: `${k}.lora_down.weight`, shape: [0, 8], data: none }, { name: `${k}.lora_up.weight`, shape: [8, 0], data: none }], k],
      'diffusers-rank0': [[{ name: 'unet.down_blocks.0.attn.to_q.lora.down.weight', shape: [0, 8], data: none }, { name: 'unet.down_blocks.0.attn.to_q.lora.up.weight', shape: [8, 0], data: none }], 'unet.down_blocks.0.attn.to_q'],
      'lokr-empty': [[{ name: `${k}.lokr_w1`, shape: [0, 0], data: none }, { name: `${k}.lokr_w2`, shape: [8, 8] }], k],
      'loha-rank0': [['hada_w1_a', 'hada_w2_a'].flatMap((a) => [{ name: `${k}.${a}`, shape: [8, 0], data: none }, { name: `${k}.${a.replace('_a', '_b')}`, shape: [0, 8], data: none }]), k],
      'kohya-elsewhere': [[{ name: 'lora_unet_mid_block_attn_to_q.lora_down.weight', shape: [2, 8] }, { name: 'lora_unet_mid_block_attn_to_q.lora_up.weight', shape: [8, 2] }], 'lora_unet_mid_block_attn_to_q'],
      'diffusers-elsewhere': [[{ name: 'unet.mid_block.attn.to_q.lora_A.weight', shape: [2, 8] }, { name: 'unet.mid_block.attn.to_q.lora_B.weight', shape: [8, 2] }], 'mid_block.attn.to_q'],
      'alpha-only': [[{ name: `${k}.alpha`, shape: [], data: new Float32Array([4]) }], k],
      empty: [[], 'empty.safetensors'],
    };
    for (const [name, [tensors]] of Object.entries(files)) writeSafetensorsFile(path.join(d, `${name}.safetensors`), tensors);
    const before = snapshot(d);
    for (const [name, [, module]] of Object.entries(files)) {
      for (const job of [['merge', '--out', 'm', '--dtype', 'fp32'], ['precision']]) {
        const r = run(d, [job[0], '--base', 'base', '--adapter', `${name}.safetensors`, ...job.slice(1), '--device', 'cpu']);
        assertOneLineError(r, `${name}.safetensors`, module);
      }
    }
    assert.deepEqual(snapshot(d), before);
    assert.deepEqual(leftovers(d), []);
  });

  it('adapter regexes: catastrophic ones answer at once, "[" and a pattern matching nothing are exit 2, lookaround works', () => {
    const set = (tm: unknown): void => {
      const file = path.join(dir, 'adapter', 'adapter_config.json');
      fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), target_modules: tm }));
    };
    const merge = (): CliRun & { ms: number } => run(dir, ['merge', '--base', 'base', '--adapter', 'adapter', '--out', 'm', '--dtype', 'fp32', '--device', 'cpu']);
    for (const tm of ['(.|.)*Z', '[', 'k_proj', ['k_proj'], '(?=(.|.)*Z).*']) {
      set(tm);
      const r = merge();
      assertOneLineError(r, 'adapter_config.json');
      assert.ok(r.ms < 10_000, `${JSON.stringify(tm)}: ${r.ms} ms`);
    }
    set('^(?!.*v_proj).*q_proj');
    const ok = merge();
    assert.equal(ok.status, 0, ok.stderr);
    set(['q_proj']);
  });
});

describe('silent wrong answers: NaN and Inf are named, never shown as finite', () => {
  const root = tmpDir('lora-lens-hostile-nonfinite-');
  const q = 'model.layers.0.self_attn.q_proj.weight';
  /** A fixture whose fine-tuned model holds Inf and NaN in q_proj (adapted) and Inf in the norm (not adapted). */
  const dir = fixture(root, 'nonfinite');
  const ftQ = new Float32Array(64).fill(3);
  ftQ[5] = Infinity;
  ftQ[9] = NaN;
  const ftNorm = new Float32Array(8).fill(1);
  ftNorm[2] = -Infinity;
  writeModel(path.join(dir, 'ft-bad'), config, [
    { name: q, shape: [8, 8], data: ftQ },
    { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8] },
    { name: 'model.norm.weight', shape: [8], data: ftNorm },
  ]);
  const json = (file: string): any => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')); // eslint-disable-line @typescript-eslint/no-explicit-any

  it('compare: a tensor holding Inf/NaN has no norm or cosine, is counted in the summary and named on stderr', () => {
    const clean = run(dir, ['compare', '--base', 'base', '--adapter', 'adapter', '--finetuned', 'ft', '--out', 'cmp-clean', '--device', 'cpu']);
    assert.equal(clean.status, 0, clean.stderr);
    const r = run(dir, ['compare', '--base', 'base', '--adapter', 'adapter', '--finetuned', 'ft-bad', '--out', 'cmp', '--device', 'cpu']);
    assert.equal(r.status, 0, r.stderr);
    const rep = json('cmp/comparison_results.json');
    const t = rep.tensors.find((x: { name: string }) => x.name === q);
    assert.equal(t.taskVectorNonFinite, 2);
    assert.equal(t.loraNonFinite, 0);
    assert.equal(t.taskVectorNorm, null);
    assert.equal(t.cosine, null);
    assert.equal(t.maxAbsDiff, null);
    assert.equal(t.withinTolerance, false);
    // The finite side keeps its exact norm: the same as against a finite model.
    const ref = json('cmp-clean/comparison_results.json').tensors.find((x: { name: string }) => x.name === q);
    assert.equal(t.loraNorm, ref.loraNorm);
    const norm = rep.tensors.find((x: { name: string }) => x.name === 'model.norm.weight');
    assert.equal(norm.taskVectorNorm, null);
    assert.equal(norm.taskVectorNonFinite, 1);
    assert.equal(rep.summary.nonFiniteTensors, 2);
    assert.equal(rep.summary.nonFiniteElements, 3);
    assert.equal(rep.summary.taskVectorOnlyNorm, null);
    assert.equal(rep.summary.cosineTensors, 0);
    assert.equal(rep.summary.equivalent, false);
    assert.deepEqual(rep.nonFinite, [{ name: q, elements: 2 }, { name: 'model.norm.weight', elements: 1 }]);
    assert.match(r.stderr, new RegExp(`NaN or Inf in the task vector \\(finetuned minus base\\): 3 element\\(s\\) in 2 tensor\\(s\\), first '${q}' \\(2 elements\\)`));
    assert.match(r.stdout, /2 tensor\(s\) hold NaN or Inf \(3 elements/);
    assert.match(fs.readFileSync(path.join(dir, 'cmp', 'report.txt'), 'utf8'), new RegExp(`${q}  0 / 2`));
  });

  it("compare: NaN in lora_A makes the adapter's delta non-finite, named as the adapter's side", () => {
    const d = fixture(root, 'nan-lora');
    const pair = loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8);
    (pair[0].data as Float32Array)[3] = NaN; // A[0][3]: column 3 of ΔW, all 8 rows
    writeAdapter(path.join(d, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'] }), pair);
    const r = run(d, ['compare', '--base', 'base', '--adapter', 'adapter', '--finetuned', 'ft', '--out', 'cmp', '--json', 'cmp.json', '--device', 'cpu']);
    assert.equal(r.status, 0, r.stderr);
    const t = JSON.parse(fs.readFileSync(path.join(d, 'cmp.json'), 'utf8')).tensors.find((x: { name: string }) => x.name === q);
    assert.equal(t.loraNonFinite, 8);
    assert.equal(t.loraNorm, null);
    assert.ok(t.taskVectorNorm > 0);
    assert.match(r.stderr, new RegExp(`NaN or Inf in the adapter's deltas: 8 element\\(s\\) in 1 tensor\\(s\\), first '${q}'`));
  });

  it('precision: NaN in the base is named with its count and left out of the figures, which stay numbers', () => {
    const d = fixture(root, 'nan-base');
    const w = new Float32Array(64).map((_, i) => 0.5 + i / 64);
    w[0] = NaN;
    w[1] = NaN;
    writeModel(path.join(d, 'base'), config, [
      { name: q, shape: [8, 8], data: w },
      { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8] },
      { name: 'model.norm.weight', shape: [8] },
    ]);
    const r = run(d, ['precision', '--base', 'base', '--adapter', 'adapter', '--json', 'p.json', '--device', 'cpu']);
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(fs.readFileSync(path.join(d, 'p.json'), 'utf8'));
    assert.deepEqual(rep.nonFinite, [{ name: q, elements: 2 }]);
    for (const dt of ['fp16', 'bf16']) {
      assert.equal(rep.dtypes[dt].nonFiniteTensors, 1);
      assert.equal(rep.dtypes[dt].nonFiniteElements, 2);
      assert.equal(typeof rep.dtypes[dt].deltaLostFraction, 'number');
      assert.equal(typeof rep.dtypes[dt].recoveredRelErr, 'number');
      assert.ok(Number.isFinite(rep.dtypes[dt].castArtifactNorm));
    }
    assert.match(r.stdout, new RegExp(`NaN or Inf in 2 element\\(s\\) of 1 tensor\\(s\\).*first '${q}' \\(2\\)`));
    assert.doesNotMatch(r.stdout, /n\/a/);
    assert.match(r.stderr, new RegExp(`first '${q}' \\(2 elements\\)`));
    // All of the adapted tensor NaN: n/a, with the reason beside it.
    writeModel(path.join(d, 'base'), config, [
      { name: q, shape: [8, 8], data: new Float32Array(64).fill(NaN) },
      { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8] },
      { name: 'model.norm.weight', shape: [8] },
    ]);
    const all = run(d, ['precision', '--base', 'base', '--adapter', 'adapter', '--device', 'cpu']);
    assert.equal(all.status, 0, all.stderr);
    assert.match(all.stdout, /n\/a/);
    assert.match(all.stdout, new RegExp(`NaN or Inf in 64 element\\(s\\) of 1 tensor\\(s\\).*first '${q}' \\(64\\)`));
    assert.match(all.stdout, /n\/a: no adapted tensor with a non-zero finite delta to measure \(NaN or Inf: see above\)/);
  });
  it('compare --task-vector: a full model file is refused in one line; marked and unmarked task vectors are taken', () => {
    const d = path.join(root, 'tv-or-model');
    const base: Record<'q' | 'v' | 'norm', Float32Array> = { q: randomF32(64, 1, 0.5), v: randomF32(64, 2, 0.5), norm: new Float32Array(8).fill(1) };
    const tau: typeof base = { q: randomF32(64, 3, 0.01), v: new Float32Array(64), norm: randomF32(8, 4, 0.01) };
    const tensors = (x: typeof base): TestTensor[] => [
      { name: q, shape: [8, 8], data: x.q },
      { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 8], data: x.v },
      { name: 'model.norm.weight', shape: [8], data: x.norm },
    ];
    const plus = (a: Float32Array, b: Float32Array): Float32Array => a.map((v, i) => v + b[i]);
    writeModel(path.join(d, 'base'), config, tensors(base));
    writeModel(path.join(d, 'ft'), config, tensors({ q: plus(base.q, tau.q), v: base.v, norm: plus(base.norm, tau.norm) }));
    writeWeights(path.join(d, 'other-tool'), tensors(tau)); // a task vector without LoRA Lens's mark
    writeAdapter(path.join(d, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8));
    assert.equal(run(d, ['extract', '--base', 'base', '--finetuned', 'ft', '--out', 'tv.safetensors', '--device', 'cpu']).status, 0);
    const before = snapshot(d);
    const compare = (tv: string, out: string): CliRun & { ms: number } => run(d, ['compare', '--base', 'base', '--adapter', 'adapter', '--task-vector', tv, '--out', out, '--device', 'cpu']);
    for (const model of ['ft/model.safetensors', 'base/model.safetensors']) {
      const r = compare(model, 'refused');
      assertOneLineError(r, model, 'is a full model, not a task vector');
      assert.equal(fs.existsSync(path.join(d, 'refused')), false);
    }
    for (const tv of ['tv.safetensors', 'other-tool/model.safetensors']) {
      const r = compare(tv, `cmp-${path.dirname(tv)}`);
      assert.equal(r.status, 0, `${tv}: ${r.stderr}`);
    }
    for (const [f, h] of Object.entries(before)) assert.equal(snapshot(d)[f], h);
  });
});

describe('faults: a killed merge, SIGTERM while busy, a full disk', () => {
  const root = tmpDir('lora-lens-hostile-faults-');
  const dir = path.join(root, 'big');
  // 32 MiB of weights: a merge long enough to be caught in the middle on any machine.
  writeModel(path.join(dir, 'base'), config, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] },
    { name: 'model.embed_tokens.weight', shape: [2048, 4096], data: 1 },
  ]);
  writeAdapter(path.join(dir, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8));
  const inputs = snapshot(dir);

  /** Starts a merge into `out` and resolves once its partial folder exists. */
  async function mergeUnderway(out: string): Promise<{ child: ReturnType<typeof spawn>; exited: Promise<number | null> }> {
    const child = spawn(process.execPath, [CLI, 'merge', '--base', 'base', '--adapter', 'adapter', '--out', out, '--dtype', 'bf16', '--device', 'cpu'], { cwd: dir, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
    cases++;
    for (let i = 0; i < 2000 && !fs.readdirSync(dir).some((f) => f.startsWith(`.${out}.partial-`)); i++) await new Promise((r) => setTimeout(r, 5));
    return { child, exited };
  }

  it('kill -9 mid-merge leaves its partial folder and lock; the next run removes them and succeeds', async () => {
    const { child, exited } = await mergeUnderway('killed');
    child.kill('SIGKILL');
    await exited;
    assert.ok(leftovers(dir).length > 0, 'the killed run left its work files');
    const r = run(dir, ['merge', '--base', 'base', '--adapter', 'adapter', '--out', 'killed', '--dtype', 'bf16', '--device', 'cpu']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(leftovers(dir), []);
    fs.rmSync(path.join(dir, 'killed'), { recursive: true });
  });

  it('SIGTERM in the middle of a merge ends it within a second or two, exit 130, nothing left', async () => {
    const { child, exited } = await mergeUnderway('termed');
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await exited;
    const ms = Date.now() - t0;
    assert.equal(code, 130);
    assert.ok(ms < 2000, `answered SIGTERM in ${ms} ms`);
    assert.deepEqual(leftovers(dir), []);
    assert.equal(fs.existsSync(path.join(dir, 'termed')), false);
  });

  it('a full disk at any point of a merge is exit 2 naming --out, and leaves nothing', () => {
    for (const at of [0, 1000, 4 << 20, 12 << 20]) {
      const r = run(dir, ['merge', '--base', 'base', '--adapter', 'adapter', '--out', 'full', '--dtype', 'bf16', '--device', 'cpu'], { [WRITE_FAULT_ENV]: `ENOSPC@${at}` });
      assertOneLineError(r, 'full', 'ENOSPC');
      assert.deepEqual(leftovers(dir), []);
      assert.equal(fs.existsSync(path.join(dir, 'full')), false);
    }
    assert.deepEqual(snapshot(dir), inputs);
  });

  /** Starts `args` with the job hanging in synchronous code at its first output write; resolves once `ready` holds. */
  async function hungJob(args: string[], ready: () => boolean): Promise<{ child: ReturnType<typeof spawn>; exited: Promise<number | null>; stderr: () => string }> {
    const child = spawn(process.execPath, [CLI, ...args, '--device', 'cpu'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, [WRITE_FAULT_ENV]: 'HANG@0' } });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
    cases++;
    for (let i = 0; i < 2000 && !ready(); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(ready(), `${args.join(' ')} never reached its output`);
    await new Promise((r) => setTimeout(r, 200)); // well inside the hang
    return { child, exited, stderr: () => stderr };
  }
  const partialIn = (folder: string, name: string) => (): boolean => fs.existsSync(folder) && fs.readdirSync(folder).some((f) => f.startsWith(`.${name}.partial-`));

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} while a job is stuck in synchronous work: exit 130 within 2 s, its partial output, lock and new folders gone`, async () => {
      const jobs: Array<[string[], () => boolean]> = [
        [['merge', '--base', 'base', '--adapter', 'adapter', '--out', 'hung/deep/merged', '--dtype', 'bf16'], partialIn(path.join(dir, 'hung', 'deep'), 'merged')],
        [['census', 'base', '--json', 'hung/r.json'], partialIn(path.join(dir, 'hung'), 'r.json')],
      ];
      for (const [args, ready] of jobs) {
        const job = await hungJob(args, ready);
        const t0 = Date.now();
        job.child.kill(signal);
        // A job that ignores the signal is killed after 10 s, and fails below.
        const timer = setTimeout(() => job.child.kill('SIGKILL'), 10_000);
        const code = await job.exited;
        clearTimeout(timer);
        const ms = Date.now() - t0;
        assert.equal(code, 130, job.stderr());
        assert.ok(ms < 2000, `${args[0]} answered ${signal} in ${ms} ms`);
        assert.equal(job.stderr(), `lora-lens ${args[0]}: cancelled; nothing was written\n`);
        assert.deepEqual(leftovers(dir), []);
        assert.equal(fs.existsSync(path.join(dir, 'hung')), false, 'the folders the job created on the way to its output are removed');
      }
      assert.deepEqual(snapshot(dir), inputs);
    });
  }

  it('kill -9 while writing a report leaves its temporary file; the next report to that path removes it', async () => {
    const job = await hungJob(['census', 'base', '--json', 'report.json'], partialIn(dir, 'report.json'));
    job.child.kill('SIGKILL');
    await job.exited;
    assert.equal(leftovers(dir).length, 1, 'the killed run left its temporary report');
    const r = run(dir, ['census', 'base', '--json', 'report.json']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(leftovers(dir), []);
    fs.rmSync(path.join(dir, 'report.json'));
    assert.deepEqual(snapshot(dir), inputs);
  });

  it(`counts its hostile cases`, () => {
    console.log(`hostile.test: ${cases} hostile CLI runs held the promise`);
  });
});
