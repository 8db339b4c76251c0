// The benchmarks' method (bench/method.ts): the interval math, the ABBA order,
// the adaptive stop and noise-bound flag, the ratio's direction, the summary
// and its claims, and a results file whose summary is recomputed from its raw
// rounds (test/fixtures/bench-results.json: made-up figures in the schema).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  cpuInfo,
  estimateRatios,
  inOrder,
  orderOf,
  pairedRatio,
  parseResults,
  recompute,
  runCell,
  runRounds,
  summarize,
  summaryTable,
  t975,
  withRun,
  makeRun,
  type Cell,
  type Run,
  type StopRule,
} from '../../bench/method.js';

const RULE: StopRule = { minRounds: 4, maxRounds: 10, maxSeconds: 1e9, halfWidth: 0.03 };
const close = (a: number, b: number, tol = 1e-9): boolean => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));
const spec = { name: 'x', unit: 'µs', better: 'lower' as const, figure: 'made up' };

t.test('t quantiles: the table, and between its entries', async (t) => {
  t.equal(t975(1), 12.706);
  t.equal(t975(4), 2.776);
  t.equal(t975(30), 2.042);
  t.ok(Math.abs(t975(35) - 2.03) < 0.001, `t(0.975; 35) = 2.030, got ${t975(35)}`);
  t.ok(Math.abs(t975(1000) - 1.962) < 0.001, `t(0.975; 1000) = 1.962, got ${t975(1000)}`);
  t.ok(t975(80) < t975(60) && t975(80) > t975(120));
  t.throws(() => t975(0));
});

t.test('geometric mean and its 95% t interval on the log ratios', async (t) => {
  // logs +0.1, -0.1, +0.1, -0.1: mean 0, sd sqrt(0.04 / 3), half-width t(3) sd / 2.
  const e = estimateRatios([Math.exp(0.1), Math.exp(-0.1), Math.exp(0.1), Math.exp(-0.1)]);
  const h = (3.182 * Math.sqrt(0.04 / 3)) / 2;
  t.ok(close(e.estimate!, 1));
  t.ok(close(e.ci![0], Math.exp(-h)) && close(e.ci![1], Math.exp(h)), `ci ${e.ci}`);
  t.ok(close(e.ci![0], 0.83217, 1e-4) && close(e.ci![1], 1.20168, 1e-4));
  t.ok(close(e.halfWidth!, Math.exp(h) - 1));
  // 2 and 8: geometric mean 4; logs ln 2 apart from it, so the interval is 4 * 2^(-+12.706).
  const w = estimateRatios([2, 8]);
  t.ok(close(w.estimate!, 4));
  t.ok(close(w.ci![0], 4 / 2 ** 12.706) && close(w.ci![1], 4 * 2 ** 12.706));
  const same = estimateRatios([1.25, 1.25, 1.25]);
  t.ok(close(same.ci![0], 1.25) && close(same.ci![1], 1.25) && close(same.halfWidth!, 0), 'no spread: the interval is the estimate');
  t.equal(estimateRatios([1.1]).ci, null, 'one round: no interval');
  t.equal(estimateRatios([1.1]).estimate, 1.1);
  t.equal(estimateRatios([1, Infinity]).estimate, null, 'a zero on one side gives no estimate');
  t.equal(estimateRatios([1, 0]).ci, null);
  t.equal(estimateRatios([]).estimate, null);
});

t.test('one direction: above 1, Pinion better', async (t) => {
  t.equal(pairedRatio('lower', 50, 100), 2, 'Pinion takes half the time');
  t.equal(pairedRatio('lower', 200, 100), 0.5);
  t.equal(pairedRatio('higher', 300, 100), 3, 'Pinion moves three times as much');
  t.equal(pairedRatio('higher', 50, 100), 0.5);
  t.equal(pairedRatio('lower', 0, 0), 1, 'both zero: a tie');
  t.equal(pairedRatio('lower', 0, 5), Infinity);
});

t.test('ABBA order, and inOrder runs the sides in it', async (t) => {
  t.same(
    Array.from({ length: 8 }, (_, k) => orderOf(k)),
    ['AB', 'BA', 'BA', 'AB', 'AB', 'BA', 'BA', 'AB'],
  );
  const calls: string[] = [];
  const r = await inOrder(
    'BA',
    () => (calls.push('pinion'), 1),
    async () => (calls.push('reference'), 2),
  );
  t.same(calls, ['reference', 'pinion']);
  t.same(r, [1, 2], 'returned as [pinion, reference] whatever the order');
  const seq: string[] = [];
  await runCell(
    spec,
    { ...RULE, maxRounds: 4 },
    () => (seq.push('P'), 10),
    () => (seq.push('R'), 10),
  );
  t.equal(seq.join(''), 'PRRPRPPR', 'runCell alternates ABBA');
});

t.test('adaptive stop: the interval after the minimum, else a cap and noise-bound', async (t) => {
  const steady = await runCell(
    spec,
    RULE,
    () => 10,
    () => 12,
  );
  t.equal(steady.rounds.length, 4, 'a steady ratio stops at the minimum');
  t.equal(steady.stoppedBy, 'interval');
  t.equal(steady.noiseBound, false);
  t.ok(close(steady.estimate!, 1.2));
  t.same(
    steady.rounds.map((r) => r.k),
    [0, 1, 2, 3],
  );

  let i = 0;
  const noisy = await runCell(
    spec,
    RULE,
    () => (i++ % 2 ? 5 : 20),
    () => 10,
  );
  t.equal(noisy.rounds.length, 10, 'a noisy one runs to the round cap');
  t.equal(noisy.stoppedBy, 'rounds');
  t.equal(noisy.noiseBound, true);
  t.ok(noisy.halfWidth! > 0.03);

  let clock = 0;
  let j = 0;
  const timed = await runCell(
    spec,
    { ...RULE, maxRounds: 1000, maxSeconds: 30 },
    () => ((clock += 5), j++ % 2 ? 5 : 20),
    () => 10,
    { now: () => clock },
  );
  t.equal(timed.stoppedBy, 'seconds');
  t.equal(timed.rounds.length, 6, 'stops at the first round ending past the time cap');
  t.equal(timed.noiseBound, true);

  // Two cells: the steady one is within the target at the cap, the other is not; a round may lack a pair.
  let n = 0;
  const cells = await runRounds([spec, { ...spec, name: 'y', better: 'higher' }], { ...RULE, maxRounds: 6 }, (k) => ({
    x: { pinion: 10, reference: 11 },
    y: k === 2 ? undefined : { pinion: n++ % 2 ? 1 : 3, reference: 2 },
  }));
  t.equal(cells[0]!.noiseBound, false);
  t.equal(cells[0]!.stoppedBy, 'rounds');
  t.equal(cells[1]!.noiseBound, true);
  t.equal(cells[1]!.rounds.length, 5, 'the round without a pair is not counted');
  t.notOk(
    cells[1]!.rounds.some((r) => r.k === 2),
    'and the others keep their round index',
  );
  t.ok(
    cells[1]!.rounds.every((r) => r.order === orderOf(r.k)),
    'each round in ABBA order by its index',
  );
  t.ok(close(cells[1]!.rounds[0]!.ratio, 1.5), 'higher is better: Pinion / reference');
});

t.test('summary: every cell counted, a claim only where the lower bound clears it', async (t) => {
  const c = (
    name: string,
    ci: [number, number] | null,
    noiseBound = false,
    invalid?: string,
  ): Pick<Cell, 'name' | 'ci' | 'noiseBound' | 'invalid'> => ({
    name,
    ci,
    noiseBound,
    invalid,
  });
  const s = summarize(
    [
      c('a', [0.96, 1.02]),
      c('b', [0.9, 1.2], true),
      c('c', [1.1, 1.3]),
      c('d', null, true),
      c('e', [0.97, 0.99]),
      c('f', [1.2, 1.3], false, 'bad counts'),
    ],
    [0.95, 1],
  );
  t.equal(s.cells, 6);
  t.equal(s.noiseBound, 2);
  t.equal(s.pinionBetter, 1, 'only c: f is invalid');
  t.equal(s.referenceBetter, 1);
  t.equal(s.undecided, 4);
  t.same(s.claims[0], { threshold: 0.95, cleared: 3, of: 6, holds: false, notCleared: ['b', 'd', 'f'] });
  t.same(s.claims[1]!.notCleared, ['a', 'b', 'd', 'e', 'f']);
  t.equal(summarize([c('a', [0.96, 1.02])], [0.95]).claims[0]!.holds, true);
});

t.test('a results file: its summary and every estimate recomputed from the raw rounds', async (t) => {
  const text = readFileSync(fileURLToPath(new URL('../../../test/fixtures/bench-results.json', import.meta.url)), 'utf8');
  const file = parseResults(text);
  if (!file) throw new Error('the fixture is not in the schema');
  t.ok(file.runs.length >= 2);
  let cells = 0;
  for (const run of file.runs) {
    const again = recompute(run);
    for (const [i, c] of run.cells.entries()) {
      const r = again.cells[i]!;
      cells++;
      t.ok(
        c.rounds.every((x, j) => x.order === r.rounds[j]!.order && close(x.ratio, r.rounds[j]!.ratio)),
        `${run.benchmark} ${c.name}: each round's order and ratio`,
      );
      t.ok(c.estimate === null ? r.estimate === null : close(c.estimate, r.estimate!), `${c.name}: estimate ${c.estimate}`);
      t.ok(c.ci === null ? r.ci === null : close(c.ci[0], r.ci![0]) && close(c.ci[1], r.ci![1]), `${c.name}: interval ${c.ci}`);
      t.equal(c.noiseBound, r.noiseBound, `${c.name}: noise-bound ${c.noiseBound}`);
    }
    t.same(run.summary, again.summary, `${run.benchmark}: the stated summary is the recomputed one`);
  }
  const map = file.runs.find((r) => r.benchmark === 'map')!;
  t.same(map.summary.claims[0]!.notCleared, ['legacy anon 4 KiB'], 'the 4 KiB cell is counted, and does not clear 0.95');
  const table = summaryTable(file.runs).split('\n');
  t.equal(table.filter((l) => /^\| (map|linux-guest) \|/.test(l)).length, cells, 'the table has a row for every cell');
  t.ok(table.some((l) => l.includes('all cells >= 0.95: does not hold (2 of 3')));

  // A stated figure that the rounds do not give is caught.
  const forged: Run = JSON.parse(text).runs[0];
  forged.cells[1]!.rounds[0]!.pinion /= 2;
  t.notSame(recompute(forged).cells[1]!.estimate, forged.cells[1]!.estimate);
});

t.test('results files collect runs by benchmark and variant; earlier formats are replaced', async (t) => {
  const run = (variant: string, estimate: number): Run =>
    makeRun({
      benchmark: 'nic',
      variant,
      reference: 'r',
      provenance: { commit: 'c', rigKernel: null, kernel: 'k', date: 'd', cpu: { model: 'm', count: 1 }, hostCpu: null, node: 'v' },
      cells: [
        {
          ...spec,
          statistic: 's',
          ratio: 'r',
          rounds: [],
          estimate,
          ci: null,
          halfWidth: null,
          noiseBound: true,
          cap: RULE,
          stoppedBy: 'rounds',
        },
      ],
    });
  const a = withRun('{"type1-iommufd": {"ratio": 0.7}}', run('type1 iommufd', 1));
  const b = withRun(withRun(a, run('type1 legacy', 2)), run('type1 iommufd', 3));
  const f = parseResults(b)!;
  t.same(
    f.runs.map((r) => [r.variant, r.cells[0]!.estimate]),
    [
      ['type1 legacy', 2],
      ['type1 iommufd', 3],
    ],
  );
  t.equal(parseResults('{"ratio": 1}'), undefined);
});

t.test('cpuInfo: the model and the processor count of /proc/cpuinfo', async (t) => {
  const text =
    'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n';
  t.same(cpuInfo(text), { model: 'AMD EPYC 7763 64-Core Processor', count: 2 });
  t.same(cpuInfo(''), { model: 'unknown', count: 0 });
});
