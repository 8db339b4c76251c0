import t from 'tap';
import { runCli } from '../support/rig.js';

t.test('pinion memlock plan: table and JSON', async (t) => {
  const r = await runCli(['memlock', 'plan', '--vm', '4G:1', '--vm', '2G:2', '--json']);
  t.equal(r.code, 0);
  const p = JSON.parse(r.stdout) as {
    rows: { vm: string; needs: { type1: number; iommufdPerUser: number; iommufdPerProcess: number }; libvirt: number }[];
    userTotalBytes: number;
    notes: string[];
  };
  t.equal(p.userTotalBytes, 6 * 2 ** 30);
  t.same(
    p.rows.map((x) => [
      x.vm,
      x.needs.type1 / 2 ** 30,
      x.needs.iommufdPerUser / 2 ** 30,
      x.needs.iommufdPerProcess / 2 ** 30,
      x.libvirt / 2 ** 30,
    ]),
    [
      ['vm1', 4, 6, 4, 5],
      ['vm2', 2, 6, 2, 3],
    ],
  );
  const table = await runCli(['memlock', 'plan', '--vm', '4G:1', '--vm', '2G:2']);
  t.match(table.stdout, /^vm1\s+4096M\s+1\s+4096M\s+6144M\s+4096M\s+5120M$/m);
  t.match(table.stdout, /^note: iommufd per-user/m);
});

t.test('pinion memlock plan: bad input is one line and exit 2', async (t) => {
  for (const [args, re] of [
    [['memlock', 'plan'], /^pinion: no VM given: pinion memlock plan --vm RAM/],
    [['memlock', 'plan', '--vm', '4X:1'], /^pinion: --vm 4X:1: RAM '4X' is not a size/],
    [['memlock', 'plan', '--vm', '4G:two'], /^pinion: --vm '4G:two': write RAM\[:DEVICES\[:separate\]\]/],
    [['memlock', 'frob'], /^pinion: unknown subcommand 'frob'; pinion memlock plan/],
  ] as const) {
    const r = await runCli([...args]);
    t.equal(r.code, 2, args.join(' '));
    t.equal(r.stderr.trim().split('\n').length, 1);
    t.match(r.stderr, re);
  }
});

t.test("pinion memlock status lists this machine's charged processes", async (t) => {
  const r = await runCli(['memlock', 'status', '--json']);
  t.equal(r.code, 0);
  const s = JSON.parse(r.stdout) as { processes: unknown[]; users: Record<string, unknown> };
  t.ok(Array.isArray(s.processes));
  t.type(s.users, 'object');
});
