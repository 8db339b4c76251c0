// What a wrong caller can pass to each export of pin-core, and the JS error
// each call must throw instead of ending node: TypeError or RangeError (code
// EINVAL) naming the argument, EBADF for a handle that is not open, or the
// kernel's errno with `errno` and `op`. test/unit/pin-core-abuse.test.ts runs
// the cases in its own process and, run as a script, this module runs them
// all in a child whose exit code shows an abort.
// Without VFIO or iommufd no backend opens here, so handle calls meet a
// handle that was never opened; a closed one takes the same path in
// handles.rs, whose Rust tests close, reuse and break real entries.
import { constants } from 'node:os';
import { openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { pinCore } from '../../src/memory/pin-core.js';
import { MFD_CLOEXEC, memfdCreate } from '../../src/sys/libc.js';

type ErrorClass = ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor | SyntaxErrorConstructor;

type Expect =
  { throws: ErrorClass; code: string | undefined; message: RegExp; errno?: number; op?: string } | { returns: (v: unknown) => boolean };

export interface Case {
  fn: string;
  /** The arguments, as a failure shows them. */
  what: string;
  call: () => unknown;
  expect: Expect;
}

/** A handle number no backend got: handles count up from 0 and are never reused. */
const NEVER = 2 ** 32 - 1;
/** An fd number nothing has open (far above what a test process opens). */
const NO_FD = (1 << 20) - 3;
const PAGE = 4096n;
const rw = { read: true, write: true };

const typeError = (message: RegExp): Expect => ({ throws: TypeError, code: 'EINVAL', message });
const rangeError = (message: RegExp): Expect => ({ throws: RangeError, code: 'EINVAL', message });
const notOpen: Expect = { throws: Error, code: 'EBADF', message: new RegExp(`^pin-core handle ${NEVER} is not open`) };
const kernel = (code: string, op: string, message: RegExp): Expect => ({
  throws: Error,
  code,
  message,
  errno: (constants.errno as Record<string, number>)[code],
  op,
});
const returns = (check: (v: unknown) => boolean): Expect => ({ returns: check });

const show = (v: unknown): string => inspect(v, { depth: 3, breakLength: Infinity, maxArrayLength: 4 });

function call(fn: string, args: unknown[], expect: Expect, what = args.map(show).join(', ')): Case {
  const f = (pinCore as unknown as Record<string, (...a: unknown[]) => unknown>)[fn]!;
  return { fn, what, call: () => f(...args), expect };
}

/** What every handle argument is refused with; `rest` are good arguments for the others. */
function handleCases(fn: string, rest: unknown[]): Case[] {
  const h = (v: unknown, e: Expect, what?: string) => call(fn, [v, ...rest], e, what);
  return [
    // The first argument read is the first refused: for most calls not the handle.
    call(fn, [], typeError(/^\S+ must be [^,]+, got undefined$/), 'no arguments'),
    h(undefined, typeError(/^handle must be a number, got undefined$/)),
    h('0', typeError(/^handle must be a number, got string$/)),
    h(0n, typeError(/^handle must be a number, got bigint$/)),
    h({}, typeError(/^handle must be a number, got object$/)),
    h(null, typeError(/^handle must be a number, got null$/)),
    h(-1, rangeError(/^handle must not be negative, got -1$/)),
    h(NaN, rangeError(/^handle must be an integer, got NaN$/)),
    h(0.5, rangeError(/^handle must be an integer, got 0.5$/)),
    h(2 ** 64, rangeError(/^handle must be at most 4294967295, got 18446744073709552000$/)),
    h(NEVER, notOpen),
  ];
}

const goodRegion = { iova: 0n, size: PAGE, backing: { vaddr: 0n }, prot: rw };
const records = (n: number) => new BigUint64Array(4 * n);
const unmapRecord = () => new BigUint64Array([3n, 0n, PAGE, 0n]);
function detached(): BigUint64Array {
  const a = new BigUint64Array(4);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
}

/** Runs `f` with fresh memory from memAlloc, freed afterwards whatever `f` did to it. */
function withMemory(kind: 'anon' | 'memfd', f: (m: { vaddr: bigint; fd: number }) => unknown): () => unknown {
  return () => {
    const m = pinCore.memAlloc(kind, 2n * PAGE);
    try {
      return f(m);
    } finally {
      try {
        pinCore.memFree(m.vaddr, 2n * PAGE, m.fd);
      } catch {
        // f freed it already
      }
    }
  };
}

/** Each open call takes over the fd it is given (closed when it fails), so every case opens its own. */
const devNull = () => openSync('/dev/null', 'r+');
const memfd = () => memfdCreate('pin-core-abuse', MFD_CLOEXEC);

function openCases(fn: 'type1Open' | 'iommufdOpen', firstIoctl: string): Case[] {
  const opened = (what: string, fd: () => number, path = '/dev/null'): Case => ({
    fn,
    what,
    call: () => pinCore[fn](path, fd()),
    expect: kernel('ENOTTY', firstIoctl, new RegExp(`^${firstIoctl} failed: ENOTTY \\(path ${path}\\)$`)),
  });
  return [
    call(fn, [], typeError(/^path must be a string, got undefined$/), 'no arguments'),
    call(fn, [7, -1], typeError(/^path must be a string, got number$/)),
    call(fn, ['/dev/null'], typeError(/^fd must be a number, got undefined$/)),
    call(fn, ['/dev/null', 3n], typeError(/^fd must be a number, got bigint$/)),
    call(fn, ['/dev/null', 2 ** 31], rangeError(/^fd must be at most 2147483647, got 2147483648$/)),
    call(fn, ['/dev/null', 1.5], rangeError(/^fd must be an integer, got 1.5$/)),
    call(fn, ['/nonexistent/pinion', -1], kernel('ENOENT', 'open', /^open failed: ENOENT \(path \/nonexistent\/pinion\)$/)),
    call(fn, ['/dev/null', -1], kernel('ENOTTY', firstIoctl, /failed: ENOTTY \(path \/dev\/null\)$/)),
    // Checked before it is owned: dropping an OwnedFd of a closed fd aborts in Rust's debug builds.
    call(fn, ['/dev/null', NO_FD], kernel('EBADF', 'fcntl(F_GETFD)', /^fcntl\(F_GETFD\) failed: EBADF \(path \/dev\/null\)$/)),
    opened('/dev/null opened in JS', devNull),
    opened('a memfd', memfd, 'memfd:pin-core-abuse'),
  ];
}

/**
 * The inherit calls take an fd another process set up (no path is opened: a fresh open holds nothing to inherit), so
 * a negative fd is refused; `rest` are good arguments after it, read before the fd is taken over.
 */
function inheritCases(fn: 'type1Inherit' | 'iommufdInherit', rest: unknown[], firstIoctl: string): Case[] {
  const opened = (what: string, fd: () => number, path = '/dev/null'): Case => ({
    fn,
    what,
    call: () => (pinCore[fn] as (...a: unknown[]) => unknown)(path, fd(), ...rest),
    expect: kernel('ENOTTY', firstIoctl, new RegExp(`^${firstIoctl} failed: ENOTTY \\(path ${path}\\)$`)),
  });
  return [
    call(fn, [], typeError(/^path must be a string, got undefined$/), 'no arguments'),
    call(fn, [7, 3, ...rest], typeError(/^path must be a string, got number$/)),
    call(fn, ['/dev/null'], typeError(/^fd must be a number, got undefined$/)),
    call(fn, ['/dev/null', 3n, ...rest], typeError(/^fd must be a number, got bigint$/)),
    call(fn, ['/dev/null', -1, ...rest], rangeError(/^fd must not be negative, got -1$/)),
    call(fn, ['/dev/null', 2 ** 31, ...rest], rangeError(/^fd must be at most 2147483647, got 2147483648$/)),
    call(fn, ['/dev/null', 0.5, ...rest], rangeError(/^fd must be an integer, got 0.5$/)),
    call(fn, ['/dev/null', NO_FD, ...rest], kernel('EBADF', 'fcntl(F_GETFD)', /^fcntl\(F_GETFD\) failed: EBADF \(path \/dev\/null\)$/)),
    opened('/dev/null opened in JS', devNull),
    opened('a memfd', memfd, 'memfd:pin-core-abuse'),
  ];
}

export function cases(): Case[] {
  return [
    // No arguments to get wrong: extra ones are ignored, as by any JS function.
    call(
      'version',
      ['x', 1],
      returns((v) => typeof v === 'string'),
    ),
    call(
      'pageSize',
      [-1],
      returns((v) => v === 4096),
    ),
    call(
      'kickInit',
      [{}],
      returns((v) => typeof v === 'number'),
    ),
    call(
      'threadSelf',
      [1n],
      returns((v) => typeof v === 'bigint' && v > 0n),
    ),

    call('threadKick', [], typeError(/^thread must be a BigInt or a Number, got undefined$/), 'no arguments'),
    call('threadKick', ['1'], typeError(/^thread must be a BigInt or a Number, got string$/)),
    call('threadKick', [-1], rangeError(/^thread must not be negative, got -1$/)),
    call('threadKick', [-1n], rangeError(/^thread must be a BigInt from 0 to 2\^64 - 1$/)),
    call('threadKick', [2n ** 64n], rangeError(/^thread must be a BigInt from 0 to 2\^64 - 1$/)),
    call('threadKick', [NaN], rangeError(/^thread must be an integer, got NaN$/)),
    call('threadKick', [0n], rangeError(/^thread 0 is not a thread id threadSelf gives$/)),
    call('threadKick', [2 ** 31], rangeError(/^thread 2147483648 is not a thread id threadSelf gives$/)),
    // Above any pid_max: no such thread. Was a pthread_t, which glibc follows as a pointer: SIGSEGV.
    call('threadKick', [4194305n], kernel('ESRCH', 'tgkill', /^tgkill failed: ESRCH$/)),
    {
      fn: 'threadKick',
      what: 'threadSelf()',
      call: () => pinCore.threadKick(pinCore.threadSelf()),
      expect: returns((v) => v === undefined),
    },

    call('accountingCharge', [], typeError(/^path must be a string, got undefined$/), 'no arguments'),
    call('accountingCharge', ['legacy', 'per-user', false], rangeError(/^unknown path 'legacy' \(type1, compat, iommufd\)$/)),
    call('accountingCharge', ['type1', 1, false], typeError(/^mode must be a string, got number$/)),
    call('accountingCharge', ['type1', 'per-vm', false], rangeError(/^unknown mode 'per-vm'/)),
    call('accountingCharge', ['type1', 'per-user'], typeError(/^capIpcLock must be a boolean, got undefined$/)),
    call('accountingCharge', ['type1', 'per-user', 1], typeError(/^capIpcLock must be a boolean, got number$/)),

    call('memAlloc', [], typeError(/^kind must be a string, got undefined$/), 'no arguments'),
    call('memAlloc', ['zram', PAGE], rangeError(/^unknown memory kind 'zram'/)),
    call('memAlloc', ['anon'], typeError(/^size must be a BigInt or a Number, got undefined$/)),
    call('memAlloc', ['anon', '4096'], typeError(/^size must be a BigInt or a Number, got string$/)),
    call('memAlloc', ['anon', -4096], rangeError(/^size must not be negative, got -4096$/)),
    call('memAlloc', ['anon', NaN], rangeError(/^size must be an integer, got NaN$/)),
    call('memAlloc', ['anon', 1.5], rangeError(/^size must be an integer, got 1.5$/)),
    call('memAlloc', ['anon', 2 ** 53], rangeError(/^size must be at most 9007199254740991 \(pass a BigInt above 2\^53 - 1\)/)),
    call('memAlloc', ['anon', 2n ** 64n], rangeError(/^size must be a BigInt from 0 to 2\^64 - 1$/)),
    call('memAlloc', ['anon', 0], kernel('EINVAL', 'mmap', /^mmap failed: EINVAL$/)),
    call('memAlloc', ['anon', 2n ** 62n], kernel('ENOMEM', 'mmap', /^mmap failed: ENOMEM$/)),

    call('memFree', [], typeError(/^vaddr must be a BigInt or a Number, got undefined$/), 'no arguments'),
    call('memFree', [0n, PAGE], typeError(/^fd must be a number, got undefined$/)),
    call('memFree', [0n, PAGE, -1], rangeError(/^memFree: 0x0\+0x1000 is not memory memAlloc returned, or it was freed already$/)),
    call('memFree', [2n ** 64n - PAGE, 2n * PAGE, -1], rangeError(/is not memory memAlloc returned/)),
    {
      fn: 'memFree',
      what: 'the same memory twice',
      call: withMemory('anon', (m) => (pinCore.memFree(m.vaddr, 2n * PAGE, -1), pinCore.memFree(m.vaddr, 2n * PAGE, -1))),
      expect: rangeError(/^memFree: 0x[0-9a-f]+\+0x2000 is not memory memAlloc returned, or it was freed already$/),
    },
    {
      fn: 'memFree',
      what: 'a memfd allocation with another fd',
      call: withMemory('memfd', (m) => pinCore.memFree(m.vaddr, PAGE, m.fd + 1)),
      expect: rangeError(/^memFree: fd \d+ is not the open memfd of the memory at 0x[0-9a-f]+$/),
    },
    {
      fn: 'memFree',
      what: 'an unaligned start inside an allocation',
      call: withMemory('anon', (m) => pinCore.memFree(m.vaddr + 1n, PAGE - 1n, -1)),
      expect: kernel('EINVAL', 'munmap', /^munmap failed: EINVAL$/),
    },

    call('memPopulate', [], typeError(/^vaddr must be a BigInt or a Number, got undefined$/), 'no arguments'),
    call('memPopulate', [0n, PAGE], typeError(/^threads must be a number, got undefined$/)),
    call('memPopulate', [0n, PAGE, 2n], typeError(/^threads must be a number, got bigint$/)),
    call('memPopulate', [0n, PAGE, 0], rangeError(/^threads must not be below 1, got 0$/)),
    // Was 2^31 - 1 thread spawns, then a panic when one failed: abort.
    call('memPopulate', [0n, 1n << 30n, 2 ** 31 - 1], rangeError(/^threads must be at most 256, got 2147483647$/)),
    call('memPopulate', [0n, PAGE, NaN], rangeError(/^threads must be an integer, got NaN$/)),
    call(
      'memPopulate',
      [0n, PAGE, 1],
      kernel('ENOMEM', 'MADV_POPULATE_WRITE', /^MADV_POPULATE_WRITE failed: ENOMEM \(iova 0x0, size 0x1000\)$/),
    ),
    call('memPopulate', [2n ** 64n - PAGE, 2n * PAGE, 4], kernel('EINVAL', 'MADV_POPULATE_WRITE', /^MADV_POPULATE_WRITE failed: EINVAL/)),

    ...openCases('type1Open', 'VFIO_GET_API_VERSION'),
    ...handleCases('type1SetIommu', [false]),
    call('type1SetIommu', [NEVER], typeError(/^v1only must be a boolean, got undefined$/)),
    call('type1SetIommu', [NEVER, 'yes'], typeError(/^v1only must be a boolean, got string$/)),
    ...handleCases('type1UpdateVaddr', [0n, PAGE, null]),
    call('type1UpdateVaddr', [NEVER, -1n, PAGE, null], rangeError(/^iova must be a BigInt from 0 to 2\^64 - 1$/)),
    call('type1UpdateVaddr', [NEVER, 0n, PAGE, 'x'], typeError(/^vaddr must be a BigInt or a Number, got string$/)),
    ...inheritCases('type1Inherit', [], 'VFIO_GET_API_VERSION'),
    ...handleCases('type1InvalidateVaddrs', []),
    ...handleCases('type1SetVaddrs', []),

    ...openCases('iommufdOpen', 'IOMMU_IOAS_ALLOC'),
    ...inheritCases('iommufdInherit', [1], 'IOMMU_IOAS_IOVA_RANGES'),
    // Refused before the fd is taken over (which would be EBADF for NO_FD): a bad id leaves the fd the caller's.
    call('iommufdInherit', ['/dev/null', NO_FD], typeError(/^ioasId must be a number, got undefined$/)),
    call('iommufdInherit', ['/dev/null', NO_FD, -1], rangeError(/^ioasId must not be negative, got -1$/)),
    call('iommufdInherit', ['/dev/null', NO_FD, 2 ** 32], rangeError(/^ioasId must be at most 4294967295, got 4294967296$/)),
    ...handleCases('iommufdIoasId', []),
    ...handleCases('iommufdOption', ['rlimit_mode', null]),
    call('iommufdOption', [NEVER, 5, null], typeError(/^option must be a string, got number$/)),
    call('iommufdOption', [NEVER, 'dirty_tracking', null], rangeError(/^unknown iommufd option 'dirty_tracking'/)),
    call('iommufdOption', [NEVER, 'huge_pages', -1], rangeError(/^value must not be negative, got -1$/)),
    ...handleCases('iommufdChangeProcess', []),
    ...handleCases('iommufdMockDomain', []),
    ...handleCases('iommufdDestroy', [1]),
    call('iommufdDestroy', [NEVER], typeError(/^id must be a number, got undefined$/)),
    call('iommufdDestroy', [NEVER, -1], rangeError(/^id must not be negative, got -1$/)),
    call('iommufdDestroy', [NEVER, 2 ** 32], rangeError(/^id must be at most 4294967295, got 4294967296$/)),

    ...handleCases('backendFd', []),
    ...handleCases('caps', []),
    ...handleCases('iovaRanges', []),
    ...handleCases('map', [0n, PAGE, { vaddr: 0n }, rw]),
    call('map', [NEVER, 'x', PAGE, { vaddr: 0n }, rw], typeError(/^iova must be a BigInt or a Number, got string$/)),
    call('map', [NEVER, 0n, -1, { vaddr: 0n }, rw], rangeError(/^size must not be negative, got -1$/)),
    call('map', [NEVER, 0n, PAGE], typeError(/^backing must be an object, got undefined$/)),
    call('map', [NEVER, 0n, PAGE, null, rw], typeError(/^backing must be an object, got null$/)),
    call('map', [NEVER, 0n, PAGE, { vaddr: 'x' }, rw], typeError(/^backing.vaddr must be a BigInt or a Number, got string$/)),
    call('map', [NEVER, 0n, PAGE, { fd: 3 }, rw], typeError(/^backing.offset must be a BigInt or a Number, got undefined$/)),
    call('map', [NEVER, 0n, PAGE, { fd: 2 ** 31, offset: 0n }, rw], rangeError(/^backing.fd must be at most 2147483647/)),
    call('map', [NEVER, 0n, PAGE, { vaddr: 0n }], typeError(/^prot must be an object, got undefined$/)),
    call('map', [NEVER, 0n, PAGE, { vaddr: 0n }, { read: 1, write: true }], typeError(/^prot.read must be a boolean, got number$/)),
    // A getter or proxy trap that throws: its own exception comes out, not one made over it.
    call(
      'map',
      [
        NEVER,
        0n,
        PAGE,
        {
          get vaddr() {
            throw new SyntaxError('from a getter');
          },
        },
        rw,
      ],
      { throws: SyntaxError, code: undefined, message: /^from a getter$/ },
      'a backing whose getter throws',
    ),
    call(
      'map',
      [
        NEVER,
        0n,
        PAGE,
        { vaddr: 0n },
        new Proxy(
          {},
          {
            get() {
              throw new RangeError('from a trap');
            },
          },
        ),
      ],
      { throws: RangeError, code: undefined, message: /^from a trap$/ },
      'a prot proxy that throws',
    ),
    ...handleCases('unmap', [0n, PAGE]),
    call('unmap', [NEVER, 0n], typeError(/^size must be a BigInt or a Number, got undefined$/)),
    call('unmap', [NEVER, 2n ** 64n, PAGE], rangeError(/^iova must be a BigInt from 0 to 2\^64 - 1$/)),
    ...handleCases('unmapAll', []),
    ...handleCases('copy', [0n, PAGE, PAGE]),
    call('copy', [NEVER, 0n, -0.5, PAGE], rangeError(/^dstIova must be an integer, got -0.5$/)),
    call('copy', [NEVER, 0n, 0n], typeError(/^size must be a BigInt or a Number, got undefined$/)),
    ...handleCases('close', []),
    call('close', [NEVER], notOpen, 'the same never-opened handle again'),

    ...handleCases('plan', [[], null]),
    call('plan', [NEVER], typeError(/^regions must be an array, got undefined$/)),
    call('plan', [NEVER, [undefined], null], typeError(/^regions\[0\] must be an object, got undefined$/)),
    ...handleCases('sync', [[], null]),
    call('sync', [NEVER], typeError(/^regions must be an array, got undefined$/)),
    call('sync', [NEVER, {}, null], typeError(/^regions must be an array, got object$/)),
    call('sync', [NEVER, [undefined], null], typeError(/^regions\[0\] must be an object, got undefined$/)),
    // Sparse: refused at its first hole, not after 100000 reads (or, at 2^32 - 1, gigabytes of handles).
    call('sync', [NEVER, new Array(100000), null], typeError(/^regions\[0\] must be an object, got undefined$/)),
    call(
      'sync',
      [NEVER, [goodRegion, { ...goodRegion, backing: 7 }], null],
      typeError(/^regions\[1\].backing must be an object, got number$/),
    ),
    call(
      'sync',
      [NEVER, [{ ...goodRegion, prot: { read: true, write: 'yes' } }], null],
      typeError(/^regions\[0\].prot.write must be a boolean, got string$/),
    ),
    call('sync', [NEVER, [{ ...goodRegion, size: -1 }], null], rangeError(/^regions\[0\].size must not be negative, got -1$/)),
    call('sync', [NEVER, [], -1], rangeError(/^budgetBytes must not be negative, got -1$/)),
    call('sync', [NEVER, [], 'x'], typeError(/^budgetBytes must be a BigInt or a Number, got string$/)),

    ...handleCases('mapBatch', [records(0), 0, null]),
    call('mapBatch', [NEVER], typeError(/^ops must be a BigUint64Array, got undefined$/)),
    call('mapBatch', [NEVER, new BigInt64Array(4), 1, null], typeError(/^ops must be a BigUint64Array, got object$/)),
    call('mapBatch', [NEVER, Buffer.alloc(32), 1, null], typeError(/^ops must be a BigUint64Array, got object$/)),
    call('mapBatch', [NEVER, [3n, 0n, PAGE, 0n], 1, null], typeError(/^ops must be a BigUint64Array, got object$/)),
    call('mapBatch', [NEVER, unmapRecord()], typeError(/^count must be a BigInt or a Number, got undefined$/)),
    call('mapBatch', [NEVER, unmapRecord(), 2, null], rangeError(/^count 2 is more than the 1 records the array holds$/)),
    call('mapBatch', [NEVER, unmapRecord(), -1, null], rangeError(/^count must not be negative, got -1$/)),
    call('mapBatch', [NEVER, unmapRecord(), 2n ** 64n - 1n, null], rangeError(/^count 18446744073709551615 is more than the 1 records/)),
    call('mapBatch', [NEVER, records(1), 1, null], rangeError(/^DMA batch record 0 cannot be read: unknown kind 0/)),
    call('mapBatch', [NEVER, unmapRecord(), 1, -1], rangeError(/^budgetBytes must not be negative, got -1$/)),
    call('mapBatch', [NEVER, detached(), 1, null], rangeError(/^count 1 is more than the 0 records the array holds$/)),
    call('mapBatch', [NEVER, unmapRecord(), 1, null], notOpen),

    call('batchDecode', [], typeError(/^ops must be a BigUint64Array, got undefined$/), 'no arguments'),
    call('batchDecode', [records(1)], typeError(/^count must be a BigInt or a Number, got undefined$/)),
    call('batchDecode', [records(1), 1.5], rangeError(/^count must be an integer, got 1.5$/)),
    call(
      'batchDecode',
      [new BigUint64Array(new SharedArrayBuffer(32)), 0],
      returns((v) => Array.isArray(v) && v.length === 0),
    ),
    call(
      'batchDecode',
      [unmapRecord(), 1],
      returns((v) => Array.isArray(v) && v.length === 1),
    ),

    ...handleCases('table', []),

    ...handleCases('seed', [[]]),
    call('seed', [NEVER], typeError(/^regions must be an array, got undefined$/)),
    call('seed', [NEVER, goodRegion], typeError(/^regions must be an array, got object$/)),
    call('seed', [NEVER, [goodRegion, null]], typeError(/^regions\[1\] must be an object, got null$/)),
    call('seed', [NEVER, [{ ...goodRegion, iova: 2n ** 64n }]], rangeError(/^regions\[0\].iova must be a BigInt from 0 to 2\^64 - 1$/)),
    call(
      'seed',
      [NEVER, [{ ...goodRegion, backing: { fd: 'x', offset: 0n } }]],
      typeError(/^regions\[0\].backing.fd must be a number, got string$/),
    ),
    // Regions that break the table's rules are refused only against a table: here the handle is not open.
    call('seed', [NEVER, [goodRegion, goodRegion]], notOpen),
  ];
}

/** Why `c` did not do what it expects, or undefined when it did. */
export function verdict(c: Case): string | undefined {
  let value: unknown;
  try {
    value = c.call();
  } catch (e) {
    if ('returns' in c.expect) return `threw ${String(e)}`;
    const x = c.expect;
    if (!(e instanceof Error)) return `threw a non-Error: ${show(e)}`;
    const err = e as Error & { code?: unknown; errno?: unknown; op?: unknown };
    if (err.constructor !== x.throws) return `threw ${err.constructor.name}, not ${x.throws.name}: ${err.message}`;
    if (err.code !== x.code) return `code ${show(err.code)}, not ${show(x.code)}: ${err.message}`;
    if (!x.message.test(err.message)) return `message "${err.message}" does not match ${x.message}`;
    if (x.errno !== undefined && err.errno !== x.errno) return `errno ${show(err.errno)}, not ${x.errno}`;
    if (x.op !== undefined && err.op !== x.op) return `op ${show(err.op)}, not ${x.op}`;
    return undefined;
  }
  if ('throws' in c.expect) return `returned ${show(value)} instead of throwing`;
  return c.expect.returns(value) ? undefined : `returned ${show(value)}`;
}

// As a script: every case in this process; exit 0 only if each did what it
// expects (an abort or a signal shows in the parent as a status or signal).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const all = cases();
  const failed = all.map((c) => [c, verdict(c)] as const).filter(([, v]) => v !== undefined);
  for (const [c, v] of failed) console.error(`${c.fn}(${c.what}): ${v}`);
  console.log(`${all.length - failed.length} of ${all.length} cases as expected`);
  process.exit(failed.length ? 1 : 0);
}
