// Every command's flags go through node:util's parseArgs in strict mode; what
// it refuses is said here in one line naming the flag. Beyond strict mode: a
// flag given twice that is not repeatable is refused (the last would win
// silently), and a command after `--` (rig, open) must not start before it.
// -h/--help is every command's. Usage errors exit 2; refusals of well-formed
// input are plain errors and exit 1.
import { parseArgs } from 'node:util';

export class UsageError extends Error {
  readonly exitCode = 2;
  override readonly name = 'UsageError';
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** Repeatable: --device A --device B. */
  multiple?: boolean;
}

export interface CommandSpec<O extends Record<string, OptionSpec> = Record<string, OptionSpec>> {
  /** As the user types it: `pinion run`. */
  name: string;
  /** What --help prints. */
  usage: string;
  options: O;
  /** Besides flags: nothing, words (ctl's PATH VERB ARGS), or a command after `--` (rig, open). */
  positionals?: 'none' | 'words' | 'command';
}

type Value<S extends OptionSpec> = S['multiple'] extends true ? string[] : S['type'] extends 'boolean' ? boolean : string;

export interface Parsed<O extends Record<string, OptionSpec>> {
  /** -h or --help was given: print the usage, nothing else. */
  help: boolean;
  values: { [K in keyof O]?: Value<O[K]> };
  /** The words, or the command after `--`. */
  positionals: string[];
}

interface Token {
  kind: 'option' | 'positional' | 'option-terminator';
  index: number;
  name?: string;
  rawName?: string;
  value?: string;
  inlineValue?: boolean;
}

const HELP = { help: { type: 'boolean', short: 'h' } } as const;

export function parseCommand<O extends Record<string, OptionSpec>>(argv: string[], spec: CommandSpec<O>): Parsed<O> {
  const options = { ...spec.options, ...HELP };
  const positionals = spec.positionals ?? 'none';
  // A lenient pass first: its tokens name what the strict pass refuses, and --help wins over any mistake.
  const { tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true }) as { tokens: Token[] };
  const end = tokens.find((t) => t.kind === 'option-terminator')?.index ?? argv.length;
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help' && t.index < end)) return { help: true, values: {}, positionals: [] };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: positionals !== 'none', tokens: true });
  } catch (e) {
    throw new UsageError(explain(tokens, spec) ?? `${String((e as Error).message).split('\n')[0]} (see ${spec.name} --help)`);
  }
  const seen = new Set<string>();
  for (const t of tokens) {
    if (t.kind !== 'option' || !t.name) continue;
    if (seen.has(t.name) && !spec.options[t.name]?.multiple) throw new UsageError(`--${t.name} is given twice; give it once`);
    seen.add(t.name);
  }
  const { help: _help, ...values } = parsed.values as Record<string, unknown>;
  if (positionals !== 'command') return { help: false, values: values as Parsed<O>['values'], positionals: parsed.positionals };
  const early = tokens.find((t) => t.kind === 'positional' && t.index < end);
  if (early)
    throw new UsageError(`unexpected argument '${early.value}': the command goes after --, as in ${spec.name} [options] -- <command...>`);
  return { help: false, values: values as Parsed<O>['values'], positionals: argv.slice(end + 1) };
}

/** The first token strict mode refuses, in our words. */
function explain(tokens: Token[], spec: CommandSpec): string | undefined {
  const names = Object.keys(spec.options).map((k) => `--${k}`);
  for (const t of tokens) {
    if (t.kind === 'option-terminator') break;
    if (t.kind === 'positional') {
      if ((spec.positionals ?? 'none') === 'none') return `unexpected argument '${t.value}' (see ${spec.name} --help)`;
      continue;
    }
    const o = spec.options[t.name ?? ''];
    if (!o)
      return `unknown option ${t.rawName}; ${spec.name} takes ${names.length ? names.join(', ') : 'no options'} (see ${spec.name} --help)`;
    if (o.type === 'boolean' && t.inlineValue) return `${t.rawName} takes no value`;
    if (o.type === 'string' && t.value === undefined) return `${t.rawName} needs a value`;
    // parseArgs would take the next flag as the value; strict mode refuses that, and so do we.
    if (o.type === 'string' && !t.inlineValue && t.value !== '-' && t.value?.startsWith('-'))
      return `${t.rawName} needs a value; ${t.value} after it is an option (a value starting with - is written ${t.rawName}=${t.value})`;
  }
  return undefined;
}

/** Prints a command's usage on stdout; --help exits 0. */
export function printUsage(spec: CommandSpec): number {
  console.log(spec.usage);
  return 0;
}

export function wholeNumber(text: string, flag: string, range: { min?: number; max?: number } = {}): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag} takes a whole number, got '${text}'`);
  const n = Number(text);
  const { min = 0, max } = range;
  if (n < min || (max !== undefined && n > max))
    throw new UsageError(`${flag} ${text} is out of range; ${max === undefined ? `at least ${min}` : `${min} to ${max}`}`);
  return n;
}

/** `text` if it is one of `choices`; `why` explains them in the refusal. */
export function oneOf<T extends string>(text: string, flag: string, choices: readonly T[], why = ''): T {
  if ((choices as readonly string[]).includes(text)) return text as T;
  throw new UsageError(`${flag} '${text}' is not one of ${choices.join(', ')}${why ? ` (${why})` : ''}`);
}
