// The remap record's pure parts: the outage bound read from a change's ops,
// and a change's frames from the guest's counters on each side.
import t from 'tap';
import { changeRecord, outageOf } from '../../bench/remap-record.js';

t.test('outage: 0 when the range is mapped or copied before it is unmapped, else bounded by the change', async (t) => {
  t.same(outageOf([], 40), null, 'no op: nothing to say');
  t.same(outageOf(['map 0x40000000 +0x200000', 'map 0x40200000 +0x200000'], 40), { ms: 0 }, 'only maps');
  t.same(outageOf(['copy 0x41000000 -> 0x50000000 +0x200000', 'unmap 0x41000000 +0x200000'], 40), { ms: 0 }, 'copy, then unmap');
  t.same(outageOf(['map 0x50000000 +0x200000', 'unmap 0x41000000 +0x200000'], 40), { ms: 0 }, 'make before break');
  t.same(outageOf(['unmap 0x41800000 +0x200000'], 40), { ms: 0 }, 'only unmaps: a shrink');
  t.same(outageOf(['unmap 0x40000000 +0x200000', 'map 0x40000000 +0x200000'], 40), { atMostMs: 40 }, 'break before make');
});

t.test('a change record counts the frames between its two counter lines', async (t) => {
  const seen = {
    name: 'grow',
    verb: 'resize-ram',
    body: { gpa: '0x40000000', size: '32M' },
    status: 200,
    ms: 812,
    ops: ['map 0x41000000 +0x200000'],
    charged: { before: 80, peak: 96, after: 96 },
    counters: { before: { rx: 100, lost: 2 }, after: { rx: 260, lost: 2 } },
    guest: { note: 'the guest released ...' },
  };
  const r = changeRecord(seen);
  t.match(r, { framesReceived: 160, framesLost: 0, ops: 1, outage: { ms: 0 }, guest: 'the guest released ...' });
  t.equal(
    changeRecord({ ...seen, ops: [], counters: { before: null, after: null }, guest: null }).framesLost,
    null,
    'no counters: unknown',
  );
  t.equal(
    changeRecord({ ...seen, status: 409, ops: ['unmap 0x0 +0x1000', 'map 0x0 +0x1000'], counters: { before: null, after: null } }).outage,
    null,
    'refused: no outage',
  );
});
