// Commands the CLI prints for the user to run, quoted so they paste into a
// POSIX shell as printed: a path with a space or a guest command line with
// a quote stays one argument.

/** Words that need no quotes: nothing a shell expands or splits on. */
const PLAIN = /^[\w@%+=:,./-]+$/;

export function shellQuote(arg: string): string {
  return PLAIN.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function shellLine(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}
