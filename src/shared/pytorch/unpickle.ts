/**
 * A pickle interpreter that executes nothing. It reads the opcodes of protocols 2 to 5 into plain
 * values; every global the stream names goes through `hooks.global`, which refuses anything outside its
 * allow-list, and REDUCE / BUILD / persistent ids are handed to hooks that build inert descriptions (a
 * tensor's dtype, shape and byte range) instead of calling anything. Opcodes that only arbitrary objects
 * need (NEWOBJ, INST, OBJ, EXT*, out-of-band buffers) are refused.
 */
import { LensError } from '../errors';

/** A global named by the stream, after the allow-list accepted it. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  toString(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A dict (ordered, as Python's); keys are strings or numbers in state dicts. */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
}

export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

export interface UnpickleHooks {
  /** Accepts an allowed global or throws. */
  global(module: string, name: string): PyGlobal;
  reduce(callable: PyGlobal, args: unknown[]): unknown;
  persistentLoad(pid: unknown): unknown;
  /** BUILD: sets `state` on `obj`; returns the object that stays on the stack. */
  build(obj: unknown, state: unknown): unknown;
}

const NAMES: Record<number, string> = {
  0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x69: 'INST', 0x6f: 'OBJ',
  0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER', 0x50: 'PERSID', 0x49: 'INT', 0x4c: 'LONG', 0x46: 'FLOAT',
  0x53: 'STRING', 0x56: 'UNICODE', 0x67: 'GET', 0x70: 'PUT',
};

export function unpickle(data: Uint8Array, file: string, hooks: UnpickleHooks): unknown {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const fail = (what: string): never => {
    throw new LensError(file, `pickle: ${what}`);
  };
  let pos = 0;
  const need = (n: number): number => {
    if (pos + n > buf.length) fail(`truncated at byte ${pos} (needs ${n} more)`);
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = (): number => buf[need(1)];
  const u16 = (): number => buf.readUInt16LE(need(2));
  const u32 = (): number => buf.readUInt32LE(need(4));
  const u64 = (): number => {
    const v = buf.readBigUInt64LE(need(8));
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`length ${v} is too large`);
    return Number(v);
  };
  const str = (n: number): string => buf.toString('utf8', need(n), pos);
  const bytes = (n: number): Uint8Array => Uint8Array.prototype.slice.call(buf, need(n), pos);
  const line = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) fail('truncated: unterminated line');
    const s = buf.toString('utf8', pos, end);
    pos = end + 1;
    return s;
  };

  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK on the stack');
    return stack.splice(m!);
  };
  const asDict = (o: unknown): PyDict => (o instanceof PyDict ? o : fail('SETITEM on something that is not a dict'));
  const asList = (o: unknown): unknown[] => (Array.isArray(o) ? o : fail('APPEND on something that is not a list'));
  const setItems = (d: PyDict, items: unknown[]): void => {
    if (items.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) d.map.set(key(items[i]), items[i + 1]);
  };
  const key = (k: unknown): unknown => (typeof k === 'string' || typeof k === 'number' || typeof k === 'boolean' || k === null ? k : fail(`dict key of type ${typeof k} is not supported`));
  const signedLong = (b: Uint8Array): number => {
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b.length && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) fail(`integer ${v} is too large`);
    return Number(v);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() < 2) fail('protocol below 2');
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) fail('malformed end of stream');
        return stack[0];
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x30: // POP
        if (marks.length && stack.length === marks[marks.length - 1]) marks.pop();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo entry ${i} is not defined`);
        stack.push(memo.get(i));
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(buf.readInt32LE(need(4)));
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(signedLong(bytes(u8())));
        break;
      case 0x8b: {
        // LONG4
        const n = u32();
        if (n > 8) fail(`integer of ${n} bytes is too large`);
        stack.push(signedLong(bytes(n)));
        break;
      }
      case 0x47: // BINFLOAT
        stack.push(buf.readDoubleBE(need(8)));
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x54: // BINSTRING
        stack.push(str(buf.readInt32LE(need(4)) >>> 0));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(str(u8()));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()));
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(bytes(u64()));
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop()]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x74: // TUPLE
        stack.push(new PyTuple(popMark()));
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        asList(top()).push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        asList(top()).push(...items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new PyDict());
        break;
      case 0x64: {
        // DICT
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        asDict(top()).map.set(key(k), v);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(asDict(top()), items);
        break;
      }
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        asList(top()).push(...items);
        break;
      }
      case 0x91: // FROZENSET
        stack.push(popMark());
        break;
      case 0x63: {
        // GLOBAL
        const module = line();
        stack.push(hooks.global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL of something that is not a name');
        stack.push(hooks.global(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const callable = pop();
        if (!(callable instanceof PyGlobal)) fail('REDUCE of something that is not an allowed global');
        if (!(args instanceof PyTuple)) fail(`REDUCE of ${callable} with arguments that are not a tuple`);
        stack.push(hooks.reduce(callable as PyGlobal, (args as PyTuple).items));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        stack.push(hooks.build(pop(), state));
        break;
      }
      case 0x51: // BINPERSID
        stack.push(hooks.persistentLoad(pop()));
        break;
      default:
        fail(`opcode ${NAMES[op] ?? `0x${op.toString(16).padStart(2, '0')}`} at byte ${pos - 1} is not used by state dicts; refused`);
    }
  }
}
