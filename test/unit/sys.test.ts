// Kernel ABI values pinned to the numbers in the uAPI headers, the error
// shape every kernel failure carries, and the mapping size JS can view.
import { constants } from 'node:buffer';
import { fstatSync } from 'node:fs';
import t from 'tap';
import { IOMMU_DESTROY, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP } from '../../src/sys/iommufd.js';
import { VFIO_CHECK_EXTENSION, VFIO_GET_API_VERSION, VFIO_SET_IOMMU } from '../../src/sys/vfio.js';
import { SysError } from '../../src/sys/errors.js';
import { GuestRam, RamError } from '../../src/memory/guest-ram.js';
import { ioctl, MAP_ANONYMOUS, MAP_PRIVATE, mmapFd, openPath } from '../../src/sys/libc.js';

t.test('ioctl numbers match linux/vfio.h and linux/iommufd.h', async (t) => {
  t.equal(VFIO_GET_API_VERSION, 15204);
  t.equal(VFIO_CHECK_EXTENSION, 15205);
  t.equal(VFIO_SET_IOMMU, 15206);
  t.equal(IOMMU_DESTROY, 15232);
  t.equal(IOMMU_IOAS_ALLOC, 15233);
  t.equal(IOMMU_IOAS_MAP, 15237);
});

t.test('SysError keeps errno name, operation, path, IOVA and size', async (t) => {
  const e = new SysError(12, 'IOMMU_IOAS_MAP', { path: '/dev/iommu', iova: 0x100000n, size: 0x2000n });
  t.equal(e.code, 'ENOMEM');
  t.equal(e.message, 'IOMMU_IOAS_MAP failed: ENOMEM (path /dev/iommu, iova 0x100000, size 0x2000)');
});

t.test('a real failing syscall comes back as SysError with the errno name', async (t) => {
  t.throws(() => openPath('/nonexistent/pinion'), {
    name: 'SysError',
    code: 'ENOENT',
    message: /open failed: ENOENT \(path \/nonexistent\/pinion\)/,
  });
  const fd = openPath('/dev/null');
  t.throws(() => ioctl(fd, VFIO_GET_API_VERSION, 0, 'VFIO_GET_API_VERSION', { path: '/dev/null' }), { code: 'ENOTTY' });
});

t.test('memory larger than a JavaScript view is refused, not mapped (koffi.view of it ends node)', async (t) => {
  const over = constants.MAX_LENGTH + 4096;
  t.throws(() => mmapFd(over, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n, 'test'), {
    name: 'RangeError',
    message: new RegExp(`^cannot map ${over} bytes of test: JavaScript views hold at most ${constants.MAX_LENGTH} bytes`),
  });
  // Node 20's 4 GiB: `pinion run --memory 8G` aborted in koffi.view. Newer Nodes view up to 2^53 - 1 bytes.
  const twice = BigInt(constants.MAX_LENGTH) * 2n;
  t.throws(() => GuestRam.allocate(twice, 'anon', 4096n), RamError);
  if (twice <= BigInt(Number.MAX_SAFE_INTEGER))
    t.throws(
      () => GuestRam.allocate(twice, 'memfd', 4096n),
      /is over 4G, the most one allocation may be \(the VMM views it as one typed array\)$/,
    );
});

t.test('guest RAM in room to grow grows in place: same address, same file, its bytes kept, the tail zero', async (t) => {
  const MiB = 1024n * 1024n;
  for (const backend of ['memfd', 'anon'] as const) {
    const ram = GuestRam.allocate(4n * MiB, backend, 4096n, 64n * MiB);
    t.teardown(() => ram.free());
    t.equal(ram.vaddr % (2n * MiB), 0n, `${backend}: 2 MiB aligned, for huge pages`);
    t.equal(ram.maxSize, 64n * MiB);
    ram.bytes.fill(0xa5);
    const at = ram.vaddr;
    ram.grow(16n * MiB);
    t.equal(ram.vaddr, at, `${backend}: the same address`);
    t.equal(ram.size, 16n * MiB);
    t.equal(ram.bytes.length, 16 * 1024 * 1024);
    t.ok(
      ram.bytes.subarray(0, 4 * 1024 * 1024).every((b) => b === 0xa5),
      `${backend}: what it held stays`,
    );
    t.ok(
      ram.bytes.subarray(4 * 1024 * 1024).every((b) => b === 0),
      `${backend}: the new tail is zero`,
    );
    if (backend === 'memfd') t.equal(BigInt(fstatSync(ram.fd).size), 16n * MiB, 'the memfd grew with it');
    t.throws(() => ram.grow(128n * MiB), /cannot grow in place to 128M \(room for 64M\)/);
    ram.bytes.fill(0x5a, 8 * 1024 * 1024);
    ram.shrinkTo(8n * MiB);
    t.equal(ram.size, 8n * MiB, `${backend}: shrunk back`);
    ram.grow(12n * MiB);
    t.ok(
      ram.bytes.subarray(8 * 1024 * 1024).every((b) => b === 0),
      `${backend}: a tail given back comes back zero`,
    );
  }
  const fixed = GuestRam.allocate(4n * MiB, 'memfd', 4096n);
  t.teardown(() => fixed.free());
  t.equal(fixed.maxSize, 4n * MiB, 'without room: no growing');
  t.throws(() => fixed.grow(8n * MiB), RangeError);
});
