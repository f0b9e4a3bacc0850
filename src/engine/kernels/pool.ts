/**
 * A fixed set of worker threads running kernel slices (worker.ts). A worker keeps the process alive only
 * while it has work, so a job that forgets to dispose its kernels still lets the process exit.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { mapArrays, PoolOp, PoolResult, WireArray } from './poolOps';
import type { WorkerReply, WorkerRequest } from './worker';

/**
 * The worker script: dist/kernel-worker.js beside the bundles (CLI, engine host, extension), or
 * worker.js beside this file where the sources are compiled unbundled (out/src/engine/kernels).
 */
export function workerScript(): string | undefined {
  return [path.join(__dirname, 'kernel-worker.js'), path.join(__dirname, 'worker.js')].find((f) => fs.existsSync(f));
}

interface Pending {
  resolve(r: PoolResult): void;
  reject(e: Error): void;
}

function isTypedArray(x: unknown): x is Float32Array | Uint8Array {
  return x instanceof Float32Array || x instanceof Uint8Array;
}

class Slot {
  readonly pending = new Map<number, Pending>();
  /** Buffers this worker holds. */
  private readonly known = new Set<number>();

  constructor(readonly worker: Worker) {
    worker.unref();
  }

  send(id: number, op: PoolOp, p: Pending, idOf: (b: SharedArrayBuffer) => number): void {
    const wire = mapArrays(op as unknown as Record<string, unknown>, isTypedArray, (x): WireArray => {
      if (!(x.buffer instanceof SharedArrayBuffer)) throw new Error('kernel worker arrays must be in shared memory');
      const bid = idOf(x.buffer);
      const first = !this.known.has(bid);
      this.known.add(bid);
      return { wire: x instanceof Float32Array ? 'F32' : 'U8', id: bid, byteOffset: x.byteOffset, length: x.length, ...(first ? { buffer: x.buffer } : {}) };
    });
    if (this.pending.size === 0) this.worker.ref();
    this.pending.set(id, p);
    this.worker.postMessage({ id, op: wire } satisfies WorkerRequest);
  }

  /** The main thread dropped buffer `id`: so may the worker. */
  forget(id: number): void {
    if (this.known.delete(id)) this.worker.postMessage({ forget: id } satisfies WorkerRequest);
  }

  settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
    return p;
  }

  failAll(e: Error): void {
    for (const id of [...this.pending.keys()]) this.settle(id)!.reject(e);
  }
}

export class WorkerPool {
  private readonly slots: Slot[];
  private nextId = 1;
  /** Ids of the SharedArrayBuffers posted to the workers (see WireArray). */
  private readonly bufferIds = new WeakMap<SharedArrayBuffer, number>();
  private nextBufferId = 1;
  /** Tells the workers to let go of a buffer once this thread has collected it. */
  private readonly collected = new FinalizationRegistry<number>((id) => {
    if (!this.broken) for (const s of this.slots) s.forget(id);
  });
  /** Why the pool stopped working (a worker crashed or exited), or undefined while it works. */
  broken: string | undefined;

  constructor(
    readonly size: number,
    script: string,
  ) {
    this.slots = Array.from({ length: size }, () => {
      const slot = new Slot(new Worker(script));
      slot.worker.on('message', (m: WorkerReply) => {
        const p = slot.settle(m.id);
        if ('error' in m) p?.reject(new Error(`kernel worker: ${m.error}`));
        else p?.resolve(m.result as PoolResult);
      });
      slot.worker.on('error', (e) => this.fail(`a kernel worker failed: ${e.message}`));
      slot.worker.on('exit', (code) => this.fail(`a kernel worker exited (code ${code})`));
      return slot;
    });
  }

  /** Runs `ops[i]` on worker i (mod size), all at once; resolves with their results in order. */
  run(ops: PoolOp[]): Promise<PoolResult[]> {
    if (this.broken) return Promise.reject(new Error(this.broken));
    return Promise.all(ops.map((op, i) => this.runOn(this.slots[i % this.size], op)));
  }

  private runOn(slot: Slot, op: PoolOp): Promise<PoolResult> {
    if (this.broken) return Promise.reject(new Error(this.broken));
    return new Promise<PoolResult>((resolve, reject) => slot.send(this.nextId++, op, { resolve, reject }, this.idOf));
  }

  private readonly idOf = (b: SharedArrayBuffer): number => {
    let id = this.bufferIds.get(b);
    if (id === undefined) {
      id = this.nextBufferId++;
      this.bufferIds.set(b, id);
      this.collected.register(b, id);
    }
    return id;
  };

  /** Runs `op` on the worker with the least work waiting. */
  runOne(op: PoolOp): Promise<PoolResult> {
    const slot = this.slots.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    return this.runOn(slot, op);
  }

  private fail(why: string): void {
    this.broken ??= why;
    const e = new Error(why);
    for (const s of this.slots) s.failAll(e);
  }

  async dispose(): Promise<void> {
    this.broken ??= 'the kernel workers were disposed';
    for (const s of this.slots) s.failAll(new Error(this.broken));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
