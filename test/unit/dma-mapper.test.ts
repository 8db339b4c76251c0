// DmaMapper's error shape, checked against a real failing open (no IOMMU on
// the host): the errno name, the kernel operation and the path survive.
import t from 'tap';
import { DmaError, DmaMapper } from '../../src/memory/dma-mapper.js';

t.test('a failed open is a DmaError with errno name, op and path', async (t) => {
  t.throws(() => DmaMapper.iommufd({ path: '/nonexistent/iommu' }), { name: 'DmaError', code: 'ENOENT', op: 'open', path: '/nonexistent/iommu' });
  t.throws(() => DmaMapper.legacy([], { containerPath: '/nonexistent/vfio' }), { name: 'DmaError', code: 'ENOENT' });
});

t.test('non-kernel errors pass through unchanged', async (t) => {
  const e = new TypeError('x');
  t.equal(DmaError.from(e), e);
});
