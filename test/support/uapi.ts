// The uAPI check: every constant, struct size and field offset Pinion
// declares, in TypeScript (src/sys/) and in Rust (pin-core's uapi.rs, sys.rs,
// errno.rs), becomes one line of a C program that prints the header's own
// expression for it (KVM_RUN, sizeof(struct kvm_run), offsetof(struct
// kvm_run, io.port)), compiled with cc against the uAPI headers the rig
// kernel is built from. Any difference is a finding. The Rust values come
// from rustc: a generated program takes those files in as modules and prints
// each constant, size_of and offset_of.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as errors from '../../src/sys/errors.js';
import * as iommufd from '../../src/sys/iommufd.js';
import * as kvm from '../../src/sys/kvm.js';
import type { Offsets } from '../../src/sys/layout.js';
import * as libc from '../../src/sys/libc.js';
import * as pciRegs from '../../src/sys/pci-regs.js';
import * as vfio from '../../src/sys/vfio.js';

const root = new URL('../../..', import.meta.url).pathname;
const crate = join(root, 'crates/pin-core/src');

/** One value to compare with the headers. */
export interface Item {
  side: 'TS' | 'Rust';
  file: string;
  kind: 'constant' | 'struct' | 'field' | 'errno';
  /** The C expression whose value the headers give. */
  expr: string;
  value: bigint;
}

export interface Report {
  include: string;
  items: Item[];
  /** Each disagreement, one line apiece. */
  problems: string[];
  /** Rust constants that are not integers (MAP_FAILED), left out. */
  skipped: string[];
}

// A TypeScript module's constants are its exported numbers, its structs the
// entries of `layout`, and an exported { number: 'NAME' } table names numbers
// (EXIT_REASON_NAMES).
const TS_MODULES: [string, Record<string, unknown>][] = [
  ['src/sys/kvm.ts', kvm],
  ['src/sys/vfio.ts', vfio],
  ['src/sys/iommufd.ts', iommufd],
  ['src/sys/pci-regs.ts', pciRegs],
  ['src/sys/libc.ts', libc],
];
const RUST_FILES = ['uapi.rs', 'sys.rs'];

const C_PRELUDE = `#define _GNU_SOURCE
#include <stddef.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/memfd.h>
#include <linux/kvm.h>
#include <asm/kvm_para.h>
#include <linux/vfio.h>
#include <linux/iommufd.h>
#include <linux/pci_regs.h>
#include "iommufd_test.h"
#define P(i, x) do { if ((x) < 0) printf("%d -%llu\\n", i, -(unsigned long long)(x)); \\
  else printf("%d %llu\\n", i, (unsigned long long)(x)); } while (0)
int main(void) {
`;

/** The include directory of the rig kernel's uAPI headers; throws (never skips) when they cannot be had. */
export function uapiHeaders(): string {
  const r = spawnSync('bash', [join(root, 'rig/build-kernel.sh'), 'headers'], { cwd: root, encoding: 'utf8' });
  const dir = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status === 0 && existsSync(join(dir, 'linux/iommufd.h')) && existsSync(join(dir, 'iommufd_test.h'))) return dir;
  const printed = dir ? ` (printed ${dir})` : '';
  throw new Error(`uAPI headers unavailable: rig/build-kernel.sh headers exited ${r.status}${printed}:\n${r.stderr.trim()}`);
}

function tsItems(): Item[] {
  const items: Item[] = [];
  const constant = (file: string, expr: string, value: number | string): void => {
    items.push({ side: 'TS', file, kind: 'constant', expr, value: BigInt(value) });
  };
  for (const [file, mod] of TS_MODULES) {
    for (const [name, v] of Object.entries(mod)) {
      if (typeof v === 'number') constant(file, name, v);
      else if (name === 'layout') items.push(...layoutItems(file, v as Record<string, Offsets>));
      else if (nameTable(v)) for (const [n, c] of Object.entries(v)) constant(file, c, n);
    }
  }
  for (const [name, n] of Object.entries(errors.ERRNO)) {
    items.push({ side: 'TS', file: 'src/sys/errors.ts', kind: 'errno', expr: name, value: BigInt(n) });
  }
  return items;
}

function nameTable(v: unknown): v is Record<string, string> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const e = Object.entries(v);
  return e.length > 0 && e.every(([k, c]) => /^\d+$/.test(k) && typeof c === 'string' && /^[A-Z][A-Z0-9_]*$/.test(c));
}

function layoutItems(file: string, layout: Record<string, Offsets>): Item[] {
  const items: Item[] = [];
  const add = (kind: Item['kind'], expr: string, v: number): void => void items.push({ side: 'TS', file, kind, expr, value: BigInt(v) });
  for (const [struct, l] of Object.entries(layout)) {
    const walk = (o: Offsets, path: string[]): void => {
      for (const [f, v] of Object.entries(o)) {
        if (typeof v !== 'number') walk(v, [...path, f]);
        else if (path.length === 0 && f === 'sizeof') add('struct', `sizeof(struct ${struct})`, v);
        else add('field', `offsetof(struct ${struct}, ${[...path, f].join('.')})`, v);
      }
    };
    walk(l, []);
  }
  return items;
}

interface RustConst {
  name: string;
  integer: boolean;
}
interface RustStruct {
  name: string;
  fields: string[];
}

const INTEGER = /^(u8|u16|u32|u64|usize|i8|i16|i32|i64|isize|c_int|c_uint|c_long|c_ulong|c_short|c_ushort)$/;

/** The names in a Rust file: top-level `pub const`s and `#[repr(C)]` structs. rustc's dead-code lint reports any this misses. */
export function parseRust(file: string, src: string): { consts: RustConst[]; structs: RustStruct[] } {
  const top = src.split(/^#\[cfg\(test\)\]/m)[0]!;
  const consts = [...top.matchAll(/^pub const (\w+): ([^=]+?) =/gm)].map((m) => ({ name: m[1]!, integer: INTEGER.test(m[2]!.trim()) }));
  const structs = [...top.matchAll(/^#\[repr\(C\b[^\]]*\]\n(?:#\[[^\n]*\]\n)*pub struct (\w+) \{\n([^}]*)\}/gm)].map((m) => ({
    name: m[1]!,
    fields: m[2]!
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('//'))
      .map((l) => {
        const f = /^pub (\w+): [^,]+,$/.exec(l);
        if (!f) throw new Error(`uapi check: cannot read a field of struct ${m[1]} in ${file}: ${l}`);
        return f[1]!;
      }),
  }));
  return { consts, structs };
}

function rustc(): string {
  for (const c of ['rustc', join(process.env.HOME ?? '/root', '.cargo/bin/rustc')]) if (spawnSync(c, ['--version']).status === 0) return c;
  throw new Error('uapi check: rustc not found (PATH or ~/.cargo/bin)');
}

/** Compiles and runs a program that prints every Rust constant, struct and field, then errno::TABLE. */
function rustItems(dir: string): { items: Item[]; problems: string[]; skipped: string[] } {
  const lines: string[] = [];
  const meta: Omit<Item, 'value'>[] = [];
  const skipped: string[] = [];
  for (const f of RUST_FILES) {
    const file = `crates/pin-core/src/${f}`;
    const mod = f.replace(/\.rs$/, '');
    const print = (kind: Item['kind'], expr: string, rust: string): void => {
      lines.push(`    println!("{}", ${rust});`);
      meta.push({ side: 'Rust', file, kind, expr });
    };
    const { consts, structs } = parseRust(file, readFileSync(join(crate, f), 'utf8'));
    for (const c of consts) {
      if (c.integer) print('constant', c.name, `${mod}::${c.name} as i128`);
      else {
        lines.push(`    let _ = ${mod}::${c.name};`);
        skipped.push(c.name);
      }
    }
    for (const s of structs) {
      const path = `${mod}::${s.name}`;
      print('struct', `sizeof(struct ${s.name})`, `std::mem::size_of::<${path}>()`);
      // A field named `_x` is pin-core's own padding, with no header counterpart.
      for (const field of s.fields.filter((x) => !/^_[^_]/.test(x))) {
        print('field', `offsetof(struct ${s.name}, ${field})`, `std::mem::offset_of!(${path}, ${field})`);
        const width = `std::mem::size_of_val(&${path}::default().${field})`;
        print('field', `sizeof(((struct ${s.name} *)0)->${field})`, width);
      }
    }
  }
  const mods = ['errno.rs', ...RUST_FILES].flatMap((f) => [`#[path = "${join(crate, f)}"]`, `mod ${f.replace(/\.rs$/, '')};`]);
  const table = ['    for (name, n) in errno::TABLE {', '        println!("{name} {n}");', '    }'];
  writeFileSync(join(dir, 'main.rs'), ['#![warn(dead_code)]', ...mods, 'fn main() {', ...lines, ...table, '}', ''].join('\n'));
  const args = ['--edition', '2021', '--crate-name', 'uapi_check', '-o', join(dir, 'rust-values'), join(dir, 'main.rs')];
  const c = spawnSync(rustc(), args, { encoding: 'utf8' });
  if (c.status !== 0) throw new Error(`uapi check: the generated Rust program did not compile:\n${c.stderr}`);
  // A constant or struct parseRust missed is one main() never touches: rustc calls it unused.
  const problems: string[] = [];
  for (const m of c.stderr.matchAll(/warning: (?:constants?|structs?) (.*) (?:is|are) never (?:used|constructed)/g)) {
    for (const [, name] of m[1]!.matchAll(/`(\w+)`/g)) problems.push(`Rust: ${name} is declared where parseRust cannot read it`);
  }
  const out = execFileSync(join(dir, 'rust-values'), { encoding: 'utf8' }).trim().split('\n');
  const items: Item[] = meta.map((m, i) => ({ ...m, value: BigInt(out[i]!) }));
  for (const l of out.slice(meta.length)) {
    const [name, n] = l.split(' ');
    items.push({ side: 'Rust', file: 'crates/pin-core/src/errno.rs', kind: 'errno', expr: name!, value: BigInt(n!) });
  }
  return { items, problems, skipped };
}

const where = (it: Item): string => `${it.side} ${it.file}`;

/** Compiles one P() line per item against `include` and runs it. An item cc rejects is a finding; the rest go round again. */
function headerValues(dir: string, include: string, items: Item[]): { values: Map<Item, bigint>; problems: string[] } {
  const problems: string[] = [];
  const first = C_PRELUDE.split('\n').length; // the line of the first P()
  let todo = items;
  for (let round = 0; round < 4; round++) {
    writeFileSync(join(dir, 'uapi.c'), `${C_PRELUDE}${todo.map((it, i) => `  P(${i}, ${it.expr});\n`).join('')}  return 0;\n}\n`);
    const args = ['-std=gnu11', '-I', include, '-o', join(dir, 'header-values'), join(dir, 'uapi.c')];
    const c = spawnSync('cc', args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
    if (c.status === 0) {
      const values = new Map<Item, bigint>();
      for (const l of execFileSync(join(dir, 'header-values'), { encoding: 'utf8' }).trim().split('\n')) {
        const [i, v] = l.split(' ');
        values.set(todo[Number(i)]!, BigInt(v!));
      }
      return { values, problems };
    }
    const bad = new Set<number>();
    for (const m of c.stderr.matchAll(/uapi\.c:(\d+):\d+: error: (.*)/g)) {
      const i = Number(m[1]) - first;
      const it = todo[i];
      if (!it) throw new Error(`uapi check: cc failed outside the checks:\n${c.stderr}`);
      if (!bad.has(i)) problems.push(`${where(it)}: ${it.expr} is not in the headers (cc: ${m[2]})`);
      bad.add(i);
    }
    if (bad.size === 0) throw new Error(`uapi check: cc failed:\n${c.stderr}`);
    todo = todo.filter((_, i) => !bad.has(i));
  }
  throw new Error('uapi check: the C program still does not compile after 4 rounds');
}

/** Two's-complement views of one value are the same value: TS -4 is C's ~0x03UL, and 1 << 31 is 0x80000000. */
function same(a: bigint, b: bigint): boolean {
  const u32 = (x: bigint): bigint | undefined => (x >= -(2n ** 31n) && x < 2n ** 32n ? BigInt.asUintN(32, x) : undefined);
  return a === b || BigInt.asUintN(64, a) === BigInt.asUintN(64, b) || (u32(a) !== undefined && u32(a) === u32(b) && (a < 0n || b < 0n));
}

const show = (v: bigint): string => (v < 10n ? `${v}` : `${v} (0x${v.toString(16)})`);

/** Every errno Linux defines has a name in pin-core, and TypeScript and pin-core give a number the same name. */
function errnoProblems(include: string, rust: Item[]): string[] {
  const problems: string[] = [];
  const headers = ['asm-generic/errno-base.h', 'asm-generic/errno.h'].map((h) => readFileSync(join(include, h), 'utf8')).join('\n');
  const named = new Map(rust.filter((it) => it.kind === 'errno').map((it) => [it.expr, it.value]));
  for (const m of headers.matchAll(/^#define\s+(E[A-Z0-9]+)\s+(\d+)\b/gm)) {
    if (!named.has(m[1]!)) problems.push(`Rust crates/pin-core/src/errno.rs: ${m[1]} (${m[2]}, asm-generic errno) is missing from TABLE`);
  }
  for (const [name, n] of named) {
    const ts = errors.errnoName(Number(n));
    if (!ts.startsWith('errno ') && ts !== name) problems.push(`errno ${n}: src/sys/errors.ts names it ${ts}, pin-core's errno.rs ${name}`);
  }
  return problems;
}

/** Runs the whole check. */
export function checkUapi(include = uapiHeaders()): Report {
  const dir = mkdtempSync(join(tmpdir(), 'pinion-uapi-'));
  try {
    const rust = rustItems(dir);
    const items = [...tsItems(), ...rust.items];
    const { values, problems } = headerValues(dir, include, items);
    problems.unshift(...rust.problems);
    for (const it of items) {
      const h = values.get(it);
      if (h === undefined || same(it.value, h)) continue;
      problems.push(`${where(it)}: ${it.expr} is ${show(it.value)} in ${it.side}, ${show(h)} in the headers`);
    }
    problems.push(...errnoProblems(include, rust.items));
    return { include, items, problems, skipped: rust.skipped };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
