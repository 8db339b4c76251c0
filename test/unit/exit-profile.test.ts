// The exit profile's bookkeeping and report, and the THP mode a sysfs file selects.
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitProfile, exitProfileReport } from '../../src/vmm/exit-profile.js';
import { thpMode } from '../../src/memory/guest-ram.js';

t.test('exits are counted per port or address, direction and size, and merged across vCPUs by time', async (t) => {
  const a = new ExitProfile();
  a.record('pio', 0x3f8, 1, true, 2000);
  a.record('pio', 0x3f8, 1, true, 4000);
  a.record('pio', 0xcfc, 4, false, 1_000_000);
  const b = new ExitProfile();
  b.record('pio', 0x3f8, 1, true, 6000);
  b.record('mmio', 0xfebf0000, 4, true, 500);
  t.equal(a.entries().length, 2);
  const lines = exitProfileReport([a.entries(), b.entries()]).split('\n');
  t.match(lines[0], /exits to userspace: 5, 1\.0 ms/);
  t.match(lines[1], /pio read {2}0xcfc\/4 +1 x +1000\.0 us = +1\.0 ms/, 'the costliest first');
  t.match(lines[2], /pio write 0x3f8\/1 +3 x +4\.0 us/, 'both vCPUs merged, with the mean');
  t.match(lines[3], /mmio write 0xfebf0000\/4 +1 x/);
  t.equal(exitProfileReport([a.entries(), b.entries()], 1).split('\n').length, 2, 'only the top entries');
});

t.test('thpMode: the bracketed word, or nothing without the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'thp-'));
  writeFileSync(join(dir, 'shmem'), 'always within_size advise [never] deny force\n');
  writeFileSync(join(dir, 'anon'), 'always [madvise] never\n');
  t.equal(thpMode(join(dir, 'shmem')), 'never');
  t.equal(thpMode(join(dir, 'anon')), 'madvise');
  t.equal(thpMode(join(dir, 'absent')), undefined);
});
