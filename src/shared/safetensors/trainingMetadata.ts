/**
 * kohya-ss sd-scripts' training metadata (`ss_*` keys of a LoRA file's `__metadata__`, all strings, some
 * holding JSON or Python literals) read into the fields people look for: the base model, rank and alpha,
 * the network module and its arguments, the schedule, and the dataset's most frequent caption tags.
 */

export interface TrainingMetadata {
  baseModel: string | null;
  /** `ss_base_model_version` (sd_v1, sdxl_base_v1-0, flux1, …) or, for older files, v2 / v1 from `ss_v2`. */
  baseModelVersion: string | null;
  networkModule: string | null;
  /** `ss_network_args` parsed (LyCORIS puts `algo`, `conv_dim`, `conv_alpha` here). */
  networkArgs: Record<string, unknown> | null;
  rank: number | null;
  alpha: number | null;
  resolution: string | null;
  epochs: number | null;
  steps: number | null;
  learningRate: number | null;
  trainImages: number | null;
  outputName: string | null;
  trainingComment: string | null;
  /** Caption tags by total count over the dataset folders, most frequent first (at most 20). */
  topTags: Array<{ tag: string; count: number }>;
  /** Every `ss_*` field as stored. */
  fields: Record<string, string>;
}

const num = (s: string | undefined): number | null => {
  if (s === undefined || s === 'None' || s.trim() === '') return null;
  const v = Number(s);
  return Number.isFinite(v) ? v : null;
};
const str = (s: string | undefined): string | null => (s === undefined || s === 'None' || s === '' ? null : s);

function json(s: string | undefined): unknown {
  if (s === undefined) return undefined;
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/** The training metadata of a file's `__metadata__`, or null when it has no `ss_*` field. */
export function trainingMetadata(metadata: Record<string, string> | null | undefined): TrainingMetadata | null {
  if (!metadata) return null;
  const fields = Object.fromEntries(Object.entries(metadata).filter(([k]) => k.startsWith('ss_')));
  if (Object.keys(fields).length === 0) return null;
  const args = json(fields.ss_network_args);
  const tags = new Map<string, number>();
  const freq = json(fields.ss_tag_frequency);
  if (freq !== null && typeof freq === 'object') {
    for (const dir of Object.values(freq as Record<string, unknown>)) {
      if (dir === null || typeof dir !== 'object') continue;
      for (const [tag, n] of Object.entries(dir as Record<string, unknown>)) if (typeof n === 'number') tags.set(tag.trim(), (tags.get(tag.trim()) ?? 0) + n);
    }
  }
  const v2 = fields.ss_v2 === 'True' ? 'sd_v2' : fields.ss_v2 === 'False' ? 'sd_v1' : null;
  return {
    baseModel: str(fields.ss_sd_model_name),
    baseModelVersion: str(fields.ss_base_model_version) ?? v2,
    networkModule: str(fields.ss_network_module),
    networkArgs: args !== null && typeof args === 'object' && !Array.isArray(args) ? (args as Record<string, unknown>) : null,
    rank: num(fields.ss_network_dim),
    alpha: num(fields.ss_network_alpha),
    resolution: str(fields.ss_resolution),
    epochs: num(fields.ss_num_epochs) ?? num(fields.ss_epoch),
    steps: num(fields.ss_max_train_steps) ?? num(fields.ss_steps),
    learningRate: num(fields.ss_learning_rate),
    trainImages: num(fields.ss_num_train_images),
    outputName: str(fields.ss_output_name),
    trainingComment: str(fields.ss_training_comment),
    topTags: [...tags].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 20).map(([tag, count]) => ({ tag, count })),
    fields,
  };
}

/** A few readable lines: what a user checks first in a LoRA file's metadata. */
export function trainingMetadataLines(m: TrainingMetadata): string[] {
  const args = m.networkArgs ? ` ${Object.entries(m.networkArgs).map(([k, v]) => `${k}=${String(v)}`).join(' ')}` : '';
  const lines = [
    `base model ${m.baseModel ?? '?'}${m.baseModelVersion ? ` (${m.baseModelVersion})` : ''}; network ${m.networkModule ?? '?'}${args}; rank ${m.rank ?? '?'}, alpha ${m.alpha ?? '?'}`,
    `resolution ${m.resolution ?? '?'}, ${m.trainImages ?? '?'} images, ${m.epochs ?? '?'} epochs, ${m.steps ?? '?'} steps, learning rate ${m.learningRate ?? '?'}`,
  ];
  if (m.topTags.length > 0) lines.push(`top tags: ${m.topTags.slice(0, 10).map((t) => `${t.tag} (${t.count})`).join(', ')}`);
  if (m.trainingComment) lines.push(`comment: ${m.trainingComment}`);
  return lines;
}
