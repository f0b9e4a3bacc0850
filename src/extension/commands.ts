import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { CensusView } from './census/censusView';
import { TreeNode } from './census/treeModel';
import { DECOMPOSE_METHODS, DecomposeMethod, DEFAULT_RULE, DEFAULT_TOLERANCE, MERGE_RULES, MergeRule } from '../shared/jobs/choices';
import { CliDtype } from '../shared/safetensors/dtypes';
import { readCensusReport } from '../shared/jobs/reports/census';
import { readConvertReport } from '../shared/jobs/reports/convert';
import { readEstimateReport } from '../shared/jobs/reports/estimate';
import { readExtractReport } from '../shared/jobs/reports/extract';
import { readStatsReport } from '../shared/jobs/reports/stats';
import { readPrecisionReport } from '../shared/jobs/reports/precision';
import { JobResult } from './engine/engineProcess';
import { JobRunner } from './engine/jobRunner';
import { Choice, Pickers } from './pickers';
import { JobRequest } from '../shared/jobs/jobs';
import { ReportKind, showReportPanel } from './panels';
import { WARN_DELTA_LOST as LOSSY_FRACTION } from '../shared/charts/validate';
import { formatBytes, formatInt } from '../shared/format';
import { censusTensors, shortName } from './census/treeModel';
import { folderKind, guessBase } from './workspace/folders';
import { lowRankHandlers } from './lowrank';
import { WorkspaceScanner } from './workspace/scanner';
import { hubCacheDir } from '../shared/weights/hfCache';

/** The pickers' words for each value the engine takes (every value, checked by the types). */
const DTYPE_DETAILS: Record<CliDtype, string> = {
  bf16: 'bfloat16: the range of fp32, 8 bits of mantissa',
  fp16: 'float16: 11 bits of mantissa, overflows above 65504',
  fp32: 'float32: exact W + ΔW, twice the size',
};
const RULE_DETAILS: Record<MergeRule, string> = {
  peft: "PEFT's merge_and_unload(): one fp32 add of r(W) + ΔW, then one rounding",
  'peft-safe': 'PEFT safe_merge on GPU: r(r(W) + r(ΔW))',
  'fp32-cast': 'most accurate: r(fp32(W) + ΔW)',
};
const METHOD_DETAILS: Record<DecomposeMethod, string> = {
  nnls: 'non-negative least squares',
  omp: 'orthogonal matching pursuit: sparse support',
  lasso: 'L1-regularised, non-negative',
};
const choices = <T extends string>(values: readonly T[], details: Record<T, string>): Array<{ value: T; detail: string }> =>
  values.map((value) => ({ value, detail: details[value] }));
const DTYPES = choices<CliDtype>(['bf16', 'fp16', 'fp32'], DTYPE_DETAILS);
const RULES = choices(MERGE_RULES, RULE_DETAILS);
const METHODS = choices(DECOMPOSE_METHODS, METHOD_DETAILS);

/** `selection`: every resource selected in the Explorer when the command came from its context menu. */
type Handler = (arg?: vscode.Uri | TreeNode, selection?: vscode.Uri[]) => Promise<void>;

/** Everything a command needs. */
export interface CommandDeps {
  context: vscode.ExtensionContext;
  runner: JobRunner;
  census: CensusView;
  censusTree: vscode.TreeView<TreeNode>;
  scanner: WorkspaceScanner;
  pickers: Pickers;
  output: vscode.LogOutputChannel;
}

/** Rank presets offered by Estimate, the usual first. */
const RANKS = [
  { value: '8', detail: 'the usual start (PEFT examples, most LoRA recipes)' },
  { value: '16', detail: 'more capacity, twice the parameters of r = 8' },
  { value: '4', detail: 'small: style or narrow tasks' },
  { value: '32', detail: 'large' },
  { value: '64', detail: 'very large; consider full fine-tuning of a few layers instead' },
  { value: 'custom', label: '$(edit) Another rank…' },
];

/** A whole validate run at its three default dtypes writes, per base element: merged fp32 + fp16 + bf16, and three fp32 task vectors. */
const VALIDATE_KEEP_BYTES_PER_PARAM = 4 + 2 + 2 + 3 * 4;
/** Without --keep-models, the largest dtype's files exist at once: the fp32 merge and its task vector. */
const VALIDATE_PEAK_BYTES_PER_PARAM = 4 + 4;

/** Free bytes on the disk that holds `p` (or its nearest existing parent); undefined when unknown. */
function freeBytes(p: string): number | undefined {
  let dir = p;
  while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/** workspaceState key of the open checkpoints (restored after a window reload). */
export const CENSUS_STATE = 'loraLens.census';

const cfg = (): vscode.WorkspaceConfiguration => vscode.workspace.getConfiguration('loraLens');
const name = (p: string): string => path.basename(p).replace(/\.(safetensors|bin|pt|pth)$/, '');
/** A checkpoint's name in a title; a standard weights file (`model.safetensors`) with its folder's. */
const weightsName = (p: string): string =>
  /^(model|adapter_model|pytorch_model|diffusion_pytorch_model)([.-]|$)/.test(name(p)) ? `${path.basename(path.dirname(p))}/${name(p)}` : name(p);

/** A tensor name short enough for a title: its last three parts. */
const shortTensor = (t: string): string => t.split('.').slice(-3).join('.');

/** The command ids with their handlers, registered by extension.ts (titles live in package.json). */
export function commandHandlers(d: CommandDeps): Record<string, Handler> {
  const { runner, census, pickers, scanner } = d;

  const uriPath = (arg: vscode.Uri | TreeNode | undefined): string | undefined =>
    arg instanceof vscode.Uri ? arg.fsPath : arg && 'checkpoint' in arg ? arg.checkpoint : undefined;
  // From the scan, or from the folder itself (a right-click before the first scan is done).
  const kindOf = (p: string): 'adapter' | 'model' | undefined =>
    scanner.folders.adapters.includes(p) ? 'adapter' : scanner.folders.models.includes(p) ? 'model' : folderKind(p, fs.existsSync);
  const isAdapter = (p: string | undefined): p is string => p !== undefined && kindOf(p) === 'adapter';
  const isModel = (p: string | undefined): p is string => p !== undefined && kindOf(p) === 'model';

  const adapterArg = async (arg: vscode.Uri | TreeNode | undefined): Promise<string | undefined> => {
    const p = uriPath(arg);
    if (isAdapter(p)) {
      pickers.skip();
      return p;
    }
    return pickers.path('adapter', 'LoRA adapter folder', ['adapter']);
  };
  const baseFor = async (adapter: string | undefined): Promise<string | undefined> => {
    let preferred: string | undefined;
    if (adapter) {
      try {
        const ac = JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
        preferred = guessBase(ac.base_model_name_or_path ?? ac.model, scanner.folders.models, hubCacheDir());
      } catch {
        // An unreadable config gets its clear error from the engine.
      }
    }
    return pickers.path('base', 'Base model folder', ['model'], { preferred });
  };

  const openInCensus = async (target: string, adapter?: string, opts: { quiet?: boolean } = {}): Promise<boolean> => {
    const r = await runner.run({ title: `Census of ${name(target)}`, request: { job: 'census', path: target, adapter }, quiet: opts.quiet });
    if (!r) return false;
    const node = census.add(target, r.report, adapter);
    if (opts.quiet) return true;
    await vscode.commands.executeCommand('loraLens.census.focus');
    await d.censusTree.reveal(node, { expand: true, select: false, focus: false }).then(undefined, () => undefined);
    return true;
  };

  /** A checkpoint's census report: the open one, else a census run in the status bar (header only, fast); undefined if none. */
  const censusOf = async (p: string): Promise<unknown> => {
    const open = census.reportOf(p);
    if (open !== undefined) return open;
    return (await runner.run({ title: `Reading ${name(p)}`, request: { job: 'census', path: p }, quiet: true }))?.report;
  };

  const report = (kind: ReportKind, r: JobResult, title: string, folder?: string): void =>
    showReportPanel(d.context, kind, r.report, title, { folder });

  /** What the user may do next with a job's output: the first action is the suggested next step. */
  const offerNext = async (message: string, out: string, next: Record<string, () => Promise<unknown>> = {}): Promise<void> => {
    const actions: Record<string, () => Promise<unknown>> = {
      ...next,
      'Open in Census': () => openInCensus(out),
      'Reveal in Explorer': async () => vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(out)),
    };
    const a = await vscode.window.showInformationMessage(message, ...Object.keys(actions));
    if (a) await actions[a]();
  };

  /**
   * Validate writes reports only unless asked: asks, with what keeping the models costs on disk and
   * what is free there; refuses what does not fit. Resolves to whether to keep, or undefined (cancelled).
   */
  const askKeepModels = async (base: string, out: string): Promise<boolean | undefined> => {
    const params = readCensusReport(await censusOf(base)).summary?.params ?? null;
    const free = freeBytes(out);
    const size = (perParam: number): string => (params === null ? 'an unknown amount' : `about ${formatBytes(params * perParam)}`);
    const freeText = free === undefined ? '' : ` (${formatBytes(free)} free)`;
    const keep = await pickers.choice('validateKeep', 'Keep the merged models and task vectors?', [
      { value: 'reports', label: 'Reports only', detail: `Checked, then removed: ${size(VALIDATE_PEAK_BYTES_PER_PARAM)} needed while it runs${freeText}.` },
      { value: 'keep', label: 'Keep the merged models and task vectors', detail: `Writes ${size(VALIDATE_KEEP_BYTES_PER_PARAM)} into ${vscode.workspace.asRelativePath(out)}${freeText}.` },
    ], 'reports');
    if (keep === undefined) return undefined;
    const need = params === null ? undefined : params * (keep === 'keep' ? VALIDATE_KEEP_BYTES_PER_PARAM : VALIDATE_PEAK_BYTES_PER_PARAM);
    if (need !== undefined && free !== undefined && need > free) {
      void vscode.window.showErrorMessage(`LoRA Lens: validating ${keep === 'keep' ? 'and keeping the models ' : ''}needs about ${formatBytes(need)} on the disk of ${out}, and only ${formatBytes(free)} are free.`);
      return undefined;
    }
    return keep === 'keep';
  };

  /** Compare: the adapter against a merged or fine-tuned model (or a task vector file); `given` skips questions. */
  const compare = async (adapter: string, base: string, other: string): Promise<void> => {
    const out = await pickers.output('Comparison folder', name(adapter), 'compare', adapter);
    if (!out) return;
    const isFile = fs.statSync(other).isFile();
    const against = isFile ? { taskVector: other } : { finetuned: other };
    const request = { job: 'compare', base, adapter, ...against, out, tolerance: cfg().get('tolerance', DEFAULT_TOLERANCE) } as const;
    const r = await runner.run({ title: `Comparing ${name(adapter)} with ${name(other)}`, request, outputs: [out] });
    if (!r) return;
    report('compare', r, `Adapter ${name(adapter)} vs ${isFile ? 'task vector' : 'merged/fine-tuned model'} ${name(other)}`);
    // The base's tree shows the numbers on the tensors the adapter targets, so those must be marked:
    // a census of the base with this adapter (header only, instant) unless it is already open so.
    if (census.adapterOf(base) === adapter || (await openInCensus(base, adapter))) census.attachComparison(base, r.report);
  };

  const merge = async (adapter: string, base: string, dtype: CliDtype, rule: MergeRule | undefined): Promise<void> => {
    const out = await pickers.output('Merged model folder', name(adapter), `merged-${dtype}`, adapter);
    if (!out) return;
    const request = { job: 'merge', base, adapter, out, dtype, rule } as const;
    const r = await runner.run({ title: `Merging ${name(adapter)} into ${name(base)} (${dtype})`, request, outputs: [out] });
    if (!r) return;
    await offerNext(`Merged ${name(adapter)} into ${out}`, out, {
      'Validate This Merge': async () => {
        pickers.steps(1);
        await compare(adapter, base, out);
      },
    });
  };

  return {
    ...lowRankHandlers({ ...d, name, uriPath, isModel, isAdapter, openInCensus: (p) => openInCensus(p) }),

    'loraLens.openInCensus': async (arg) => {
      const target =
        uriPath(arg) ?? (await pickers.path('census', 'Checkpoint to open in the Parameter Census', ['model', 'adapter'], { files: true }));
      if (target) await openInCensus(target);
    },

    'loraLens.markLoraTargets': async (arg) => {
      const target = uriPath(arg) ?? (await pickers.path('census', 'Model checkpoint', ['model'], { files: true }));
      if (!target) return;
      const adapter = await pickers.path('adapter', 'Adapter whose LoRA targets to mark', ['adapter']);
      if (adapter) await openInCensus(target, adapter);
    },

    'loraLens.merge': async (arg) => {
      pickers.steps(5);
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const dtype = await pickers.choice('dtype', 'Merged dtype', DTYPES, cfg().get<CliDtype>('defaultDtype', 'bf16'));
      if (!dtype) return;
      if (dtype === 'fp32') pickers.skip();
      const rule = dtype === 'fp32' ? undefined : await pickers.choice('rule', `Rounding rule for ${dtype}`, RULES, cfg().get<MergeRule>('defaultRule', DEFAULT_RULE));
      if (dtype !== 'fp32' && !rule) return;
      await merge(adapter, base, dtype, rule);
    },

    'loraLens.extract': async (arg) => {
      const p = uriPath(arg);
      const pair = await pickers.modelPair(3, isModel(p) ? { path: p, name: name(p) } : undefined);
      if (!pair) return;
      const { base, finetuned } = pair;
      const out = await pickers.output('Task vector file', name(finetuned), 'task-vector', finetuned, '.safetensors');
      if (!out) return;
      const r = await runner.run({
        title: `Extracting the task vector of ${name(finetuned)}`,
        request: { job: 'extract', base, finetuned, out },
        outputs: [out],
      });
      if (!r) return;
      const s = readExtractReport(r.report).summary;
      await offerNext(`Task vector written to ${out}: ${s?.nonzeroTensors ?? '?'} non-zero tensors, ${s?.zeroTensors ?? '?'} zero.`, out);
    },

    'loraLens.compare': async (arg) => {
      pickers.steps(4);
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const other = await pickers.path('finetuned', 'Merged or fine-tuned model folder, or a task vector file', ['model'], { files: true });
      if (!other) return;
      await compare(adapter, base, other);
    },

    'loraLens.validate': async (arg) => {
      pickers.steps(4);
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const out = await pickers.output('Validation folder', name(adapter), 'validate', adapter);
      if (!out) return;
      const keep = await askKeepModels(base, out);
      if (keep === undefined) return;
      const request = { job: 'validate', base, adapter, out, rule: cfg().get<MergeRule>('defaultRule', DEFAULT_RULE), tolerance: cfg().get('tolerance', DEFAULT_TOLERANCE), keepModels: keep } as const;
      const r = await runner.run({ title: `Validating ${name(adapter)} on ${name(base)}`, request, outputs: [out] });
      if (r) report('validate', r, `Validation: ${name(adapter)} on ${name(base)}`, out);
    },

    'loraLens.precision': async (arg) => {
      pickers.steps(2);
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const r = await runner.run({ title: `Analyzing merge precision of ${name(adapter)}`, request: { job: 'precision', base, adapter } });
      if (!r) return;
      report('precision', r, `Precision: ${name(adapter)} on ${name(base)}`);
      // A lossy half-precision merge: offer the lossless one.
      const lost = Object.entries(readPrecisionReport(r.report).dtypes).map(([k, v]) => [k, v.deltaLostFraction ?? 0] as const);
      const worst = lost.filter(([, f]) => f >= LOSSY_FRACTION);
      if (worst.length === 0) return;
      const text = worst.map(([k, f]) => `${k} ${(100 * f).toPrecision(2)}%`).join(', ');
      const a = await vscode.window.showWarningMessage(`Merging ${name(adapter)} at half precision loses part of its delta (${text} of the non-zero elements).`, 'Merge at fp32 Instead');
      if (a) {
        pickers.steps(1);
        await merge(adapter, base, 'fp32', undefined);
      }
    },

    'loraLens.mask': async (arg) => {
      pickers.steps(4);
      const p = uriPath(arg);
      if (isModel(p)) pickers.skip();
      const base = isModel(p) ? p : await pickers.path('base', 'Base model folder', ['model']);
      if (!base) return;
      const adapters = await pickers.adapters('dictionary', 'Adapters of the dictionary (pick every one)');
      if (!adapters) return;
      const budget = await pickers.number('budget', 'Parameter budget of the mask (kept elements in all)', 100_000);
      if (budget === undefined) return;
      const out = await pickers.output('Mask folder', name(base), 'unmerge-mask', base);
      if (!out) return;
      const request = { job: 'mask', base, adapters, budget, out } as const;
      const r = await runner.run({ title: `Building the UNMERGE mask of ${adapters.length} adapters`, request, outputs: [out] });
      if (!r) return;
      pickers.remember('mask', out);
      report('mask', r, `UNMERGE mask: ${name(base)}`);
    },

    'loraLens.decompose': async (arg) => {
      pickers.steps(5);
      const p = uriPath(arg);
      if (isModel(p)) pickers.skip();
      const target = isModel(p) ? p : await pickers.path('target', 'Merged model to decompose', ['model']);
      if (!target) return;
      const base = await pickers.path('base', 'Base model folder', ['model']);
      if (!base) return;
      const mask = await pickers.path('mask', 'UNMERGE mask folder (from Build UNMERGE Mask…)', []);
      if (!mask) return;
      const dictionary = await pickers.adapters('dictionary', 'Adapters of the dictionary');
      if (!dictionary) return;
      const method = await pickers.choice('method', 'Decomposition method', METHODS, 'nnls');
      if (!method) return;
      const r = await runner.run({ title: `Decomposing ${name(target)}`, request: { job: 'decompose', mask, base, dictionary, target, method } });
      if (r) report('decompose', r, `Decomposition: ${name(target)}`);
    },

    'loraLens.convert': async (arg) => {
      const p = uriPath(arg);
      const input = p ?? (await pickers.path('convert', 'PyTorch checkpoint to convert (a .bin / .pt file, or a model or adapter folder)', ['model', 'adapter'], { files: true }));
      if (!input) return;
      const single = fs.statSync(input).isFile();
      const out = await pickers.output(single ? 'Safetensors file' : 'Converted folder', name(input), 'safetensors', input, single ? '.safetensors' : '');
      if (!out) return;
      const r = await runner.run({ title: `Converting ${name(input)} to safetensors`, request: { job: 'convert', in: input, out }, outputs: [out] });
      if (r) await offerNext(`Converted ${name(input)}: ${readConvertReport(r.report).tensors ?? '?'} tensors written to ${out}, bit for bit.`, out);
    },

    'loraLens.convertAdapter': async (arg) => {
      pickers.steps(3);
      const p = uriPath(arg);
      if (p) pickers.skip();
      const input = p ?? (await pickers.path('convertAdapter', 'Adapter to convert to PEFT (an mlx-lm, AdaLoRA, VeRA or old MergedLinear folder, or a kohya / LyCORIS / diffusers file)', ['adapter'], { files: true }));
      if (!input) return;
      // kohya names and VeRA slices resolve against the base; for the others it checks that every module fits.
      const base = await baseFor(fs.statSync(input).isDirectory() ? input : undefined);
      if (!base) return;
      const out = await pickers.output('PEFT adapter folder', name(input), 'peft', input);
      if (!out) return;
      const r = await runner.run({ title: `Converting ${name(input)} to a PEFT adapter`, request: { job: 'convert', in: input, out, base }, outputs: [out] });
      if (!r) return;
      const c = readConvertReport(r.report);
      await offerNext(c.peftType !== null ? `Converted ${name(input)}: a PEFT ${c.peftType} adapter of ${c.modules ?? '?'} modules in ${out}, with the same fp32 merge.` : `Converted ${name(input)} to ${out}.`, out);
    },

    'loraLens.estimate': async (arg) => {
      const p = uriPath(arg);
      const adapterGiven = isAdapter(p) ? p : undefined;
      pickers.steps(adapterGiven ? 1 : 3);
      if (isModel(p)) pickers.skip();
      const model = isModel(p) ? p : adapterGiven ? await baseFor(adapterGiven) : await pickers.path('base', 'Model folder', ['model']);
      if (!model) return;
      let options: { adapter: string } | { r: number; target: string[] };
      if (adapterGiven) options = { adapter: adapterGiven };
      else {
        const modules = linearModules(await censusOf(model));
        if (modules.length === 0) {
          void vscode.window.showErrorMessage(`LoRA Lens: ${name(model)} has no 2-D weights inside its layers for LoRA to target.`);
          return;
        }
        const targets = await pickers.many(
          `targets:${name(model)}`,
          `Modules of ${name(model)} to adapt`,
          modules.map((m) => ({ value: m.target, label: m.target, description: `${m.category} · ${m.shapes} · ${formatInt(m.layers)} layers`, picked: m.category === 'attention' })),
        );
        if (!targets) return;
        const preset = await pickers.choice('rankPreset', 'LoRA rank r', RANKS, '8');
        if (!preset) return;
        const r = preset === 'custom' ? await pickers.number('rank', 'LoRA rank r', 8) : Number(preset);
        if (r === undefined) return;
        options = { r, target: [targets.join(',')] };
      }
      const r = await runner.run({ title: `Estimating LoRA parameters on ${name(model)}`, request: { job: 'estimate', path: model, ...options } });
      if (!r) return;
      const e = readEstimateReport(r.report);
      if (r.text) d.output.info(r.text);
      if (!e.trainableParams) {
        void vscode.window.showErrorMessage(`LoRA Lens: 0 trainable parameters: ${e.warnings[0] ?? 'the targets match no module of the model'}.`, 'Show Log').then((a) => a && d.output.show());
        return;
      }
      void vscode.window
        .showInformationMessage(
          `LoRA trainable parameters: ${e.trainableParams.toLocaleString('en-US')} (${e.percent?.toPrecision(3) ?? '?'}% of ${e.baseParams?.toLocaleString('en-US') ?? '?'})`,
          'Show Details',
        )
        .then((a) => a && d.output.show());
    },

    'loraLens.removeCheckpoint': async (arg) => {
      const p = uriPath(arg);
      if (p) census.remove(p);
    },

    'loraLens.clearCensus': async () => census.clear(),

    /** Reopens the checkpoints of the last session (paths kept per workspace), quietly, in the status bar. */
    'loraLens.restoreCensus': async () => {
      for (const c of d.context.workspaceState.get<Array<{ path: string; adapter?: string }>>(CENSUS_STATE, [])) {
        if (fs.existsSync(c.path) && (c.adapter === undefined || fs.existsSync(c.adapter))) await openInCensus(c.path, c.adapter, { quiet: true });
      }
    },

    'loraLens.copyTensorName': async (arg) => {
      if (arg && !(arg instanceof vscode.Uri) && arg.tensor) await vscode.env.clipboard.writeText(arg.tensor);
    },

    /**
     * A tensor's statistics, histogram and heat map: its values, or a ΔW — the adapter the census marks
     * on this model, the module of an adapter's factor (on a base), or this model minus a base.
     */
    'loraLens.tensorStats': async (arg) => {
      if (!arg || arg instanceof vscode.Uri || arg.tensor === undefined) return;
      const { checkpoint, tensor } = arg;
      const opened = census.reportOf(checkpoint);
      const adapter = census.adapterOf(checkpoint);
      const entry = opened === undefined ? undefined : censusTensors(opened).find((t) => t.name === tensor);
      const isFactor = (opened !== undefined && readCensusReport(opened).kind === 'adapter') || entry?.loraFactor === true;
      const sources: Array<Choice & { value: 'values' | 'adapter' | 'module' | 'difference' }> = [
        { value: 'values', label: 'Its values', detail: `${tensor} as stored in ${name(checkpoint)}` },
        ...(adapter !== undefined && entry?.loraTarget ? [{ value: 'adapter' as const, label: `ΔW of ${name(adapter)}`, detail: 'the delta the adapter adds to this weight' }] : []),
        ...(isFactor
          ? [{ value: 'module' as const, label: 'ΔW of its module…', detail: "the delta this adapter adds to its base's weight (pick the base)" }]
          : [{ value: 'difference' as const, label: 'Minus a base model…', detail: 'this model minus a base: what fine-tuning changed (pick the base)' }]),
      ];
      pickers.steps(2);
      const source = await pickers.choice('statsSource', `Statistics of ${shortTensor(tensor)}`, sources, 'values');
      if (!source) return;
      let request: JobRequest<'stats'>;
      if (source === 'values') request = { job: 'stats', model: checkpoint, tensor };
      else if (source === 'adapter') request = { job: 'stats', adapter: adapter!, base: checkpoint, tensor };
      else {
        const base = source === 'module' ? await baseFor(checkpoint) : await pickers.path('base', 'Base model folder', ['model']);
        if (!base) return;
        request = source === 'module' ? { job: 'stats', adapter: checkpoint, base, tensor } : { job: 'stats', model: checkpoint, base, tensor };
      }
      const r = await runner.run({ title: `Statistics of ${shortTensor(tensor)}`, request });
      if (!r) return;
      const what = source === 'values' ? weightsName(checkpoint) : source === 'difference' ? `${weightsName(checkpoint)} − base` : `ΔW of ${weightsName(request.adapter!)}`;
      report('stats', r, `Statistics: ${readStatsReport(r.report).tensor ?? tensor} (${what})`);
    },

    'loraLens.showCensusPanel': async (arg) => {
      const p = uriPath(arg) ?? census.paths[0];
      if (p === undefined) return;
      if (census.reportOf(p) === undefined && !(await openInCensus(p))) return;
      const report = census.reportOf(p);
      if (report !== undefined) showReportPanel(d.context, 'census', report, `Census: ${name(p)}`);
    },

    'loraLens.revealCheckpoint': async (arg) => {
      const p = uriPath(arg);
      if (p) await vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(p));
    },

    'loraLens.showLog': async () => d.output.show(),

    'loraLens.openWalkthrough': async () => {
      await vscode.commands.executeCommand('workbench.action.openWalkthrough', `${d.context.extension.id}#gettingStarted`, false);
    },

    'loraLens.tryDemo': async () => {
      const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
      if (!ws) {
        void vscode.window.showErrorMessage('LoRA Lens: open a folder first; the demo writes its checkpoints into it.');
        return;
      }
      const root = path.join(ws, 'lora-lens-demo');
      const ok = await runDemo(d, root);
      if (!ok) return;
      await scanner.scan();
      await openInCensus(path.join(root, 'base'), path.join(root, 'adapter'));
      void vscode.window.showInformationMessage(
        `The demo wrote a StarCoder2-shaped model, an adapter and a dictionary of adapters into ${vscode.workspace.asRelativePath(root)}. Right-click its folders in the Explorer for the actions, or follow the walkthrough.`,
        'Open Walkthrough',
      ).then((a) => a && vscode.commands.executeCommand('loraLens.openWalkthrough'));
    },
  };
}

/** A model's linear modules inside its layers, from its census, as estimate --target names. */
interface LinearModule {
  /** `q_proj`; or the in-layer path (`attn.c_proj`, `mlp.c_proj`) where the last name is shared. */
  target: string;
  category: string;
  shapes: string;
  layers: number;
}

function linearModules(report: unknown): LinearModule[] {
  if (report === undefined) return [];
  const byPath = new Map<string, { category: string; shapes: Set<string>; layers: Set<number> }>();
  for (const t of censusTensors(report)) {
    if (t.layer === null || t.shape.length !== 2 || !t.name.endsWith('.weight')) continue;
    const inLayer = shortName(t).replace(/\.weight$/, '');
    const m = byPath.get(inLayer) ?? { category: t.category, shapes: new Set<string>(), layers: new Set<number>() };
    m.shapes.add(t.shape.join('×'));
    m.layers.add(t.layer);
    byPath.set(inLayer, m);
  }
  const lastName = (p: string): string => p.slice(p.lastIndexOf('.') + 1);
  const count = new Map<string, number>();
  for (const p of byPath.keys()) count.set(lastName(p), (count.get(lastName(p)) ?? 0) + 1);
  return [...byPath]
    .map(([p, m]) => ({ target: count.get(lastName(p)) === 1 ? lastName(p) : p, category: m.category, shapes: [...m.shapes].join(', '), layers: m.layers.size }))
    .sort((a, b) => a.category.localeCompare(b.category) || a.target.localeCompare(b.target));
}

/** Runs `lora-lens demo --out root` (the CLI bundled with the extension) under a cancellable notification. */
function runDemo(d: CommandDeps, root: string): Promise<boolean> {
  const cli = vscode.Uri.joinPath(d.context.extensionUri, 'dist', 'cli.js').fsPath;
  return Promise.resolve(
    vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'LoRA Lens: writing the demo checkpoints', cancellable: true }, (_p, token) =>
      new Promise<boolean>((resolve) => {
        d.output.info(`demo: lora-lens demo --out ${root}`);
        const child = fork(cli, ['demo', '--out', root], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
        const log = (b: Buffer): void => b.toString().split('\n').filter((l) => l.trim() !== '').forEach((l) => d.output.info(`demo: ${l}`));
        child.stdout?.on('data', log);
        child.stderr?.on('data', log);
        token.onCancellationRequested(() => child.kill());
        child.on('exit', (code) => {
          if (code !== 0 && !token.isCancellationRequested) {
            void vscode.window.showErrorMessage(`LoRA Lens: the demo failed (exit ${code}).`, 'Show Log').then((a) => a && d.output.show());
          }
          resolve(code === 0);
        });
      }),
    ),
  );
}
