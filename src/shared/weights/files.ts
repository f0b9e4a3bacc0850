/**
 * The file names that hold a checkpoint's weights, in both formats read: safetensors, and PyTorch
 * pickles (read in place, never executed). Shared by the engine's folder discovery and the extension's
 * workspace scan, so that both recognise the same folders.
 */

/** An adapter folder's weights, safetensors first (PEFT writes both only when asked to). */
export const ADAPTER_WEIGHTS = ['adapter_model.safetensors', 'adapter_model.bin'];
/** mlx-lm's adapter weights, beside its own adapter_config.json (`lora_parameters`). */
export const MLX_ADAPTER_WEIGHTS = 'adapters.safetensors';
/** Any adapter folder's weights: PEFT's, then mlx-lm's. */
export const ANY_ADAPTER_WEIGHTS = [...ADAPTER_WEIGHTS, MLX_ADAPTER_WEIGHTS];
/** A model folder's weights in one file, and the indexes of sharded ones, safetensors first. */
export const MODEL_WEIGHTS = ['model.safetensors', 'pytorch_model.bin'];
export const SHARD_INDEXES = ['model.safetensors.index.json', 'pytorch_model.bin.index.json'];
/** File names that mark a folder as a checkpoint (the extension's workspace scan looks for them). */
export const CHECKPOINT_MARKERS = ['adapter_config.json', ...ANY_ADAPTER_WEIGHTS, ...MODEL_WEIGHTS, ...SHARD_INDEXES];

/** Pickles that Hugging Face's Trainer writes beside a model's weights: training state, never weights, never unpickled. */
const TRAINER_FILES = /^(training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth)$/;

/** Weight files of a folder with no standard name: `*.safetensors`, else PyTorch `*.bin` / `*.pt` / `*.pth`. */
export function loneWeightFiles(names: string[]): string[] {
  const st = names.filter((f) => f.endsWith('.safetensors'));
  if (st.length) return st.sort();
  return names.filter((f) => /\.(bin|pt|pth)$/.test(f) && !TRAINER_FILES.test(f)).sort();
}
