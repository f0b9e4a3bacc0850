/**
 * PyTorch checkpoints (`torch.save`, the zip format of torch >= 1.6: `.bin`, `.pt`, `.pth`) read without
 * executing anything. `<archive>/data.pkl` is interpreted by the restricted unpickler with only the
 * globals a state dict needs; each tensor becomes a TensorInfo whose byte range lies inside its storage's
 * stored entry `<archive>/data/<key>`, so the engine reads it in place exactly like safetensors data.
 */
import * as fs from 'node:fs';
import { LensError } from '../errors';
import { openRegularFile } from '../files';
import { Dtype, elementBytes } from '../safetensors/dtypes';
import { TensorInfo } from '../safetensors/header';
import { PyDict, PyGlobal, PyTuple, unpickle } from './unpickle';
import { entryDataOffset, readBytesAt, readZipDirectory, ZipDirectory } from './zip';

/** The typed storage classes torch pickles (`torch.FloatStorage`, …), by the engine dtype they hold. */
export const STORAGE_DTYPES: Record<string, Dtype> = {
  DoubleStorage: 'F64',
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
  ComplexFloatStorage: 'C64',
  // Raw bytes (torch 2.x UntypedStorage): the tensor is read as its bytes.
  UntypedStorage: 'U8',
};

/**
 * Dtypes without a legacy storage class (float8, unsigned ints): torch >= 2.1 pickles their tensors with
 * `_rebuild_tensor_v3` on an UntypedStorage, naming the dtype itself (`torch.float8_e4m3fn`).
 */
const NEW_DTYPES: Record<string, Dtype> = {
  float8_e5m2: 'F8_E5M2',
  float8_e4m3fn: 'F8_E4M3',
  float8_e8m0fnu: 'F8_E8M0',
  uint16: 'U16',
  uint32: 'U32',
  uint64: 'U64',
};

/** The globals a state dict's pickle names; everything else is refused before anything is built. */
const ALLOWED: Record<string, Set<string>> = {
  collections: new Set(['OrderedDict']),
  'torch._utils': new Set(['_rebuild_tensor_v2', '_rebuild_tensor_v3', '_rebuild_parameter', '_rebuild_parameter_with_state']),
  torch: new Set([...Object.keys(STORAGE_DTYPES), ...Object.keys(NEW_DTYPES)]),
  'torch.storage': new Set(['UntypedStorage']),
  builtins: new Set(['set', 'frozenset']),
};

/** Where the pickle ends; a state dict's pickle is small (a 70B model's is well under a megabyte). */
const MAX_PICKLE_BYTES = 256 << 20;

export interface TorchCheckpoint {
  file: string;
  fileSize: number;
  metadata: Record<string, string>;
  tensors: TensorInfo[];
}

interface Storage {
  dtype: Dtype;
  key: string;
  numel: number;
}

class Tensor {
  constructor(readonly info: Omit<TensorInfo, 'name'>) {}
}

/** File names read as PyTorch checkpoints whatever their first bytes (so that a damaged one gets this reader's message). */
export const PYTORCH_EXTENSIONS = ['.bin', '.pt', '.pth'];

/** Whether a file starts like a zip archive (`PK\x03\x04`). */
export function isZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

/** Whether a file starts like a bare pickle (protocol 2+), the legacy torch.save format. */
export function isBarePickle(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5;
}

/** Reads the tensor index of a PyTorch zip checkpoint: names, dtypes, shapes and byte ranges; no tensor data. */
export function readTorchCheckpoint(file: string): TorchCheckpoint {
  const fd = openRegularFile(file);
  try {
    const fileSize = fs.fstatSync(fd).size;
    const head = readBytesAt(fd, file, 0, Math.min(4, fileSize));
    if (isBarePickle(head)) {
      throw new LensError(file, 'legacy PyTorch format (torch < 1.6 or _use_new_zipfile_serialization=False) is not read: it cannot be loaded without running pickled code; re-save it with a recent torch.save');
    }
    if (!isZip(head)) throw new LensError(file, 'not a PyTorch checkpoint: no zip archive at the start of the file');
    const dir = readZipDirectory(fd, file, fileSize);
    const prefix = archivePrefix(dir);
    const byteorder = dir.entries.get(`${prefix}/byteorder`);
    if (byteorder) {
      const order = readBytesAt(fd, file, entryDataOffset(fd, dir, byteorder), Math.min(byteorder.size, 16)).toString('latin1');
      if (order !== 'little') throw new LensError(file, `tensors are stored ${order}-endian; only little-endian checkpoints are read`);
    }
    const pkl = dir.entries.get(`${prefix}/data.pkl`)!;
    if (pkl.size > MAX_PICKLE_BYTES) throw new LensError(file, `${pkl.name} of ${pkl.size} bytes exceeds the limit of ${MAX_PICKLE_BYTES}`);
    const pickle = readBytesAt(fd, file, entryDataOffset(fd, dir, pkl), pkl.size);
    const storageOffsets = new Map<string, { offset: number; bytes: number }>();
    const storageAt = (s: Storage): { offset: number; bytes: number } => {
      let at = storageOffsets.get(s.key);
      if (at === undefined) {
        const entry = dir.entries.get(`${prefix}/data/${s.key}`);
        if (!entry) throw new LensError(file, `storage ${s.key} has no entry ${prefix}/data/${s.key} in the archive`);
        at = { offset: entryDataOffset(fd, dir, entry), bytes: entry.size };
        const need = s.numel * elementBytes(s.dtype);
        if (need > at.bytes) throw new LensError(file, `storage ${s.key} declares ${s.numel} elements of ${s.dtype} (${need} bytes) but its entry holds ${at.bytes}`);
        storageOffsets.set(s.key, at);
      }
      return at;
    };
    const root = unpickle(pickle, file, {
      global: (module, name) => {
        if (module === 'torch' && /^[A-Za-z0-9_]+Storage$/.test(name) && !ALLOWED.torch.has(name)) {
          throw new LensError(file, `tensors of torch.${name} (quantized, complex128 or another dtype without a safetensors equivalent) are not read`);
        }
        if (!ALLOWED[module]?.has(name)) {
          throw new LensError(file, `refused to load: the pickle names the global ${module}.${name}, which a state dict does not need (loading it with torch.load could run code)`);
        }
        return new PyGlobal(module, name);
      },
      persistentLoad: (pid) => storageOf(file, pid),
      reduce: (g, args) => reduce(file, g, args, storageAt),
      build: (obj, state) => {
        // OrderedDict keeps instance attributes (a state dict's `_metadata`) as BUILD state; nothing else is built.
        if (obj instanceof PyDict && (state instanceof PyDict || state === null)) return obj;
        if (obj instanceof Tensor) return obj;
        throw new LensError(file, 'pickle: BUILD of an object a state dict does not hold');
      },
    });
    return { file, fileSize, metadata: {}, tensors: stateDictTensors(file, root) };
  } finally {
    fs.closeSync(fd);
  }
}

/** The single top-level folder holding `data.pkl` (torch names it after the file, or `archive`). */
function archivePrefix(dir: ZipDirectory): string {
  const tops = [...dir.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (tops.length === 0) throw new LensError(dir.file, 'zip archive without <name>/data.pkl: not a torch.save checkpoint');
  if (tops.length > 1) throw new LensError(dir.file, `zip archive with ${tops.length} data.pkl records: not a single torch.save checkpoint`);
  const prefix = tops[0].slice(0, -'/data.pkl'.length);
  if (dir.entries.has(`${prefix}/constants.pkl`)) throw new LensError(dir.file, 'a TorchScript archive (torch.jit.save), not a state dict; save model.state_dict() with torch.save');
  return prefix;
}

function storageOf(file: string, pid: unknown): Storage {
  const t = pid instanceof PyTuple ? pid.items : [];
  const [tag, type, key, , numel] = t;
  if (t.length !== 5 || tag !== 'storage' || !(type instanceof PyGlobal) || typeof key !== 'string' || !Number.isSafeInteger(numel) || (numel as number) < 0) {
    throw new LensError(file, 'pickle: a persistent id that is not a torch storage reference');
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new LensError(file, `pickle: storage key ${JSON.stringify(key)} is not a plain name`);
  const dtype = STORAGE_DTYPES[type.name];
  if (dtype === undefined || (type.module !== 'torch' && type.module !== 'torch.storage')) throw new LensError(file, `pickle: ${type} is not a storage type`);
  return { dtype, key, numel: numel as number };
}

function reduce(file: string, g: PyGlobal, args: unknown[], storageAt: (s: Storage) => { offset: number; bytes: number }): unknown {
  switch (`${g}`) {
    case 'collections.OrderedDict':
      if (args.length !== 0) throw new LensError(file, 'pickle: OrderedDict built from arguments');
      return new PyDict();
    case 'builtins.set':
    case 'builtins.frozenset':
      return args.length === 0 ? [] : Array.isArray(args[0]) ? [...args[0]] : reject(file, g);
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      if (!(args[0] instanceof Tensor)) throw new LensError(file, `pickle: ${g} of something that is not a tensor`);
      return args[0];
    case 'torch._utils._rebuild_tensor_v2':
      return rebuildTensor(file, args, storageAt);
    case 'torch._utils._rebuild_tensor_v3': {
      const dtype = args[6];
      if (!(dtype instanceof PyGlobal) || dtype.module !== 'torch' || NEW_DTYPES[dtype.name] === undefined || (args[0] as Storage | null)?.dtype !== 'U8') {
        throw new LensError(file, 'pickle: _rebuild_tensor_v3 with arguments that are not (untyped storage, offset, size, stride, requires_grad, hooks, dtype, …)');
      }
      return rebuildTensor(file, args, storageAt, NEW_DTYPES[dtype.name]);
    }
    default:
      return reject(file, g);
  }
}

function reject(file: string, g: PyGlobal): never {
  throw new LensError(file, `pickle: ${g} is not called the way a state dict calls it; refused`);
}

/**
 * `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])` as
 * a byte range; v3 adds the dtype after the hooks, its storage untyped (offsets still count elements).
 */
function rebuildTensor(file: string, args: unknown[], storageAt: (s: Storage) => { offset: number; bytes: number }, dtype?: Dtype): Tensor {
  const [storage, storageOffset, size, stride] = args;
  const ints = (v: unknown): number[] | undefined =>
    v instanceof PyTuple && v.items.every((x) => Number.isSafeInteger(x) && (x as number) >= 0) ? (v.items as number[]) : undefined;
  const shape = ints(size);
  const strides = ints(stride);
  if (args.length < 6 || typeof storage !== 'object' || storage === null || !('key' in storage) || !Number.isSafeInteger(storageOffset) || (storageOffset as number) < 0 || !shape || !strides || strides.length !== shape.length) {
    throw new LensError(file, 'pickle: _rebuild_tensor_v2 with arguments that are not (storage, offset, size, stride, …)');
  }
  const s = storage as Storage;
  const numel = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(numel)) throw new LensError(file, `a tensor of shape [${shape}] is too large`);
  if (!isContiguous(shape, strides, numel)) {
    throw new LensError(file, `a tensor of shape [${shape}] is a non-contiguous view (strides [${strides}]) of storage ${s.key}; LoRA Lens reads tensors as byte ranges, so save it with .contiguous()`);
  }
  const eb = elementBytes(dtype ?? s.dtype);
  const at = storageAt(s);
  const start = (storageOffset as number) * eb;
  const byteLength = numel * eb;
  const storageBytes = s.numel * elementBytes(s.dtype);
  if (numel > 0 && start + byteLength > storageBytes) {
    throw new LensError(file, `a tensor of shape [${shape}] at element ${storageOffset} runs past the end of storage ${s.key} (${storageBytes} bytes)`);
  }
  return new Tensor({ dtype: dtype ?? s.dtype, shape: [...shape], numel, offset: at.offset + (numel > 0 ? start : 0), byteLength, file });
}

/** Row-major with no gaps, as torch's is_contiguous: dimensions of size 1 may carry any stride. */
function isContiguous(shape: number[], strides: number[], numel: number): boolean {
  if (numel === 0) return true;
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== expected) return false;
    expected *= shape[i];
  }
  return true;
}

/** The tensors of a flat state dict (name → tensor), in the pickle's order. */
function stateDictTensors(file: string, root: unknown): TensorInfo[] {
  if (!(root instanceof PyDict)) throw new LensError(file, 'the pickle holds no dict: not a state dict');
  const tensors: TensorInfo[] = [];
  for (const [name, v] of root.map) {
    if (typeof name !== 'string') throw new LensError(file, `state dict key ${JSON.stringify(name)} is not a string`);
    if (v instanceof Tensor) tensors.push({ name, ...v.info });
    else if (v instanceof PyDict) throw new LensError(file, `entry '${name}' is a dict, not a tensor: only a flat state dict (name -> tensor) is read; save model.state_dict() itself`);
    else throw new LensError(file, `entry '${name}' is ${v === null ? 'None' : typeof v === 'object' ? 'not a tensor' : `a ${typeof v}`}, not a tensor: only a flat state dict (name -> tensor) is read`);
  }
  return tensors;
}
