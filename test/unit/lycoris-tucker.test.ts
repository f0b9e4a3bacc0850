/**
 * LyCORIS Tucker decompositions of a convolution (`use_tucker`): LoCon's `lora_mid`, LoHa's `hada_t1` /
 * `hada_t2`, LoKr's `lokr_t2`, each in its exact on-disk layout, merged onto an SD1.5-shaped diffusers
 * pipeline and compared bit for bit with a float64 reference of the rounding the engine defines, and with
 * LyCORIS's own einsum formulas evaluated by torch in float64 (which fixes each core's index convention).
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { censusJob } from '../../src/engine/jobs/census';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { Scratch } from '../../src/engine/safetensors/reader';
import { deltaBlock, Factors } from '../../src/engine/tensors/delta';
import { closePlan, planAdapter } from '../../src/engine/tensors/plan';
import { blocksOf } from '../../src/engine/tensors/stream';
import { quietContext } from '../../src/engine/util/job';
import { decodeF16Array, encodeF16 } from '../../src/shared/safetensors/half';
import { randomF32, TestTensor, tmpDir } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { clipTextTensors, sd15UnetTensors, writePipeline, writeSafetensorsFile } from './helpers/diffusion';
import { findPython } from './helpers/python';
import { matmul, readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();
const UNET = { channels: [8, 16, 32, 32] as [number, number, number, number], cross: 12, latent: 4 };
const CLIP = { hidden: 12, layers: 2, intermediate: 24, vocab: 50, positions: 7 };

/** Values exactly representable at fp16 (what a LyCORIS file stores). */
function half(n: number, seed: number, scale = 0.5): Float32Array {
  return decodeF16Array(encodeF16(randomF32(n, seed, scale), new Uint16Array(n)), new Float32Array(n));
}

const f16 = (name: string, shape: number[], data: Float32Array): TestTensor => ({ name, dtype: 'F16', shape, data });
const alphaOf = (m: string, alpha: number): TestTensor => f16(`${m}.alpha`, [], new Float32Array([alpha]));

/** C[i, c·K + k] = Σ_j t[i, j, k] · b[j, c] in float64 (t [r1, r2, K], b [r2, cols]). */
function contract(t: Float32Array, b: Float32Array, r1: number, r2: number, K: number, cols: number): Float64Array {
  const out = new Float64Array(r1 * cols * K);
  for (let i = 0; i < r1; i++) for (let c = 0; c < cols; c++) for (let k = 0; k < K; k++) {
    let acc = 0;
    for (let j = 0; j < r2; j++) acc += t[(i * r2 + j) * K + k] * b[j * cols + c];
    out[(i * cols + c) * K + k] = acc;
  }
  return out;
}

/** x [rows, cols] transposed. */
function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const y = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) y[j * rows + i] = x[i * cols + j];
  return y;
}

describe('LyCORIS Tucker cores on a Stable Diffusion 1.5-shaped pipeline', () => {
  const root = tmpDir();
  const pipe = writePipeline(path.join(root, 'sd15'), sd15UnetTensors(UNET), clipTextTensors(CLIP));
  const base = readAll(pipe);
  const K = 9;
  const tensors: TestTensor[] = [];
  /** The engine's ΔW of each target, as its rounding defines it, by base tensor name. */
  const deltas = new Map<string, Float32Array>();
  /** The factors torch rebuilds with LyCORIS's einsum formulas. */
  const torchInput: Record<string, { kind: string; scale: number; f: Record<string, { shape: number[]; data: number[] }> }> = {};
  const put = (target: string, kind: string, scale: number, parts: Record<string, [string, number[], Float32Array]>): void => {
    const f: Record<string, { shape: number[]; data: number[] }> = {};
    for (const [role, [name, shape, data]] of Object.entries(parts)) {
      tensors.push(f16(name, shape, data));
      f[role] = { shape, data: Array.from(data) };
    }
    torchInput[target] = { kind, scale, f };
  };

  // LoCon, Tucker: down [3, 8, 1, 1], mid [3, 3, 3, 3], up [16, 3, 1, 1] on conv1 [16, 8, 3, 3]; alpha 1.5 / r 3.
  {
    const m = 'lora_unet_down_blocks_1_resnets_0_conv1';
    const target = 'unet.down_blocks.1.resnets.0.conv1.weight';
    const [r, out, inn] = [3, 16, 8];
    const [down, mid, up] = [half(r * inn, 1), half(r * r * K, 2), half(out * r, 3)];
    put(target, 'locon', 0.5, { down: [`${m}.lora_down.weight`, [r, inn, 1, 1], down], mid: [`${m}.lora_mid.weight`, [r, r, 3, 3], mid], up: [`${m}.lora_up.weight`, [out, r, 1, 1], up] });
    tensors.push(alphaOf(m, 1.5));
    const A = Float32Array.from(contract(mid, down, r, r, K, inn));
    deltas.set(target, Float32Array.from(matmul(up, A, out, r, inn * K), (x) => x * 0.5));
  }
  // LoHa, Tucker: t [2, 2, 3, 3], w_a [2, 16], w_b [2, 16] twice, on conv2 [16, 16, 3, 3]; alpha 1 / r 2.
  {
    const m = 'lora_unet_down_blocks_1_resnets_0_conv2';
    const target = 'unet.down_blocks.1.resnets.0.conv2.weight';
    const [r, out, inn] = [2, 16, 16];
    const [t1, w1a, w1b, t2, w2a, w2b] = [half(r * r * K, 4), half(r * out, 5), half(r * inn, 6), half(r * r * K, 7), half(r * out, 8), half(r * inn, 9)];
    put(target, 'loha', 0.5, {
      t1: [`${m}.hada_t1`, [r, r, 3, 3], t1],
      w1a: [`${m}.hada_w1_a`, [r, out], w1a],
      w1b: [`${m}.hada_w1_b`, [r, inn], w1b],
      t2: [`${m}.hada_t2`, [r, r, 3, 3], t2],
      w2a: [`${m}.hada_w2_a`, [r, out], w2a],
      w2b: [`${m}.hada_w2_b`, [r, inn], w2b],
    });
    tensors.push(alphaOf(m, 1));
    const p1 = matmul(transpose(w1a, r, out), Float32Array.from(contract(t1, w1b, r, r, K, inn)), out, r, inn * K);
    const p2 = matmul(transpose(w2a, r, out), Float32Array.from(contract(t2, w2b, r, r, K, inn)), out, r, inn * K);
    deltas.set(target, Float32Array.from(p1, (x, i) => Math.fround(Math.fround(Math.fround(x) * Math.fround(p2[i])) * 0.5)));
  }
  // LoKr, Tucker: lokr_w1 [4, 4] whole, lokr_t2 [2, 2, 3, 3], lokr_w2_a [2, 8], lokr_w2_b [2, 8] on conv2
  // [32, 32, 3, 3] (w2 [8, 8, 3, 3]); alpha 1 / r 2 (the rows of lokr_w2_b).
  {
    const m = 'lora_unet_down_blocks_2_resnets_0_conv2';
    const target = 'unet.down_blocks.2.resnets.0.conv2.weight';
    const [o1, i1, r, o2, i2] = [4, 4, 2, 8, 8];
    const [w1, t2, w2a, w2b] = [half(o1 * i1, 10), half(r * r * K, 11), half(r * o2, 12), half(r * i2, 13)];
    put(target, 'lokr', 0.5, { w1: [`${m}.lokr_w1`, [o1, i1], w1], t2: [`${m}.lokr_t2`, [r, r, 3, 3], t2], w2a: [`${m}.lokr_w2_a`, [r, o2], w2a], w2b: [`${m}.lokr_w2_b`, [r, i2], w2b] });
    tensors.push(alphaOf(m, 1));
    // w2 [o2, i2·K] summed in float64 (both contractions) and rounded once.
    const w2 = Float32Array.from(matmul(transpose(w2a, r, o2), contract(t2, w2b, r, r, K, i2), o2, r, i2 * K));
    const cols = i1 * i2 * K;
    const d = new Float32Array(o1 * o2 * cols);
    for (let a = 0; a < o1; a++) for (let b = 0; b < i1; b++) for (let c = 0; c < o2; c++) for (let e = 0; e < i2 * K; e++) {
      d[(a * o2 + c) * cols + b * i2 * K + e] = Math.fround(Math.fround(w1[a * i1 + b] * w2[c * i2 * K + e]) * 0.5);
    }
    deltas.set(target, d);
  }
  const file = writeSafetensorsFile(path.join(root, 'lora', 'tucker.safetensors'), tensors, { ss_network_module: 'lycoris.kohya', ss_network_args: '{"algo": "locon", "use_tucker": "True"}' });

  it('census reads the three Tucker modules and names their methods', () => {
    const r = censusJob({ path: file }, ctx);
    assert.equal(r.adapter!.loraModules, 3);
    assert.equal(r.adapter!.method, 'kohya LoCon (Tucker) + LoHa (Tucker) + LoKr (Tucker)');
    assert.equal(r.adapter!.trainableParams, tensors.filter((t) => !t.name.endsWith('.alpha')).reduce((a, t) => a + t.shape.reduce((p, q) => p * q, 1), 0) + 3);
  });

  it('merges each module bit for bit as the engine defines its rounding, and nothing else', async () => {
    const out = path.join(root, 'merged');
    const rep = await mergeJob({ base: pipe, adapter: file, out, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 3);
    const merged = readAll(out);
    for (const [name, d] of deltas) {
      const want = base.get(name)!.map((w, i) => Math.fround(w + d[i]));
      assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(want.buffer)), name);
    }
    for (const [name, w] of base) if (!deltas.has(name)) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(w.buffer)), name);
  });

  it("each ΔW equals LyCORIS's einsum formula in float64 (torch) to fp32 rounding", async (t) => {
    const py = findPython(['torch']);
    if (!py.python) return t.skip(py.skip);
    // LyCORIS: LoCon make_weight "i j k l, p i, j r -> p r k l" (mid, up, down); LoHa HadaWeightTucker
    // "i j ..., j r, i p -> p r ..." (t, w_b, w_a) per product; LoKr rebuild_tucker "i j ..., i p, j r ->
    // p r ..." (t2, w2_a, w2_b), then kron(w1[..., None, None], w2).
    const script = [
      'import json, sys, torch',
      'd = json.load(sys.stdin)',
      'T = lambda f, k: torch.tensor(f[k]["data"], dtype=torch.float64).reshape(f[k]["shape"])',
      'out = {}',
      'for name, m in d.items():',
      '    f = m["f"]',
      '    if m["kind"] == "locon":',
      '        up = T(f, "up").flatten(1); down = T(f, "down").flatten(1)',
      '        w = torch.einsum("i j k l, p i, j r -> p r k l", T(f, "mid"), up, down)',
      '    elif m["kind"] == "loha":',
      '        w = torch.einsum("i j ..., j r, i p -> p r ...", T(f, "t1"), T(f, "w1b"), T(f, "w1a")) * torch.einsum("i j ..., j r, i p -> p r ...", T(f, "t2"), T(f, "w2b"), T(f, "w2a"))',
      '    else:',
      '        w2 = torch.einsum("i j ..., i p, j r -> p r ...", T(f, "t2"), T(f, "w2a"), T(f, "w2b"))',
      '        w = torch.kron(T(f, "w1")[:, :, None, None], w2.contiguous())',
      '    out[name] = (w * m["scale"]).flatten().tolist()',
      'print(json.dumps(out))',
    ].join('\n');
    const r = spawnSync(py.python, ['-c', script], { input: JSON.stringify(torchInput), encoding: 'utf8', maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, r.stderr);
    const ref = JSON.parse(r.stdout) as Record<string, number[]>;
    const plan = planAdapter(pipe, file, ctx);
    try {
      const factors = new Factors(plan.adapter);
      for (const [name, want] of Object.entries(ref)) {
        const m = plan.loraByBase.get(name)!;
        const [b] = blocksOf(m.base!, Infinity, true);
        const got = await deltaBlock(kernels, factors, m, b, new Float32Array(b.numel), new Scratch());
        assert.equal(got.length, want.length, name);
        const max = Math.max(...want.map(Math.abs));
        // fp32 rounds the products the engine keeps (at most a few ulps of the largest element); a wrong mode
        // or kernel index is off by the size of the values themselves.
        for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= 1e-6 * max, `${name}[${i}]: ${got[i]} vs ${want[i]}`);
      }
    } finally {
      closePlan(plan);
    }
  });

  it('a core that does not fit its factors is bad input naming it', () => {
    const m = 'lora_unet_conv_in';
    const bad = writeSafetensorsFile(path.join(root, 'bad', 'bad.safetensors'), [
      f16(`${m}.lora_down.weight`, [2, 4, 1, 1], half(8, 20)),
      f16(`${m}.lora_mid.weight`, [3, 2, 3, 3], half(54, 21)),
      f16(`${m}.lora_up.weight`, [8, 2, 1, 1], half(16, 22)),
    ]);
    assertOneLineError(runCli(['census', bad]), 'lora_unet_conv_in.lora_mid.weight', 'Tucker');
  });
});
