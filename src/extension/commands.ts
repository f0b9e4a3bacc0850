import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { CensusView } from './census/censusView';
import { TreeNode } from './census/treeModel';
import { DECOMPOSE_METHODS, DecomposeMethod, DEFAULT_RULE, DEFAULT_TOLERANCE, MERGE_RULES, MergeRule } from '../shared/jobs/choices';
import { CliDtype } from '../shared/safetensors/dtypes';
import { JobResult } from './engine/engineProcess';
import { JobRunner } from './engine/jobRunner';
import { Pickers } from './pickers';
import { ReportKind, showReportPanel } from './panels';
import { guessBase } from './workspace/folders';
import { WorkspaceScanner } from './workspace/scanner';

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

type Handler = (arg?: vscode.Uri | TreeNode) => Promise<void>;

/** Everything a command needs. */
export interface CommandDeps {
  context: vscode.ExtensionContext;
  runner: JobRunner;
  census: CensusView;
  censusTree: vscode.TreeView<TreeNode>;
  scanner: WorkspaceScanner;
  pickers: Pickers;
  output: vscode.OutputChannel;
}

const cfg = (): vscode.WorkspaceConfiguration => vscode.workspace.getConfiguration('loraLens');
const name = (p: string): string => path.basename(p).replace(/\.(safetensors|bin|pt|pth)$/, '');

/** The command ids with their handlers, registered by extension.ts (titles live in package.json). */
export function commandHandlers(d: CommandDeps): Record<string, Handler> {
  const { runner, census, pickers, scanner } = d;

  const uriPath = (arg: vscode.Uri | TreeNode | undefined): string | undefined =>
    arg instanceof vscode.Uri ? arg.fsPath : arg && 'checkpoint' in arg ? arg.checkpoint : undefined;
  const isAdapter = (p: string | undefined): p is string => p !== undefined && scanner.folders.adapters.includes(p);
  const isModel = (p: string | undefined): p is string => p !== undefined && scanner.folders.models.includes(p);

  const adapterArg = async (arg: vscode.Uri | TreeNode | undefined): Promise<string | undefined> => {
    const p = uriPath(arg);
    return isAdapter(p) ? p : pickers.path('adapter', 'LoRA adapter folder', ['adapter']);
  };
  const baseFor = async (adapter: string | undefined): Promise<string | undefined> => {
    let preferred: string | undefined;
    if (adapter) {
      try {
        const ac = JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
        preferred = guessBase(ac.base_model_name_or_path, scanner.folders.models);
      } catch {
        // An unreadable config gets its clear error from the engine.
      }
    }
    return pickers.path('base', 'Base model folder', ['model'], { preferred });
  };

  const openInCensus = async (target: string, adapter?: string): Promise<boolean> => {
    const r = await runner.run({ title: `Census of ${name(target)}`, request: { job: 'census', path: target, adapter } });
    if (!r) return false;
    const node = census.add(target, r.report, adapter);
    await vscode.commands.executeCommand('loraLens.census.focus');
    await d.censusTree.reveal(node, { expand: true, select: false, focus: false }).then(undefined, () => undefined);
    return true;
  };

  const report = <K extends ReportKind>(kind: K, r: JobResult<K>, title: string, folder?: string): void => showReportPanel(d.context, kind, r.report, title, { folder });

  const offerCensus = async (message: string, out: string): Promise<void> => {
    const a = await vscode.window.showInformationMessage(message, 'Open in Census', 'Reveal in Explorer');
    if (a === 'Open in Census') await openInCensus(out);
    else if (a === 'Reveal in Explorer') await vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(out));
  };

  return {
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
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const dtype = await pickers.choice('dtype', 'Merged dtype', DTYPES, cfg().get<CliDtype>('defaultDtype', 'bf16'));
      if (!dtype) return;
      const rule = dtype === 'fp32' ? undefined : await pickers.choice('rule', `Rounding rule for ${dtype}`, RULES, cfg().get<MergeRule>('defaultRule', DEFAULT_RULE));
      if (dtype !== 'fp32' && !rule) return;
      const out = await pickers.output('Merged model folder', name(adapter), `merged-${dtype}`, adapter);
      if (!out) return;
      const request = { job: 'merge', base, adapter, out, dtype, rule } as const;
      const r = await runner.run({ title: `Merging ${name(adapter)} into ${name(base)} (${dtype})`, request, outputs: [out] });
      if (r) await offerCensus(`Merged ${name(adapter)} into ${out}`, out);
    },

    'loraLens.extract': async (arg) => {
      const p = uriPath(arg);
      const finetuned = isModel(p) ? p : await pickers.path('finetuned', 'Fine-tuned (or merged) model folder', ['model']);
      if (!finetuned) return;
      const base = await pickers.path('base', 'Base model folder', ['model']);
      if (!base) return;
      const out = await pickers.output('Task vector file', name(finetuned), 'task-vector', finetuned, '.safetensors');
      if (!out) return;
      const r = await runner.run({
        title: `Extracting the task vector of ${name(finetuned)}`,
        request: { job: 'extract', base, finetuned, out },
        outputs: [out],
      });
      if (!r) return;
      const s = r.report.summary;
      await offerCensus(`Task vector written to ${out}: ${s?.nonzeroTensors ?? '?'} non-zero tensors, ${s?.zeroTensors ?? '?'} zero.`, out);
    },

    'loraLens.compare': async (arg) => {
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const other = await pickers.path('finetuned', 'Fine-tuned model folder, or a task vector file', ['model'], { files: true });
      if (!other) return;
      const out = await pickers.output('Comparison folder', name(adapter), 'compare', adapter);
      if (!out) return;
      const against = fs.statSync(other).isFile() ? { taskVector: other } : { finetuned: other };
      const request = { job: 'compare', base, adapter, ...against, out, tolerance: cfg().get('tolerance', DEFAULT_TOLERANCE) } as const;
      const r = await runner.run({ title: `Comparing ${name(adapter)} with ${name(other)}`, request, outputs: [out] });
      if (!r) return;
      report('compare', r, `Equivalence: ${name(adapter)} vs ${name(other)}`);
      // The base's tree shows the numbers on the tensors the adapter targets, so those must be marked:
      // a census of the base with this adapter (header only, instant) unless it is already open so.
      if (census.adapterOf(base) === adapter || (await openInCensus(base, adapter))) census.attachComparison(base, r.report);
    },

    'loraLens.validate': async (arg) => {
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const out = await pickers.output('Validation folder', name(adapter), 'validate', adapter);
      if (!out) return;
      const request = { job: 'validate', base, adapter, out, rule: cfg().get<MergeRule>('defaultRule', DEFAULT_RULE), tolerance: cfg().get('tolerance', DEFAULT_TOLERANCE) } as const;
      const r = await runner.run({ title: `Validating ${name(adapter)} on ${name(base)}`, request, outputs: [out] });
      if (r) report('validate', r, `Validation: ${name(adapter)}`, out);
    },

    'loraLens.precision': async (arg) => {
      const adapter = await adapterArg(arg);
      if (!adapter) return;
      const base = await baseFor(adapter);
      if (!base) return;
      const r = await runner.run({ title: `Analyzing merge precision of ${name(adapter)}`, request: { job: 'precision', base, adapter } });
      if (r) report('precision', r, `Precision: ${name(adapter)}`);
    },

    'loraLens.mask': async (arg) => {
      const p = uriPath(arg);
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
      const p = uriPath(arg);
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
      if (r) await offerCensus(`Converted ${name(input)}: ${r.report.tensors ?? '?'} tensors written to ${out}, bit for bit.`, out);
    },

    'loraLens.estimate': async (arg) => {
      const p = uriPath(arg);
      const adapterGiven = isAdapter(p) ? p : undefined;
      const model = isModel(p) ? p : adapterGiven ? await baseFor(adapterGiven) : await pickers.path('base', 'Model folder (or its config.json)', ['model'], { files: false });
      if (!model) return;
      let options: { adapter: string } | { r: number; target: string[] };
      if (adapterGiven) options = { adapter: adapterGiven };
      else {
        const r = await pickers.number('rank', 'LoRA rank r', 8);
        if (r === undefined) return;
        const targets = await pickers.text('targets', 'Target modules (comma-separated)', 'q_proj,k_proj,v_proj,o_proj', (s) =>
          /^\s*[\w.]+(\s*,\s*[\w.]+)*\s*$/.test(s) ? undefined : 'module names separated by commas',
        );
        if (targets === undefined) return;
        options = { r, target: [targets.replace(/\s+/g, '')] };
      }
      const r = await runner.run({ title: `Estimating LoRA parameters on ${name(model)}`, request: { job: 'estimate', path: model, ...options } });
      if (!r) return;
      const e = r.report;
      if (r.text) d.output.appendLine(r.text);
      void vscode.window
        .showInformationMessage(
          `LoRA trainable parameters: ${e.trainableParams?.toLocaleString('en-US') ?? '?'} (${e.percent?.toPrecision(3) ?? '?'}% of ${e.baseParams?.toLocaleString('en-US') ?? '?'})`,
          'Show Details',
        )
        .then((a) => a && d.output.show());
    },

    'loraLens.removeCheckpoint': async (arg) => {
      const p = uriPath(arg);
      if (p) census.remove(p);
    },

    'loraLens.clearCensus': async () => census.clear(),

    'loraLens.copyTensorName': async (arg) => {
      if (arg && !(arg instanceof vscode.Uri) && arg.tensor) await vscode.env.clipboard.writeText(arg.tensor);
    },
  };
}
