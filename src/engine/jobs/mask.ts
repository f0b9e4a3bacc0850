/**
 * UNMERGE phase 3a: one unified top-k mask over every module the dictionary adapters target. Per module
 * (one at a time), each adapter's delta is expanded, |delta| is aggregated by elementwise max across
 * adapters, and the k = floor(budget / modules) largest elements are kept, ties to the lower index.
 *
 * Adapters that target different modules (q/v and q/k/v/o, other layers by layers_to_transform) give a
 * mask over the union: an adapter is zero where it has no LoRA, which is its task vector there, so it
 * simply does not vote in those modules. The delta of a DoRA module is its fp32 task vector (see
 * `Dora` in unmerge/lora.ts), which needs the base weight; every other PEFT option (rsLoRA, rank and
 * alpha patterns, Conv1D / fan_in_fan_out, embeddings) is in the module's scale and orientation.
 */
import * as crypto from 'node:crypto';
import { openRegularFile } from '../../shared/files';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { classifyTensor, moduleOf } from '../../shared/census/classify';
import { adapterLayout } from '../checkpoint/adapter';
import { AdaptedModule, wholeTensor } from '../checkpoint/deltaRule';
import { ADAPTER_WEIGHTS } from '../../shared/weights/files';
import { adapterWeights, Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { KernelContext, Kernels, LoraFactors } from '../kernels/kernels';
import { Scratch } from '../safetensors/reader';
import { SafetensorsWriter } from '../safetensors/writer';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import { assertLowRank, Dora, doraDelta, doraOf, doraValuesAt, loraNormSq, loraValuesAt, readFactors } from '../unmerge/lora';
import { MASK_FORMAT, MaskJson, MaskModule } from '../../shared/jobs/reports/mask';
import { MASK_JSON, MASK_ORDER, MASK_TENSORS } from '../unmerge/maskFile';
import { naturalCompare, uniqueNames } from '../unmerge/names';
import { BaseModule } from '../unmerge/sources';
import { certifiedTopK, exactMaxAbsAt, Float32Bound, float32Bound } from '../unmerge/certified';
import { TopK, topK } from '../unmerge/topk';

export interface MaskOptions {
  base: string;
  adapters: string[];
  budget: number;
  out: string;
}

interface DictAdapter {
  name: string;
  ckpt: Checkpoint;
  byBase: Map<string, AdaptedModule>;
  normSq: number;
  keptSq: number;
}

export const NORM_PRESERVATION_DEFINITION =
  'per adapter, ||mask * delta||_F / ||delta||_F over every module it targets (the fraction of its delta\'s Frobenius norm the mask keeps); energyPreservation is its square';

export async function maskJob(o: MaskOptions, ctx: KernelContext): Promise<MaskJson> {
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
      if (layout.replacements.length > 0) ctx.warn(`${names[a]}: ${layout.replacements.length} saved full tensors (modules_to_save, biases) are not LoRA deltas and are left out of the mask`);
      if (layout.modules.length === 0) throw new LensError(o.adapters[a], 'adapter has no LoRA modules');
      for (const lm of layout.modules) {
        assertLowRank(ckpt, lm);
        dict[a].byBase.set(lm.base!.name, lm);
      }
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

    const kernels = await ctx.kernels();
    return await withOutputDir('mask', o.out, [o.base, ...o.adapters], async (out) => {
      const writer = new SafetensorsWriter(out.file(MASK_TENSORS), modules.map((m) => ({ name: m.name, dtype: 'BOOL' as const, shape: m.shape })), {
        format: 'pt',
        lora_lens: MASK_FORMAT,
      });
      try {
        // Shared memory on the CPU: the worker backend expands and folds in place (the main thread does not mind).
        // Two of everything a module keeps while the next one is expanded (its sum, its base weight).
        const shared = kernels.sharedMemory;
        const scratch = new Scratch(shared);
        const perParity = [new Scratch(shared), new Scratch(shared)];
        const start = (i: number, factors: ModuleFactors): Promise<Aggregate> =>
          aggregate(modules[i], factors, kernels, new BaseModule(base, modules[i], perParity[i % 2]), perParity[i % 2], scratch);
        let factors = await factorsOf(modules[0], dict);
        let pending = start(0, factors);
        const certified = { modules: 0, rechecked: 0 };
        for (let i = 0; i < M; i++) {
          throwIfCancelled(ctx);
          ctx.progress({ phase: 'mask', done: i, total: M, tensor: modules[i].name });
          const next = i + 1 < M ? factorsOf(modules[i + 1], dict) : undefined;
          next?.catch(() => undefined); // a failure surfaces at its await, not as an unhandled rejection
          const done = await pending;
          if (next) {
            // The next module's first expansion is on its way to the workers before this one's selection
            // occupies this thread.
            factors = await next;
            pending = start(i + 1, factors);
            pending.catch(() => undefined);
          }
          // Where the float32 pass cannot decide, the exact expansion runs once the next module's pass is done (the backends' staging is then free).
          const inFlight = pending;
          const exactly = async (): Promise<void> => {
            await inFlight.catch(() => undefined);
            done.acc.fill(0);
            await kernels.maxAbsLoraInto!(done.acc, done.factors);
          };
          const mask = await selectModule(modules[i], done, scratch, exactly, certified);
          writer.write(modules[i].name, mask);
        }
        ctx.progress({ phase: 'mask', done: M, total: M });
        if (certified.modules > 0) ctx.log(`mask: ${certified.modules} of ${M} modules selected from the certified float32 pass, ${certified.rechecked} elements recomputed exactly`);
        writer.finish();
      } catch (e) {
        writer.abort();
        throw e;
      }
      // The description is read after the work, so that a GPU's mid-job fallback to the CPU shows.
      const report = { ...maskReport(o, k, modules, dict), device: kernels.description };
      for (const d of dict) if (d.normSq === 0) ctx.warn(`${d.name}: its delta is zero everywhere (lora_B all zeros: an untrained adapter?); it adds nothing to the mask`);
      fs.writeFileSync(out.file(MASK_JSON), JSON.stringify(report, null, 2) + '\n');
      return report;
    });
  } finally {
    closeCheckpoint(base);
    for (const d of dict) closeCheckpoint(d.ckpt);
  }
}

interface ModuleFactors {
  users: DictAdapter[];
  factors: LoraFactors[];
}

/** The factors of every adapter that targets `m` (r (in + out) values each), read ahead of its expansions. */
async function factorsOf(m: MaskModule, dict: DictAdapter[]): Promise<ModuleFactors> {
  const users = dict.filter((d) => d.byBase.has(m.name));
  return { users, factors: await Promise.all(users.map((d) => readFactors(d.ckpt, d.byBase.get(m.name)!))) };
}

interface Aggregate extends ModuleFactors {
  /** max_a |delta_a| of the module; with `bound`, the float32 pass's approximation of it. */
  acc: Float32Array;
  dora: Array<Dora | undefined>;
  /** The float32 pass's error bound (certified.ts), where `acc` is that pass; undefined where `acc` is exact. */
  bound?: Float32Bound;
}

/**
 * max_a |delta_a| of one module into an `acc` of `own` scratch; adds each adapter's squared norm. Its first
 * expansion is dispatched before this returns (no await precedes it), so that a worker or GPU backend
 * computes it while the caller selects the previous module.
 */
async function aggregate(m: MaskModule, mf: ModuleFactors, kernels: Kernels, base: BaseModule, own: Scratch, scratch: Scratch): Promise<Aggregate> {
  const { users, factors } = mf;
  const acc = own.f32('acc', m.numel).fill(0);
  const dora: Array<Dora | undefined> = [];
  // Plain LoRA adapters (of the first one's shape and orientation) all at once where the backend folds deltas
  // without holding them (the max does not depend on the order); the others, or all elsewhere, one at a time below.
  const plain = users.map((_, a) => a).filter((a) => !wholeTensor(users[a].byBase.get(m.name)!));
  const same = (a: number): boolean => (['out', 'in', 'transpose'] as const).every((key) => factors[a][key] === factors[plain[0]][key]);
  const fusedOnes = kernels.maxAbsLoraInto ? plain.filter(same) : [];
  // The certified two-pass selection where every adapter is folded at once (its bound needs all of them) and
  // the factors have a bound (O(r (in + out)) work, known before the pass, which is float32 only then).
  const bound = fusedOnes.length === users.length ? float32Bound(factors) : undefined;
  let folded: Promise<unknown> = fusedOnes.length > 0 ? kernels.maxAbsLoraInto!(acc, fusedOnes.map((a) => factors[a]), bound !== undefined) : Promise.resolve();
  folded.catch(() => undefined); // a failure surfaces where it is awaited, not as an unhandled rejection
  for (const a of fusedOnes) users[a].normSq += loraNormSq(factors[a]);
  // Two delta buffers: adapter a + 1 expands while |delta_a| is folded into acc, which a worker backend runs at once.
  const folds: Array<Promise<unknown>> = [];
  const oneByOne = users.map((_, a) => a).filter((a) => !fusedOnes.includes(a));
  for (let t = 0; t < oneByOne.length; t++) {
    const a = oneByOne[t];
    const d = users[a];
    const lm = d.byBase.get(m.name)!;
    const slot = t % 2;
    if (t >= 2) await folds[t - 2];
    const expanding = kernels.loraDelta(factors[a], scratch.f32(`delta${slot}`, m.numel));
    if (!wholeTensor(lm)) d.normSq += loraNormSq(factors[a]); // r^2 (in + out) work on this thread while the expansion runs
    let delta = await expanding;
    if (wholeTensor(lm)) {
      dora[a] = await doraOf(kernels, d.ckpt, lm, await base.f32(), delta);
      delta = await doraDelta(kernels, dora[a]!, delta, scratch.bytes(`merged${slot}`, 4 * m.numel), scratch.f32(`dora${slot}`, m.numel));
      const stats = await kernels.pairStats(delta, null);
      if (stats.nonFinite > 0) throw new LensError(d.ckpt.path, `${stats.nonFinite} non-finite values in the DoRA task vector of ${m.name} (a zero weight norm?)`, lm.tensors[0].name);
      d.normSq += stats.aSq;
    }
    const x = delta;
    folded = folded.then(() => kernels.maxAbsInto(acc, x));
    folded.catch(() => undefined); // a failure surfaces where it is awaited, not as an unhandled rejection
    folds[t] = folded;
  }
  await folded;
  return { ...mf, acc, dora, bound };
}

/**
 * Selects the module's top k from its aggregate (from the certified float32 pass where there is one, else
 * after `exactly` has made it exact), adds each adapter's kept squared norm, and returns the BOOL mask bytes.
 */
async function selectModule(
  m: MaskModule,
  g: Aggregate,
  scratch: Scratch,
  exactly: () => Promise<void>,
  certified: { modules: number; rechecked: number },
): Promise<Uint8Array> {
  let sel: TopK | undefined;
  if (g.bound) {
    const c = certifiedTopK(g.acc, m.selected, g.bound, (indices) => exactMaxAbsAt(g.factors, indices));
    if (c) {
      certified.modules++;
      certified.rechecked += c.rechecked;
      sel = c;
    } else await exactly();
  }
  sel ??= topK(g.acc, m.selected);
  if (sel.nonFinite > 0) throw new LensError(g.users[0].ckpt.path, `${sel.nonFinite} delta elements of ${m.name} overflow fp32 (adapters: ${m.adapters.join(', ')})`, m.name);
  m.threshold = sel.threshold;
  const values = new Float32Array(sel.indices.length);
  g.users.forEach((d, a) => {
    loraValuesAt(g.factors[a], sel.indices, values);
    if (g.dora[a]) doraValuesAt(g.dora[a]!, sel.indices, values);
    for (let t = 0; t < values.length; t++) d.keptSq += values[t] * values[t];
  });
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
      hashFile(h, adapterWeights(paths[a]) ?? path.join(paths[a], ADAPTER_WEIGHTS[0]));
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
  const fd = openRegularFile(file);
  try {
    const buf = Buffer.alloc(1 << 22);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}
