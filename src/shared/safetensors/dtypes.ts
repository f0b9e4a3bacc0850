/** Every dtype of the safetensors format, with its size in bits (sub-byte types pack several per byte). */
export const DTYPE_BITS = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  I64: 64,
  U64: 64,
  F64: 64,
  C64: 64,
} as const;

export type Dtype = keyof typeof DTYPE_BITS;

/** The floating dtypes the engine can compute with (converted to fp32 / fp64 on read). */
export type FloatDtype = 'F64' | 'F32' | 'F16' | 'BF16';

export function isDtype(s: string): s is Dtype {
  return Object.prototype.hasOwnProperty.call(DTYPE_BITS, s);
}

export function isFloatDtype(s: string): s is FloatDtype {
  return s === 'F64' || s === 'F32' || s === 'F16' || s === 'BF16';
}

/** Bytes taken by `numel` elements, or undefined when they do not fill whole bytes. */
export function byteSize(dtype: Dtype, numel: number): number | undefined {
  const bits = DTYPE_BITS[dtype] * numel;
  return bits % 8 === 0 ? bits / 8 : undefined;
}

/** Element size in bytes for the whole-byte dtypes. */
export function elementBytes(dtype: Dtype): number {
  return DTYPE_BITS[dtype] / 8;
}

/** The dtype names used on the command line and in `torch_dtype`. */
export const CLI_DTYPES = { fp32: 'F32', fp16: 'F16', bf16: 'BF16' } as const;
export type CliDtype = keyof typeof CLI_DTYPES;
export const TORCH_DTYPE: Record<CliDtype, string> = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' };
