/**
 * Every job, declared once: its summary and usage (the CLI's help), its options (the CLI's flags and the
 * fields of its typed request), and its report. The CLI parses argv into a `JobRequest`, the extension
 * builds one directly; the engine runs either with `runJob` (src/engine/run).
 */
import { CLI_DTYPES, CliDtype } from '../safetensors/dtypes';
import { DECOMPOSE_DEFAULTS, DECOMPOSE_METHODS, DEFAULT_TOLERANCE, MERGE_RULES } from './choices';
import { JobDeclaration, RequestOf, ResolvedOf } from './options';
import { CensusReport } from './reports/census';
import { CompareReport } from './reports/compare';
import { CompressReport } from './reports/compress';
import { AdapterConvertReport, ConvertReport } from './reports/convert';
import { DecomposeReport } from './reports/decompose';
import { EstimateReport } from './reports/estimate';
import { ExtractReport } from './reports/extract';
import { CombineReport, ExtractLoraReport, ResizeReport, SpectrumReport } from './reports/lowrank';
import { MaskJson } from './reports/mask';
import { MergeReport } from './reports/merge';
import { PrecisionReport } from './reports/precision';
import { StatsReport } from './reports/stats';
import { ValidateReport } from './reports/validate';

const DTYPE_NAMES = Object.keys(CLI_DTYPES) as CliDtype[];

/** In the order `lora-lens --help` lists them. */
export const JOBS = {
  census: {
    summary: 'tensors of a checkpoint (or a config.json), classified, with LoRA targets; headers only',
    usage: 'census PATH [--adapter DIR] [--target a,b,...] [--json F]',
    positional: 'path',
    options: { adapter: { kind: 'string' }, target: { kind: 'list' } },
  },
  estimate: {
    summary: 'exact LoRA trainable parameters from the real shapes of a model (folder or config.json)',
    usage: 'estimate MODEL_DIR_OR_CONFIG (--adapter DIR | --r N --target a,b,... [--alpha A]) [--json F]',
    positional: 'path',
    options: { adapter: { kind: 'string' }, r: { kind: 'number' }, alpha: { kind: 'number' }, target: { kind: 'list' } },
  },
  merge: {
    summary: 'merge an adapter into its base: a Hugging Face model folder at fp32, fp16 or bf16',
    usage: 'merge --base DIR --adapter DIR --out DIR --dtype fp32|fp16|bf16 [--rule peft|peft-safe|fp32-cast] [--shard-size BYTES]',
    options: {
      base: { kind: 'string', required: true },
      adapter: { kind: 'string', required: true },
      out: { kind: 'string', required: true },
      dtype: { kind: 'string', choices: DTYPE_NAMES, required: true },
      rule: { kind: 'string', choices: MERGE_RULES, default: 'peft' },
      shardSize: { kind: 'number' },
    },
  },
  extract: {
    summary: 'task vector = finetuned - base (fp32), as one safetensors file',
    usage: 'extract --base DIR --finetuned DIR --out FILE.safetensors [--json F]',
    options: { base: { kind: 'string', required: true }, finetuned: { kind: 'string', required: true }, out: { kind: 'string', required: true } },
  },
  compare: {
    summary: "compare an adapter's deltas with a task vector (a file, or a finetuned model)",
    usage: 'compare --base DIR --adapter DIR (--finetuned DIR | --task-vector FILE) --out DIR [--tolerance T] [--save-deltas]',
    options: {
      base: { kind: 'string', required: true },
      adapter: { kind: 'string', required: true },
      finetuned: { kind: 'string' },
      taskVector: { kind: 'string' },
      out: { kind: 'string', required: true },
      tolerance: { kind: 'number', default: DEFAULT_TOLERANCE },
      saveDeltas: { kind: 'bool' },
    },
  },
  precision: {
    summary: 'what merging at fp16 / bf16 loses, per rule, without writing a model',
    usage: 'precision --base DIR --adapter DIR [--dtypes fp16,bf16] [--rule peft|peft-safe|fp32-cast] [--json F]',
    options: {
      base: { kind: 'string', required: true },
      adapter: { kind: 'string', required: true },
      dtypes: { kind: 'list' },
      rule: { kind: 'string', choices: MERGE_RULES },
    },
  },
  validate: {
    summary: 'merge, extract, compare and precision for each dtype in one go, with a verdict',
    usage: 'validate --base DIR --adapter DIR --out DIR [--dtypes fp32,fp16,bf16] [--rule R] [--tolerance T] [--keep-models]',
    options: {
      base: { kind: 'string', required: true },
      adapter: { kind: 'string', required: true },
      out: { kind: 'string', required: true },
      dtypes: { kind: 'list' },
      rule: { kind: 'string', choices: MERGE_RULES, default: 'peft' },
      tolerance: { kind: 'number', default: DEFAULT_TOLERANCE },
      keepModels: { kind: 'bool' },
    },
  },
  mask: {
    summary: 'UNMERGE: unified top-k mask of the modules a dictionary of adapters targets',
    usage: 'mask --base DIR --adapters DIR... --budget N --out DIR',
    options: {
      base: { kind: 'string', required: true },
      adapters: { kind: 'list', required: true },
      budget: { kind: 'number', required: true },
      out: { kind: 'string', required: true },
    },
  },
  compress: {
    summary: 'UNMERGE: apply a mask to task vectors (adapters, or fine-tuned models minus the base)',
    usage: 'compress --mask DIR --base DIR (--adapter DIR | --finetuned DIR)... --out DIR',
    options: {
      mask: { kind: 'string', required: true },
      base: { kind: 'string', required: true },
      adapter: { kind: 'list' },
      finetuned: { kind: 'list' },
      out: { kind: 'string', required: true },
    },
    tagged: { field: 'inputs', flags: ['adapter', 'finetuned'] },
  },
  decompose: {
    summary: 'UNMERGE: which dictionary adapters make up a target model or adapter, with what coefficients',
    usage:
      'decompose --mask DIR --base DIR --dictionary DIR... --target DIR [--method nnls|omp|lasso] [--truth FILE.json] ' +
      '[--tol 1e-6] [--support-threshold 1e-3] [--min-t 5] [--lambda 0.001] [--positive] [--max-residual 0.1] [--json F]',
    options: {
      mask: { kind: 'string', required: true },
      base: { kind: 'string', required: true },
      dictionary: { kind: 'list', required: true },
      target: { kind: 'string', required: true },
      method: { kind: 'string', choices: DECOMPOSE_METHODS, default: 'nnls' },
      truth: { kind: 'string' },
      tol: { kind: 'number', default: DECOMPOSE_DEFAULTS.tol },
      supportThreshold: { kind: 'number', default: DECOMPOSE_DEFAULTS.supportThreshold },
      minT: { kind: 'number', default: DECOMPOSE_DEFAULTS.minT },
      lambda: { kind: 'number', default: DECOMPOSE_DEFAULTS.lambda },
      positive: { kind: 'bool' },
      maxResidual: { kind: 'number', default: DECOMPOSE_DEFAULTS.maxResidual },
    },
  },
  convert: {
    summary: 'a PyTorch pickle checkpoint (.bin, .pt, .pth; a model or adapter folder) -> safetensors, bit for bit; an mlx-lm, AdaLoRA, VeRA or old-MergedLinear adapter, or a kohya / LyCORIS / diffusers LoRA file -> a PEFT adapter folder with the same fp32 merge',
    usage: 'convert --in PATH --out PATH [--base DIR]',
    options: { in: { kind: 'string', required: true }, out: { kind: 'string', required: true }, base: { kind: 'string' } },
  },
  spectrum: {
    summary:
      "singular values of every module's delta, exactly and without expanding it (LoRA from the r×r core, LoHa as a Khatri–Rao product, LoKr from its factors), and the rank it uses; " +
      'any adapter the engine reads: a PEFT or mlx-lm folder, or a kohya / LyCORIS / diffusers file',
    usage: 'spectrum --adapter DIR [--json F]',
    options: { adapter: { kind: 'string', required: true } },
  },
  resize: {
    summary:
      "an adapter whose every delta is the best rank-R (or smallest rank keeping energy E) approximation of the original's: from a PEFT or mlx-lm folder a PEFT LoRA folder " +
      '(per-module ranks through rank_pattern / alpha_pattern); from a kohya / LyCORIS / diffusers file (LoRA, LoCon, LoHa, LoKr, full diff) one LoRA file of the same name and naming in DIR, ' +
      'per-module rank and alpha = rank; --base gives the kernel of convolutions whose LoHa / LoKr factors flatten it, so they are written conv-shaped',
    usage: 'resize --adapter DIR --out DIR (--rank R | --energy E) [--base DIR] [--json F]',
    options: { adapter: { kind: 'string', required: true }, out: { kind: 'string', required: true }, rank: { kind: 'number' }, energy: { kind: 'number' }, base: { kind: 'string' } },
  },
  'extract-lora': {
    summary: "a PEFT LoRA adapter from the difference of two models: truncated SVD of each changed 2-D linear weight's task vector",
    usage: 'extract-lora --base DIR --finetuned DIR --out DIR (--rank R | --energy E) [--oversample P] [--power-iterations Q] [--json F]',
    options: {
      base: { kind: 'string', required: true },
      finetuned: { kind: 'string', required: true },
      out: { kind: 'string', required: true },
      rank: { kind: 'number' },
      energy: { kind: 'number' },
      oversample: { kind: 'number' },
      powerIterations: { kind: 'number' },
    },
  },
  combine: {
    summary: 'one PEFT adapter whose delta is Σ wᵢ·ΔWᵢ: exact (factors concatenated, rank Σrᵢ), or its best rank-R approximation',
    usage: 'combine --adapters DIR… [--weights w,…] --out DIR [--rank R] [--json F]',
    options: { adapters: { kind: 'list', required: true }, weights: { kind: 'string' }, out: { kind: 'string', required: true }, rank: { kind: 'number' } },
  },
  stats: {
    summary: "one tensor's min, max, mean, std, NaN/Inf counts, histogram and |x| heat map: its values, fine-tuned minus base, or an adapter's ΔW",
    usage: 'stats (--model PATH [--base PATH] | --adapter DIR --base DIR) --tensor NAME [--bins N] [--grid N] [--json F]',
    options: {
      model: { kind: 'string' },
      base: { kind: 'string' },
      adapter: { kind: 'string' },
      tensor: { kind: 'string', required: true },
      bins: { kind: 'number' },
      grid: { kind: 'number' },
    },
  },
} as const satisfies Record<string, JobDeclaration>;

export type JobName = keyof typeof JOBS;
export const JOB_NAMES = Object.keys(JOBS) as JobName[];

/** What each job answers with (its --json). */
export interface JobReports {
  census: CensusReport;
  estimate: EstimateReport;
  merge: MergeReport;
  extract: ExtractReport;
  compare: CompareReport;
  precision: PrecisionReport;
  validate: ValidateReport;
  mask: MaskJson;
  compress: CompressReport;
  decompose: DecomposeReport;
  convert: ConvertReport | AdapterConvertReport;
  spectrum: SpectrumReport;
  resize: ResizeReport;
  'extract-lora': ExtractLoraReport;
  combine: CombineReport;
  stats: StatsReport;
}
export type JobReport<K extends JobName = JobName> = JobReports[K];

/** A request to run one job: `{ job: 'merge', base, adapter, out, dtype }`. */
export type JobRequest<K extends JobName = JobName> = { [N in K]: { job: N } & RequestOf<(typeof JOBS)[N]> }[K];
/** A request as the job receives it: checked, defaults applied. */
export type ResolvedRequest<K extends JobName = JobName> = { [N in K]: { job: N } & ResolvedOf<(typeof JOBS)[N]> }[K];

export function isJobName(s: unknown): s is JobName {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(JOBS, s);
}
