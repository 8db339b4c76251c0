import t from 'tap';
import { memlockLimits } from '../../src/memlock/limits.js';
import { pinCore, type AccountingMode, type IommuPath } from '../../src/memory/pin-core.js';

const G = 1n << 30n;
const model = (p: IommuPath, m: AccountingMode) => pinCore.accountingCharge(p, m, false);

t.test('accounting model: counters, limit and timing per path and mode', async (t) => {
  t.same(pinCore.accountingCharge('type1', 'per-user', false), { mode: 'per-process', counters: ['VmLck'], limit: 'process', when: 'map' });
  t.same(pinCore.accountingCharge('iommufd', 'per-user', false), {
    mode: 'per-user',
    counters: ['user.locked_vm', 'VmPin'],
    limit: 'user-total',
    when: 'device-attach',
  });
  t.same(pinCore.accountingCharge('iommufd', 'per-process', false).counters, ['VmLck', 'VmPin']);
  t.same(pinCore.accountingCharge('compat', 'per-user', false), {
    mode: 'per-process',
    counters: ['VmLck', 'VmPin'],
    limit: 'process',
    when: 'device-attach',
  });
  t.same(pinCore.accountingCharge('compat', 'per-process', true), {
    mode: 'per-process',
    counters: ['VmPin'],
    limit: 'none',
    when: 'device-attach',
  });
  t.throws(() => pinCore.accountingCharge('vfio' as 'type1', 'per-user', false), /unknown path 'vfio'/);
});

t.test('memlock limits: per-user needs the user total in every VMM; per-process and type1 their own RAM', async (t) => {
  const r = memlockLimits(
    [
      { name: 'a', ramBytes: 4n * G, devices: 1, separateAddressSpaces: false },
      { name: 'b', ramBytes: 2n * G, devices: 2, separateAddressSpaces: false },
    ],
    model,
  );
  t.equal(r.userTotalBytes, 6n * G);
  t.same(
    r.rows.map((x) => [x.needs.type1, x.needs.iommufdPerUser, x.needs.iommufdPerProcess, x.libvirt]),
    [
      [4n * G, 6n * G, 4n * G, 5n * G],
      [2n * G, 6n * G, 2n * G, 3n * G],
    ],
  );
  t.match(r.notes[0], /every VMM needs the total and no per-task limit can hold one VM to its share/);
  t.match(r.notes[1], /libvirt's formula is below what iommufd per-user needs/);
});

t.test('memlock limits: separate address spaces pin RAM once per device; a VM without devices pins nothing', async (t) => {
  const r = memlockLimits(
    [
      { name: 'a', ramBytes: 1n * G, devices: 3, separateAddressSpaces: true },
      { name: 'b', ramBytes: 8n * G, devices: 0, separateAddressSpaces: false },
    ],
    model,
  );
  t.same(
    r.rows.map((x) => [x.pinnedBytes, x.needs.type1, x.libvirt]),
    [
      [3n * G, 3n * G, 4n * G],
      [0n, 0n, 0n],
    ],
  );
  t.equal(r.notes.length, 1, 'one VM with devices: per-user and per-process agree');
  t.match(r.notes[0], /separate address spaces pin the same RAM once per device/);
});
