// Pinion's kernel ABI against the kernel's own headers: every constant, struct
// size and field offset in src/sys/ and in pin-core, compiled with cc against
// the uAPI headers of the rig kernel (rig/build-kernel.sh headers). No headers
// is a failure, not a skip. See test/support/uapi.ts.
import t from 'tap';
import { checkUapi } from '../support/uapi.js';

// The first run installs the headers (make headers_install).
t.setTimeout(20 * 60_000);

t.test('constants, struct sizes, field offsets and errno names agree with the headers', async (t) => {
  const r = checkUapi();
  const n = (side: string, kind: string): number => r.items.filter((i) => i.side === side && i.kind === kind).length;
  for (const s of ['TS', 'Rust']) {
    t.comment(
      `${s}: ${n(s, 'constant')} constants, ${n(s, 'struct')} struct sizes, ${n(s, 'field')} field checks, ${n(s, 'errno')} errnos`,
    );
  }
  t.comment(`headers: ${r.include}; not integers, left out: ${r.skipped.join(', ') || 'none'}`);
  for (const p of r.problems) t.fail(p);
  t.ok(n('TS', 'struct') > 0 && n('Rust', 'struct') > 0 && n('Rust', 'errno') > 0, 'both sides were read');
});
