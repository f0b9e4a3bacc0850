import { CancelledError } from '../errors';

export interface Progress {
  /** What is being done now ("merge", "read base"...). */
  phase: string;
  done: number;
  total: number;
  /** Bytes of tensor data processed so far, where known. */
  bytes?: number;
  tensor?: string;
}

/** What every long job gets: progress out, warnings out, cancellation in. */
export interface JobContext {
  readonly signal: AbortSignal;
  progress(p: Progress): void;
  warn(message: string): void;
  log(message: string): void;
}

export function throwIfCancelled(ctx: JobContext): void {
  if (ctx.signal.aborted) throw new CancelledError();
}

/** A context that reports nothing: for tests and for jobs used inside other jobs' code paths. */
export function quietContext(signal: AbortSignal = new AbortController().signal): JobContext & { warnings: string[] } {
  const warnings: string[] = [];
  return { signal, progress() {}, warn: (m) => warnings.push(m), log() {}, warnings };
}
