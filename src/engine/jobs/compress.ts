/**
 * UNMERGE phase 3b: the mask applied to task vectors. Each input (an adapter, or a fine-tuned model
 * minus the base) becomes one compressed vector file: `<name>.safetensors` with one F32 1-D tensor per
 * masked module, named after the base weight, holding the kept elements in mask order (see maskFile.ts).
 * Concatenating the tensors in `compress.json`'s `modules` order gives the flat compressed vector.
 */
import * as fs from 'node:fs';
import { closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { SafetensorsWriter } from '../safetensors/writer';
import { KernelContext } from '../kernels/kernels';
import { withOutputDir } from '../util/outputDir';
import { Mask, MASK_ORDER } from '../unmerge/maskFile';
import { uniqueNames } from '../unmerge/names';
import { forEachMaskedModule, MaskedSource, openSource } from '../unmerge/sources';
import { SourceKind } from '../../shared/jobs/choices';
import { COMPRESSED_FORMAT, CompressReport } from '../../shared/jobs/reports/compress';

export interface CompressInput {
  kind: SourceKind;
  path: string;
}

export interface CompressOptions {
  mask: string;
  base: string;
  inputs: CompressInput[];
  out: string;
}

export async function compressJob(o: CompressOptions, ctx: KernelContext): Promise<CompressReport> {
  if (o.inputs.length === 0) throw new LensError('lora-lens compress', 'give at least one --adapter DIR or --finetuned DIR');
  const mask = Mask.open(o.mask);
  const base = openCheckpoint(o.base);
  const sources: MaskedSource[] = [];
  try {
    mask.checkBase(base);
    const kernels = await ctx.kernels();
    const names = uniqueNames(o.inputs.map((i) => i.path));
    for (let i = 0; i < o.inputs.length; i++) sources.push(openSource(o.inputs[i].path, names[i], o.inputs[i].kind, base, mask, kernels, ctx.warn));
    return await withOutputDir('compress', o.out, [o.mask, o.base, ...o.inputs.map((i) => i.path)], async (out) => {
      const files = names.map((n) => `${n.replace(/[^A-Za-z0-9._-]+/g, '_')}.safetensors`);
      if (new Set(files).size !== files.length) throw new LensError(o.out, 'two inputs map to the same file name; rename one folder');
      const specs = mask.modules.map((m) => ({ name: m.name, dtype: 'F32' as const, shape: [m.selected] }));
      const writers = sources.map((s, i) => new SafetensorsWriter(out.file(files[i]), specs, { format: 'pt', lora_lens: COMPRESSED_FORMAT, source: s.path, kind: s.kind }));
      const acc = sources.map(() => ({ normSq: 0, fullNormSq: 0, nonzero: 0, touched: 0 }));
      try {
        await forEachMaskedModule(mask, base, kernels, sources, ctx, 'compress', (m, s, values, full) => {
          const a = acc[s];
          for (const v of values) {
            a.normSq += v * v;
            if (v !== 0) a.nonzero++;
          }
          a.fullNormSq += full.fullNormSq;
          if (full.touches) a.touched++;
          writers[s].write(mask.modules[m].name, new Uint8Array(values.buffer));
        }, true);
        for (const w of writers) w.finish();
      } catch (e) {
        for (const w of writers) w.abort();
        throw e;
      }
      const report: CompressReport = {
        format: COMPRESSED_FORMAT,
        mask: o.mask,
        base: o.base,
        modules: mask.modules.map((m) => m.name),
        selected: mask.total,
        order: MASK_ORDER,
        device: kernels.description,
        inputs: sources.map((s, i) => ({
          name: s.name,
          kind: s.kind,
          path: s.path,
          file: files[i],
          norm: Math.sqrt(acc[i].normSq),
          fullNorm: Math.sqrt(acc[i].fullNormSq),
          normKept: acc[i].fullNormSq > 0 ? Math.min(1, Math.sqrt(acc[i].normSq / acc[i].fullNormSq)) : null,
          nonzero: acc[i].nonzero,
          modulesTouched: acc[i].touched,
        })),
      };
      for (const r of report.inputs) if (r.fullNorm === 0) ctx.warn(`${r.name}: its task vector is zero on every masked module`);
      fs.writeFileSync(out.file('compress.json'), JSON.stringify(report, null, 2) + '\n');
      return report;
    });
  } finally {
    for (const s of sources) s.close();
    closeCheckpoint(base);
    mask.close();
  }
}
