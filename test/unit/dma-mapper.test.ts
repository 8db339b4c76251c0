// DmaMapper's error shape, checked against a real failing open (no IOMMU on
// the host): the errno name, the kernel operation and the path survive.
import t from 'tap';
import { DmaError, DmaMapper } from '../../src/memory/dma-mapper.js';

t.test('a failed open is a DmaError with errno name, op and path', async (t) => {
  t.throws(() => DmaMapper.iommufd({ path: '/nonexistent/iommu' }), {
    name: 'DmaError',
    code: 'ENOENT',
    op: 'open',
    path: '/nonexistent/iommu',
  });
  let joined = false;
  t.throws(() => DmaMapper.legacy(() => (joined = true), { containerPath: '/nonexistent/vfio' }), {
    name: 'DmaError',
    code: 'ENOENT',
    op: 'open',
    path: '/nonexistent/vfio',
  });
  t.notOk(joined, 'no group is asked to join a container that did not open');
});

t.test('non-kernel errors pass through unchanged', async (t) => {
  const e = new TypeError('x');
  t.equal(DmaError.from(e), e);
});

t.test("a failed sync's error carries what the mapping table charges after it", async (t) => {
  const e = DmaError.from(Object.assign(new Error('UNMAP failed'), { code: 'EBUSY', op: 'VFIO_IOMMU_UNMAP_DMA', finalCharged: 8192n }));
  t.match(e, { name: 'DmaError', code: 'EBUSY', op: 'VFIO_IOMMU_UNMAP_DMA', finalCharged: 8192n });
  const open = DmaError.from(Object.assign(new Error('x'), { code: 'ENOENT', op: 'open' })) as DmaError;
  t.equal(open.finalCharged, undefined, 'none outside a sync');
});
