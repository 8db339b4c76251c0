// The rig's stall watchdog in a real L1: a silent heartbeat (here: frozen
// on purpose) and an idle L1 are each caught within seconds, QEMU is killed,
// and the report carries L1's own dump, QEMU's view of its vCPUs and the
// kernel log. A test command whose L1 stalls, whose QEMU crashes or whose
// L1 kernel panics, or under which L1 resets on its own, is retried once from a fresh boot, loudly.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, inRig } from '../support/rig.js';

// The stalls here are made on purpose: the soak does not count them.
process.env.PINION_RIG_EXPECT_STALL = '1';
// Assigning undefined to process.env stores the string 'undefined': unset instead.
function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
const FREEZE = 'kill -STOP $(cat /run/pinion-heartbeat.pid); echo frozen >&2; sleep 300';

/** The rig's failure log (PINION_RIG_STALL_LOG): one JSON line per stall or crash it retried. */
const failures = (log: string): { kind: string; reason: string; kernel: string; report?: string }[] =>
  readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; reason: string; kernel: string; report?: string });

t.test('a silent heartbeat is a stall: caught, QEMU killed, report with L1 dump, QEMU vCPUs and kernel log', async (t) => {
  const start = Date.now();
  const r = await runCli(['rig', '--stall', '10', '--', 'sh', '-c', FREEZE]);
  const secs = (Date.now() - start) / 1000;
  t.equal(r.code, 125, 'exit 125: the rig stalled');
  t.ok(secs < 60, `caught in ${secs.toFixed(0)} s (boot included)`);
  t.match(
    r.stderr,
    /^pinion: L1 stalled: no heartbeat from L1 for 1\d s \(the last one at L1 uptime [\d.]+ s\), while running: sh -c kill -STOP/m,
  );
  t.match(r.stderr, /L1 dump: uptime [\d.]+ [\d.]+ loadavg .* \| clocksource \w+/, "L1's own answer, given without a timer");
  t.match(
    r.stderr,
    /QEMU vCPUs: .*CPU #0: thread_id=\d+ \|.*CPU #1: thread_id=\d+; CPU#0 RIP=[0-9a-f]+ HLT=[01], CPU#1 RIP=/,
    "QEMU's view of both vCPUs",
  );
  const report = /full report: (\S+)\)/.exec(r.stderr)?.[1];
  t.ok(report && existsSync(report), 'the full report is kept');
  const text = readFileSync(report!, 'utf8');
  t.match(text, /== QEMU: info registers -a\n[\s\S]*RIP=/, 'registers of every vCPU');
  t.match(text, /== QEMU: info lapic 0\n[\s\S]*timer/i, "the LAPIC's timer state");
  t.match(text, /sysrq: Show State|task:\S+\s+state:/, 'sysrq task dump in the kernel log');
  t.match(text, /Linux version 7\.3/, 'the kernel log from the boot on (not quiet)');
  t.match(r.stderr, /^frozen$/m, 'the command had run to its freeze');
});

t.test('an idle L1 with a silent command is a stall when --idle asks for it', async (t) => {
  const start = Date.now();
  const r = await runCli(['rig', '--idle', '15', '--', 'sleep', '300']);
  t.equal(r.code, 125);
  t.ok((Date.now() - start) / 1000 < 60, 'caught within a minute');
  t.match(
    r.stderr,
    /^pinion: L1 stalled: L1 idle for \d+ s \([\d.]+ busy ticks\/s\) with no output from the command, while running: sleep 300/m,
  );
  t.match(r.stderr, /L1 dump: .*task \d+ \(sleep\) S wchan=\w+/, 'the dump shows where each user thread waits');
});

t.test('a test command whose L1 stalls is retried once from a fresh boot, and the retry is said', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pinion-retry-'));
  const log = join(dir, 'stalls.jsonl');
  const saved = process.env.PINION_RIG_STALL_LOG;
  process.env.PINION_RIG_STALL_LOG = log;
  t.teardown(() => {
    restoreEnv('PINION_RIG_STALL_LOG', saved);
    rmSync(dir, { recursive: true, force: true });
  });
  // The first boot freezes its heartbeat; the second finds the marker and finishes.
  const r = await inRig('type1', ['sh', '-c', `if [ -e ${dir}/first ]; then echo second boot; else touch ${dir}/first; ${FREEZE}; fi`], {
    rwDir: dir,
    stallSec: 10,
  });
  t.equal(r.exitCode, 0);
  t.equal(r.stdout.toString(), 'second boot\n');
  const entries = failures(log);
  t.equal(entries.length, 1, 'one stall logged for the runner summary');
  t.match(entries[0]!.reason, /^no heartbeat from L1 for 1\d s/);
});

t.test('a test command whose QEMU crashes is retried once from a fresh boot, and the retry is said', async (t) => {
  // This test's rigs keep their run directories here, so its QEMU can be told from any other.
  const own = mkdtempSync(join(tmpdir(), 'pinion-crash-'));
  const saved = { tmp: process.env.TMPDIR, log: process.env.PINION_RIG_STALL_LOG };
  const log = join(own, 'failures.jsonl');
  process.env.PINION_RIG_STALL_LOG = log;
  process.env.TMPDIR = own;
  t.teardown(() => {
    restoreEnv('TMPDIR', saved.tmp);
    restoreEnv('PINION_RIG_STALL_LOG', saved.log);
    rmSync(own, { recursive: true, force: true });
  });
  // Once the first boot's command runs, its QEMU gets SIGABRT, as a TCG assertion would send it.
  const marker = join(own, 'first');
  let aborted = 0;
  const watcher = setInterval(() => {
    if (aborted || !existsSync(marker)) return;
    const pid = Number(
      spawnSync('pgrep', ['-f', `${own}/pinion-rig-`], { encoding: 'utf8' })
        .stdout.trim()
        .split('\n')[0],
    );
    if (pid) aborted = (process.kill(pid, 'SIGABRT'), pid);
  }, 200);
  const r = await inRig('type1', ['sh', '-c', `if [ -e ${marker} ]; then echo second boot; else touch ${marker}; sleep 120; fi`], {
    rwDir: own,
  });
  clearInterval(watcher);
  t.ok(aborted, 'the first QEMU was aborted');
  t.equal(r.exitCode, 0);
  t.equal(r.stdout.toString(), 'second boot\n', 'the retry ran the command from a fresh boot');
  const entries = failures(log);
  t.equal(entries.length, 1);
  t.equal(entries[0]!.kind, 'crash');
  t.match(entries[0]!.reason, /^QEMU died of SIGABRT/);
});

// sysrq c panics L1; sysrq b resets it at once, with no panic and no init: what a triple fault of L1 looks like from outside.
const RESETS = [
  {
    name: 'a test command whose L1 kernel panics (L1 resets, QEMU exits 0) is retried once, and the panic is named',
    sysrq: 'c',
    reason: /^L1's kernel panicked: Kernel panic - not syncing: sysrq triggered crash/,
  },
  {
    name: 'a test command under which L1 resets with no panic (QEMU exits 0) is retried once, and the reset is named',
    sysrq: 'b',
    reason: /^L1 reset without a panic line before the command finished; its last console line: .*sysrq: Resetting/,
  },
];

for (const c of RESETS)
  t.test(c.name, async (t) => {
    const own = mkdtempSync(join(tmpdir(), 'pinion-reset-'));
    const saved = process.env.PINION_RIG_STALL_LOG;
    const log = join(own, 'failures.jsonl');
    process.env.PINION_RIG_STALL_LOG = log;
    t.teardown(() => {
      restoreEnv('PINION_RIG_STALL_LOG', saved);
      rmSync(own, { recursive: true, force: true });
    });
    const marker = join(own, 'first');
    const r = await inRig(
      'type1',
      ['sh', '-c', `if [ -e ${marker} ]; then echo second boot; else touch ${marker}; echo ${c.sysrq} > /proc/sysrq-trigger; sleep 60; fi`],
      { rwDir: own },
    );
    t.equal(r.exitCode, 0);
    t.equal(r.stdout.toString(), 'second boot\n', 'the retry ran the command from a fresh boot');
    const entries = failures(log);
    t.equal(entries.length, 1);
    t.equal(entries[0]!.kind, 'crash');
    t.match(entries[0]!.reason, c.reason);
    const report = entries[0]!.report;
    t.ok(report && existsSync(report) && readFileSync(report, 'utf8').includes('sysrq: '), "L1's whole console is kept, and named", {
      report,
    });
  });
