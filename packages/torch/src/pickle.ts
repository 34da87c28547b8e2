/**
 * A restricted unpickler: it reads the opcodes of pickle protocols 2 to 5 that torch.save and
 * ordinary Python data emit, and the text opcodes of protocols 0 and 1 for plain values (INT,
 * LONG, FLOAT, UNICODE), and builds plain values from them. It executes nothing. A global is
 * only ever a name ({@link PickleGlobal}); calling one (REDUCE, NEWOBJ, INST, OBJ) asks the
 * caller's `reduce` hook, and where the hook does not know it the result is an inert
 * {@link PickleObject} that records the name, the arguments and the state. Globals that name
 * code execution or the system (`os.system`, `builtins.eval`, ...) are refused outright.
 *
 * Values: `None` -> null, bool, int -> number (bigint beyond 2^53), float -> number, str ->
 * string, bytes -> Uint8Array, list -> Array, tuple -> frozen Array, dict -> Map, set ->
 * Set, everything else -> PickleObject.
 */
import { KwError } from '@kernelwarehouse/core';
import { bytesArgument, functionOption, integerOption, optionsObject } from './options.js';

/** A global named by the pickle (`module.name`); never imported or called. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  /** `module.name`. */
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** An inert stand-in for an object the pickle would have built by calling a global. */
export class PickleObject {
  /** State given by BUILD (usually the object's `__dict__`). */
  state: unknown = undefined;
  /** Items given by APPEND(S) / SETITEM(S) (list and dict subclasses). */
  readonly items: unknown[] = [];
  constructor(
    readonly global: PickleGlobal,
    readonly args: readonly unknown[],
  ) {}
}

/** Hooks through which the caller gives meaning to persistent ids and to known globals. */
export interface UnpickleHooks {
  /** BINPERSID: the persistent id (torch: `('storage', type, key, location, numel)`). */
  persistentLoad?: (pid: unknown) => unknown;
  /**
   * REDUCE / NEWOBJ of a global: return the value, or undefined to get an inert PickleObject.
   * Never called for refused globals.
   */
  reduce?: (g: PickleGlobal, args: readonly unknown[]) => unknown;
}

/**
 * Bounds the reader enforces before it allocates. Each is an integer >= 1 (at most
 * `Number.MAX_SAFE_INTEGER`); anything else (NaN, Infinity, 0, a fraction) is refused with
 * ARGUMENT_INVALID rather than taken as "no limit".
 */
export interface UnpickleLimits {
  /** Values on the stack at once. Default 100 000. */
  maxStack?: number;
  /** Open MARKs at once (nesting of tuples / lists / dicts being built). Default 1000. */
  maxMarks?: number;
  /** Memo entries. Default 10 000 000. */
  maxMemo?: number;
}

/** The limits with their defaults, each checked (ARGUMENT_INVALID naming the option). */
export function checkUnpickleLimits(
  limits: unknown,
  where = 'unpickle limits',
): Required<UnpickleLimits> {
  const l = optionsObject(where, limits);
  return {
    maxStack: integerOption(`${where}.maxStack`, l.maxStack, 1, 100_000),
    maxMarks: integerOption(`${where}.maxMarks`, l.maxMarks, 1, 1000),
    maxMemo: integerOption(`${where}.maxMemo`, l.maxMemo, 1, 10_000_000),
  };
}

/** Append `items` to `target` one by one (a spread into push overflows the JS stack). */
function appendAll(target: unknown[], items: readonly unknown[]): void {
  for (let i = 0; i < items.length; i++) target.push(items[i]);
}

const UNSAFE_MODULES = new Set([
  'os',
  'posix',
  'nt',
  'posixpath',
  'ntpath',
  'subprocess',
  'sys',
  'shutil',
  'socket',
  'importlib',
  'runpy',
  'pty',
  'code',
  'codeop',
  'webbrowser',
  'pickle',
  '_pickle',
  'marshal',
  'ctypes',
  'multiprocessing',
  'signal',
  'tempfile',
  'asyncio',
  'threading',
  '_thread',
  'pdb',
  'timeit',
  'commands',
  'platform',
  'urllib',
  'http',
  'requests',
  'shelve',
  'glob',
  'io',
  '_io',
  'zipimport',
  'pkgutil',
]);
const UNSAFE_BUILTINS = new Set([
  'eval',
  'exec',
  'execfile',
  'compile',
  '__import__',
  'open',
  'file',
  'getattr',
  'setattr',
  'delattr',
  'globals',
  'locals',
  'vars',
  'input',
  'raw_input',
  'breakpoint',
  'exit',
  'quit',
  'help',
  'reload',
  'apply',
  '__loader__',
  '__builtins__',
]);
const UNSAFE_QUALIFIED = new Set([
  'operator.attrgetter',
  'operator.methodcaller',
  'functools.partial',
  'functools.reduce',
  'torch.load',
  'torch.hub.load',
  'torch.jit.load',
  'numpy.load',
  'numpy.testing._private.utils.runstring',
]);

/** True when `module.name` is a global that could run code or touch the system. */
export function isUnsafeGlobal(module: string, name: string): boolean {
  if (typeof module !== 'string' || typeof name !== 'string')
    throw new KwError(
      'ARGUMENT_INVALID',
      `isUnsafeGlobal takes two strings (module, name), found ${typeName(module)} and ${typeName(name)}`,
    );
  const root = module.split('.')[0]!;
  if (UNSAFE_MODULES.has(root)) return true;
  if ((module === 'builtins' || module === '__builtin__') && UNSAFE_BUILTINS.has(name)) return true;
  if (UNSAFE_QUALIFIED.has(`${module}.${name}`)) return true;
  // dunder lookups are how gadget chains reach code (`__class__`, `__subclasses__`, `__globals__`)
  return /(^|\.)__\w+__$/.test(name) && name !== '__main__';
}

// the web-platform TextDecoder (Node, browsers, Deno, Bun), reached through globalThis so the
// package compiles without DOM or Node type libraries
const codecs = globalThis as unknown as {
  TextDecoder: new (label: string, o?: { fatal: boolean }) => { decode(b: Uint8Array): string };
};

const bad = (msg: string, details: Record<string, unknown> = {}): never => {
  throw new KwError('PTH_PICKLE', msg, details);
};

/**
 * Unpickle `bytes`. Throws PTH_PICKLE for malformed streams (unknown opcode, truncation, a stack
 * or memo that does not hold what an opcode needs), PTH_UNSAFE_GLOBAL for refused globals,
 * PTH_LIMIT past a bound and ARGUMENT_INVALID for bad arguments (bytes not a Uint8Array, a hook
 * that is not a function, a limit that is not an integer >= 1).
 *
 * @example
 * const value = unpickle(bytes, {}, { maxStack: 1_000_000 });
 */
export function unpickle(
  bytes: Uint8Array,
  hooks: UnpickleHooks = {},
  limits: UnpickleLimits = {},
): unknown {
  bytesArgument('unpickle bytes', bytes);
  // hooks are called as methods of the object given (`this` is kept)
  const h = optionsObject('unpickle hooks', hooks) as UnpickleHooks;
  functionOption('unpickle hooks.persistentLoad', h.persistentLoad);
  functionOption('unpickle hooks.reduce', h.reduce);
  const { maxStack, maxMarks, maxMemo } = checkUnpickleLimits(limits);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new codecs.TextDecoder('utf-8', { fatal: true });
  const latin1 = new codecs.TextDecoder('latin1');
  let pos = 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const need = (k: number, what: string) => {
    if (k < 0 || pos + k > bytes.length)
      bad(`${what} needs ${k} bytes at offset ${pos}, the pickle has ${bytes.length - pos} left`, {
        offset: pos,
      });
  };
  const u8 = () => {
    need(1, 'opcode argument');
    return bytes[pos++]!;
  };
  const u16 = () => {
    need(2, 'opcode argument');
    const v = dv.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = () => {
    need(4, 'opcode argument');
    const v = dv.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = () => {
    need(8, 'opcode argument');
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(bytes.length)) bad(`length ${v} at offset ${pos - 8} exceeds the pickle`);
    return Number(v);
  };
  const take = (k: number, what: string) => {
    need(k, what);
    const b = bytes.subarray(pos, pos + k);
    pos += k;
    return b;
  };
  const line = (what: string, max = 4096) => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0 || end - pos > max) bad(`${what} at offset ${pos} has no end of line`);
    // code points 0-255 (the WHATWG "latin1" label is windows-1252, which remaps 0x80-0x9f)
    let s = '';
    for (let i = pos; i < end; i += 8192)
      s += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + 8192)));
    pos = end + 1;
    return s;
  };
  const str = (b: Uint8Array) => {
    try {
      return utf8.decode(b);
    } catch {
      return bad(`string at offset ${pos - b.length} is not valid UTF-8`);
    }
  };
  const push = (v: unknown) => {
    if (stack.length >= maxStack)
      throw new KwError('PTH_LIMIT', `pickle stack exceeds ${maxStack} values`, {
        limit: maxStack,
      });
    stack.push(v);
  };
  const pop = (op: string) => {
    if (stack.length === 0) bad(`${op} at offset ${pos - 1} finds the stack empty`);
    return stack.pop();
  };
  const top = (op: string) => {
    if (stack.length === 0) bad(`${op} at offset ${pos - 1} finds the stack empty`);
    return stack[stack.length - 1];
  };
  const popMark = (op: string) => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) bad(`${op} at offset ${pos - 1} has no MARK`);
    stack = prev!;
    return items;
  };
  const put = (i: number) => {
    if (!memo.has(i) && memo.size >= maxMemo)
      throw new KwError('PTH_LIMIT', `pickle memo exceeds ${maxMemo} entries`);
    memo.set(i, top('PUT'));
  };
  const get = (i: number) => {
    if (!memo.has(i)) bad(`GET of memo ${i}, which was never PUT`);
    push(memo.get(i));
  };
  const global = (module: string, name: string) => {
    if (isUnsafeGlobal(module, name))
      throw new KwError(
        'PTH_UNSAFE_GLOBAL',
        `the pickle names ${module}.${name}; nothing was run, the file is refused`,
        { global: `${module}.${name}` },
      );
    push(new PickleGlobal(module, name));
  };
  const call = (fn: unknown, args: unknown, op: string) => {
    if (!(fn instanceof PickleGlobal))
      bad(`${op} at offset ${pos - 1} calls a ${typeName(fn)}, not a global`);
    if (!Array.isArray(args)) bad(`${op} at offset ${pos - 1}: arguments are not a tuple`);
    const g = fn as PickleGlobal;
    const v = h.reduce?.(g, args as unknown[]);
    return v === undefined ? new PickleObject(g, args as unknown[]) : v;
  };
  const setItems = (target: unknown, kv: unknown[], op: string) => {
    if (target instanceof Map) {
      for (let i = 0; i + 1 < kv.length; i += 2) target.set(kv[i], kv[i + 1]);
    } else if (target instanceof PickleObject) appendAll(target.items, kv);
    else bad(`${op} at offset ${pos - 1} targets a ${typeName(target)}, not a dict`);
    if (kv.length % 2) bad(`${op} at offset ${pos - 1} has an odd number of items`);
  };
  const appendItems = (target: unknown, items: unknown[], op: string) => {
    if (Array.isArray(target) && !Object.isFrozen(target)) {
      for (const v of items) target.push(v);
    } else if (target instanceof Set) for (const v of items) target.add(v);
    else if (target instanceof PickleObject) appendAll(target.items, items);
    else bad(`${op} at offset ${pos - 1} targets a ${typeName(target)}, not a list`);
  };
  const int = (b: Uint8Array): number | bigint => {
    // little-endian two's complement
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : v;
  };

  while (true) {
    if (pos >= bytes.length) bad('the pickle ends without STOP');
    const op = bytes[pos++]!;
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) bad(`pickle protocol ${bytes[pos - 1]} is newer than 5`);
        break;
      case 0x95: // FRAME: a length hint only
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length)
          bad(`STOP with ${stack.length} values on the stack and ${marks.length} open MARKs`);
        return stack[0];
      case 0x28: // MARK
        if (marks.length >= maxMarks)
          throw new KwError('PTH_LIMIT', `pickle nesting exceeds ${maxMarks} open MARKs`, {
            limit: maxMarks,
          });
        marks.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        if (stack.length) stack.pop();
        else popMark('POP');
        break;
      case 0x31: // POP_MARK
        popMark('POP_MARK');
        break;
      case 0x32: // DUP
        push(top('DUP'));
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x4a: // BININT
        need(4, 'BININT');
        push(dv.getInt32(pos, true));
        pos += 4;
        break;
      case 0x4b: // BININT1
        push(u8());
        break;
      case 0x4d: // BININT2
        push(u16());
        break;
      case 0x8a: // LONG1
        push(int(take(u8(), 'LONG1')));
        break;
      case 0x8b: {
        // LONG4
        const k = u32();
        if (k > 64) throw new KwError('PTH_LIMIT', `LONG4 integer of ${k} bytes (limit 64)`);
        push(int(take(k, 'LONG4')));
        break;
      }
      case 0x49: {
        // INT (text): also True/False as 01/00
        const s = line('INT');
        if (s === '01') push(true);
        else if (s === '00') push(false);
        else if (/^-?\d{1,18}$/.test(s)) push(Number(s));
        else bad(`INT "${s.slice(0, 40)}" is not an integer`);
        break;
      }
      case 0x4c: {
        // LONG (text, protocols 0 and 1): decimal digits and an optional L (`2147483648L`)
        const s = line('LONG');
        const m = /^([-+]?)(\d+)L?$/.exec(s);
        if (!m) bad(`LONG "${s.slice(0, 40)}" at offset ${pos - s.length - 1} is not an integer`);
        if (m![2]!.length > 160)
          throw new KwError('PTH_LIMIT', `LONG integer of ${m![2]!.length} digits (limit 160)`);
        const v = BigInt(m![1] === '-' ? `-${m![2]}` : m![2]!);
        push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(v)
            : v,
        );
        break;
      }
      case 0x46: {
        // FLOAT (text, protocol 0): Python's repr of a float
        const s = line('FLOAT');
        const m = /^[-+]?(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|(inf|nan))$/i.exec(
          s,
        );
        if (!m) bad(`FLOAT "${s.slice(0, 40)}" at offset ${pos - s.length - 1} is not a number`);
        const neg = s.startsWith('-');
        push(
          m![2] === undefined
            ? Number(s)
            : m![2]!.toLowerCase() === 'nan'
              ? Number.NaN
              : neg
                ? Number.NEGATIVE_INFINITY
                : Number.POSITIVE_INFINITY,
        );
        break;
      }
      case 0x56: // UNICODE (text, protocol 0): raw-unicode-escape
        push(rawUnicodeEscape(line('UNICODE', bytes.length), pos));
        break;
      case 0x53: // STRING (text): a quoted Python 2 str
      case 0x50: // PERSID (text)
        bad(
          `opcode ${op === 0x53 ? 'STRING' : 'PERSID'} (0x${op.toString(16)}) at offset ${pos - 1} is a protocol 0/1 text opcode the reader does not support; re-save the file with torch.save's default protocol`,
          { opcode: op, offset: pos - 1 },
        );
        break;
      case 0x47: // BINFLOAT (big-endian)
        need(8, 'BINFLOAT');
        push(dv.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x58: // BINUNICODE
        push(str(take(u32(), 'BINUNICODE')));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(str(take(u8(), 'SHORT_BINUNICODE')));
        break;
      case 0x8d: // BINUNICODE8
        push(str(take(u64(), 'BINUNICODE8')));
        break;
      case 0x54: // BINSTRING (python 2 str)
        push(latin1.decode(take(u32(), 'BINSTRING')));
        break;
      case 0x55: // SHORT_BINSTRING
        push(latin1.decode(take(u8(), 'SHORT_BINSTRING')));
        break;
      case 0x42: // BINBYTES
        push(take(u32(), 'BINBYTES').slice());
        break;
      case 0x43: // SHORT_BINBYTES
        push(take(u8(), 'SHORT_BINBYTES').slice());
        break;
      case 0x8e: // BINBYTES8
        push(take(u64(), 'BINBYTES8').slice());
        break;
      case 0x96: // BYTEARRAY8
        push(take(u64(), 'BYTEARRAY8').slice());
        break;
      case 0x29: // EMPTY_TUPLE
        push(Object.freeze([]));
        break;
      case 0x85: // TUPLE1
        push(Object.freeze([pop('TUPLE1')]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop('TUPLE2');
        push(Object.freeze([pop('TUPLE2'), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop('TUPLE3');
        const b = pop('TUPLE3');
        push(Object.freeze([pop('TUPLE3'), b, c]));
        break;
      }
      case 0x74: // TUPLE
        push(Object.freeze(popMark('TUPLE')));
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x6c: // LIST
        push(popMark('LIST'));
        break;
      case 0x7d: // EMPTY_DICT
        push(new Map());
        break;
      case 0x64: {
        // DICT
        const kv = popMark('DICT');
        const m = new Map();
        setItems(m, kv, 'DICT');
        push(m);
        break;
      }
      case 0x8f: // EMPTY_SET
        push(new Set());
        break;
      case 0x91: // FROZENSET
        push(new Set(popMark('FROZENSET')));
        break;
      case 0x61: {
        // APPEND
        const v = pop('APPEND');
        appendItems(top('APPEND'), [v], 'APPEND');
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark('APPENDS');
        appendItems(top('APPENDS'), items, 'APPENDS');
        break;
      }
      case 0x90: {
        // ADDITEMS
        const items = popMark('ADDITEMS');
        const s = top('ADDITEMS');
        if (!(s instanceof Set)) bad(`ADDITEMS targets a ${typeName(s)}, not a set`);
        for (const v of items) (s as Set<unknown>).add(v);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop('SETITEM');
        const k = pop('SETITEM');
        setItems(top('SETITEM'), [k, v], 'SETITEM');
        break;
      }
      case 0x75: {
        // SETITEMS
        const kv = popMark('SETITEMS');
        setItems(top('SETITEMS'), kv, 'SETITEMS');
        break;
      }
      case 0x71: // BINPUT
        put(u8());
        break;
      case 0x72: // LONG_BINPUT
        put(u32());
        break;
      case 0x70: {
        // PUT (text)
        const s = line('PUT');
        if (!/^\d{1,9}$/.test(s)) bad(`PUT "${s.slice(0, 40)}" is not a memo index`);
        put(Number(s));
        break;
      }
      case 0x94: // MEMOIZE
        put(memo.size);
        break;
      case 0x68: // BINGET
        get(u8());
        break;
      case 0x6a: // LONG_BINGET
        get(u32());
        break;
      case 0x67: {
        // GET (text)
        const s = line('GET');
        if (!/^\d{1,9}$/.test(s)) bad(`GET "${s.slice(0, 40)}" is not a memo index`);
        get(Number(s));
        break;
      }
      case 0x63: {
        // GLOBAL
        const module = line('GLOBAL module');
        global(module, line('GLOBAL name'));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop('STACK_GLOBAL');
        const module = pop('STACK_GLOBAL');
        if (typeof name !== 'string' || typeof module !== 'string')
          bad('STACK_GLOBAL needs two strings');
        global(module as string, name as string);
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop('REDUCE');
        const fn = pop('REDUCE');
        push(call(fn, args, 'REDUCE'));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args)
        const args = pop('NEWOBJ');
        const cls = pop('NEWOBJ');
        push(call(cls, args, 'NEWOBJ'));
        break;
      }
      case 0x92: {
        // NEWOBJ_EX
        const kwargs = pop('NEWOBJ_EX');
        const args = pop('NEWOBJ_EX');
        const cls = pop('NEWOBJ_EX');
        const o = call(cls, args, 'NEWOBJ_EX');
        if (o instanceof PickleObject) o.state = kwargs;
        push(o);
        break;
      }
      case 0x69: {
        // INST (protocol 0 object)
        const module = line('INST module');
        const name = line('INST name');
        const args = popMark('INST');
        global(module, name);
        push(call(pop('INST'), Object.freeze(args), 'INST'));
        break;
      }
      case 0x6f: {
        // OBJ
        const items = popMark('OBJ');
        if (items.length === 0) bad('OBJ without a class');
        push(call(items[0], Object.freeze(items.slice(1)), 'OBJ'));
        break;
      }
      case 0x62: {
        // BUILD: set the state of the object below; nothing is called
        const state = pop('BUILD');
        const o = top('BUILD');
        if (o instanceof PickleObject) o.state = state;
        // torch tensors and dicts (OrderedDict._metadata) take state we do not need
        else if (o === null || typeof o !== 'object')
          bad(`BUILD at offset ${pos - 1} targets a ${typeName(o)}`);
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop('BINPERSID');
        if (!h.persistentLoad) bad('BINPERSID without a persistent loader');
        push(h.persistentLoad!(pid));
        break;
      }
      default:
        bad(`opcode 0x${op.toString(16).padStart(2, '0')} at offset ${pos - 1} is not supported`, {
          opcode: op,
          offset: pos - 1,
        });
    }
  }
}

/**
 * Python's raw-unicode-escape decoding (protocol 0 UNICODE): bytes are code points 0-255, and
 * `\uXXXX` / `\UXXXXXXXX` after an odd run of backslashes are escapes.
 */
function rawUnicodeEscape(s: string, end: number): string {
  let out = '';
  let i = 0;
  while (i < s.length) {
    if (s[i] !== '\\') {
      out += s[i++];
      continue;
    }
    const run = i;
    while (i < s.length && s[i] === '\\') out += s[i++];
    const c = s[i];
    if ((i - run) % 2 === 0 || (c !== 'u' && c !== 'U')) continue;
    const n = c === 'u' ? 4 : 8;
    const hex = s.slice(i + 1, i + 1 + n);
    const cp = /^[0-9a-fA-F]+$/.test(hex) && hex.length === n ? Number.parseInt(hex, 16) : -1;
    if (cp < 0 || cp > 0x10ffff)
      bad(`UNICODE line ending at offset ${end - 1} has a bad \\${c} escape "${hex}"`);
    out = out.slice(0, -1) + String.fromCodePoint(cp);
    i += 1 + n;
  }
  return out;
}

/** A short type word for messages. */
export function typeName(v: unknown): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return Object.isFrozen(v) ? 'tuple' : 'list';
  if (v instanceof Map) return 'dict';
  if (v instanceof Set) return 'set';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PickleGlobal) return `global ${v.qualified}`;
  if (v instanceof PickleObject) return `${v.global.qualified} object`;
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}
