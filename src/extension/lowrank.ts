/**
 * The low-rank toolbox's commands: Spectrum of Adapter, Resize Adapter (with a preview of the error at
 * each candidate rank, read off the spectrum before anything is written), Extract LoRA from Two Models
 * and Combine Adapters. Each result opens in its report panel, and a written adapter in the census.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { formatCell } from '../shared/charts/format';
import { maxResizeRank, ResizePreview, resizePreview, resizePreviews, ResizeSpectrum, resizeSpectrum, ResizeTarget } from '../shared/charts/resizePreview';
import { formatBytes, formatInt } from '../shared/format';
import { TreeNode } from './census/treeModel';
import type { CommandDeps } from './commands';
import { showReportPanel } from './panels';
import { Choice } from './pickers';

type Arg = vscode.Uri | TreeNode | undefined;

export interface LowRankDeps extends CommandDeps {
  name(p: string): string;
  uriPath(arg: Arg): string | undefined;
  isModel(p: string | undefined): p is string;
  isAdapter(p: string | undefined): p is string;
  openInCensus(target: string): Promise<boolean>;
}

const ADAPTER_FILE = /\.(safetensors|bin|pt|pth)$/;
/** PEFT's own weight files stand for their folder (the config beside them says what they are). */
const PEFT_WEIGHTS = /^adapter_model\.(safetensors|bin)$/;

/** A stamp of what the adapter's files are now: a spectrum read from them stays good while it holds. */
function filesStamp(p: string): string {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return `${st.size}:${st.mtimeMs}`;
  return fs
    .readdirSync(p)
    .sort()
    .map((f) => {
      const s = fs.statSync(path.join(p, f));
      return `${f}:${s.size}:${s.mtimeMs}`;
    })
    .join('|');
}

const percent = (x: number): string => formatCell(x, 'percent');
const relError = (x: number): string => formatCell(x, 'exp');

/** One preset of the resize question, with what it would do. */
function previewChoice(p: ResizePreview): Choice {
  const t = p.target;
  const isRank = 'rank' in t;
  const lo = Math.min(...p.ranks);
  const hi = Math.max(...p.ranks);
  const shrink = p.fromParams > 0 ? ` (${percent(p.params / p.fromParams)} of now)` : '';
  return {
    value: 'rank' in t ? `r${t.rank}` : `e${t.energy}`,
    label: 'rank' in t ? `rank ${t.rank}` : `energy ${percent(t.energy)}`,
    description: `${isRank ? '' : `ranks ${lo === hi ? lo : `${lo}–${hi}`} · `}${formatBytes(p.bytes)} · ${formatInt(p.params)} parameters${shrink}`,
    detail: p.changes
      ? `largest relative error ${relError(p.maxRelError)} · mean energy kept ${percent(p.meanEnergyKept)}`
      : `no module loses rank: a copy of the ${p.ranks.length} modules (relative error ${relError(p.maxRelError)})`,
  };
}

export function lowRankHandlers(d: LowRankDeps): Record<string, (arg?: Arg, selection?: vscode.Uri[]) => Promise<void>> {
  const { runner, pickers, context, name } = d;
  const spectra = new Map<string, { stamp: string; report: unknown }>();

  /** An adapter folder or file: from the Explorer or the tree, else asked. */
  const adapterOf = async (arg: Arg, files = false): Promise<string | undefined> => {
    const p = d.uriPath(arg);
    if (p !== undefined && ADAPTER_FILE.test(p) && fs.statSync(p).isFile()) {
      pickers.skip();
      return PEFT_WEIGHTS.test(path.basename(p)) ? path.dirname(p) : p;
    }
    if (d.isAdapter(p)) {
      pickers.skip();
      return p;
    }
    return pickers.path('adapter', 'LoRA adapter folder', ['adapter'], { files });
  };

  /** The adapter's spectrum report: the one read before if its files have not changed since, else a spectrum job; undefined if it failed. */
  const spectrumOf = async (adapter: string): Promise<unknown> => {
    const stamp = filesStamp(adapter);
    const known = spectra.get(adapter);
    if (known?.stamp === stamp) return known.report;
    const r = await runner.run({ title: `Spectrum of ${name(adapter)}`, request: { job: 'spectrum', adapter } });
    if (r) spectra.set(adapter, { stamp, report: r.report });
    return r?.report;
  };

  /**
   * A written adapter: known to the pickers and the Explorer's menus at once (a folder renamed into place
   * may reach no file watcher), and opened in the census.
   */
  const written = async (out: string): Promise<void> => {
    await d.scanner.scan();
    await d.openInCensus(out);
  };

  /** The rank or energy to resize to, from presets showing their predicted error and size, or typed. */
  const resizeTarget = async (adapter: string, spectrum: ResizeSpectrum): Promise<ResizeTarget | undefined> => {
    const previews = resizePreviews(spectrum);
    const max = maxResizeRank(spectrum);
    const ranks = [...new Set(spectrum.modules.map((m) => m.rank))].sort((a, b) => a - b);
    const choices: Choice[] = [
      ...previews.map((p) => previewChoice(p)),
      { value: 'custom', label: '$(edit) Another rank…', detail: `from 1 to ${max}` },
      { value: 'customEnergy', label: '$(edit) Another energy…', detail: 'per module, the smallest rank keeping that share of its energy' },
    ];
    const fallback = choices.find((c) => c.value === 'e0.99')!.value;
    const picked = await pickers.choice('resizeTarget', `Resize ${name(adapter)} (rank ${ranks.join(', ')}) to: error and size predicted from its spectrum`, choices, fallback);
    if (picked === undefined) return undefined;
    if (picked === 'custom') {
      const rank = await pickers.number('resizeRank', `Rank of every module (at most ${max})`, Math.min(8, max), 1, max, (k) => {
        const c = previewChoice(resizePreview(spectrum, { rank: k }));
        return `${c.detail} · ${c.description}`;
      });
      return rank === undefined ? undefined : { rank };
    }
    if (picked === 'customEnergy') {
      // Typed as a percentage, 0 < E ≤ 100.
      const parse = (s: string): number | undefined => {
        const e = Number(s.trim().replace(/%$/, '')) / 100;
        return s.trim() !== '' && e > 0 && e <= 1 ? e : undefined;
      };
      const text = await pickers.text(
        'resizeEnergy',
        'Energy each module keeps, in % (0 < E ≤ 100)',
        '99.5',
        (s) => (parse(s) === undefined ? 'a percentage above 0 and at most 100' : undefined),
        'Each module gets the smallest rank whose singular values hold this share of its ‖ΔW‖²_F.',
      );
      const energy = text === undefined ? undefined : parse(text);
      return energy === undefined ? undefined : { energy };
    }
    return picked.startsWith('r') ? { rank: Number(picked.slice(1)) } : { energy: Number(picked.slice(1)) };
  };

  return {
    'loraLens.spectrum': async (arg) => {
      const adapter = await adapterOf(arg, true);
      if (!adapter) return;
      const r = await spectrumOf(adapter);
      if (r !== undefined) showReportPanel(context, 'spectrum', r, `Spectrum: ${name(adapter)}`);
    },

    'loraLens.resize': async (arg) => {
      pickers.steps(3);
      const adapter = await adapterOf(arg, true);
      if (!adapter) return;
      const report = await spectrumOf(adapter);
      if (report === undefined) return;
      const spectrum = resizeSpectrum(report);
      if (!spectrum) {
        void vscode.window.showErrorMessage(`LoRA Lens: the spectrum of ${name(adapter)} lacks a module's rank or shape: no resize to preview.`);
        return;
      }
      const target = await resizeTarget(adapter, spectrum);
      if (!target) return;
      const tag = 'rank' in target ? `r${target.rank}` : `e${Math.round(100 * target.energy)}`;
      const out = await pickers.output('Resized adapter folder', name(adapter), `resized-${tag}`, adapter);
      if (!out) return;
      const r = await runner.run({ title: `Resizing ${name(adapter)} to ${'rank' in target ? `rank ${target.rank}` : `energy ${percent(target.energy)}`}`, request: { job: 'resize', adapter, out, ...target }, outputs: [out] });
      if (!r) return;
      await written(out);
      showReportPanel(context, 'resize', r.report, `Resize: ${name(adapter)} → ${name(out)}`);
    },

    'loraLens.extractLora': async (arg) => {
      const p = d.uriPath(arg);
      const pair = await pickers.modelPair(4, d.isModel(p) ? { path: p, name: name(p) } : undefined);
      if (!pair) return;
      const { base, finetuned } = pair;
      const picked = await pickers.choice('extractLoraTarget', 'Rank of the extracted LoRA', [
        ...[8, 16, 4, 32, 64].map((r) => ({ value: `r${r}`, label: `rank ${r}`, detail: 'the same rank for every changed linear weight' })),
        ...[0.9, 0.95, 0.99].map((e) => ({ value: `e${e}`, label: `energy ${percent(e)}`, detail: `per module, the smallest rank capturing ${percent(e)} of its task vector's energy` })),
        { value: 'custom', label: '$(edit) Another rank…' },
      ], 'r16');
      if (!picked) return;
      const rank = picked === 'custom' ? await pickers.number('extractLoraRank', 'Rank of every extracted module', 16) : picked.startsWith('r') ? Number(picked.slice(1)) : undefined;
      if (picked === 'custom' && rank === undefined) return;
      const target = rank !== undefined ? { rank } : { energy: Number(picked.slice(1)) };
      const tag = rank !== undefined ? `r${rank}` : `e${Math.round(100 * target.energy!)}`;
      const out = await pickers.output('Extracted LoRA adapter folder', name(finetuned), `lora-${tag}`, finetuned);
      if (!out) return;
      const r = await runner.run({ title: `Extracting a LoRA from ${name(finetuned)} − ${name(base)}`, request: { job: 'extract-lora', base, finetuned, out, ...target }, outputs: [out] });
      if (!r) return;
      await written(out);
      showReportPanel(context, 'extract-lora', r.report, `Extracted LoRA: ${name(finetuned)} − ${name(base)}`);
    },

    'loraLens.combine': async (arg, selection) => {
      pickers.steps(4);
      // The adapters selected in the Explorer, or the one right-clicked preselected among those offered.
      const selected = (selection ?? []).map((u) => u.fsPath).filter((p) => d.isAdapter(p));
      let adapters: string[] | undefined;
      if (selected.length >= 2) {
        pickers.skip();
        adapters = selected;
      } else {
        const clicked = d.uriPath(arg);
        if (d.isAdapter(clicked)) pickers.remember('combine', clicked);
        adapters = await pickers.adapters('combine', 'Adapters to combine (pick every one)');
      }
      if (!adapters) return;
      const names = adapters.map(name);
      const weightsText = await pickers.text(
        `combineWeights:${adapters.length}`,
        `Weights wᵢ of ${names.join(', ')}`,
        adapters.map(() => '1').join(','),
        (s) => {
          const w = s.split(',').map((x) => x.trim());
          if (w.length !== adapters!.length) return `${adapters!.length} numbers separated by commas, one per adapter`;
          return w.every((x) => x !== '' && Number.isFinite(Number(x))) ? undefined : 'numbers separated by commas';
        },
        'The combined delta is Σ wᵢ·ΔWᵢ.',
      );
      if (weightsText === undefined) return;
      const picked = await pickers.choice('combineRank', 'Rank of the combined adapter', [
        { value: 'exact', label: 'Exact', detail: 'the factors concatenated: rank Σ rᵢ, no error' },
        ...[8, 16, 4, 32].map((r) => ({ value: `r${r}`, label: `rank ${r}`, detail: `the best rank-${r} approximation of the sum, per module` })),
        { value: 'custom', label: '$(edit) Another rank…' },
      ], 'exact');
      if (!picked) return;
      const rank = picked === 'exact' ? undefined : picked === 'custom' ? await pickers.number('combineRankValue', 'Rank of every combined module', 8) : Number(picked.slice(1));
      if (picked === 'custom' && rank === undefined) return;
      const out = await pickers.output('Combined adapter folder', name(adapters[0]), rank === undefined ? 'combined' : `combined-r${rank}`, adapters[0]);
      if (!out) return;
      const weights = weightsText.split(',').map((x) => x.trim()).join(',');
      const r = await runner.run({ title: `Combining ${names.join(' + ')}`, request: { job: 'combine', adapters, weights, out, rank }, outputs: [out] });
      if (!r) return;
      await written(out);
      showReportPanel(context, 'combine', r.report, `Combined: ${names.join(' + ')}`);
    },
  };
}
