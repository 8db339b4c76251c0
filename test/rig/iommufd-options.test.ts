// IOMMU_OPTION and IOMMU_DESTROY through pin-core, as root in the rig (both
// kernels answer the same; the type1 kernel is enough).
import t from 'tap';
import { l1Json } from '../support/rig.js';

t.test('iommufd options and destroy (type1 kernel, root)', async (t) => {
  const { result: o, run } = await l1Json<Record<string, unknown>>('type1', 'iommufd-options');
  t.equal(run.exitCode, 0);
  t.same(
    o,
    {
      hugePagesDefault: { ok: 1 },
      hugePagesSet0: { ok: 0 },
      hugePagesAfter: { ok: 0 },
      hugePagesSet2: { code: 'EINVAL' },
      rlimitModeDefault: { ok: 0 },
      // An iommufd's accounting mode is fixed once it holds an object: pinion open sets it first.
      rlimitModeSetWithIoas: { code: 'EBUSY' },
      mapWithDomain: { ok: null },
      destroyIoasInUse: { code: 'EBUSY' },
      destroyStdev: { ok: null },
      destroyStdevAgain: { code: 'ENOENT' },
      destroyIoasMapped: { ok: null },
      mapAfterDestroy: { code: 'ENOENT' },
    },
    'HUGE_PAGES per IOAS (0/1), RLIMIT_MODE only on an empty iommufd, DESTROY refuses objects in use',
  );
});
