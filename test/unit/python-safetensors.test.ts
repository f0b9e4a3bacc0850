/**
 * The files LoRA Lens writes are readable by the reference Python library (huggingface/safetensors),
 * which finds in them exactly the tensors, dtypes, shapes, bytes and __metadata__ that were written:
 * plain files with every dtype of the format at odd sizes (so data offsets fall on odd bytes), a scalar,
 * an empty tensor, a non-ASCII name, sharded output with its index, and what the CLI writes (a sharded
 * bf16 merge, a task vector, saved LoRA deltas).
 *
 * The test installs the safetensors wheel kept in test/fixtures/python-safetensors/ into a temporary
 * venv, offline. How, and what it needs:
 * - `python3` must be on PATH; without it the test is skipped (it says so). The wheel is built for
 *   CPython >= 3.10 on x86_64 Linux with glibc >= 2.17; elsewhere the test is skipped too.
 * - `python3 -m venv --without-pip` comes with every python3 (Debian's plain `python3` package included),
 *   so its failure fails the test. pip and ensurepip do not (Debian ships them as python3-pip and
 *   python3-venv), so the wheel is installed as the wheel format defines it (PEP 427): unpacked into the
 *   venv's site-packages with the standard library's zipfile. The venv sees the system's packages, so
 *   when numpy is there the check also loads every tensor through safe_open(framework="numpy");
 *   otherwise it uses safetensors.deserialize alone (no numpy needed).
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { DTYPE_BITS, Dtype } from '../../src/shared/safetensors/dtypes';
import { readHeader } from '../../src/shared/safetensors/file';
import { SafetensorsWriter, ShardedWriter, TensorSpec } from '../../src/engine/safetensors/writer';
import { FIXTURES, loraPair, peftConfig, rng, tmpDir, writeAdapter, writeModel } from './helpers/builders';

const HERE = path.join(FIXTURES, 'python-safetensors');
const WHEEL = path.join(HERE, 'safetensors-0.8.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl');
const CLI = path.resolve(__dirname, '../../../dist/cli.js');

interface Expected {
  files: Array<{ path: string; metadata: Record<string, string>; tensors: Record<string, { dtype: string; shape: number[]; sha256: string }> }>;
  indexes: Array<{ path: string; files: string[] }>;
}

const sha = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex');

/** Why the wheel cannot run here, or undefined when it can. */
function whyNot(): string | undefined {
  const probe = spawnSync('python3', ['-c', 'import json, platform, sys; print(json.dumps({"v": list(sys.version_info[:2]), "impl": platform.python_implementation(), "m": platform.machine(), "libc": list(platform.libc_ver())}))'], { encoding: 'utf8' });
  if (probe.error) return `python3 is not available (${(probe.error as NodeJS.ErrnoException).code})`;
  if (probe.status !== 0) return `python3 does not run: ${probe.stderr.trim()}`;
  const info = JSON.parse(probe.stdout) as { v: [number, number]; impl: string; m: string; libc: [string, string] };
  if (process.platform !== 'linux' || info.m !== 'x86_64') return `the wheel is for x86_64 Linux (this is ${process.platform} ${info.m})`;
  if (info.impl !== 'CPython' || info.v[0] < 3 || (info.v[0] === 3 && info.v[1] < 10)) return `the wheel needs CPython >= 3.10 (found ${info.impl} ${info.v.join('.')})`;
  const [libc, ver] = info.libc;
  const [maj, min] = ver.split('.').map(Number);
  if (libc !== 'glibc' || maj < 2 || (maj === 2 && min < 17)) return `the wheel needs glibc >= 2.17 (found ${libc || 'no glibc'} ${ver})`;
  return undefined;
}

/** A temporary venv with the wheel installed; returns its python. */
function venvWithWheel(root: string): string {
  const venv = path.join(root, 'venv');
  const mk = spawnSync('python3', ['-m', 'venv', '--system-site-packages', '--without-pip', venv], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(mk.status, 0, `python3 -m venv failed:\n${mk.stderr}`);
  const py = path.join(venv, 'bin', 'python');
  const install = spawnSync(py, ['-c', 'import sys, sysconfig, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sysconfig.get_paths()["purelib"])', WHEEL], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(install.status, 0, `installing the wheel failed:\n${install.stderr}`);
  const check = spawnSync(py, ['-c', 'import safetensors, sys; print(safetensors.__version__); print(safetensors.__file__)'], { encoding: 'utf8' });
  assert.equal(check.status, 0, check.stderr);
  const [version, file] = check.stdout.trim().split('\n');
  assert.equal(version, '0.8.0');
  assert.ok(fs.realpathSync(file).startsWith(fs.realpathSync(venv)), `safetensors comes from the venv, not ${file}`);
  return py;
}

/** The expectation for a file we wrote: what our own reader finds in it. */
function describeFile(file: string): Expected['files'][number] {
  const h = readHeader(file);
  const fd = fs.openSync(file, 'r');
  try {
    const tensors: Expected['files'][number]['tensors'] = {};
    for (const t of h.tensors) {
      const b = Buffer.alloc(t.byteLength);
      if (t.byteLength > 0) fs.readSync(fd, b, 0, t.byteLength, t.offset);
      tensors[t.name] = { dtype: t.dtype, shape: t.shape, sha256: sha(b) };
    }
    return { path: file, metadata: h.metadata, tensors };
  } finally {
    fs.closeSync(fd);
  }
}

/** Every dtype of the format, at element counts that leave the running data offset on odd bytes. */
function everyDtype(seed: number): Array<TensorSpec & { bytes: Uint8Array }> {
  const r = rng(seed);
  const counts: Record<Dtype, number[]> = {
    BOOL: [5], U8: [3], I8: [7], F8_E5M2: [3], F8_E4M3: [5], F8_E8M0: [3], F4: [2, 3], F6_E2M3: [4], F6_E3M2: [8],
    I16: [3], U16: [3], F16: [1, 3], BF16: [3, 1], I32: [5], U32: [3], F32: [2, 3], I64: [3], U64: [2], F64: [3], C64: [2],
  };
  const out: Array<TensorSpec & { bytes: Uint8Array }> = [];
  for (const dtype of Object.keys(DTYPE_BITS) as Dtype[]) {
    const shape = counts[dtype];
    const n = (DTYPE_BITS[dtype] * shape.reduce((a, b) => a * b, 1)) / 8;
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = dtype === 'BOOL' ? (r() > 0 ? 1 : 0) : Math.floor((r() + 1) * 128) & 0xff;
    out.push({ name: `t.${dtype.toLowerCase()}`, dtype, shape, bytes });
  }
  out.push({ name: 'scalar', dtype: 'F32', shape: [], bytes: new Uint8Array(new Float32Array([2.5]).buffer) });
  out.push({ name: 'empty', dtype: 'F32', shape: [0, 4], bytes: new Uint8Array(0) });
  out.push({ name: 'model.layers.0.ünïcödé.weight', dtype: 'BF16', shape: [3], bytes: new Uint8Array([1, 2, 3, 4, 5, 6]) });
  return out;
}

describe('the reference Python safetensors library reads what LoRA Lens writes', () => {
  const reason = whyNot();
  it('plain and sharded files of every dtype, and the CLI\'s merge, task vector and deltas', { skip: reason }, () => {
    const root = tmpDir('lora-lens-python-');
    const py = venvWithWheel(root);
    const expected: Expected = { files: [], indexes: [] };

    // One file, every dtype, custom metadata; the writer alone.
    const plain = path.join(root, 'every-dtype.safetensors');
    const tensors = everyDtype(11);
    const w = new SafetensorsWriter(plain, tensors, { format: 'pt', note: 'written by LoRA Lens' });
    for (const t of tensors) w.write(t.name, t.bytes);
    w.finish();
    expected.files.push({ path: plain, metadata: { format: 'pt', note: 'written by LoRA Lens' }, tensors: Object.fromEntries(tensors.map((t) => [t.name, { dtype: t.dtype, shape: t.shape, sha256: sha(t.bytes) }])) });

    // The same tensors (and a large one written in parts) sharded at 24 bytes, with the index.
    const shardDir = path.join(root, 'sharded');
    fs.mkdirSync(shardDir);
    const big = { name: 'big', dtype: 'F32' as Dtype, shape: [7, 5], bytes: new Uint8Array(new Float32Array(35).map((_, i) => i / 7).buffer) };
    const all = [...everyDtype(12), big];
    const sw = new ShardedWriter(shardDir, all, 24);
    for (const t of all) {
      if (t === big) for (let i = 0; i < 7; i++) sw.writePart(t.name, t.bytes.subarray(i * 20, (i + 1) * 20));
      else sw.write(t.name, t.bytes);
    }
    sw.finish();
    assert.ok(sw.fileNames.length > 3, 'several shards');
    for (const f of sw.fileNames) {
      const d = describeFile(path.join(shardDir, f));
      assert.deepEqual(d.metadata, { format: 'pt' });
      expected.files.push(d);
    }
    expected.indexes.push({ path: path.join(shardDir, 'model.safetensors.index.json'), files: sw.fileNames });

    // What the CLI writes: a sharded bf16 merge, a task vector, the saved deltas.
    const config = { model_type: 'llama', architectures: ['LlamaForCausalLM'], torch_dtype: 'float32' };
    const base = writeModel(path.join(root, 'base'), config, [
      { name: 'model.embed_tokens.weight', shape: [11, 6] },
      { name: 'model.layers.0.self_attn.q_proj.weight', shape: [6, 6] },
      { name: 'model.layers.0.self_attn.v_proj.weight', shape: [2, 6] },
      { name: 'model.layers.0.input_layernorm.weight', shape: [6] },
      { name: 'model.norm.weight', shape: [6] },
    ]);
    const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 2 }), [...loraPair('model.layers.0.self_attn.q_proj', 2, 6, 6), ...loraPair('model.layers.0.self_attn.v_proj', 2, 6, 2, 9)]);
    const run = (...args: string[]): void => {
      const r = spawnSync(process.execPath, [CLI, ...args, '--device', 'cpu', '--quiet'], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${args[0]}: ${r.stderr}`);
    };
    const merged = path.join(root, 'merged');
    run('merge', '--base', base, '--adapter', adapter, '--out', merged, '--dtype', 'bf16', '--shard-size', '100');
    const shards = fs.readdirSync(merged).filter((f) => f.endsWith('.safetensors')).sort();
    assert.ok(shards.length > 1);
    for (const f of shards) expected.files.push(describeFile(path.join(merged, f)));
    expected.indexes.push({ path: path.join(merged, 'model.safetensors.index.json'), files: shards });
    run('extract', '--base', base, '--finetuned', merged, '--out', path.join(root, 'tv.safetensors'));
    expected.files.push(describeFile(path.join(root, 'tv.safetensors')));
    run('compare', '--base', base, '--adapter', adapter, '--task-vector', path.join(root, 'tv.safetensors'), '--out', path.join(root, 'cmp'), '--save-deltas');
    expected.files.push(describeFile(path.join(root, 'cmp', 'lora_deltas.safetensors')));

    const spec = path.join(root, 'expected.json');
    fs.writeFileSync(spec, JSON.stringify(expected, null, 1));
    const check = spawnSync(py, [path.join(HERE, 'check_ours.py'), spec], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(check.status, 0, `${check.stdout}\n${check.stderr}`);
    assert.match(check.stdout, new RegExp(`ok: ${expected.files.length} files`));
  });
});
