/**
 * `--device gpu` through the CLI: merged model files byte-identical to `--device cpu` under every dtype
 * and rule, comparison and precision reports within 1e-6, and nothing extra on stdout. Runs in the GPU
 * step of scripts/run-tests.mjs (lavapipe); elsewhere it skips with its reason, like gpu.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, test } from 'node:test';
import { MERGE_RULES } from '../../src/shared/jobs/choices';
import { ALLOW_SOFTWARE_GPU_ENV } from '../../src/engine/kernels/gpu/dawn';
import { gpuKernels } from '../../src/engine/kernels/select';
import { quietContext } from '../../src/engine/util/job';
import { loraPair, peftConfig, randomF32, tmpDir, writeAdapter, writeModel } from './helpers/builders';

const CLI = path.resolve(__dirname, '../../../dist/cli.js');
process.env[ALLOW_SOFTWARE_GPU_ENV] ??= '1';
let skip: string | false = false;

before(async () => {
  const mode = process.env.LORA_LENS_GPU_TESTS;
  if (mode === 'skip') skip = 'LORA_LENS_GPU_TESTS=skip (scripts/run-tests.mjs runs them in their own step, on lavapipe)';
  else {
    const k = await gpuKernels(quietContext());
    if (typeof k === 'string') {
      if (mode === 'required') throw new Error(`GPU tests required but no WebGPU adapter: ${k}`);
      skip = `no WebGPU adapter: ${k}`;
    } else await k.dispose();
  }
  if (skip) console.log(`# gpu cli tests skipped: ${skip}`);
});

function cli(args: string[], env: NodeJS.ProcessEnv = process.env, status = 0): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
  if (status !== 0) {
    assert.equal(r.status, status, `lora-lens ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return { stdout: r.stdout, stderr: r.stderr };
  }
  assert.equal(r.status, 0, `lora-lens ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** A Llama-shaped base (GQA: k narrower than q) with an adapter on q and k, rsLoRA scaling. */
function checkpoint(root: string): { base: string; adapter: string } {
  const H = 96, KV = 32;
  const w = (name: string, shape: number[], seed: number) => ({ name, shape, dtype: 'BF16' as const, data: randomF32(shape.reduce((a, b) => a * b), seed, 0.05) });
  const base = writeModel(path.join(root, 'base'), { model_type: 'llama', torch_dtype: 'bfloat16' }, [
    w('model.embed_tokens.weight', [50, H], 1),
    w('model.layers.0.self_attn.q_proj.weight', [H, H], 2),
    w('model.layers.0.self_attn.k_proj.weight', [KV, H], 3),
    w('model.layers.0.input_layernorm.weight', [H], 4),
  ]);
  const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 12, lora_alpha: 7, use_rslora: true, target_modules: ['q_proj', 'k_proj'] }), [
    ...loraPair('model.layers.0.self_attn.q_proj', 12, H, H, 11),
    ...loraPair('model.layers.0.self_attn.k_proj', 12, H, KV, 13),
  ]);
  return { base, adapter };
}

test('merge --device gpu writes byte-identical files to --device cpu, every dtype and rule', (t) => {
  if (skip) return t.skip(skip);
  const root = tmpDir();
  const { base, adapter } = checkpoint(root);
  for (const dtype of ['fp32', 'fp16', 'bf16']) {
    for (const rule of dtype === 'fp32' ? ['peft'] : MERGE_RULES) {
      const outs = ['cpu', 'gpu'].map((device) => {
        const out = path.join(root, `${dtype}-${rule}-${device}`);
        const r = cli(['merge', '--base', base, '--adapter', adapter, '--out', out, '--dtype', dtype, '--rule', rule, '--device', device]);
        if (device === 'gpu') assert.doesNotMatch(r.stdout, /Warning|adapter/i, 'Dawn prints nothing on stdout');
        return fs.readFileSync(path.join(out, 'model.safetensors'));
      });
      assert.ok(outs[0].equals(outs[1]), `merged model.safetensors differs between cpu and gpu at ${dtype} ${rule}`);
    }
  }
});

test('a DoRA merge --device gpu writes byte-identical files to --device cpu, and the report names the device', (t) => {
  if (skip) return t.skip(skip);
  const root = tmpDir();
  const { base } = checkpoint(root);
  const H = 96, KV = 32;
  const adapter = writeAdapter(path.join(root, 'dora'), peftConfig({ r: 8, lora_alpha: 16, use_dora: true, target_modules: ['q_proj', 'k_proj'] }), [
    ...loraPair('model.layers.0.self_attn.q_proj', 8, H, H, 21),
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector', shape: [H], data: randomF32(H, 23, 1).map((x) => 0.5 + Math.abs(x)) },
    ...loraPair('model.layers.0.self_attn.k_proj', 8, H, KV, 25),
    { name: 'base_model.model.model.layers.0.self_attn.k_proj.lora_magnitude_vector', shape: [KV], data: randomF32(KV, 27, 1).map((x) => 0.5 + Math.abs(x)) },
  ]);
  for (const [dtype, rule] of [['fp32', 'peft'], ['bf16', 'peft'], ['fp16', 'peft-safe'], ['bf16', 'fp32-cast']]) {
    const outs = ['cpu', 'gpu'].map((device) => {
      const out = path.join(root, `dora-${dtype}-${rule}-${device}`);
      const r = cli(['merge', '--base', base, '--adapter', adapter, '--out', out, '--dtype', dtype, '--rule', rule, '--device', device, '--json', '-']);
      const report = JSON.parse(r.stdout) as { doraTensors: number; device: string };
      assert.equal(report.doraTensors, 2, 'both modules merged as DoRA');
      assert.match(report.device, device === 'gpu' ? /^GPU: / : /^CPU/, 'the report names the device');
      return fs.readFileSync(path.join(out, 'model.safetensors'));
    });
    assert.ok(outs[0].equals(outs[1]), `DoRA-merged model.safetensors differs between cpu and gpu at ${dtype} ${rule}`);
  }
});

test('a GPU failure in the middle of a merge: the job finishes on the CPU, byte-identical, and says so on stderr and in the report', (t) => {
  if (skip) return t.skip(skip);
  const root = tmpDir();
  const { base, adapter } = checkpoint(root);
  const run = (device: string, env: NodeJS.ProcessEnv = process.env) => {
    const out = path.join(root, `fault-${device}-${env.LORA_LENS_GPU_FAULT ?? 0}`);
    const r = cli(['merge', '--base', base, '--adapter', adapter, '--out', out, '--dtype', 'bf16', '--device', device, '--json', '-'], env);
    return { ...r, report: JSON.parse(r.stdout) as { device: string }, bytes: fs.readFileSync(path.join(out, 'model.safetensors')) };
  };
  const want = run('cpu');
  // Dispatch 3: after the first tensors went through the GPU.
  const got = run('gpu', { ...process.env, LORA_LENS_GPU_FAULT: '3' });
  assert.ok(got.bytes.equals(want.bytes), 'the merged file equals the CPU merge');
  assert.match(got.stderr, /^warning: GPU failure in \w+: injected fault at dispatch 3 \(LORA_LENS_GPU_FAULT\); this and every later kernel of the job run on the CPU$/m);
  assert.match(got.report.device, /^GPU: .*; after a GPU failure the rest ran on the CPU \(\w+: injected fault at dispatch 3/);
});

test('compare and precision reports agree within 1e-6 between cpu and gpu', (t) => {
  if (skip) return t.skip(skip);
  const root = tmpDir();
  const { base, adapter } = checkpoint(root);
  const merged = path.join(root, 'merged');
  cli(['merge', '--base', base, '--adapter', adapter, '--out', merged, '--dtype', 'fp32', '--device', 'cpu']);
  const reports = ['cpu', 'gpu'].map((device) => {
    const out = path.join(root, `compare-${device}`);
    cli(['compare', '--base', base, '--adapter', adapter, '--finetuned', merged, '--out', out, '--device', device]);
    const precision = JSON.parse(cli(['precision', '--base', base, '--adapter', adapter, '--json', '-', '--device', device]).stdout);
    return { compare: JSON.parse(fs.readFileSync(path.join(out, 'comparison_results.json'), 'utf8')), precision };
  });
  const close = (a: unknown, b: unknown, where: string): void => {
    if (typeof a === 'number' && typeof b === 'number') {
      assert.ok(a === b || Math.abs(a - b) <= 1e-6 * Math.max(Math.abs(a), Math.abs(b)), `${where}: ${a} vs ${b}`);
    } else if (a && b && typeof a === 'object') {
      for (const k of Object.keys(a as object)) {
        if (/seconds|device|elapsed/i.test(k)) continue;
        close((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${where}.${k}`);
      }
    } else assert.deepEqual(a, b, where);
  };
  close(reports[1].compare.tensors, reports[0].compare.tensors, 'compare.tensors');
  close(reports[1].compare.summary, reports[0].compare.summary, 'compare.summary');
  close(reports[1].precision.dtypes, reports[0].precision.dtypes, 'precision.dtypes');
});

/*
 * No GPU: these run in the ordinary test step too (no adapter needed). Dawn and the Vulkan loader print
 * "Warning:" lines on stderr when they find no driver; the engine must not start them then.
 */
test('--device gpu without a Vulkan driver: exit 2 and one line on stderr; --device auto: the CPU, silently', () => {
  const root = tmpDir();
  const { base, adapter } = checkpoint(root);
  const env = { ...process.env, VK_ICD_FILENAMES: path.join(root, 'no-such-icd.json'), VK_DRIVER_FILES: path.join(root, 'no-such-icd.json') };
  const failed = cli(['merge', '--base', base, '--adapter', adapter, '--out', path.join(root, 'gpu'), '--dtype', 'bf16', '--device', 'gpu'], env, 2);
  assert.equal(failed.stderr.trimEnd().split('\n').length, 1, `one line: ${failed.stderr}`);
  assert.match(failed.stderr, /^lora-lens merge: --device gpu: no Vulkan (loader|driver) .*; use --device cpu or auto\n$/);
  assert.equal(fs.existsSync(path.join(root, 'gpu')), false, 'nothing written');
  const auto = cli(['merge', '--base', base, '--adapter', adapter, '--out', path.join(root, 'auto'), '--dtype', 'bf16', '--device', 'auto', '--json', '-'], env);
  assert.equal(auto.stderr, '');
  assert.match(JSON.parse(auto.stdout).device, /^CPU/);
});

test('--device gpu where the only Vulkan driver is lavapipe: exit 2, one line naming it, unless LORA_LENS_ALLOW_SOFTWARE_GPU=1', (t) => {
  const icd = process.env.VK_ICD_FILENAMES;
  if (!icd || !/lvp/.test(fs.readFileSync(icd, 'utf8'))) return t.skip('needs the lavapipe environment (the GPU step of scripts/run-tests.mjs)');
  const root = tmpDir();
  const { base, adapter } = checkpoint(root);
  const env = { ...process.env, LORA_LENS_ALLOW_SOFTWARE_GPU: '' };
  const failed = cli(['merge', '--base', base, '--adapter', adapter, '--out', path.join(root, 'gpu'), '--dtype', 'bf16', '--device', 'gpu'], env, 2);
  assert.match(failed.stderr, /^lora-lens merge: --device gpu: the only Vulkan drivers run on the CPU \(libvulkan_lvp\.so; set LORA_LENS_ALLOW_SOFTWARE_GPU=1 .*\n$/);
  const auto = cli(['merge', '--base', base, '--adapter', adapter, '--out', path.join(root, 'auto'), '--dtype', 'bf16', '--json', '-'], env);
  assert.equal(auto.stderr, '');
  assert.match(JSON.parse(auto.stdout).device, /^CPU/);
});
