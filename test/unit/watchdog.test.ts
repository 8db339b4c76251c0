// The rig's stall watchdog: when a silent or idle L1 counts as stalled.
import t from 'tap';
import { StallWatch } from '../../rig/watchdog.js';

const beat = (w: StallWatch, at: number, uptime: number, busy: number) => w.feed(`hb ${uptime.toFixed(2)} ${busy} ${at}\n`, at * 1000);

t.test('silence: a stall once the heartbeat has been quiet for the limit, not before', async (t) => {
  const w = new StallWatch({ silenceMs: 20_000 }, 0);
  t.equal(w.check(19_999), undefined, 'no heartbeat yet, within the limit');
  t.match(w.check(20_000), /^no heartbeat from L1 20 s after boot$/);
  for (let s = 1; s <= 30; s++) beat(w, s, s + 0.5, 100 * s);
  t.equal(w.check(49_999), undefined);
  t.match(w.check(50_000), /^no heartbeat from L1 for 20 s \(the last one at L1 uptime 30\.5 s\)$/);
});

t.test('heartbeat lines may arrive split across reads; dump lines are collected', async (t) => {
  const w = new StallWatch({ silenceMs: 20_000 }, 0);
  w.feed('hb 1.0', 1000);
  t.equal(w.last(), undefined, 'half a line is not a heartbeat');
  w.feed('0 7 9\ndump uptime 1 2\ndump task 5 (node) D wchan=p9_client_rpc\ndu', 1100);
  t.same(w.last(), { at: 1100, uptime: 1, busy: 7, idle: 9 });
  t.notOk(w.dumpDone);
  w.feed('mp end\n', 1200);
  t.ok(w.dumpDone);
  t.same(w.dump, ['uptime 1 2', 'task 5 (node) D wchan=p9_client_rpc']);
});

t.test('idle: heartbeats but no output and no CPU for the window', async (t) => {
  const w = new StallWatch({ silenceMs: 20_000, idleMs: 45_000 }, 0);
  for (let s = 1; s <= 60; s++) beat(w, s, s, s); // 1 busy tick a second: the heartbeat itself
  t.match(w.check(60_000), /^L1 idle for 60 s \(1\.0 busy ticks\/s\) with no output from the command$/);
  w.activity(50_000);
  t.equal(w.check(60_000), undefined, 'output 10 s ago');
  for (let s = 61; s <= 94; s++) beat(w, s, s, s);
  t.equal(w.check(94_999), undefined);
  beat(w, 95, 95, 95);
  t.match(w.check(95_000), /^L1 idle for 45 s/);
});

t.test('idle: a busy L1 (a nested guest running) is never idle, nor is one without the option', async (t) => {
  const busy = new StallWatch({ silenceMs: 20_000, idleMs: 45_000 }, 0);
  const off = new StallWatch({ silenceMs: 20_000 }, 0);
  for (let s = 1; s <= 100; s++) {
    beat(busy, s, s, 150 * s);
    beat(off, s, s, s);
  }
  t.equal(busy.check(100_000), undefined);
  t.equal(off.check(100_000), undefined);
});
