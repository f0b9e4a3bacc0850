/**
 * Reading a report at the boundary. A report arrives as `unknown`: from the engine process, from a file
 * a user saved, from an older engine, or from a restored panel. A schema declared against the report's
 * interface turns it into a typed view in which a field that is absent or of another type is null
 * (drawn as "—"), a list or record entry of the wrong shape is left out (or, in a list or record read
 * with `{ keepNull: true }`, is null in its place), and nothing throws.
 */

export interface NumberSchema {
  readonly kind: 'number';
}
export interface StringSchema {
  readonly kind: 'string';
}
export interface BooleanSchema {
  readonly kind: 'boolean';
}
export interface EnumSchema<V extends string = string> {
  readonly kind: 'enum';
  readonly values: readonly V[];
}
export interface ObjectSchema<F = Fields> {
  readonly kind: 'object';
  readonly fields: F;
}
/** `keepNull`: an entry of the wrong shape is null in its place, not left out (cells, values by name). */
export interface ListSchema<I = Schema, N extends boolean = boolean> {
  readonly kind: 'list';
  readonly item: I;
  readonly keepNull: N;
}
export interface RecordSchema<V = Schema, N extends boolean = boolean> {
  readonly kind: 'record';
  readonly value: V;
  readonly keepNull: N;
}
export type Schema = NumberSchema | StringSchema | BooleanSchema | EnumSchema | ObjectSchema | ListSchema | RecordSchema;
type Fields = { readonly [name: string]: Schema };

/** What a schema reads: null where the value is missing or of another type. */
export type Read<S> = S extends NumberSchema
  ? number | null
  : S extends StringSchema
    ? string | null
    : S extends BooleanSchema
      ? boolean | null
      : S extends EnumSchema<infer V>
        ? V | null
        : S extends ObjectSchema<infer F>
          ? { -readonly [K in keyof F]: Read<F[K]> } | null
          : S extends ListSchema<infer I, infer N>
            ? Entry<I, N>[]
            : S extends RecordSchema<infer V, infer N>
              ? Record<string, Entry<V, N>>
              : never;
/** What is there where null is not (a report's top level; an entry of a list that leaves out the wrong shapes). */
export type Present<S> = Exclude<Read<S>, null>;
/** A list or record entry: one of the wrong shape is left out, so what is there is not null, unless nulls are kept. */
type Entry<S, N extends boolean> = N extends true ? Read<S> : Present<S>;

/** The schemas a field of type V may be read with (V's own kind; a string union also as a plain string). */
export type SchemaFor<V> = [NonNullable<V>] extends [number]
  ? NumberSchema
  : [NonNullable<V>] extends [boolean]
    ? BooleanSchema
    : [NonNullable<V>] extends [string]
      ? StringSchema | EnumSchema<NonNullable<V>>
      : [NonNullable<V>] extends [readonly (infer U)[]]
        ? ListSchema<SchemaFor<U>>
        : ObjectSchema<{ readonly [K in keyof NonNullable<V>]?: SchemaFor<NonNullable<V>[K]> }> | RecordSchema<SchemaFor<NonNullable<V>[keyof NonNullable<V>]>>;

export const number: NumberSchema = { kind: 'number' };
export const string: StringSchema = { kind: 'string' };
export const boolean: BooleanSchema = { kind: 'boolean' };

export function oneOf<const V extends string>(values: readonly V[]): EnumSchema<V> {
  return { kind: 'enum', values };
}

/**
 * The fields of interface T that are read, each with a schema of its kind: a name T does not have, or
 * a schema of another kind, does not compile. `fields<CompareTensor>()({ name: string, cosine: number })`.
 */
export function fields<T>() {
  return <const F extends { readonly [K in keyof T]?: SchemaFor<T[K]> }>(f: F & Record<Exclude<keyof F, keyof T>, never>): ObjectSchema<F> => ({
    kind: 'object',
    fields: f,
  });
}

/** Entries of the wrong shape are left out; with `{ keepNull: true }` each is null in its place (a histogram's bins, heat-map cells). */
export function listOf<const I extends Schema>(item: I): ListSchema<I, false>;
export function listOf<const I extends Schema>(item: I, options: { keepNull: true }): ListSchema<I, true>;
export function listOf(item: Schema, options?: { keepNull: true }): ListSchema {
  return { kind: 'list', item, keepNull: options?.keepNull ?? false };
}

/** Entries of the wrong shape are left out; with `{ keepNull: true }` each is kept under its name as null. */
export function recordOf<const V extends Schema>(value: V): RecordSchema<V, false>;
export function recordOf<const V extends Schema>(value: V, options: { keepNull: true }): RecordSchema<V, true>;
export function recordOf(value: Schema, options?: { keepNull: true }): RecordSchema {
  return { kind: 'record', value, keepNull: options?.keepNull ?? false };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

export function read<S extends Schema>(s: S, x: unknown): Read<S> {
  return readAny(s, x) as Read<S>;
}

/** A report's top level: never null, every field null where a non-object was given. */
export function readReport<F>(s: ObjectSchema<F>, x: unknown): Present<ObjectSchema<F>> {
  return readAny(s as Schema, isObject(x) ? x : {}) as Present<ObjectSchema<F>>;
}

function readAny(s: Schema, x: unknown): unknown {
  switch (s.kind) {
    case 'number':
      return typeof x === 'number' && Number.isFinite(x) ? x : null;
    case 'string':
      return typeof x === 'string' ? x : null;
    case 'boolean':
      return typeof x === 'boolean' ? x : null;
    case 'enum':
      return typeof x === 'string' && s.values.includes(x) ? x : null;
    case 'object':
      return isObject(x) ? Object.fromEntries(Object.entries(s.fields).map(([k, f]) => [k, readAny(f as Schema, x[k])])) : null;
    case 'list': {
      const items = Array.isArray(x) ? x.map((v) => readAny(s.item as Schema, v)) : [];
      return s.keepNull ? items : items.filter((v) => v !== null);
    }
    case 'record': {
      const entries = isObject(x) ? Object.entries(x).map(([k, v]) => [k, readAny(s.value as Schema, v)] as const) : [];
      return Object.fromEntries(s.keepNull ? entries : entries.filter(([, v]) => v !== null));
    }
  }
}
