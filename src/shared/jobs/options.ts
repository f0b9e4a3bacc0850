/**
 * How a job's options are declared, once: the CLI's flags, the typed request the extension sends and
 * the engine's checks of it are all derived from one declaration per job (src/shared/jobs/jobs.ts).
 * A field `shardSize` is the flag `--shard-size`.
 */
import { DEVICE_CHOICES } from './choices';

export type FlagKind = 'string' | 'number' | 'bool' | 'list' | 'repeat';

/** One command-line flag: `--x V` (string, number), `--x` (bool), `--x V1 V2 …` (list), `--x V` again and again (repeat). */
export interface FlagSpec {
  kind: FlagKind;
  /** Values the flag accepts (string flags). */
  choices?: readonly string[];
  default?: string | number | boolean;
}

export interface OptionSpec extends FlagSpec {
  /** The job fails without it (`--x is required`); checked by the job, in its own order. */
  required?: boolean;
}

export interface JobDeclaration {
  summary: string;
  usage: string;
  /** The request field that takes the one positional argument, if the job has one. */
  positional?: string;
  options: Record<string, OptionSpec>;
  /** List options whose values form one field instead, in command-line order, each value tagged with its flag. */
  tagged?: { field: string; flags: readonly string[] };
}

/** Options every job takes. */
export const COMMON_OPTIONS = {
  json: { kind: 'string' },
  device: { kind: 'string', choices: DEVICE_CHOICES, default: 'auto' },
  quiet: { kind: 'bool' },
} as const satisfies Record<string, OptionSpec>;

type Value<O> = O extends { choices: readonly (infer C)[] }
  ? C
  : O extends { kind: 'number' }
    ? number
    : O extends { kind: 'bool' }
      ? boolean
      : O extends { kind: 'list' | 'repeat' }
        ? string[]
        : string;

type Always<O> = O extends { required: true } ? true : false;
type Defaulted<O> = O extends { required: true } | { default: unknown } ? true : false;

/** The fields of a request: required options must be there, the others may be left out. */
export type Fields<O> = { [K in keyof O as Always<O[K]> extends true ? K : never]: Value<O[K]> } & {
  [K in keyof O as Always<O[K]> extends true ? never : K]?: Value<O[K]>;
};
/** The fields once defaults are applied: an option with a default is always there. */
export type ResolvedFields<O> = { [K in keyof O as Defaulted<O[K]> extends true ? K : never]: Value<O[K]> } & {
  [K in keyof O as Defaulted<O[K]> extends true ? never : K]?: Value<O[K]>;
};

type Positional<D> = D extends { positional: infer P extends string } ? { [K in P]?: string } : unknown;
export interface Tagged<T extends string = string> {
  flag: T;
  value: string;
}
type TaggedFlags<D> = D extends { tagged: { flags: readonly (infer T extends string)[] } } ? T : never;
type TaggedField<D> = D extends { tagged: { field: infer F extends string; flags: readonly (infer T extends string)[] } }
  ? { [K in F]?: Tagged<T>[] }
  : unknown;
type Own<D extends JobDeclaration> = Omit<D['options'], TaggedFlags<D>>;

/** The request of a job declared as `D`, as a caller writes it. */
export type RequestOf<D extends JobDeclaration> = Fields<Own<D>> & Fields<typeof COMMON_OPTIONS> & Positional<D> & TaggedField<D>;
/** The same request as a job receives it, defaults applied. */
export type ResolvedOf<D extends JobDeclaration> = ResolvedFields<Own<D>> & ResolvedFields<typeof COMMON_OPTIONS> & Positional<D> & TaggedField<D>;

/** `shardSize` -> `shard-size`. */
export function flagName(field: string): string {
  return field.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

/** The command-line flags of a job, its own and the common ones. */
export function flagSpecs(d: JobDeclaration): Record<string, FlagSpec> {
  const specs: Record<string, FlagSpec> = {};
  for (const [field, o] of Object.entries(d.options)) specs[flagName(field)] = { kind: o.kind, choices: o.choices, default: o.default };
  for (const [field, o] of Object.entries(COMMON_OPTIONS)) specs[flagName(field)] = o;
  for (const s of Object.values(specs)) {
    if (s.choices === undefined) delete s.choices;
    if (s.default === undefined) delete s.default;
  }
  return specs;
}
