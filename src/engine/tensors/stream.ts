/**
 * Streaming tensors through a job: large tensors are cut into row blocks of bounded size, and the next
 * block is read from disk while the current one is computed, so memory stays at a few blocks whatever
 * the model size and the disk and the CPU work at the same time.
 */
import { elementBytes } from '../../shared/safetensors/dtypes';
import { FileHandles } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';

/** Elements per block (4 MiB of fp32): large enough to amortise a read, small enough to keep memory flat and the writes overlapping. */
export const BLOCK_ELEMENTS = 1 << 20;

/**
 * Rows [row0, row1) of a tensor's first dimension, or (`partial`) a range of elements where one row
 * alone is over the block size (a 1-D tensor, a [2, 6e8] one): then [row0, row1) covers the range.
 */
export interface Block {
  tensor: TensorInfo;
  row0: number;
  row1: number;
  /** Elements per row. */
  rowElements: number;
  /** Index of the block's first element in the tensor, and its element count. */
  start: number;
  numel: number;
  first: boolean;
  last: boolean;
  /** An element range that need not start or end on a row boundary. */
  partial?: boolean;
}

/**
 * The blocks of `t`, in order, each of at most `maxElements` elements (Infinity keeps the tensor whole).
 * `wholeRows` keeps rows unsplit (a LoRA delta is computed per row) even where one row is larger.
 */
export function blocksOf(t: TensorInfo, maxElements = BLOCK_ELEMENTS, wholeRows = false): Block[] {
  const rows = t.shape.length >= 2 ? t.shape[0] : 1;
  const rowElements = rows === 0 ? 0 : t.numel / rows;
  const blocks: Block[] = [];
  if (!wholeRows && rowElements > maxElements) {
    for (let s = 0; s < t.numel; s += maxElements) {
      const n = Math.min(maxElements, t.numel - s);
      const row0 = Math.floor(s / rowElements);
      const row1 = Math.ceil((s + n) / rowElements);
      blocks.push({ tensor: t, row0, row1, rowElements, start: s, numel: n, first: s === 0, last: s + n >= t.numel, partial: true });
    }
    return blocks;
  }
  const perBlock = rowElements === 0 ? Math.max(rows, 1) : Math.max(1, Math.floor(maxElements / rowElements));
  for (let r = 0; r < rows || blocks.length === 0; r += perBlock) {
    const row1 = Math.min(rows, r + perBlock);
    blocks.push({
      tensor: t,
      row0: r,
      row1,
      rowElements,
      start: r * rowElements,
      numel: (row1 - r) * rowElements,
      first: r === 0,
      last: row1 >= rows,
      partial: false,
    });
  }
  return blocks;
}

/** The same rows of a tensor with the same shape in another checkpoint (a finetuned model, a task vector). */
export function sameRows(b: Block, other: TensorInfo): Block {
  return { ...b, tensor: other };
}

/** A block as a TensorInfo of its own: the byte range of its rows (whole-byte dtypes only). */
export function blockInfo(b: Block): TensorInfo {
  const t = b.tensor;
  if (b.first && b.last) return t;
  const eb = elementBytes(t.dtype);
  const shape = b.partial ? [b.numel] : [b.row1 - b.row0, ...t.shape.slice(1)];
  return { ...t, offset: t.offset + b.start * eb, byteLength: b.numel * eb, numel: b.numel, shape };
}

/** Reads of one step: the raw bytes of several blocks (from different files), into buffers the step owns. */
export type StepReader<S, R> = (step: S, slot: 0 | 1) => Promise<R>;

/** Whether the raw bytes of two blocks are the same (memcmp). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/**
 * Yields `read(step)` for each step in order while the next step's read is already in flight. Two
 * buffer slots alternate: the value yielded for step i (slot i % 2) stays valid until the consumer
 * asks for step i + 1, when slot i % 2 is handed to step i + 2.
 */
export async function* prefetched<S, R>(steps: S[], read: StepReader<S, R>): AsyncGenerator<{ step: S; data: R; index: number }> {
  if (steps.length === 0) return;
  let pending: Promise<R> = read(steps[0], 0);
  try {
    for (let i = 0; i < steps.length; i++) {
      const data = await pending;
      if (i + 1 < steps.length) {
        pending = read(steps[i + 1], ((i + 1) % 2) as 0 | 1);
        // Keep a failed read from surfacing as an unhandled rejection before it is awaited.
        pending.catch(() => {});
      }
      yield { step: steps[i], data, index: i };
    }
  } finally {
    // Let an in-flight read finish before its buffer can be reused or the files closed.
    await pending.catch(() => {});
  }
}

/** Reads a block's raw bytes into `target` (exactly its byte length). */
export function readBlock(handles: FileHandles, b: Block, target: Uint8Array): Promise<Uint8Array> {
  return handles.readBytes(blockInfo(b), target);
}
