/** The reports of the low-rank toolbox (spectrum, resize, combine, extract-lora), as the engine writes them. */
import { boolean, fields, listOf, number, Present, readReport, string } from './read';

export interface SpectrumModule {
  name: string;
  /** The module's delta rule: LoRA, LoRA (MLX), AdaLoRA, VeRA, LoCon (Tucker), LoHa, LoKr, full diff, DoRA… */
  rule: string;
  /** The rank of the module's factor form: the columns of its factors (LoHa r₁·r₂, LoKr p₁·p₂, a full diff min(out, in)). */
  rank: number;
  out: number;
  in: number;
  /** The module's scale s (alpha / r, or alpha / √r with rsLoRA; LyCORIS alpha / r; 1 for a full diff). */
  scale: number;
  layer: number | null;
  projection: string | null;
  /** Of ΔW (s·B@A for a LoRA), descending; min(rank, out, in) of them. */
  singularValues: number[];
  /** Smallest k whose top-k squared singular values hold ≥ 99% of ‖ΔW‖²_F (90%, 95% likewise). */
  energyRank99: number;
  energyRank90: number;
  energyRank95: number;
  /** Singular values above max(out, in)·ε·σ₁: the rank ΔW has in float64. */
  numericalRank: number;
  frobeniusNorm: number;
  spectralNorm: number;
  /** ‖ΔW‖²_F / σ₁². */
  stableRank: number;
  /** exp of the entropy of σᵢ / Σσ (Roy & Vetterli 2007). */
  effectiveRank: number;
  /** DoRA rescales W + ΔW per feature; the spectrum is the additive part's. */
  dora: boolean;
  /** The module's parameters in the adapter: a LoRA's rank·(out + in); LoHa's, LoKr's or a full diff's stored tensors. */
  params: number;
  /** A LyCORIS `diff_b` (a bias's full delta): resize copies it as it is. */
  biasDiff: boolean;
}

export interface SpectrumReport {
  adapter: string;
  modules: SpectrumModule[];
  /** Modules with no exact factor form here ((IA)³, full diffs too large for a dense SVD), and why: not in `modules`. */
  noFactorForm: { name: string; rule: string; reason: string }[];
  summary: {
    modules: number;
    /** Σ rank over modules, and Σ energyRank99: how much of the trained rank holds 99% of the energy. */
    totalRank: number;
    totalEnergyRank99: number;
    rankUsage99: number;
    meanEnergyRank99: number;
    maxEnergyRank99: number;
  };
  warnings: string[];
  seconds: number;
}

export interface ResizeModule {
  name: string;
  fromRank: number;
  /** The rank written. */
  rank: number;
  /** Σ_{i≤rank} σᵢ² / Σ σᵢ² of the original delta. */
  energyKept: number;
  /** ‖ΔW − ΔW'‖_F / ‖ΔW‖_F with ΔW' from the written fp32 factors. */
  relError: number;
  /** The Eckart–Young optimum √(Σ_{i>rank} σᵢ²) / ‖ΔW‖_F that relError is measured against. */
  optimalRelError: number;
}

export interface ResizeReport {
  adapter: string;
  out: string;
  rank: number | null;
  energy: number | null;
  modules: ResizeModule[];
  summary: {
    modules: number;
    /** LoRA parameters before and after. */
    fromParams: number;
    params: number;
    meanEnergyKept: number;
    maxRelError: number;
  };
  warnings: string[];
  seconds: number;
}

export interface CombineModule {
  name: string;
  /** The rank written. */
  rank: number;
  /** ‖Σ wᵢΔWᵢ − ΔW'‖_F / ‖Σ wᵢΔWᵢ‖_F with ΔW' from the written fp32 factors. */
  relError: number;
  /** Adapters that adapt this module. */
  sources: number;
  /** Written as the concatenated factors (no truncation). */
  exact: boolean;
  /** Σ_{i≤rank} σᵢ² / Σ σᵢ² of the sum (1 when exact). */
  energyKept: number;
}

export interface CombineReport {
  adapters: string[];
  weights: number[];
  out: string;
  rank: number | null;
  modules: CombineModule[];
  summary: { modules: number; params: number; maxRelError: number };
  warnings: string[];
  seconds: number;
}

/**
 * What storing the finetuned weights at half precision put into τ: every element was rounded once,
 * with an error modelled as uniform within ±½ ulp (variance ulp²/12).
 */
export interface RoundingNoise {
  dtype: 'F16' | 'BF16';
  /** Σ ulp(fᵢ)² / 12 over the tensor's elements. */
  energy: number;
  /** energy / ‖τ‖²_F: the share of the task vector's energy that is rounding noise. */
  fraction: number;
  /** The largest singular value of a random matrix of that noise, √(energy / mn)·(√m + √n): singular values below it are indistinguishable from rounding. */
  sigma: number;
  /** Estimated singular values above `sigma`. */
  signalRank: number;
}

export interface ExtractLoraModule {
  name: string;
  tensor: string;
  out: number;
  in: number;
  /** The rank written. */
  rank: number;
  /** Σ_{i≤rank} σᵢ² / ‖τ‖²_F with σᵢ from the randomized SVD (each a lower bound of the true one). */
  energyKept: number;
  /** ‖τ − B'A'‖_F / ‖τ‖_F measured against τ with the written fp32 factors. */
  relError: number;
  taskVectorNorm: number;
  /** The base stores the weight [in, out] (GPT-2 Conv1D); the adapter's delta is τᵀ. */
  transposed: boolean;
  /** Estimated top singular values of τ (rank + oversample of them). */
  singularValues: number[];
  roundingNoise: RoundingNoise | null;
}

export interface ExtractLoraReport {
  base: string;
  finetuned: string;
  out: string;
  rank: number | null;
  energy: number | null;
  oversample: number;
  powerIterations: number;
  modules: ExtractLoraModule[];
  /** Changed tensors that are not 2-D linear weights: listed, not factored. */
  notCaptured: { name: string; l2Norm: number; category: string; shape: number[] }[];
  /** 2-D linear weights equal in both models. */
  unchanged: number;
  summary: { modules: number; notCaptured: number; unchanged: number; params: number; meanEnergyKept: number; maxRelError: number };
  warnings: string[];
  seconds: number;
}

/*
 * The reports as their panels read them (read.ts). A module is placed by its name, as the engine
 * placed it (spectrum's layer and projection are the census classifier's on that name).
 */

export const SPECTRUM_REPORT = fields<SpectrumReport>()({
  adapter: string,
  modules: listOf(
    fields<SpectrumModule>()({
      name: string,
      rule: string,
      rank: number,
      out: number,
      in: number,
      singularValues: listOf(number),
      energyRank90: number,
      energyRank95: number,
      energyRank99: number,
      numericalRank: number,
      frobeniusNorm: number,
      spectralNorm: number,
      stableRank: number,
      effectiveRank: number,
      params: number,
      biasDiff: boolean,
    }),
  ),
  noFactorForm: listOf(fields<SpectrumReport['noFactorForm'][number]>()({ name: string, rule: string })),
  summary: fields<SpectrumReport['summary']>()({ modules: number, totalRank: number, totalEnergyRank99: number, rankUsage99: number, meanEnergyRank99: number, maxEnergyRank99: number }),
  warnings: listOf(string),
});
export type SpectrumView = Present<typeof SPECTRUM_REPORT>;

export function readSpectrumReport(x: unknown): SpectrumView {
  return readReport(SPECTRUM_REPORT, x);
}

export const RESIZE_REPORT = fields<ResizeReport>()({
  out: string,
  rank: number,
  energy: number,
  modules: listOf(fields<ResizeModule>()({ name: string, fromRank: number, rank: number, energyKept: number, relError: number, optimalRelError: number })),
  summary: fields<ResizeReport['summary']>()({ modules: number, fromParams: number, params: number, meanEnergyKept: number, maxRelError: number }),
  warnings: listOf(string),
});
export type ResizeView = Present<typeof RESIZE_REPORT>;

export function readResizeReport(x: unknown): ResizeView {
  return readReport(RESIZE_REPORT, x);
}

export const EXTRACT_LORA_REPORT = fields<ExtractLoraReport>()({
  rank: number,
  energy: number,
  modules: listOf(
    fields<ExtractLoraModule>()({
      name: string,
      rank: number,
      energyKept: number,
      relError: number,
      taskVectorNorm: number,
      roundingNoise: fields<RoundingNoise>()({ dtype: string, fraction: number, sigma: number, signalRank: number }),
    }),
  ),
  notCaptured: listOf(fields<ExtractLoraReport['notCaptured'][number]>()({ name: string, l2Norm: number, category: string, shape: listOf(number) })),
  summary: fields<ExtractLoraReport['summary']>()({ modules: number, notCaptured: number, unchanged: number, params: number, meanEnergyKept: number, maxRelError: number }),
  warnings: listOf(string),
});
export type ExtractLoraView = Present<typeof EXTRACT_LORA_REPORT>;

export function readExtractLoraReport(x: unknown): ExtractLoraView {
  return readReport(EXTRACT_LORA_REPORT, x);
}

export const COMBINE_REPORT = fields<CombineReport>()({
  adapters: listOf(string),
  // One weight per adapter, in its place.
  weights: listOf(number, { keepNull: true }),
  out: string,
  rank: number,
  modules: listOf(fields<CombineModule>()({ name: string, rank: number, relError: number, sources: number, exact: boolean, energyKept: number })),
  summary: fields<CombineReport['summary']>()({ modules: number, params: number, maxRelError: number }),
  warnings: listOf(string),
});
export type CombineView = Present<typeof COMBINE_REPORT>;

export function readCombineReport(x: unknown): CombineView {
  return readReport(COMBINE_REPORT, x);
}
