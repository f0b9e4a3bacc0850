/**
 * The UNMERGE mask on disk: a folder with
 * - `mask.safetensors`: one BOOL tensor per module, named after the base weight it masks, of that
 *   weight's shape (1 = kept);
 * - `mask.json`: the budget, counts, norm preservation and `perModule`, whose order is the mask order.
 *
 * Mask order, used by every compressed vector: modules as listed in `perModule`, and within a module the
 * kept elements in ascending row-major index of the base weight.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Checkpoint } from '../checkpoint/checkpoint';
import { readJson } from '../checkpoint/json';
import { LensError } from '../errors';
import { FileHandles } from '../safetensors/reader';
import { readHeader } from '../../shared/safetensors/file';
import { TensorInfo } from '../../shared/safetensors/header';

export const MASK_FORMAT = 'lora-lens/unmerge-mask';
export const MASK_JSON = 'mask.json';
export const MASK_TENSORS = 'mask.safetensors';

export interface MaskModule {
  /** The base weight's name (also the mask tensor's). */
  name: string;
  shape: number[];
  numel: number;
  /** Elements kept: min(k, numel). */
  selected: number;
  layer: number | null;
  projection: string;
  /** The smallest kept aggregated magnitude max_a |delta_a|. */
  threshold: number;
  /** Dictionary adapters that target this module. */
  adapters: string[];
}

export interface MaskAdapter {
  name: string;
  path: string;
  /** Modules it targets. */
  modules: number;
  /** Frobenius norm of its delta over all its modules, and of the masked part. */
  norm: number;
  keptNorm: number;
}

export interface MaskJson {
  format: typeof MASK_FORMAT;
  version: 1;
  base: string;
  budget: number;
  /** Number of modules; k = floor(budget / modules). */
  modules: number;
  k: number;
  /** Elements kept in all (sum of min(k, numel) over modules). */
  selected: number;
  /** Elements of the masked modules in all. */
  elements: number;
  perProjection: Record<string, number>;
  perLayer: Record<string, number>;
  /** Per adapter, keptNorm / norm (null for an all-zero adapter). */
  normPreservation: Record<string, number | null>;
  /** Per adapter, (keptNorm / norm)^2: the share of its squared norm (energy) kept. */
  energyPreservation: Record<string, number | null>;
  normPreservationDefinition: string;
  /** Where the numerics ran ("CPU, 2 worker threads", a GPU adapter, or a GPU with its CPU fallback). */
  device?: string;
  adapters: MaskAdapter[];
  order: string;
  perModule: MaskModule[];
}

export const MASK_ORDER =
  'modules as listed in perModule; within a module, kept elements in ascending row-major index of the base weight';

/** Refuses a perModule entry that is not what mask writes (null, a name that is not a string, a bad shape). */
function checkEntry(file: string, m: unknown, i: number): asserts m is MaskModule {
  const e = m as Partial<MaskModule> | null;
  if (e === null || typeof e !== 'object' || Array.isArray(e)) throw new LensError(file, `perModule[${i}] is ${JSON.stringify(m)}, not a module entry`);
  if (typeof e.name !== 'string' || e.name === '') throw new LensError(file, `perModule[${i}] has no module name`);
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new LensError(file, `perModule[${i}] shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`, e.name);
  }
}

/** A mask opened for reading: the JSON, and the kept indices of each module on demand. */
export class Mask {
  readonly handles = new FileHandles();
  readonly total: number;

  private constructor(
    readonly dir: string,
    readonly json: MaskJson,
    private readonly tensors: Map<string, TensorInfo>,
  ) {
    this.total = json.perModule.reduce((a, m) => a + m.selected, 0);
  }

  get modules(): MaskModule[] {
    return this.json.perModule;
  }

  /** Opens a mask folder (or its mask.json / mask.safetensors) and checks the two files agree. */
  static open(p: string): Mask {
    const dir = fs.existsSync(p) && fs.statSync(p).isFile() ? path.dirname(p) : p;
    const jsonFile = path.join(dir, MASK_JSON);
    const stFile = path.join(dir, MASK_TENSORS);
    if (!fs.existsSync(jsonFile) || !fs.existsSync(stFile)) {
      throw new LensError(p, `not a mask folder: needs ${MASK_JSON} and ${MASK_TENSORS} (made by 'lora-lens mask')`);
    }
    const json = readJson(jsonFile) as unknown as MaskJson;
    if (json.format !== MASK_FORMAT || !Array.isArray(json.perModule)) {
      throw new LensError(jsonFile, `not a LoRA Lens mask (format ${JSON.stringify(json.format)}, expected ${MASK_FORMAT})`);
    }
    const header = readHeader(stFile);
    const tensors = new Map(header.tensors.map((t) => [t.name, t]));
    const names = new Set<string>();
    for (const [i, m] of json.perModule.entries()) {
      checkEntry(jsonFile, m, i);
      if (names.has(m.name)) throw new LensError(jsonFile, 'module listed twice in perModule', m.name);
      names.add(m.name);
      const t = tensors.get(m.name);
      if (!t) throw new LensError(stFile, 'module listed in mask.json has no mask tensor', m.name);
      if (t.dtype !== 'BOOL') throw new LensError(stFile, `mask tensor has dtype ${t.dtype}, expected BOOL`, m.name);
      if (t.shape.join(',') !== m.shape.join(',') || !Number.isSafeInteger(m.selected) || m.selected < 0 || m.selected > t.numel) {
        throw new LensError(jsonFile, `perModule entry (shape ${JSON.stringify(m.shape)}, selected ${m.selected}) disagrees with mask.safetensors (shape ${JSON.stringify(t.shape)})`, m.name);
      }
    }
    return new Mask(dir, json, tensors);
  }

  /** Refuses a base whose weights do not have the masked shapes. */
  checkBase(base: Checkpoint): void {
    for (const m of this.modules) {
      const t = base.byName.get(m.name);
      if (!t) throw new LensError(base.path, `the mask (${this.dir}) masks '${m.name}', which this base does not have`, m.name);
      if (t.shape.join(',') !== m.shape.join(',')) {
        throw new LensError(base.path, `shape ${JSON.stringify(t.shape)} differs from the mask's ${JSON.stringify(m.shape)} (a mask made for another model?)`, m.name);
      }
    }
  }

  /** Kept indices of a module, ascending. */
  async indices(m: MaskModule): Promise<Uint32Array> {
    const t = this.tensors.get(m.name)!;
    const raw = await this.handles.readBytes(t, new Uint8Array(t.byteLength));
    const out = new Uint32Array(m.selected);
    let j = 0;
    for (let i = 0; i < raw.length; i++) {
      const v = raw[i];
      if (v === 0) continue;
      if (v !== 1 || j === out.length) {
        const why = v !== 1 ? `byte ${v} at element ${i} is not a BOOL (0 or 1)` : `more than the ${m.selected} kept elements mask.json lists`;
        throw new LensError(t.file, why, m.name);
      }
      out[j++] = i;
    }
    if (j !== out.length) throw new LensError(t.file, `${j} elements kept, mask.json lists ${m.selected}`, m.name);
    return out;
  }

  close(): void {
    this.handles.close();
  }
}
