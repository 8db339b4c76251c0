// A small flag parser: --name value / --name=value, and `--` ending the flags.

export class UsageError extends Error {
  readonly exitCode = 2;
  override readonly name = 'UsageError';
}

export interface Parsed {
  /** The last value of each flag. */
  flags: Map<string, string>;
  /** Every value of each flag, for repeatable ones (--device A --device B). */
  all: Map<string, string[]>;
  rest: string[];
}

export function parseFlags(argv: string[], known: readonly string[]): Parsed {
  const flags = new Map<string, string>();
  const all = new Map<string, string[]>();
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('--')) break;
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (!known.includes(name)) throw new UsageError(`unknown option --${name} (known: ${known.map((k) => `--${k}`).join(' ')})`);
    const value = eq < 0 ? argv[++i] : a.slice(eq + 1);
    if (value === undefined) throw new UsageError(`--${name} needs a value`);
    flags.set(name, value);
    all.set(name, [...(all.get(name) ?? []), value]);
  }
  return { flags, all, rest: argv.slice(i) };
}

export function intFlag(p: Parsed, name: string): number | undefined {
  const v = p.flags.get(name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} takes a whole number, got '${v}'`);
  return Number(v);
}
