// vm.update at the edges: pinion ctl's `update [--to COMMAND]`, the route's
// body, the report for people, the new process's command, the fault points,
// and the exit status of a process that handed its VM over.
import t from 'tap';
import { route } from '../../src/api/routes.js';
import { UPDATE_LOST, UPDATE_STOP } from '../../src/api/vm-control.js';
import { format, parseCtlArgs } from '../../src/cli/ctl.js';
import { exitStatus } from '../../src/cli/exit-status.js';
import { faultPoint, InjectedFault, preflightWaived } from '../../src/update/faults.js';
import { newProcessCommand } from '../../src/update/peer.js';
import { FakeVmControl } from '../support/fake-vm-control.js';

t.test('pinion ctl PATH update [--to COMMAND]', async (t) => {
  t.match(parseCtlArgs(['s', 'update']), { verb: 'update', method: 'PUT', path: '/api/v1/vm.update', body: undefined });
  t.match(parseCtlArgs(['s', 'update', '--to', 'node /opt/p/pinion.js', '--json']), { json: true, body: { to: 'node /opt/p/pinion.js' } });
  t.match(parseCtlArgs(['--to=/opt/p/pinion', 's', 'update']), { body: { to: '/opt/p/pinion' } });
  t.throws(() => parseCtlArgs(['s', 'update', '--to']), { name: 'UsageError', message: /^--to needs a value$/ });
  t.throws(() => parseCtlArgs(['s', 'update', '--to', ' ']), {
    name: 'UsageError',
    message: /^--to needs a command: the Pinion to hand over to/,
  });
  t.throws(() => parseCtlArgs(['s', 'update', '--to', 'a', '--to', 'b']), /--to is given twice/);
  t.throws(() => parseCtlArgs(['s', 'info', '--to', 'x']), /--to goes with update/);
  t.throws(() => parseCtlArgs(['s', 'update', 'now']), /update takes no arguments/);
  t.throws(() => parseCtlArgs(['s']), /update \[--to COMMAND\]/, 'the usage names it');
});

t.test('vm.update: no body or {"to": COMMAND}, refused otherwise', async (t) => {
  const vm = new FakeVmControl();
  const ok = await route(vm, 'PUT', '/api/v1/vm.update', '');
  t.equal(ok.status, 200);
  t.match(ok.body, { from: 4242, to: 4343, pauseMs: 41.5 });
  t.equal(vm.updateTo, undefined);
  t.equal((await route(vm, 'PUT', '/api/v1/vm.update', '{"to": "node b.js"}')).status, 200);
  t.equal(vm.updateTo, 'node b.js');
  const bad: [string, RegExp][] = [
    ['{"too": "x"}', /vm.update: unknown field too; it takes \{"to": COMMAND\}/],
    ['{"to": 5}', /"to" is the command of the Pinion to hand over to, a non-empty string/],
    ['{"to": "  "}', /a non-empty string/],
    ['[]', /vm.update takes \{"to": COMMAND\} or no body/],
  ];
  for (const [body, why] of bad) {
    const r = await route(vm, 'PUT', '/api/v1/vm.update', body);
    t.equal(r.status, 400, body);
    t.match(r.body, { error: why });
  }
  t.equal((await route(vm, 'GET', '/api/v1/vm.update', '')).status, 405);
});

t.test('the report for people: the pause, then each step with its process, time, the guest, and parts', async (t) => {
  const text = format('update', await new FakeVmControl().update());
  t.equal(
    text,
    [
      'VM handed over from pid 4242 to pid 4343 (live update): the guest was paused 41.5 ms',
      '  step     process        ms  guest   parts (ms)',
      '  check    old          0.10  runs',
      '  spawn    old          3.20  runs',
      '  prepare  new        480.00  runs    load 300, vm 20',
      '  pause    old          1.50  paused',
      '  save     old          4.00  paused',
      '  restore  new         20.00  paused',
      '  commit   old          0.20  paused',
      '  start    new         15.00  paused',
      'locked memory (VmLck/VmPin KiB): old: before (pid 4242) 0/0, new: running (pid 4343) 0/0',
    ].join('\n'),
  );
});

t.test('the new process: this node and bundle by default, COMMAND split at spaces; `run --incoming 3` after', async (t) => {
  t.same(newProcessCommand(), [process.execPath, ...process.execArgv, process.argv[1], 'run', '--incoming', '3']);
  t.same(newProcessCommand(' env PINION_UPDATE_FAULT=kill:ready  node /opt/p/pinion.js '), [
    'env',
    'PINION_UPDATE_FAULT=kill:ready',
    'node',
    '/opt/p/pinion.js',
    'run',
    '--incoming',
    '3',
  ]);
});

t.test('fault points fire only where PINION_UPDATE_FAULT says', async (t) => {
  t.doesNotThrow(() => faultPoint('prepare', {}));
  t.doesNotThrow(() => faultPoint('prepare', { PINION_UPDATE_FAULT: 'refuse:restore' }));
  t.doesNotThrow(() => faultPoint('prepare', { PINION_UPDATE_FAULT: 'refuse prepare' }));
  t.throws(() => faultPoint('restore', { PINION_UPDATE_FAULT: 'refuse:restore' }), InjectedFault);
  t.doesNotThrow(() => faultPoint('restore', { PINION_UPDATE_FAULT: 'unchecked' }), 'unchecked is no fault point');
});

t.test('only PINION_UPDATE_FAULT=unchecked waives the new process pre-flight', async (t) => {
  t.equal(preflightWaived({ PINION_UPDATE_FAULT: 'unchecked' }), true);
  t.equal(preflightWaived({}), false);
  t.equal(preflightWaived({ PINION_UPDATE_FAULT: 'refuse:prepare' }), false);
  t.equal(preflightWaived({ PINION_UPDATE_FAULT: 'unchecked:16' }), false);
});

t.test('a process whose VM moved on ends with 0 and says where it went', async (t) => {
  const errors: string[] = [];
  const saved = console.error;
  console.error = (s: string) => void errors.push(s);
  try {
    const stops = { api: 'vm.stop through the API', update: UPDATE_STOP, lost: UPDATE_LOST };
    t.equal(exitStatus({ kind: 'stopped', why: `${UPDATE_STOP} 4343`, exits: 0 }, stops), 0);
    t.equal(exitStatus({ kind: 'stopped', why: 'signal SIGTERM', exits: 0 }, stops), 143);
    t.equal(exitStatus({ kind: 'stopped', why: 'signal SIGTERM', exits: 0 }), 143, 'without an API, a signal is a signal');
    t.equal(exitStatus({ kind: 'stopped', why: 'vm.stop through the API', exits: 0 }, stops), 0);
    t.equal(exitStatus({ kind: 'stopped', why: `${UPDATE_LOST} the new process died`, exits: 0 }, stops), 1);
  } finally {
    console.error = saved;
  }
  t.same(errors, [
    'pinion: live update: the VM runs on in pid 4343; this process ends',
    'pinion: VM stopped: signal SIGTERM',
    'pinion: VM stopped: signal SIGTERM',
    'pinion: VM stopped: vm.stop through the API',
    'pinion: VM stopped: live update lost the VM: the new process died',
  ]);
});
