// DmaBatch's encoding, read back by pin-core itself (batchDecode), so the
// TypeScript encoder and batch.rs's decoder agree on every field; and the
// batch call's argument and error shapes, which need no IOMMU.
import t from 'tap';
import { DmaBatch, KIND, PROT_READ, PROT_WRITE, WORDS } from '../../src/memory/dma-batch.js';
import { DmaError, DmaMapper } from '../../src/memory/dma-mapper.js';
import { pinCore, type BackendHandle } from '../../src/memory/pin-core.js';

const TOP_PAGE = (1n << 64n) - 4096n;

t.test('each record kind is laid out as batch.rs reads it', async (t) => {
  const b = new DmaBatch(4)
    .map(0x1000, 0x2000, 0x7f00_0000_0000n)
    .mapFile(0x1_0000_0000n, 0x20_0000, 7, 0x40_0000, { read: true, write: false })
    .unmap(0x1000, 0x2000)
    .copy(0x1_0000_0000n, 0x2_0000_0000n, 0x20_0000);
  t.equal(b.count, 4);
  t.same(
    [...b.words],
    [
      BigInt(KIND.map | PROT_READ | PROT_WRITE), 0x1000n, 0x2000n, 0x7f00_0000_0000n,
      (7n << 32n) | BigInt(KIND.mapFile | PROT_READ), 0x1_0000_0000n, 0x20_0000n, 0x40_0000n,
      BigInt(KIND.unmap), 0x1000n, 0x2000n, 0n,
      BigInt(KIND.copy), 0x2_0000_0000n, 0x20_0000n, 0x1_0000_0000n,
    ], // prettier-ignore
  );
  t.same(pinCore.batchDecode(b.words, b.count), [
    { op: 'map', iova: 0x1000n, size: 0x2000n, backing: { vaddr: 0x7f00_0000_0000n }, prot: { read: true, write: true } },
    { op: 'map', iova: 0x1_0000_0000n, size: 0x20_0000n, backing: { fd: 7, offset: 0x40_0000n }, prot: { read: true, write: false } },
    { op: 'unmap', iova: 0x1000n, size: 0x2000n },
    { op: 'copy', srcIova: 0x1_0000_0000n, dstIova: 0x2_0000_0000n, size: 0x20_0000n },
  ]);
});

t.test('Numbers and BigInts give the same words, up to the top of both ranges', async (t) => {
  const max = Number.MAX_SAFE_INTEGER;
  const n = new DmaBatch(2).map(max - 4095, 4096, 0x1_2345_6000).unmap(2 ** 32, 2 ** 32 + 4096);
  const big = new DmaBatch(2).map(BigInt(max - 4095), 4096n, 0x1_2345_6000n).unmap(1n << 32n, (1n << 32n) + 4096n);
  t.same([...n.words], [...big.words]);
  const top = new DmaBatch(1).map(TOP_PAGE, 4096, TOP_PAGE);
  t.match(pinCore.batchDecode(top.words, 1), [{ iova: TOP_PAGE, backing: { vaddr: TOP_PAGE } }], 'the last page of the 64-bit space');
});

t.test('a value that is not a u64 is refused and leaves no half-written record', async (t) => {
  const b = new DmaBatch(2).unmap(0, 4096);
  t.throws(() => b.map(-4096, 4096, 0), /iova -4096 is not a 64-bit unsigned integer/);
  t.throws(() => b.map(0, 2 ** 53, 0), /size 9007199254740992 is not/);
  t.throws(() => b.map(0, 4096, 1n << 64n), /vaddr, offset or IOVA 18446744073709551616 is not/);
  t.throws(() => b.map(0, 4096.5, 0), RangeError);
  t.throws(() => b.mapFile(0, 4096, -1, 0), /fd -1 is not a file descriptor/);
  t.equal(b.count, 1);
  b.unmap(4096, 4096);
  t.throws(() => b.unmap(0, 4096), /the DMA batch is full \(2 records\)/);
  t.equal(pinCore.batchDecode(b.words, b.count).length, 2);
});

t.test('clear reuses the array; unmapped reads word 3 of a record that ran', async (t) => {
  const b = new DmaBatch(2).map(0, 4096, 0x10_0000).unmap(0, 4096);
  b.words[1 * WORDS + 3] = 4096n; // what pin-core writes back after the unmap
  t.equal(b.unmapped(1), 4096n);
  t.throws(() => b.unmapped(2), /record 2 is not in the batch/);
  const words = b.words;
  b.clear().unmap(8192, 4096);
  t.equal(b.count, 1);
  t.equal(b.words, words, 'the same array, no new allocation');
  t.equal(b.unmapped(0), 0n, 'an unmap record goes in with 0');
});

t.test('pin-core checks the array, the count and every record before running any', async (t) => {
  const b = new DmaBatch(2).unmap(0, 4096);
  t.throws(() => pinCore.mapBatch(0 as BackendHandle, b.words, 3, null), { code: 'EINVAL', message: /count 3 is more than the 2 records/ });
  t.throws(() => pinCore.batchDecode(new BigInt64Array(4) as unknown as BigUint64Array, 1), /ops must be a BigUint64Array/);
  b.words[WORDS] = 9n;
  t.throws(() => pinCore.batchDecode(b.words, 2), { code: 'EINVAL', index: 1, message: /record 1 cannot be read: unknown kind 9/ });
  t.throws(() => pinCore.mapBatch(9999 as BackendHandle, b.words, 1, null), { code: 'EBADF' }, 'a closed handle, once the records read');
});

t.test("a failed batch is a DmaError naming the record, with the table's charge after it", async (t) => {
  const raw = Object.assign(new Error('VFIO_IOMMU_MAP_DMA failed: ENOMEM'), {
    code: 'ENOMEM',
    op: 'VFIO_IOMMU_MAP_DMA',
    iova: 0x3000n,
    size: 0x1000n,
    path: '/dev/vfio/vfio',
    index: 3,
    finalCharged: 0x3000n,
  });
  t.match(DmaError.from(raw), {
    name: 'DmaError',
    code: 'ENOMEM',
    op: 'VFIO_IOMMU_MAP_DMA',
    iova: 0x3000n,
    index: 3,
    finalCharged: 0x3000n,
  });
  const m = DmaMapper.fromHandle(9999 as BackendHandle);
  t.throws(() => m.run(new DmaBatch(1).unmap(0, 4096)), { name: 'DmaError', code: 'EBADF' });
});
