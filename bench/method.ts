// The method every benchmark in bench/ follows, and the results file they
// all write. Pinion (A) and its reference (B) are measured in the same boot
// on the same objects, in ABBA order, one pair per round; each round gives a
// ratio that reads "above 1: Pinion better" whatever the figure; the
// estimate is the geometric mean of the per-round ratios with a 95% t
// interval on their logs. Rounds go on until the interval is within +/-3%
// of the estimate, or a cap is hit and the cell is marked noise-bound.
// Pure apart from provenance(); test/unit/bench-method.test.ts checks it.
import { readFileSync } from 'node:fs';
import { cpus, release, version } from 'node:os';
import { commitId } from './stats.js';

export const SCHEMA = 'pinion-bench/2';
export const STATISTIC = 'geometric mean of per-round ratios';
export const INTERVAL = '95% confidence interval, t distribution on the log ratios';

/** Which way a figure is better: times, exits and memory are 'lower', throughput 'higher'. */
export type Better = 'lower' | 'higher';
export type Order = 'AB' | 'BA';

/** One round: both sides' figures and their ratio, Pinion better above 1. */
export interface Round {
  /** The round's index in the run: its order is orderOf(k). */
  k: number;
  order: Order;
  pinion: number;
  reference: number;
  ratio: number;
}

export interface StopRule {
  /** Rounds before the interval may stop the cell. */
  minRounds: number;
  maxRounds: number;
  maxSeconds: number;
  /** Relative half-width the interval must reach (0.03: +/-3%). */
  halfWidth: number;
}

/** A benchmark's caps, which PINION_BENCH_ROUNDS and PINION_BENCH_CELL_SECONDS override; +/-3% as the target. */
export function stopRule(d: { minRounds: number; maxRounds: number; maxSeconds: number }): StopRule {
  const env = (k: string, v: number): number => (process.env[k] ? Number(process.env[k]) : v);
  return {
    minRounds: d.minRounds,
    maxRounds: env('PINION_BENCH_ROUNDS', d.maxRounds),
    maxSeconds: env('PINION_BENCH_CELL_SECONDS', d.maxSeconds),
    halfWidth: 0.03,
  };
}

export interface CellSpec {
  name: string;
  unit: string;
  better: Better;
  /** What one side's figure in a round is, e.g. "median of 3 samples of 8 pairs, ns per pair". */
  figure: string;
}

export interface Cell extends CellSpec {
  statistic: string;
  /** "reference / Pinion" for a lower-is-better figure, "Pinion / reference" for a higher-is-better one. */
  ratio: string;
  rounds: Round[];
  estimate: number | null;
  ci: [number, number] | null;
  /** The interval's upper bound over the estimate, less 1 (the log interval is wider above). */
  halfWidth: number | null;
  /** Stopped by a cap before the interval reached the target, or no interval could be formed. */
  noiseBound: boolean;
  cap: StopRule;
  stoppedBy: 'interval' | 'rounds' | 'seconds';
  note?: string;
  /** Why the cell's figures cannot be trusted (e.g. exit counts that do not add up): never counted by a claim. */
  invalid?: string;
}

export interface CpuInfo {
  model: string;
  count: number;
}

export interface Provenance {
  commit: string;
  /** The rig kernel's cache id (e.g. type1-bd925c11093d02ea), as bench/run.sh passes it. */
  rigKernel: string | null;
  /** uname of the machine the benchmark ran on (L1). */
  kernel: string;
  date: string;
  /** The machine the benchmark ran on (L1, whose CPUs QEMU emulates). */
  cpu: CpuInfo;
  /** The machine running the rig, as bench/run.sh read it; null when not passed. */
  hostCpu: CpuInfo | null;
  node: string;
}

export interface Claim {
  /** "all cells >= threshold": a cell counts only when its interval's lower bound clears it. */
  threshold: number;
  cleared: number;
  of: number;
  holds: boolean;
  /** Cells that did not clear it, noise-bound ones included. */
  notCleared: string[];
}

export interface Summary {
  cells: number;
  noiseBound: number;
  /** Intervals wholly above 1, wholly below 1, and across 1 (or none formed). */
  pinionBetter: number;
  referenceBetter: number;
  undecided: number;
  claims: Claim[];
}

export interface Run {
  benchmark: string;
  /** What sets this run apart within its benchmark: the kernel, the path. */
  variant: string;
  reference: string;
  method: { statistic: string; interval: string; order: string; ratio: string };
  provenance: Provenance;
  cells: Cell[];
  summary: Summary;
  /** Per-benchmark detail (exit counts, failed boots...). */
  extra?: Record<string, unknown>;
}

export interface ResultsFile {
  schema: typeof SCHEMA;
  runs: Run[];
}

export const METHOD: Run['method'] = {
  statistic: STATISTIC,
  interval: INTERVAL,
  order: 'ABBA: round k runs Pinion first when k % 4 is 0 or 3, the reference first otherwise',
  ratio: 'reference time / Pinion time (for throughput: Pinion / reference); above 1: Pinion better',
};

/** The round's ratio, "above 1: Pinion better". Both zero is a tie; one zero gives 0 or Infinity, which no interval takes. */
export function pairedRatio(better: Better, pinion: number, reference: number): number {
  if (pinion === 0 && reference === 0) return 1;
  return better === 'lower' ? reference / pinion : pinion / reference;
}

export function ratioName(better: Better): string {
  return better === 'lower' ? 'reference / Pinion' : 'Pinion / reference';
}

/** ABBA: AB, BA, BA, AB, AB, BA, ...; a linear drift within four rounds then hits both sides alike. */
export function orderOf(k: number): Order {
  const m = k % 4;
  return m === 0 || m === 3 ? 'AB' : 'BA';
}

/** Runs A (Pinion) and B (the reference) in `order`; returns them as [pinion, reference]. */
export async function inOrder<T>(order: Order, pinion: () => T | Promise<T>, reference: () => T | Promise<T>): Promise<[T, T]> {
  if (order === 'AB') {
    const a = await pinion();
    return [a, await reference()];
  }
  const b = await reference();
  return [await pinion(), b];
}

// Two-sided 95% quantiles of Student's t, t(0.975; df).
const T975: [number, number][] = [
  [1, 12.706],
  [2, 4.303],
  [3, 3.182],
  [4, 2.776],
  [5, 2.571],
  [6, 2.447],
  [7, 2.365],
  [8, 2.306],
  [9, 2.262],
  [10, 2.228],
  [11, 2.201],
  [12, 2.179],
  [13, 2.16],
  [14, 2.145],
  [15, 2.131],
  [16, 2.12],
  [17, 2.11],
  [18, 2.101],
  [19, 2.093],
  [20, 2.086],
  [21, 2.08],
  [22, 2.074],
  [23, 2.069],
  [24, 2.064],
  [25, 2.06],
  [26, 2.056],
  [27, 2.052],
  [28, 2.048],
  [29, 2.045],
  [30, 2.042],
  [40, 2.021],
  [60, 2.0],
  [120, 1.98],
  [Infinity, 1.96],
];

/** t(0.975; df), between table entries linear in 1/df (the usual interpolation, good to 0.001 here). */
export function t975(df: number): number {
  if (!(df >= 1)) throw new RangeError(`t975: df must be >= 1, got ${df}`);
  for (let i = 0; i < T975.length; i++) {
    const [d, t] = T975[i]!;
    if (df === d) return t;
    if (df < d) {
      const [d0, t0] = T975[i - 1]!;
      const x = (1 / df - 1 / d0) / (1 / d - 1 / d0);
      return t0 + x * (t - t0);
    }
  }
  return 1.96;
}

export interface Estimate {
  estimate: number | null;
  ci: [number, number] | null;
  halfWidth: number | null;
  note?: string;
}

/** Geometric mean of the ratios and its 95% t interval (on the logs); no interval under 2 rounds or with a ratio that is not positive and finite. */
export function estimateRatios(ratios: number[]): Estimate {
  const n = ratios.length;
  if (n === 0) return { estimate: null, ci: null, halfWidth: null, note: 'no rounds' };
  if (ratios.some((r) => !(r > 0) || !Number.isFinite(r)))
    return { estimate: null, ci: null, halfWidth: null, note: 'a round had a zero figure on one side only' };
  const logs = ratios.map(Math.log);
  const mean = logs.reduce((a, b) => a + b, 0) / n;
  const estimate = Math.exp(mean);
  if (n < 2) return { estimate, ci: null, halfWidth: null, note: 'one round: no interval' };
  const sd = Math.sqrt(logs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  const h = (t975(n - 1) * sd) / Math.sqrt(n);
  return { estimate, ci: [Math.exp(mean - h), Math.exp(mean + h)], halfWidth: Math.exp(h) - 1 };
}

/** A cell from its rounds: the estimate, interval and noise-bound flag, as the summary recomputes them. */
export function cellOf(spec: CellSpec, rounds: Round[], cap: StopRule, stoppedBy: Cell['stoppedBy']): Cell {
  const e = estimateRatios(rounds.map((r) => r.ratio));
  const cell: Cell = {
    ...spec,
    statistic: STATISTIC,
    ratio: ratioName(spec.better),
    rounds,
    estimate: e.estimate,
    ci: e.ci,
    halfWidth: e.halfWidth,
    noiseBound: !converged(e, cap),
    cap,
    stoppedBy,
  };
  if (e.note) cell.note = e.note;
  return cell;
}

function converged(e: Estimate, rule: StopRule): boolean {
  return e.halfWidth !== null && e.halfWidth <= rule.halfWidth;
}

/** One round's figures per cell name; a cell missing from it (a failed boot) has no pair that round. */
export type RoundFigures = Record<string, { pinion: number; reference: number } | undefined>;

export interface RunOptions {
  /** Seconds since some fixed point; a test passes its own clock. */
  now?: () => number;
  onRound?: (k: number, order: Order, cells: Cell[]) => void;
}

/**
 * Runs rounds k = 0, 1, ... in ABBA order until every cell's interval is within the rule's half-width
 * (after minRounds), or maxRounds or maxSeconds is reached; cells not within it then are noise-bound.
 */
export async function runRounds(
  specs: CellSpec[],
  rule: StopRule,
  round: (k: number, order: Order) => RoundFigures | Promise<RoundFigures>,
  o: RunOptions = {},
): Promise<Cell[]> {
  const now = o.now ?? ((): number => performance.now() / 1000);
  const t0 = now();
  const rounds = new Map<string, Round[]>(specs.map((s) => [s.name, []]));
  const cells = (by: Cell['stoppedBy']): Cell[] => specs.map((s) => cellOf(s, rounds.get(s.name)!, rule, by));
  for (let k = 0; ; k++) {
    const order = orderOf(k);
    const figures = await round(k, order);
    for (const s of specs) {
      const f = figures[s.name];
      if (f)
        rounds
          .get(s.name)!
          .push({ k, order, pinion: f.pinion, reference: f.reference, ratio: pairedRatio(s.better, f.pinion, f.reference) });
    }
    const done = k + 1;
    o.onRound?.(k, order, cells('rounds'));
    if (done >= rule.minRounds && specs.every((s) => converged(estimateRatios(rounds.get(s.name)!.map((r) => r.ratio)), rule)))
      return cells('interval');
    if (done >= rule.maxRounds) return cells('rounds');
    if (now() - t0 >= rule.maxSeconds) return cells('seconds');
  }
}

/** One cell: Pinion's and the reference's figure for a round, each from its own function. */
export async function runCell(
  spec: CellSpec,
  rule: StopRule,
  pinion: () => number | Promise<number>,
  reference: () => number | Promise<number>,
  o: RunOptions = {},
): Promise<Cell> {
  const [cell] = await runRounds(
    [spec],
    rule,
    async (_k, order) => {
      const [p, r] = await inOrder(order, pinion, reference);
      return { [spec.name]: { pinion: p, reference: r } };
    },
    o,
  );
  return cell!;
}

/** The summary of some cells, every one counted: claims "all cells >= X" count a cell only when its interval's lower bound clears X. */
export function summarize(cells: Pick<Cell, 'name' | 'ci' | 'noiseBound' | 'invalid'>[], thresholds: number[] = []): Summary {
  const lo = (c: Pick<Cell, 'ci' | 'invalid'>): number => (c.invalid ? -Infinity : (c.ci?.[0] ?? -Infinity));
  const hi = (c: Pick<Cell, 'ci' | 'invalid'>): number => (c.invalid ? Infinity : (c.ci?.[1] ?? Infinity));
  const pinionBetter = cells.filter((c) => lo(c) > 1).length;
  const referenceBetter = cells.filter((c) => hi(c) < 1).length;
  return {
    cells: cells.length,
    noiseBound: cells.filter((c) => c.noiseBound).length,
    pinionBetter,
    referenceBetter,
    undecided: cells.length - pinionBetter - referenceBetter,
    claims: thresholds.map((threshold) => {
      const notCleared = cells.filter((c) => !(lo(c) >= threshold)).map((c) => c.name);
      return { threshold, cleared: cells.length - notCleared.length, of: cells.length, holds: notCleared.length === 0, notCleared };
    }),
  };
}

/** A run with its summary, for a results file. */
export function makeRun(r: Omit<Run, 'summary' | 'method'> & { thresholds?: number[] }): Run {
  const { thresholds, ...rest } = r;
  return { ...rest, method: METHOD, summary: summarize(r.cells, thresholds ?? []) };
}

/** Reads a results file, or undefined when it is in an earlier format (no raw rounds). */
export function parseResults(text: string): ResultsFile | undefined {
  const j = JSON.parse(text) as Partial<ResultsFile>;
  return j.schema === SCHEMA && Array.isArray(j.runs) ? (j as ResultsFile) : undefined;
}

/** The file's text with `run` in it, replacing a run of the same benchmark and variant (files collect kernels and paths). */
export function withRun(existing: string | undefined, run: Run): string {
  const file = (existing && parseResults(existing)) || { schema: SCHEMA, runs: [] };
  const runs = file.runs.filter((x) => !(x.benchmark === run.benchmark && x.variant === run.variant));
  runs.push(run);
  return JSON.stringify({ schema: SCHEMA, runs }, null, 2) + '\n';
}

/** The first model name and the processor count of a /proc/cpuinfo. */
export function cpuInfo(text: string): CpuInfo {
  const model = /^model name\s*:\s*(.*)$/m.exec(text)?.[1]?.trim() ?? 'unknown';
  return { model, count: (text.match(/^processor\s*:/gm) ?? []).length };
}

/** Where and what was measured. The outer host's CPU comes from PINION_HOST_CPU (model) and PINION_HOST_CPUS (count). */
export function provenance(env: NodeJS.ProcessEnv = process.env): Provenance {
  let cpu: CpuInfo;
  try {
    cpu = cpuInfo(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    cpu = { model: cpus()[0]?.model ?? 'unknown', count: cpus().length };
  }
  const hostCpu = env.PINION_HOST_CPU ? { model: env.PINION_HOST_CPU, count: Number(env.PINION_HOST_CPUS ?? 0) } : null;
  return {
    commit: env.PINION_COMMIT || commitId(),
    rigKernel: env.PINION_RIG_KERNEL_ID || null,
    kernel: `${release()} ${version()}`,
    date: new Date().toISOString(),
    cpu,
    hostCpu,
    node: process.version,
  };
}

/** The run as its raw rounds give it: each ratio, each cell's estimate, interval and flag, and the summary. */
export function recompute(run: Run): Run {
  const cells = run.cells.map((c) => {
    const rounds = c.rounds.map((r) => ({ ...r, order: orderOf(r.k), ratio: pairedRatio(c.better, r.pinion, r.reference) }));
    const spec: CellSpec = { name: c.name, unit: c.unit, better: c.better, figure: c.figure };
    const cell = cellOf(spec, rounds, c.cap, c.stoppedBy);
    if (c.invalid) cell.invalid = c.invalid;
    return cell;
  });
  return {
    ...run,
    cells,
    summary: summarize(
      cells,
      run.summary.claims.map((x) => x.threshold),
    ),
  };
}

const num = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toPrecision(2));

/** The one summary table of some runs (markdown): every cell with its estimate, interval, rounds and flag, then each run's claims. */
export function summaryTable(runs: Run[]): string {
  const lines = [
    '| benchmark | variant | cell | Pinion | reference | ratio | 95% CI | rounds | noise-bound |',
    '|---|---|---|---:|---:|---:|---|---:|---|',
  ];
  const gm = (xs: number[]): number => Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);
  for (const run of runs)
    for (const c of run.cells) {
      const side = (k: 'pinion' | 'reference'): string => {
        const xs = c.rounds.map((r) => r[k]).filter((x) => x > 0);
        return xs.length ? `${num(gm(xs))} ${c.unit}` : '-';
      };
      lines.push(
        `| ${run.benchmark} | ${run.variant} | ${c.name} | ${side('pinion')} | ${side('reference')} | ${c.estimate === null ? '-' : c.estimate.toFixed(3)} | ${c.ci ? `${c.ci[0].toFixed(3)}-${c.ci[1].toFixed(3)}` : '-'} | ${c.rounds.length} | ${c.invalid ? `invalid: ${c.invalid}` : c.noiseBound ? `yes (cap: ${c.stoppedBy})` : 'no'} |`,
      );
    }
  lines.push('');
  for (const run of runs) {
    const s = run.summary;
    const claims = s.claims.map(
      (x) =>
        `all cells >= ${x.threshold}: ${x.holds ? 'holds' : 'does not hold'} (${x.cleared} of ${x.of} lower bounds clear it${x.notCleared.length ? `; not: ${x.notCleared.join(', ')}` : ''})`,
    );
    lines.push(
      `- ${run.benchmark} ${run.variant} (${run.reference}; commit ${run.provenance.commit}, ${run.provenance.rigKernel ?? 'rig kernel not given'}, ${run.provenance.date}): ${s.cells} cells, ${s.noiseBound} noise-bound; Pinion better in ${s.pinionBetter}, the reference in ${s.referenceBetter}, undecided ${s.undecided}${claims.length ? `; ${claims.join('; ')}` : ''}`,
    );
  }
  return lines.join('\n');
}
