/**
 * PyTorch checkpoints written by real torch.save (test/fixtures/pytorch/make_pickles.py, run at test time
 * with the Python that has torch) are read in place without executing anything: every dtype, views of one
 * storage with offsets, nn.Parameter, a module's state_dict with _metadata; the legacy format, damaged
 * and compressed archives, non-contiguous views and hostile pickles are refused with one line, and the
 * hostile payloads (which Python's own pickle runs) never run.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { openCheckpoint, closeCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { readTorchCheckpoint } from '../../src/shared/pytorch/checkpoint';
import { FileHandles } from '../../src/engine/safetensors/reader';
import { readHeader } from '../../src/shared/safetensors/file';
import { TensorInfo } from '../../src/shared/safetensors/header';
import { assertOneLineError, runCli } from './helpers/cli';
import { FIXTURES, tmpDir } from './helpers/builders';
import { findPython } from './helpers/python';
import { OUTPUT_MARKER } from '../../src/engine/util/outputDir';

interface Expected {
  tensors: Record<string, Record<string, { dtype: string; shape: number[]; hex: string }>>;
  hostile: { file: string; command: string }[];
}

const { python, skip } = findPython(['torch']);
const GENERATOR = path.join(FIXTURES, 'pytorch', 'make_pickles.py');

function bytesOf(t: TensorInfo): string {
  const h = new FileHandles();
  try {
    return Buffer.from(h.readBytesSync(t, new Uint8Array(t.byteLength))).toString('hex');
  } finally {
    h.close();
  }
}

describe('PyTorch pickle checkpoints', { skip }, () => {
  const dir = tmpDir('lora-lens-pickle-');
  let expected: Expected;
  const file = (n: string): string => path.join(dir, n);
  before(() => {
    const r = spawnSync(python!, [GENERATOR, dir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    expected = JSON.parse(fs.readFileSync(file('expected.json'), 'utf8')) as Expected;
  });

  it('reads every dtype, shape and byte that torch.save wrote, in place', () => {
    for (const name of ['dtypes.pt', 'shared.pt', 'params.pt', 'state_dict.bin', 'v3-new-dtypes.pt']) {
      const ck = readTorchCheckpoint(file(name));
      const want = expected.tensors[name];
      assert.deepEqual(ck.tensors.map((t) => t.name), Object.keys(want), name);
      for (const t of ck.tensors) {
        assert.equal(t.dtype, want[t.name].dtype, `${name} ${t.name}`);
        assert.deepEqual(t.shape, want[t.name].shape, `${name} ${t.name}`);
        assert.equal(bytesOf(t), want[t.name].hex, `${name} ${t.name}`);
      }
    }
    assert.deepEqual(new Set(readTorchCheckpoint(file('dtypes.pt')).tensors.map((t) => t.dtype)), new Set(['F32', 'F16', 'BF16', 'F64', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'C64']));
  });

  it('reads views of one storage as byte ranges inside the same stored entry', () => {
    const t = new Map(readTorchCheckpoint(file('shared.pt')).tensors.map((x) => [x.name, x]));
    const all = t.get('all')!;
    assert.equal(t.get('head')!.offset, all.offset);
    assert.equal(t.get('tail')!.offset, all.offset + 10 * 4);
    assert.equal(t.get('row')!.offset, all.offset + 12 * 4);
    assert.equal(t.get('tied')!.offset, all.offset);
    // One storage in the archive, not five.
    assert.equal(fs.readFileSync(file('shared.pt')).includes('shared/data/1'), false);
  });

  it('reads nn.Parameter (_rebuild_parameter) and a state_dict carrying _metadata', () => {
    assert.ok(fs.readFileSync(file('params.pt')).includes('_rebuild_parameter'));
    assert.ok(fs.readFileSync(file('state_dict.bin')).includes('_metadata'));
    assert.deepEqual(readTorchCheckpoint(file('params.pt')).tensors.map((t) => t.shape), [[3, 4], [3]]);
  });

  it('refuses the legacy format, damaged or compressed archives, non-contiguous views and nested dicts with one line', () => {
    for (const [name, what] of [
      ['legacy.pt', 'legacy PyTorch format'],
      ['truncated.pt', 'truncated'],
      ['deflated.pt', 'is compressed'],
      ['noncontiguous.pt', 'non-contiguous view'],
      ['nested.pt', "entry 'state_dict' is a dict"],
      ['big-endian.pt', 'big-endian'],
    ]) {
      assertOneLineError(runCli(['census', file(name)]), file(name), what);
    }
  });

  it('refuses hostile pickles by the global they name, without running them; Python runs the same bytes', () => {
    assert.equal(expected.hostile.length, 4);
    const named = { 'os-system.pt': 'os.system', 'eval.pt': 'builtins.eval', 'popen.pt': 'subprocess.Popen', 'posix-in-dict.pt': 'posix.system' } as Record<string, string>;
    const markers = fs.readdirSync(dir).filter((f) => f.startsWith('PWNED'));
    for (const h of expected.hostile) {
      assertOneLineError(runCli(['census', file(h.file)]), file(h.file), named[h.file], 'refused');
      assertOneLineError(runCli(['convert', '--in', file(h.file), '--out', file(`${h.file}.safetensors`)]), named[h.file]);
      assert.equal(fs.existsSync(file(`${h.file}.safetensors`)), false);
    }
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('PWNED')), markers);
    assert.deepEqual(markers, []);
    // The payloads are live: Python's pickle, given the same data.pkl, runs them and the marker files appear.
    for (const h of expected.hostile) {
      const load = `import pickle, zipfile, sys\ntry:\n    pickle.loads(zipfile.ZipFile(sys.argv[1]).read("archive/data.pkl"))\nexcept Exception:\n    pass`;
      spawnSync(python!, ['-c', load, file(h.file)], { encoding: 'utf8' });
    }
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('PWNED')).sort(), ['PWNED-eval', 'PWNED-popen', 'PWNED-posix', 'PWNED-system']);
  });

  it('finds pickles in folders: pytorch_model.bin, shards with their index, adapter_model.bin, a lone .pt beside trainer files', () => {
    const root = tmpDir();
    const model = path.join(root, 'model');
    fs.mkdirSync(model);
    fs.copyFileSync(file('state_dict.bin'), path.join(model, 'pytorch_model.bin'));
    fs.writeFileSync(path.join(model, 'config.json'), '{"model_type": "gpt2"}');
    // Hugging Face's Trainer state, a pickle of arbitrary objects: never opened.
    fs.copyFileSync(file('os-system.pt'), path.join(model, 'training_args.bin'));
    const m = openCheckpoint(model);
    assert.equal(m.kind, 'model');
    assert.deepEqual(m.files, [path.join(model, 'pytorch_model.bin')]);
    closeCheckpoint(m);

    const lone = path.join(root, 'lone');
    fs.mkdirSync(lone);
    fs.copyFileSync(file('dtypes.pt'), path.join(lone, 'weights.pt'));
    fs.copyFileSync(file('os-system.pt'), path.join(lone, 'optimizer.pt'));
    fs.copyFileSync(file('os-system.pt'), path.join(lone, 'rng_state.pth'));
    assert.equal(openCheckpoint(lone).tensors.length, 13);

    const sharded = path.join(root, 'sharded');
    fs.mkdirSync(sharded);
    fs.copyFileSync(file('dtypes.pt'), path.join(sharded, 'pytorch_model-00001-of-00002.bin'));
    fs.copyFileSync(file('shared.pt'), path.join(sharded, 'pytorch_model-00002-of-00002.bin'));
    const weightMap: Record<string, string> = {};
    for (const [f, n] of [['dtypes.pt', 1], ['shared.pt', 2]] as const) for (const k of Object.keys(expected.tensors[f])) weightMap[k] = `pytorch_model-0000${n}-of-00002.bin`;
    fs.writeFileSync(path.join(sharded, 'pytorch_model.bin.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const s = openCheckpoint(sharded);
    assert.equal(s.kind, 'sharded-model');
    assert.equal(s.tensors.length, 18);
    closeCheckpoint(s);

    const out = path.join(root, 'converted');
    const r = runCli(['convert', '--in', sharded, '--out', out, '--json', path.join(root, 'convert.json')]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(out).filter((f) => f !== OUTPUT_MARKER).sort(), ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
    const c = openCheckpoint(out);
    for (const t of c.tensors) {
      const want = expected.tensors['dtypes.pt'][t.name] ?? expected.tensors['shared.pt'][t.name];
      assert.equal(bytesOf(t), want.hex, t.name);
      assert.equal(t.dtype, want.dtype);
    }
    closeCheckpoint(c);
  });

  it('converts a single file to safetensors bit for bit, and refuses an output over its input', () => {
    const root = tmpDir();
    const out = path.join(root, 'dtypes.safetensors');
    const r = runCli(['convert', '--in', file('dtypes.pt'), '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    const h = readHeader(out);
    const want = expected.tensors['dtypes.pt'];
    assert.deepEqual(h.tensors.map((t) => t.name).sort(), Object.keys(want).sort());
    for (const t of h.tensors) {
      assert.equal(t.dtype, want[t.name].dtype);
      assert.deepEqual(t.shape, want[t.name].shape);
      assert.equal(bytesOf(t), want[t.name].hex, t.name);
    }
    assertOneLineError(runCli(['convert', '--in', file('dtypes.pt'), '--out', file('dtypes.pt')]), file('dtypes.pt'));
    assertOneLineError(runCli(['convert', '--in', file('dtypes.pt'), '--out', path.join(root, 'x.bin')]), '.safetensors');
  });
});
