// The DMA conformance suite: one case list (test/l1/conformance.ts) run on
// every path in the rig as an unprivileged VMM would (uid 1000, 8 MiB
// RLIMIT_MEMLOCK), each answer asserted exactly per path.
import t from 'tap';
import { inRig, l1Script } from '../support/rig.js';
import { EXPECTED, PATHS, type PathKey } from './conformance.expected.js';

type Answer = { ok: true; value?: unknown } | { ok: false; errno: string };
const fmt = (a: Answer): string => (a.ok ? `ok${a.value === undefined ? '' : ` ${JSON.stringify(a.value)}`}` : a.errno);

const RUNS = {
  type1: ['type1', 'type1v2', 'iommufd', 'mock'],
  compat: ['compat-type1v2', 'iommufd', 'mock'],
} as const;

t.test('at least 40 cases, and the paths disagree where the kernel does', async (t) => {
  t.ok(Object.keys(EXPECTED).length >= 40, `${Object.keys(EXPECTED).length} cases`);
  t.not(EXPECTED['unmap bisecting']?.['type1/type1v2'], EXPECTED['unmap bisecting']?.['type1/iommufd']);
});

for (const [kernel, paths] of Object.entries(RUNS) as [keyof typeof RUNS, readonly string[]][]) {
  t.test(`${kernel} kernel: ${paths.join(', ')}`, async (t) => {
    const run = await inRig(kernel, [process.execPath, l1Script('conformance'), ...paths], { timeoutSec: 600 });
    t.equal(run.exitCode, 0, run.stderr.toString().slice(-2000));
    const lines = run.stdout.toString().trim().split('\n');
    t.equal(lines.length, paths.length, 'one result line per path');
    for (const line of lines) {
      const { path, uid, results } = JSON.parse(line) as { path: string; uid: number; results: Record<string, Answer> };
      const key = `${kernel}/${path}` as PathKey;
      t.ok(PATHS.includes(key), `${key} is a known path`);
      t.equal(uid, 1000, `${key} ran unprivileged`);
      t.test(key, async (t) => {
        for (const [name, byPath] of Object.entries(EXPECTED)) {
          const want = byPath[key];
          const got = results[name];
          if (want === undefined) {
            t.equal(got, undefined, `${name}: does not apply on ${key}`);
          } else {
            t.equal(got === undefined ? 'missing' : fmt(got), want, name);
          }
        }
        const unknown = Object.keys(results).filter((n) => !(n in EXPECTED));
        t.same(unknown, [], 'no case without an expectation');
      });
    }
  });
}
