/**
 * A worker thread of the CPU backend (bundled as dist/kernel-worker.js): runs the kernel slices it is
 * sent on shared memory and answers each with its id. It keeps the SharedArrayBuffers it was sent, by
 * id, until the main thread says they are gone.
 */
import { parentPort } from 'node:worker_threads';
import { mapArrays, PoolOp, runOp, WireArray } from './poolOps';

export type WorkerRequest = { id: number; op: Record<string, unknown> } | { forget: number };

export type WorkerReply = { id: number; result: unknown } | { id: number; error: string };

const buffers = new Map<number, SharedArrayBuffer>();

function isWire(x: unknown): x is WireArray {
  return x !== null && typeof x === 'object' && 'wire' in x;
}

function fromWire(w: WireArray): Float32Array | Uint8Array {
  if (w.buffer) buffers.set(w.id, w.buffer);
  const b = buffers.get(w.id);
  if (b === undefined) throw new Error(`shared buffer ${w.id} was never sent`);
  return w.wire === 'F32' ? new Float32Array(b, w.byteOffset, w.length) : new Uint8Array(b, w.byteOffset, w.length);
}

const port = parentPort;
if (port) {
  port.on('message', (m: WorkerRequest) => {
    if ('forget' in m) {
      buffers.delete(m.forget);
      return;
    }
    // An op that returns a promise (a module's factorization) is answered when it settles.
    new Promise((resolve) => resolve(runOp(mapArrays(m.op, isWire, fromWire) as unknown as PoolOp))).then(
      (result) => port.postMessage({ id: m.id, result } satisfies WorkerReply),
      (e: unknown) => port.postMessage({ id: m.id, error: (e as Error).stack ?? String(e) } satisfies WorkerReply),
    );
  });
}
