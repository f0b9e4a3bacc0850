/**
 * UNMERGE phase 3a: one unified top-k mask over every module the dictionary adapters target. Per module
 * (one at a time), each adapter's delta is expanded, |delta| is aggregated by elementwise max across
 * adapters, and the k = floor(budget / modules) largest elements are kept, ties to the lower index.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { classifyTensor, moduleOf } from '../census/classify';
import { adapterLayout, LoraModule } from '../checkpoint/adapter';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { required } from '../cli/args';
import { CliCommand } from '../cli/command';
import { LensError } from '../errors';
import { Kernels, LoraFactors } from '../kernels/kernels';
import { Scratch } from '../safetensors/reader';
import { SafetensorsWriter } from '../safetensors/writer';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import { loraValuesAt, readFactors } from '../unmerge/lora';
import { MASK_FORMAT, MASK_JSON, MASK_ORDER, MASK_TENSORS, MaskJson, MaskModule } from '../unmerge/maskFile';
import { naturalCompare, uniqueNames } from '../unmerge/names';
import { KernelsSource, resolveKernels } from '../unmerge/sources';
import { topK } from '../unmerge/topk';

export interface MaskOptions {
  base: string;
  adapters: string[];
  budget: number;
  out: string;
}

interface DictAdapter {
  name: string;
  ckpt: Checkpoint;
  byBase: Map<string, LoraModule>;
  normSq: number;
  keptSq: number;
}

export const NORM_PRESERVATION_DEFINITION =
  'per adapter, ||mask * delta||_F / ||delta||_F over every module it targets (the fraction of its delta\'s Frobenius norm the mask keeps); energyPreservation is its square';

export async function runMask(o: MaskOptions, kernelsSource: KernelsSource, ctx: JobContext): Promise<MaskJson> {
  if (o.adapters.length === 0) throw new LensError('--adapters', 'give at least one adapter folder');
  if (!Number.isSafeInteger(o.budget) || o.budget < 1) throw new LensError('--budget', `must be a positive whole number of elements (got ${o.budget})`);
  const base = openCheckpoint(o.base);
  const dict: DictAdapter[] = [];
  try {
    const names = uniqueNames(o.adapters);
    warnDuplicates(o.adapters, names, ctx);
    for (let a = 0; a < o.adapters.length; a++) {
      const ckpt = openCheckpoint(o.adapters[a]);
      dict.push({ name: names[a], ckpt, byBase: new Map(), normSq: 0, keptSq: 0 });
      if (ckpt.kind !== 'adapter') throw new LensError(o.adapters[a], 'not a PEFT adapter folder (no adapter_config.json)');
      const layout = adapterLayout(ckpt, base);
      for (const w of layout.warnings) ctx.warn(`${names[a]}: ${w}`);
      if (layout.modules.length === 0) throw new LensError(o.adapters[a], 'adapter has no LoRA modules');
      for (const lm of layout.modules) dict[a].byBase.set(lm.base!.name, lm);
    }
    const moduleNames = [...new Set(dict.flatMap((d) => [...d.byBase.keys()]))].sort(naturalCompare);
    const M = moduleNames.length;
    if (o.budget < M) {
      throw new LensError('--budget', `budget ${o.budget} is smaller than the number of modules the adapters target (${M}): k = floor(budget / modules) would be 0; give at least ${M}`);
    }
    const k = Math.floor(o.budget / M);
    const modules: MaskModule[] = moduleNames.map((name) => {
      const t = base.byName.get(name)!;
      const { layer, projection: p } = classifyTensor(name);
      // Outside attention and MLP (an adapted embedding or head) the module's own name stands for the projection.
      const projection = p ?? moduleOf(name).split('.').pop()!;
      const adapters = dict.filter((d) => d.byBase.has(name)).map((d) => d.name);
      return { name, shape: t.shape, numel: t.numel, selected: Math.min(k, t.numel), layer, projection, threshold: 0, adapters };
    });
    const small = modules.filter((m) => m.numel < k);
    if (small.length > 0) ctx.warn(`${small.length} module(s) have fewer than k = ${k} elements and are kept whole (e.g. ${small[0].name})`);

    const kernels = await resolveKernels(kernelsSource);
    return await withOutputDir(o.out, [o.base, ...o.adapters], async (out) => {
      const writer = new SafetensorsWriter(out.file(MASK_TENSORS), modules.map((m) => ({ name: m.name, dtype: 'BOOL' as const, shape: m.shape })), {
        format: 'pt',
        lora_lens: MASK_FORMAT,
      });
      try {
        const scratch = new Scratch();
        for (let i = 0; i < M; i++) {
          throwIfCancelled(ctx);
          ctx.progress({ phase: 'mask', done: i, total: M, tensor: modules[i].name });
          writer.write(modules[i].name, await maskModule(modules[i], dict, kernels, scratch));
        }
        ctx.progress({ phase: 'mask', done: M, total: M });
        writer.finish();
      } catch (e) {
        writer.abort();
        throw e;
      }
      const report = maskReport(o, k, modules, dict);
      for (const d of dict) if (d.normSq === 0) ctx.warn(`${d.name}: its delta is zero everywhere (lora_B all zeros: an untrained adapter?); it adds nothing to the mask`);
      fs.writeFileSync(out.file(MASK_JSON), JSON.stringify(report, null, 2) + '\n');
      return report;
    });
  } finally {
    closeCheckpoint(base);
    for (const d of dict) closeCheckpoint(d.ckpt);
  }
}

/** Aggregates the adapters' |delta| of one module, selects its top k, and returns the BOOL mask bytes. */
async function maskModule(m: MaskModule, dict: DictAdapter[], kernels: Kernels, scratch: Scratch): Promise<Uint8Array> {
  const acc = scratch.f32('acc', m.numel).fill(0);
  const factors: Array<[DictAdapter, LoraFactors]> = [];
  for (const d of dict) {
    const lm = d.byBase.get(m.name);
    if (!lm) continue;
    const f = await readFactors(d.ckpt, lm);
    const delta = await kernels.loraDelta(f, scratch.f32('delta', m.numel));
    const stats = await kernels.pairStats(delta, null);
    if (stats.nonFinite > 0) throw new LensError(d.ckpt.path, `${stats.nonFinite} non-finite values in the delta of ${m.name}`, lm.B.name);
    d.normSq += stats.aSq;
    await kernels.maxAbsInto(acc, delta);
    factors.push([d, f]);
  }
  const sel = topK(acc, m.selected);
  m.threshold = sel.threshold;
  const values = new Float32Array(sel.indices.length);
  for (const [d, f] of factors) {
    loraValuesAt(f, sel.indices, values);
    for (let t = 0; t < values.length; t++) d.keptSq += values[t] * values[t];
  }
  const bytes = scratch.bytes('mask', m.numel).fill(0);
  for (let t = 0; t < sel.indices.length; t++) bytes[sel.indices[t]] = 1;
  return bytes;
}

function maskReport(o: MaskOptions, k: number, modules: MaskModule[], dict: DictAdapter[]): MaskJson {
  const perProjection: Record<string, number> = {};
  const perLayer: Record<string, number> = {};
  for (const m of modules) {
    perProjection[m.projection] = (perProjection[m.projection] ?? 0) + m.selected;
    const layer = m.layer === null ? 'none' : String(m.layer);
    perLayer[layer] = (perLayer[layer] ?? 0) + m.selected;
  }
  const ratio = (d: DictAdapter): number | null => (d.normSq > 0 ? Math.min(1, Math.sqrt(d.keptSq / d.normSq)) : null);
  return {
    format: MASK_FORMAT,
    version: 1,
    base: o.base,
    budget: o.budget,
    modules: modules.length,
    k,
    selected: modules.reduce((a, m) => a + m.selected, 0),
    elements: modules.reduce((a, m) => a + m.numel, 0),
    perProjection,
    perLayer,
    normPreservation: Object.fromEntries(dict.map((d) => [d.name, ratio(d)])),
    energyPreservation: Object.fromEntries(dict.map((d) => [d.name, d.normSq > 0 ? Math.min(1, d.keptSq / d.normSq) : null])),
    normPreservationDefinition: NORM_PRESERVATION_DEFINITION,
    adapters: dict.map((d) => ({ name: d.name, path: d.ckpt.path, modules: d.byBase.size, norm: Math.sqrt(d.normSq), keptNorm: Math.sqrt(d.keptSq) })),
    order: MASK_ORDER,
    perModule: modules,
  };
}

/** The same folder twice, or two folders with identical weights and scaling: harmless to a max, but worth saying. */
function warnDuplicates(paths: string[], names: string[], ctx: JobContext): void {
  const seen = new Map<string, number>();
  for (let a = 0; a < paths.length; a++) {
    let key: string;
    try {
      const h = crypto.createHash('sha256');
      hashFile(h, path.join(paths[a], 'adapter_config.json'));
      hashFile(h, path.join(paths[a], 'adapter_model.safetensors'));
      key = h.digest('hex');
    } catch {
      continue; // openCheckpoint reports the unreadable folder properly
    }
    const prev = seen.get(key);
    if (prev === undefined) seen.set(key, a);
    else ctx.warn(`${names[a]} is a duplicate of ${names[prev]} (identical adapter files); a duplicate changes nothing in the mask`);
  }
}

function hashFile(h: crypto.Hash, file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1 << 22);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}

export const maskCommand: CliCommand = {
  name: 'mask',
  summary: 'UNMERGE: unified top-k mask of the modules a dictionary of adapters targets',
  usage: 'mask --base DIR --adapters DIR... --budget N --out DIR',
  flags: { base: { kind: 'string' }, adapters: { kind: 'list' }, budget: { kind: 'number' }, out: { kind: 'string' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'mask';
    const report = await runMask(
      { base: required(c, args.flags, 'base'), adapters: required(c, args.flags, 'adapters'), budget: required(c, args.flags, 'budget'), out: required(c, args.flags, 'out') },
      ctx.kernels,
      ctx,
    );
    const pct = (x: number | null): string => (x === null ? 'n/a (zero delta)' : `${(100 * x).toFixed(2)}%`);
    const text = [
      `mask: ${report.selected.toLocaleString('en')} of ${report.elements.toLocaleString('en')} elements kept in ${report.modules} modules (k = ${report.k} per module, budget ${report.budget})`,
      `per projection: ${Object.entries(report.perProjection).map(([p, n]) => `${p} ${n}`).join(', ')}`,
      'norm kept per adapter (||mask * delta|| / ||delta||):',
      ...Object.entries(report.normPreservation).map(([n, x]) => `  ${n}: ${pct(x)}`),
      `wrote ${args.flags.out}/${MASK_TENSORS} and ${MASK_JSON}`,
    ];
    return { report, text: text.join('\n') };
  },
};
