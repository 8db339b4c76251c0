// The command line's parser: parseArgs in strict mode, its refusals in our
// words, repeatable flags, `--` before a command, and --help on every command.
import t from 'tap';
import { oneOf, parseCommand, wholeNumber, type CommandSpec } from '../../src/cli/args.js';
import { shellLine, shellQuote } from '../../src/cli/shell.js';
import { BOOT_RAM, L1_RAM, MEMLOCK_KIB, sizeValue, VM_RAM } from '../../src/cli/sizes.js';
import { sizeText } from '../../src/memory/layout.js';

const RUNLIKE = {
  name: 'pinion x',
  usage: 'usage: pinion x',
  options: { payload: { type: 'string' }, device: { type: 'string', multiple: true }, json: { type: 'boolean' } },
} satisfies CommandSpec;
const RIGLIKE = { ...RUNLIKE, positionals: 'command' } satisfies CommandSpec;

t.test('flags, repeatable flags, and the command after --', async (t) => {
  const p = parseCommand(['--payload=a.elf', '--device', 'A', '--device', 'B', '--json'], RUNLIKE);
  t.same(p.values, { payload: 'a.elf', device: ['A', 'B'], json: true });
  const r = parseCommand(['--payload', 'x', '--', 'sh', '-c', 'echo --payload'], RIGLIKE);
  t.same(r.positionals, ['sh', '-c', 'echo --payload']);
  t.equal(parseCommand(['--payload', '-'], RUNLIKE).values.payload, '-', 'a lone dash is a value');
});

t.test('--help and -h win over everything before --, and nothing after it', async (t) => {
  t.ok(parseCommand(['--bogus', '-h'], RUNLIKE).help);
  t.ok(parseCommand(['--help'], RIGLIKE).help);
  t.notOk(parseCommand(['--', 'ls', '--help'], RIGLIKE).help);
});

t.test('what strict mode refuses, said in one line naming the flag', async (t) => {
  const refuses = (argv: string[], re: RegExp, spec: CommandSpec = RUNLIKE): void => {
    t.throws(() => parseCommand(argv, spec), { name: 'UsageError', message: re }, argv.join(' '));
    try {
      parseCommand(argv, spec);
    } catch (e) {
      t.notMatch((e as Error).message, /\n/, 'one line');
    }
  };
  refuses(
    ['--payload', '--json'],
    /^--payload needs a value; --json after it is an option \(a value starting with - is written --payload=--json\)$/,
  );
  refuses(['--payload'], /^--payload needs a value$/);
  refuses(['--bogus'], /^unknown option --bogus; pinion x takes --payload, --device, --json/);
  refuses(['-m'], /^unknown option -m;/);
  refuses(['--json=yes'], /^--json takes no value$/);
  refuses(['stray'], /^unexpected argument 'stray'/);
  refuses(['--payload', 'a', '--payload', 'b'], /^--payload is given twice; give it once$/);
  refuses(['ls', '--', 'x'], /^unexpected argument 'ls': the command goes after --/, RIGLIKE);
});

t.test('numbers and choices', async (t) => {
  t.equal(wholeNumber('8', '--cpus', { min: 1, max: 8 }), 8);
  t.throws(() => wholeNumber('root', '--uid'), /^--uid takes a whole number, got 'root'$/);
  t.throws(() => wholeNumber('9', '--cpus', { min: 1, max: 8 }), /^--cpus 9 is out of range; 1 to 8$/);
  t.throws(() => wholeNumber('0', '--timeout', { min: 1 }), /^--timeout 0 is out of range; at least 1$/);
  t.equal(oneOf('on', '--iommu', ['on', 'off']), 'on');
  t.throws(() => oneOf('maybe', '--iommu', ['on', 'off']), /^--iommu 'maybe' is not one of on, off$/);
});

t.test('one size syntax, bounded per flag', async (t) => {
  t.equal(sizeValue('64M', '--memory', BOOT_RAM), 64n << 20n);
  t.equal(sizeValue('4G', '--memory', BOOT_RAM), 4n << 30n);
  t.equal(sizeValue('1048576', '--memory', BOOT_RAM), 1n << 20n, 'plain bytes');
  t.throws(() => sizeValue('0', '--memory', BOOT_RAM), /^--memory 0 is below 1M, the least a guest boots with/);
  t.throws(() => sizeValue('5G', '--memory', BOOT_RAM), /^--memory 5G is over 4G, the most RAM a guest boots with/);
  t.throws(() => sizeValue('64MB', '--memory', BOOT_RAM), /^--memory '64MB' is not a size; write it like 64M, 1G or 65536K$/);
  t.equal(sizeValue('255G', 'RAM', VM_RAM), 255n << 30n, 'a VM may hold what the memory map holds');
  t.throws(() => sizeValue('256G', 'RAM', VM_RAM), /over 255G, the most RAM a guest's memory map holds/);
  t.throws(() => sizeValue('1500K', '--memory', L1_RAM), /^--memory 1500K is not a multiple of 1M \(QEMU's -m counts MiB\); e\.g\. 2M$/);
  t.throws(() => sizeValue('1000', '--memlock', MEMLOCK_KIB), /needs a unit \(e\.g\. 1000K or 1000M\)/);
  t.same([4n << 30n, 65540n * 1024n, 1000n, 0n].map(sizeText), ['4G', '65540K', '1000', '0']);
});

t.test('suggested commands paste into a shell as printed', async (t) => {
  t.equal(shellQuote('--payload=/a/b.elf'), '--payload=/a/b.elf');
  t.equal(shellQuote('exit=3 fault'), "'exit=3 fault'");
  t.equal(shellQuote("it's"), "'it'\\''s'");
  t.equal(shellQuote(''), "''");
  t.equal(shellLine(['node', '/my dir/pinion.js', 'run', '$HOME']), "node '/my dir/pinion.js' run '$HOME'");
});
