import * as fs from 'node:fs';
import * as path from 'node:path';
import { chargeWrite } from './faults';
import { byteSize, Dtype } from '../../shared/safetensors/dtypes';

export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: number[];
}

/** Header JSON of a safetensors file for tensors in the given order, padded with spaces to 8 bytes. */
export function buildHeader(specs: TensorSpec[], metadata: Record<string, string> = { format: 'pt' }): { header: Buffer; sizes: number[] } {
  const obj: Record<string, unknown> = { __metadata__: metadata };
  const sizes: number[] = [];
  let offset = 0;
  const seen = new Set<string>();
  for (const s of specs) {
    if (seen.has(s.name)) throw new Error(`duplicate tensor name '${s.name}' in output`);
    seen.add(s.name);
    const numel = s.shape.reduce((a, b) => a * b, 1);
    const n = byteSize(s.dtype, numel);
    if (n === undefined) throw new Error(`tensor '${s.name}': ${numel} x ${s.dtype} is not a whole number of bytes`);
    obj[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + n] };
    sizes.push(n);
    offset += n;
  }
  const json = Buffer.from(JSON.stringify(obj), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, sizes };
}

/** A name beside `target` for work in progress; renamed over `target` only when complete. */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.partial-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
}

/** Dirty bytes after which an asynchronous writer starts flushing them to disk, so that the final fsync finds little left. */
const FLUSH_BYTES = 64 << 20;

/**
 * Streaming safetensors writer: the header is written first from the specs, then each tensor's bytes in
 * spec order. Writes to a temporary file; `finish()` renames it into place, `abort()` deletes it.
 * `writePartAsync` / `skipZeros` / `finishAsync` let a job overlap its writes with its reads and compute.
 */
export class SafetensorsWriter {
  private readonly tmp: string;
  private fd: number | undefined;
  private readonly sizes: number[];
  private next = 0;
  /** Bytes of the current tensor written so far. */
  private partial = 0;
  private position: number;
  /** The asynchronous write in flight, and the background flush. */
  private writing: Promise<void> | undefined;
  private flushing: Promise<void> | undefined;
  private unflushed = 0;
  private flushError: Error | undefined;

  constructor(
    readonly target: string,
    private readonly specs: TensorSpec[],
    metadata?: Record<string, string>,
  ) {
    const { header, sizes } = buildHeader(specs, metadata);
    this.sizes = sizes;
    this.tmp = tempPathFor(target);
    this.fd = fs.openSync(this.tmp, 'wx');
    try {
      writeFully(this.fd, header, 0);
    } catch (e) {
      this.abort();
      throw e;
    }
    this.position = header.length;
  }

  /** Name of the tensor expected next, or undefined when all were written. */
  get expected(): string | undefined {
    return this.specs[this.next]?.name;
  }

  write(name: string, bytes: Uint8Array): void {
    if (this.partial !== 0 || bytes.byteLength !== this.sizes[this.next]) {
      throw new Error(`${this.target}: tensor '${name}' has ${bytes.byteLength} bytes, header says ${this.sizes[this.next]}`);
    }
    this.writePart(name, bytes);
  }

  /** Appends the next bytes of tensor `name` (large tensors are written in row blocks); it is done once all its bytes are in. */
  writePart(name: string, bytes: Uint8Array): void {
    const at = this.position;
    writeFully(this.claim(name, bytes.byteLength), bytes, at);
  }

  /**
   * writePart on the thread pool: `bytes` must stay untouched until the promise settles, and the next
   * write waits for it.
   */
  writePartAsync(name: string, bytes: Uint8Array): Promise<void> {
    if (this.writing) throw new Error(`${this.target}: a write is still in flight`);
    const at = this.position;
    const fd = this.claim(name, bytes.byteLength);
    const w = writeFullyAsync(fd, bytes, at).finally(() => (this.writing = undefined));
    this.writing = w;
    this.unflushed += bytes.byteLength;
    if (this.unflushed >= FLUSH_BYTES && !this.flushing) {
      this.unflushed = 0;
      this.flushing = new Promise<void>((resolve) =>
        fs.fdatasync(fd, (err) => {
          if (err) this.flushError = err;
          this.flushing = undefined;
          resolve();
        }),
      );
    }
    return w;
  }

  /**
   * The next `byteLength` bytes of tensor `name` are zeros: they are left as a hole of the new file
   * (which reads as zeros) instead of being written.
   */
  skipZeros(name: string, byteLength: number): void {
    this.claim(name, byteLength);
  }

  /** Checks that `n` more bytes of `name` come next and reserves them; returns the fd. */
  private claim(name: string, n: number): number {
    const spec = this.specs[this.next];
    if (this.fd === undefined) throw new Error(`writer for ${this.target} is closed`);
    if (spec === undefined || spec.name !== name) throw new Error(`${this.target}: wrote '${name}' but '${spec?.name}' was expected next`);
    if (this.partial + n > this.sizes[this.next]) {
      throw new Error(`${this.target}: tensor '${name}' gets more than the ${this.sizes[this.next]} bytes its header says`);
    }
    this.position += n;
    this.partial += n;
    if (this.partial === this.sizes[this.next]) {
      this.partial = 0;
      this.next++;
    }
    return this.fd;
  }

  /** Waits for the write and the flush in flight. */
  private async settle(): Promise<void> {
    await Promise.allSettled([this.writing, this.flushing]);
  }

  finish(): void {
    if (this.fd === undefined) throw new Error(`writer for ${this.target} is closed`);
    if (this.writing || this.flushing) throw new Error(`${this.target}: asynchronous writes in flight; use finishAsync`);
    if (this.next !== this.specs.length) throw new Error(`${this.target}: only ${this.next} of ${this.specs.length} tensors written`);
    if (this.flushError) throw this.flushError;
    // A trailing hole (skipZeros) has to be part of the file's length.
    fs.ftruncateSync(this.fd, this.position);
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    this.fd = undefined;
    fs.renameSync(this.tmp, this.target);
  }

  async finishAsync(): Promise<void> {
    await this.writing;
    await this.settle();
    this.finish();
  }

  abort(): void {
    if (this.writing || this.flushing) throw new Error(`${this.target}: asynchronous writes in flight; use abortAsync`);
    if (this.fd !== undefined) {
      fs.closeSync(this.fd);
      this.fd = undefined;
    }
    fs.rmSync(this.tmp, { force: true });
  }

  async abortAsync(): Promise<void> {
    await this.settle();
    this.abort();
  }
}

function writeFully(fd: number, bytes: Uint8Array, position: number): void {
  chargeWrite(bytes.byteLength);
  let done = 0;
  while (done < bytes.byteLength) {
    done += fs.writeSync(fd, bytes, done, Math.min(1 << 30, bytes.byteLength - done), position + done);
  }
}

function writeFullyAsync(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    chargeWrite(bytes.byteLength);
    let done = 0;
    const step = (): void => {
      if (done === bytes.byteLength) return resolve();
      fs.write(fd, bytes, done, Math.min(1 << 30, bytes.byteLength - done), position + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        step();
      });
    };
    step();
  });
}

/** Writes a whole small file atomically (reports, configs, indexes). */
export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  const tmp = tempPathFor(target);
  try {
    // Synced before the rename, so that a full disk is an error here and never an empty file there.
    const fd = fs.openSync(tmp, 'wx');
    try {
      chargeWrite(data.length);
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Splits tensors into shards of at most `maxBytes` each (a tensor larger than that gets its own shard). */
export function planShards(specs: TensorSpec[], maxBytes: number): TensorSpec[][] {
  const shards: TensorSpec[][] = [];
  let current: TensorSpec[] = [];
  let size = 0;
  for (const s of specs) {
    const n = byteSize(s.dtype, s.shape.reduce((a, b) => a * b, 1)) ?? 0;
    if (current.length > 0 && size + n > maxBytes) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(s);
    size += n;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

/**
 * A Hugging Face model's weights written into `dir` as `model.safetensors`, or as
 * `model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json` when they exceed
 * `maxShardBytes`. Tensors are written in spec order, one at a time.
 */
export class ShardedWriter {
  private readonly shards: TensorSpec[][];
  private readonly files: string[];
  private readonly shardOf = new Map<string, number>();
  private writer: SafetensorsWriter | undefined;
  private current = -1;
  private readonly totalBytes: number;

  constructor(
    private readonly dir: string,
    specs: TensorSpec[],
    maxShardBytes = Infinity,
    private readonly prefix = 'model',
  ) {
    this.shards = planShards(specs, maxShardBytes);
    const n = this.shards.length;
    const pad = (i: number): string => String(i).padStart(5, '0');
    this.files = n === 1 ? [`${prefix}.safetensors`] : this.shards.map((_, i) => `${prefix}-${pad(i + 1)}-of-${pad(n)}.safetensors`);
    this.shards.forEach((shard, i) => shard.forEach((s) => this.shardOf.set(s.name, i)));
    this.totalBytes = specs.reduce((a, s) => a + (byteSize(s.dtype, s.shape.reduce((x, y) => x * y, 1)) ?? 0), 0);
  }

  get fileNames(): string[] {
    return this.files;
  }

  write(name: string, bytes: Uint8Array): void {
    this.writerFor(name).write(name, bytes);
  }

  /** Appends the next bytes of tensor `name` (see SafetensorsWriter.writePart). */
  writePart(name: string, bytes: Uint8Array): void {
    this.writerFor(name).writePart(name, bytes);
  }

  /** See SafetensorsWriter.writePartAsync. */
  async writePartAsync(name: string, bytes: Uint8Array): Promise<void> {
    const i = this.shardOf.get(name);
    if (i !== undefined && i !== this.current && this.writer) {
      await this.writer.finishAsync();
      this.writer = undefined;
    }
    await this.writerFor(name).writePartAsync(name, bytes);
  }

  async finishAsync(): Promise<void> {
    await this.writer?.finishAsync();
    this.writer = undefined;
    this.finish();
  }

  async abortAsync(): Promise<void> {
    await this.writer?.abortAsync();
    this.writer = undefined;
  }

  private writerFor(name: string): SafetensorsWriter {
    const i = this.shardOf.get(name);
    if (i === undefined) throw new Error(`tensor '${name}' is not in the output plan`);
    if (i !== this.current) {
      this.writer?.finish();
      this.current = i;
      this.writer = new SafetensorsWriter(path.join(this.dir, this.files[i]), this.shards[i]);
    }
    return this.writer!;
  }

  finish(): void {
    if (this.writer === undefined && this.shards[0].length === 0) {
      this.writer = new SafetensorsWriter(path.join(this.dir, this.files[0]), []);
    }
    this.writer?.finish();
    this.writer = undefined;
    if (this.files.length > 1) {
      const weightMap: Record<string, string> = {};
      this.shards.forEach((shard, i) => shard.forEach((s) => (weightMap[s.name] = this.files[i])));
      const index = { metadata: { total_size: this.totalBytes }, weight_map: weightMap };
      writeFileAtomic(path.join(this.dir, `${this.prefix}.safetensors.index.json`), JSON.stringify(index, null, 2) + '\n');
    }
  }

  abort(): void {
    this.writer?.abort();
    this.writer = undefined;
  }
}
