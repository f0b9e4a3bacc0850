/**
 * Requests to and from their command-line form, and the check of a request from outside (the engine
 * process receives them over IPC): unknown fields and wrong types are refused in the CLI's words.
 */
import { LensError } from '../errors';
import { isJobName, JobName, JobRequest, JOBS, ResolvedRequest } from './jobs';
import { COMMON_OPTIONS, flagName, JobDeclaration, OptionSpec, Tagged } from './options';

/** A parsed command line: positional arguments, flags by name, and every flag value in command-line order. */
export interface ParsedArgs {
  positional: string[];
  flags: Record<string, string | number | boolean | string[] | undefined>;
  /** Every flag value in command-line order (`--adapter a --finetuned b --adapter c`), which `flags` loses across flags. */
  ordered?: Array<{ name: string; value: string }>;
}

const declaration = (job: JobName): JobDeclaration => JOBS[job];

function options(d: JobDeclaration): Array<[string, OptionSpec]> {
  const tagged = new Set(d.tagged?.flags ?? []);
  return [...Object.entries(d.options).filter(([f]) => !tagged.has(f)), ...Object.entries(COMMON_OPTIONS)];
}

/** The request a parsed command line of `job` stands for. */
export function requestFromArgs<K extends JobName>(job: K, args: ParsedArgs): JobRequest<K> {
  const d = declaration(job);
  const r: Record<string, unknown> = { job };
  if (d.positional !== undefined && args.positional[0] !== undefined) r[d.positional] = args.positional[0];
  for (const [field] of options(d)) {
    const v = args.flags[flagName(field)];
    if (v !== undefined) r[field] = v;
  }
  if (d.tagged) {
    const flags: readonly string[] = d.tagged.flags;
    const values = (args.ordered ?? []).filter((o) => flags.includes(o.name)).map((o) => ({ flag: o.name, value: o.value }));
    if (values.length > 0) r[d.tagged.field] = values;
  }
  return r as JobRequest<K>;
}

/** The command line of a request: positional arguments and flags by name (the output guard reads these). */
export function argsOfRequest(req: JobRequest): Required<Pick<ParsedArgs, 'positional' | 'flags'>> {
  const d = declaration(req.job);
  const r = req as unknown as Record<string, unknown>;
  const positional = d.positional !== undefined && typeof r[d.positional] === 'string' ? [r[d.positional] as string] : [];
  const flags: ParsedArgs['flags'] = {};
  for (const [field] of options(d)) if (r[field] !== undefined) flags[flagName(field)] = r[field] as ParsedArgs['flags'][string];
  if (d.tagged) {
    for (const { flag, value } of (r[d.tagged.field] as Tagged[] | undefined) ?? []) flags[flag] = [...((flags[flag] as string[] | undefined) ?? []), value];
  }
  return { positional, flags };
}

/** The `lora-lens` command line that runs the same job (for logs: what to type in a terminal). */
export function argvOf(req: JobRequest): string[] {
  const argv: string[] = [String(req.job)];
  if (!isJobName(req.job)) return argv; // the engine refuses it
  const d = declaration(req.job);
  const r = req as unknown as Record<string, unknown>;
  if (d.positional !== undefined && typeof r[d.positional] === 'string') argv.push(r[d.positional] as string);
  for (const [field, o] of options(d)) {
    const v = r[field];
    if (v === undefined || v === false) continue;
    argv.push(`--${flagName(field)}`);
    if (o.kind === 'list' || o.kind === 'repeat') argv.push(...(v as string[]));
    else if (o.kind !== 'bool') argv.push(String(v));
  }
  if (d.tagged) for (const { flag, value } of (r[d.tagged.field] as Tagged[] | undefined) ?? []) argv.push(`--${flag}`, value);
  return argv;
}

const isStringList = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/**
 * Checks a request from outside and applies the defaults; a bad one is a LensError in the CLI's words
 * (`lora-lens merge: --rule must be one of …`). Requests parsed from a command line pass unchanged.
 */
export function resolveRequest(v: unknown): ResolvedRequest {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new LensError('lora-lens', 'a job request must be an object');
  const raw = v as Record<string, unknown>;
  if (!isJobName(raw.job)) throw new LensError('lora-lens', `unknown command ${JSON.stringify(raw.job)}`);
  const job = raw.job;
  const d = declaration(job);
  const usage = (msg: string): never => {
    throw new LensError(`lora-lens ${job}`, msg);
  };
  const known = new Map(options(d));
  const out: Record<string, unknown> = { job };
  for (const [field, value] of Object.entries(raw)) {
    if (field === 'job' || value === undefined) continue;
    const flag = `--${flagName(field)}`;
    if (field === d.positional) {
      if (typeof value !== 'string') usage(`${field} must be a path`);
    } else if (field === d.tagged?.field) {
      const flags: readonly string[] = d.tagged.flags;
      if (!Array.isArray(value) || !value.every((t) => t !== null && typeof t === 'object' && flags.includes(t.flag) && typeof t.value === 'string')) {
        usage(`${field} must be a list of { flag, value } with flag one of ${flags.join(', ')}`);
      }
    } else {
      const o = known.get(field);
      if (!o) return usage(`unknown option ${flag} (options: ${[...known.keys()].map((k) => '--' + flagName(k)).join(', ')})`);
      if (o.kind === 'bool' && typeof value !== 'boolean') usage(`${flag} must be true or false`);
      if (o.kind === 'number' && (typeof value !== 'number' || !Number.isFinite(value))) usage(`${flag} must be a number (got ${JSON.stringify(value)})`);
      if ((o.kind === 'list' || o.kind === 'repeat') && !(isStringList(value) && value.length > 0)) usage(`${flag} needs at least one value`);
      if (o.kind === 'string') {
        if (typeof value !== 'string') usage(`${flag} must be a string`);
        if (o.choices && !o.choices.includes(value as string)) usage(`${flag} must be one of ${o.choices.join(', ')} (got ${JSON.stringify(value)})`);
      }
    }
    out[field] = value;
  }
  for (const [field, o] of known) if (out[field] === undefined && o.default !== undefined) out[field] = o.default;
  return out as ResolvedRequest;
}

/** A required field of a request, or the CLI's usage error naming its flag. */
export function need<R extends { job: JobName }, F extends keyof R & string>(req: R, field: F): NonNullable<R[F]> {
  const v = req[field];
  if (v === undefined || v === null) throw new LensError(`lora-lens ${req.job}`, `--${flagName(field)} is required`);
  return v as NonNullable<R[F]>;
}
