/** The census and estimate commands through the built CLI (`npm run build` first): reports, exit codes, errors. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { writeSyntheticAdapter } from '../../src/engine/synthetic/adapter';
import { STARCODER2_3B } from '../../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../../src/engine/synthetic/model';
import { FIXTURES, tmpDir } from './helpers/builders';
import { assertOneLineError, CliRun, runCli } from './helpers/cli';

const cli = (...args: string[]): CliRun => runCli(args);

const badInput = assertOneLineError;

describe('census and estimate CLI', () => {
  const root = tmpDir();
  const sc2 = path.join(root, 'sc2');
  writeSyntheticModel(sc2, STARCODER2_3B, { sparse: true });
  const adapter = writeSyntheticAdapter(path.join(root, 'adapter'), { ...STARCODER2_3B, vocab_size: 2 }, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 8 }).dir;

  it('census --json FILE: the contract fields, and a readable report on stdout', () => {
    const json = path.join(root, 'census.json');
    const r = cli('census', sc2, '--adapter', adapter, '--json', json);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /483 tensors, 3,030,371,328 elements/);
    assert.match(r.stdout, /LoRA targets: 120 tensors .* not targeted: 363 tensors/);
    const report = JSON.parse(fs.readFileSync(json, 'utf8'));
    for (const k of ['tensors', 'params', 'bytes', 'layers', 'loraTargetTensors', 'nonTargetTensors', 'categories']) assert.ok(k in report.summary, k);
    assert.deepEqual([report.summary.tensors, report.summary.loraTargetTensors, report.summary.nonTargetTensors], [483, 120, 363]);
    assert.deepEqual(Object.keys(report.summary.categories).sort(), ['attention', 'embedding', 'final_norm', 'mlp', 'norm', 'other']);
    const t = report.tensors.find((x: { name: string }) => x.name === 'model.embed_tokens.weight');
    assert.deepEqual(
      Object.keys(t).filter((k) => ['name', 'dtype', 'shape', 'numel', 'category', 'layer', 'projection', 'loraTarget'].includes(k)).length,
      8,
    );
    assert.equal(t.layer, null);
    assert.equal(t.category, 'embedding');
  });

  it('census --json - prints only JSON on stdout', () => {
    const r = cli('census', path.join(FIXTURES, 'real-adapters', 'llama3.2-1b-qv-r8'), '--json', '-');
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.kind, 'adapter');
    assert.equal(report.summary.tensors, 64);
    assert.equal(report.adapter.trainableParams, 851_968);
  });

  it('census of a bare adapter_model.safetensors: its LoRA factors are not counted as targets (they adapt a base not given), and it says so', () => {
    const r = cli('census', path.join(FIXTURES, 'real-adapters', 'gpt2-seqcls-cattn-r8', 'adapter_model.safetensors'), '--json', '-');
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.kind, 'file');
    assert.deepEqual([report.summary.tensors, report.summary.loraTargetTensors, report.summary.nonTargetTensors], [25, 0, 25]);
    assert.ok(report.warnings.includes('a bare LoRA file: its 12 modules adapt tensors of a base; census BASE --adapter DIR marks those targets'), report.warnings.join('\n'));
    const a = report.tensors.find((t: { name: string }) => t.name === 'base_model.model.transformer.h.3.attn.c_attn.lora_A.weight');
    assert.deepEqual([a.loraTarget, a.layer, a.category, a.projection], [false, 3, 'attention', 'c_attn']);
  });

  it('estimate --r --target and --adapter', () => {
    const r = cli('estimate', path.join(FIXTURES, 'base-configs', 'gemma-2b.json'), '--r', '8', '--target', 'q_proj,k_proj,v_proj,o_proj', '--json', '-');
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.trainableParams, 1_843_200);
    assert.equal(report.baseParams, 2_506_172_416);
    assert.ok(report.percent > 0.0735 && report.percent < 0.0736);
    assert.deepEqual(Object.keys(report.modules[0]).sort(), ['alpha', 'in', 'name', 'out', 'params', 'r']);
    const a = cli('estimate', sc2, '--adapter', adapter);
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, /trainable parameters: 4,546,560/);
    assert.match(a.stdout, /30 x k_proj \[3072 -> 256\] r=8/);
  });

  it('bad input: exit 2, one stderr line naming the file (and tensor), no report written', () => {
    const json = path.join(root, 'never.json');
    const truncated = path.join(root, 'truncated.safetensors');
    const src = path.join(FIXTURES, 'real-adapters', 'llama3.2-1b-qv-r8', 'adapter_model.safetensors');
    fs.writeFileSync(truncated, fs.readFileSync(src).subarray(0, 5000));
    badInput(cli('census', truncated, '--json', json), truncated, 'truncated');
    const sized = path.join(root, 'sized.safetensors');
    const header = JSON.stringify({ 'model.norm.weight': { dtype: 'F32', shape: [3], data_offsets: [0, 8] } });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(sized, Buffer.concat([len, Buffer.from(header), Buffer.alloc(8)]));
    badInput(cli('census', sized), sized, "tensor 'model.norm.weight'", 'size mismatch');
    badInput(cli('census', path.join(root, 'absent')), path.join(root, 'absent'));
    badInput(cli('census', sc2, '--adapter', path.join(FIXTURES, 'real-adapters', 'llama3.2-1b-qv-r8')), "tensor 'model.layers.0.self_attn.q_proj.weight'");
    badInput(cli('estimate', sc2), 'estimate', '--adapter');
    badInput(cli('estimate', sc2, '--r', 'x', '--target', 'q_proj'), '--r');
    badInput(cli('census', sc2, '--bogus'), '--bogus');
    assert.ok(!fs.existsSync(json));
  });
});
