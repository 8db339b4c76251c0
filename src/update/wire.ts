// Reading a record that came from another process: every field checked for
// its type and range where it is read, and every refusal one line that names
// the field (`state.vcpus[1].lapic: 1000 bytes, kvm_lapic_state is 1024`).
// Numbers that may pass 2^53 travel as "0x..." strings, byte blobs as base64.

export class RecordError extends Error {
  override readonly name = 'RecordError';
}

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** A JSON object whose fields are read one by one; `done()` refuses any it did not read. */
export class Fields {
  private readonly seen = new Set<string>();

  private constructor(
    readonly path: string,
    private readonly o: Record<string, unknown>,
  ) {}

  static of(v: unknown, path: string): Fields {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RecordError(`${path}: ${what(v)}, not an object`);
    return new Fields(path, v as Record<string, unknown>);
  }

  has(k: string): boolean {
    return Object.hasOwn(this.o, k) && this.o[k] !== undefined;
  }

  /** Field `k`, which must be there. */
  get(k: string): unknown {
    this.seen.add(k);
    if (!this.has(k)) throw new RecordError(`${this.at(k)}: missing`);
    return this.o[k];
  }

  at(k: string): string {
    return `${this.path}.${k}`;
  }

  obj(k: string): Fields {
    return Fields.of(this.get(k), this.at(k));
  }

  /** Field `k` if it is there, else undefined. */
  optional<T>(k: string, read: (f: Fields, k: string) => T): T | undefined {
    this.seen.add(k);
    return this.has(k) ? read(this, k) : undefined;
  }

  str(k: string, max = 4096): string {
    const v = this.get(k);
    if (typeof v !== 'string') throw new RecordError(`${this.at(k)}: ${what(v)}, not a string`);
    if (v.length > max) throw new RecordError(`${this.at(k)}: ${v.length} characters, more than ${max}`);
    return v;
  }

  oneOf<T extends string>(k: string, values: readonly T[]): T {
    const v = this.str(k);
    if (!values.includes(v as T)) throw new RecordError(`${this.at(k)}: '${v}' is not one of ${values.join(', ')}`);
    return v as T;
  }

  bool(k: string): boolean {
    const v = this.get(k);
    if (typeof v !== 'boolean') throw new RecordError(`${this.at(k)}: ${what(v)}, not true or false`);
    return v;
  }

  int(k: string, min: number, max: number): number {
    return intIn(this.get(k), this.at(k), min, max);
  }

  /** A "0x..." string of at most 64 bits. */
  u64(k: string): bigint {
    return u64(this.get(k), this.at(k));
  }

  /** Base64 bytes: exactly `size` of them, or at least `size` when `atLeast`. */
  blob(k: string, size: number, struct: string, atLeast = false): Buffer {
    return blob(this.get(k), this.at(k), size, struct, atLeast);
  }

  list<T>(k: string, max: number, read: (v: unknown, path: string) => T): T[] {
    const v = this.get(k);
    if (!Array.isArray(v)) throw new RecordError(`${this.at(k)}: ${what(v)}, not a list`);
    if (v.length > max) throw new RecordError(`${this.at(k)}: ${v.length} entries, more than ${max}`);
    return v.map((x, i) => read(x, `${this.at(k)}[${i}]`));
  }

  /** Refuses fields this reader does not know: a record from another schema, not silently half read. */
  done(): void {
    const extra = Object.keys(this.o).filter((k) => !this.seen.has(k));
    if (extra.length) throw new RecordError(`${this.path}: unknown field${extra.length > 1 ? 's' : ''} ${extra.join(', ')}`);
  }
}

export function intIn(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new RecordError(`${path}: ${what(v)}, not a whole number`);
  if (v < min || v > max) throw new RecordError(`${path}: ${v} is out of range [${min}, ${max}]`);
  return v;
}

export function u64(v: unknown, path: string): bigint {
  if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(v)) throw new RecordError(`${path}: ${what(v)}, not a 64-bit "0x..." number`);
  return BigInt(v);
}

export function blob(v: unknown, path: string, size: number, struct: string, atLeast = false): Buffer {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0)
    throw new RecordError(`${path}: ${what(v)}, not base64 bytes`);
  const b = Buffer.from(v, 'base64');
  if (atLeast ? b.length < size : b.length !== size)
    throw new RecordError(`${path}: ${b.length} bytes, ${struct} is ${atLeast ? 'at least ' : ''}${size}`);
  return b;
}

export const hex64 = (v: bigint): string => `0x${v.toString(16)}`;
export const base64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');

function what(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return v.length > 24 ? `a string of ${v.length} characters` : `'${v}'`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}
