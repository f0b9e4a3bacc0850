/** The report of `census` (its --json), as the engine writes it and the extension's panels read it. */
import { Category, Stack } from '../../census/classify';
import { TrainingMetadata } from '../../safetensors/trainingMetadata';
import { fields, listOf, number, Present, readReport, recordOf, string } from './read';

export interface CensusTensor {
  name: string;
  dtype: string;
  shape: number[];
  numel: number;
  bytes: number;
  category: Category;
  layer: number | null;
  projection: string | null;
  /** LoRA adapts this tensor: a base tensor under the adapter (never an adapter's own factor). */
  loraTarget: boolean;
  /** One of an adapter's own tensors that form its deltas (lora_A / lora_B, LoHa / LoKr factors, IA³ vectors…), in the census of an adapter. */
  loraFactor?: true;
  /** The adapter replaces this tensor outright (modules_to_save, saved biases). */
  replaced: boolean;
  /** Encoder-decoder models: the stack of the layer (see TensorClass). */
  stack?: Stack;
  /** Image models: the pipeline component and the block (see TensorClass). */
  component?: string;
  block?: string | null;
}

export interface Totals {
  tensors: number;
  params: number;
}

export interface CensusAdapter {
  path: string;
  /** The adapter method (LORA, ADALORA, IA3, LOHA, LOKR, VERA; MLX for mlx-lm). */
  method: string;
  /** r and alpha as the config states them; null where it states none (MLX states `scale`, IA³ neither). */
  r: number | null;
  alpha: number | null;
  /** The scale the config states outright (mlx-lm); null where it follows from r and alpha. */
  scale: number | null;
  targets: string[] | string | null;
  useRslora: boolean;
  useDora: boolean;
  fanInFanOut: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  modulesToSave: string[];
  layersToTransform: number[] | null;
  /** The base the adapter names (`base_model_name_or_path`; mlx-lm's `model`; kohya's `ss_sd_model_name`). */
  baseModel: string | null;
  /** That base's snapshot in the Hugging Face cache (refs/main, else the newest), found on disk; null when not cached. */
  cachedBase: string | null;
  /** LoRA modules: in the adapter's weights, or matched in the base when only adapter_config.json was given. */
  loraModules: number;
  /** Exact trainable parameters: every element the adapter stores (LoRA factors, DoRA magnitudes, saved modules); null without weights. */
  trainableParams: number | null;
  /** Elements of lora_A / lora_B (and embedding factors) alone. */
  loraParams: number | null;
  /** Tensors the adapter replaces or adds in full. */
  savedTensors: number | null;
  /** Modules whose lora_B (output factor) is all zeros: they change nothing. Null without weights. */
  zeroModules: string[] | null;
}

export interface CensusReport {
  path: string;
  /** model, sharded-model, adapter, task-vector, file, or config (a layout from config.json, no weights). */
  kind: string;
  modelType: string | null;
  architecture: string | null;
  files: string[];
  summary: {
    tensors: number;
    /** Elements (parameters), not tensors. */
    params: number;
    bytes: number;
    /** Layers (blocks), counted per stack in an encoder-decoder (12 encoder + 12 decoder layers = 24). */
    layers: number;
    /** Encoder-decoder models (an encoder and a decoder stack): layers per stack. */
    stackLayers?: Partial<Record<Stack, number>>;
    loraTargetTensors: number;
    nonTargetTensors: number;
    loraTargetParams: number;
    /** Tensor counts per category: the six language-model categories always, image-model categories when present. */
    categories: Partial<Record<Category, number>>;
    /** Element counts per category. */
    categoryParams: Partial<Record<Category, number>>;
    /** Tensor counts per dtype. */
    dtypes: Record<string, number>;
    /** Element counts per dtype. */
    dtypeParams: Record<string, number>;
  };
  /** Per layer, and per stack where the model has stacks (`stack` then says which). */
  perLayer: Array<{ layer: number; stack?: Stack; tensors: number; params: number; loraTargetTensors: number }>;
  /** Image models: tensors per component and block (`unet` `down.1`, `transformer` `single.12`; block null outside blocks). */
  perBlock: Array<{ component: string; block: string | null; tensors: number; params: number; loraTargetTensors: number }>;
  /** Tensors and elements outside the blocks (embeddings, final norm, heads). */
  outsideLayers: Totals;
  adapter: CensusAdapter | null;
  /** kohya-ss training metadata (`ss_*`) of a single file, read into its main fields; null when there is none. */
  trainingMetadata: TrainingMetadata | null;
  warnings: string[];
  tensors: CensusTensor[];
}

/**
 * The census fields the extension and the census panel read beyond the tensors (read.ts); the tensors
 * are read field by field by the census tree (treeModel.ts censusTensors).
 */
export const CENSUS_REPORT = fields<CensusReport>()({
  path: string,
  kind: string,
  modelType: string,
  architecture: string,
  files: listOf(string),
  summary: fields<CensusReport['summary']>()({
    tensors: number,
    params: number,
    bytes: number,
    layers: number,
    loraTargetTensors: number,
    nonTargetTensors: number,
    loraTargetParams: number,
    categories: recordOf(number),
    categoryParams: recordOf(number),
    dtypes: recordOf(number),
    dtypeParams: recordOf(number),
  }),
  perLayer: listOf(fields<CensusReport['perLayer'][number]>()({ layer: number, stack: string, tensors: number, params: number, loraTargetTensors: number })),
  outsideLayers: fields<Totals>()({ tensors: number, params: number }),
  adapter: fields<CensusAdapter>()({ r: number, alpha: number, loraModules: number, trainableParams: number }),
  warnings: listOf(string),
});
export type CensusView = Present<typeof CENSUS_REPORT>;

export function readCensusReport(x: unknown): CensusView {
  return readReport(CENSUS_REPORT, x);
}
