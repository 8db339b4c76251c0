// The native chain: TypeScript -> N-API addon built by napi -> Rust -> libc.
import t from 'tap';
import { pinCore, type IommuPath } from '../../src/memory/pin-core.js';
import { dmaSpaceName } from '../../src/cli/run-vm.js';

t.test('pin-core loads and answers', async (t) => {
  t.match(pinCore.version(), /^\d+\.\d+\.\d+$/);
  const ps = pinCore.pageSize();
  t.equal(ps, 4096, 'x86_64 base page');
});

t.test('one vocabulary for IOMMU paths: the accounting model takes type1, compat or iommufd, not the legacy interface', async (t) => {
  for (const p of ['type1', 'compat', 'iommufd'] as IommuPath[]) t.ok(pinCore.accountingCharge(p, 'per-user', false).counters.length);
  t.throws(() => pinCore.accountingCharge('legacy' as IommuPath, 'per-user', false), /unknown path 'legacy' \(type1, compat, iommufd\)/);
});

t.test('the run summary names a DMA space as before: container type, who serves it, or iommufd', async (t) => {
  t.equal(dmaSpaceName({ path: 'type1', containerType: 'type1' }), 'type1');
  t.equal(dmaSpaceName({ path: 'type1', containerType: 'type1v2' }), 'type1v2');
  t.equal(dmaSpaceName({ path: 'compat', containerType: 'type1v2' }), 'type1v2 served by iommufd');
  t.equal(dmaSpaceName({ path: 'iommufd', containerType: null }), 'iommufd');
});
