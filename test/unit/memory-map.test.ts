import t from 'tap';
import { GiB, MiB, parseSize, ramRanges, sizeText, PCI_MMIO32, KVM_TSS_ADDR, MAX_GUEST_RAM, RAM_CEILING } from '../../src/memory/layout.js';
import { PCI_MMIO64 } from '../../src/devices/pci/bar-allocator.js';
import { bootWrites, BOOT } from '../../src/vmm/boot.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MemoryListener, MemoryRegion } from '../../src/memory/listener.js';

t.test('RAM below 3 GiB stays low; the rest moves above 4 GiB', async (t) => {
  t.same(ramRanges(64n * MiB), [{ gpa: 0n, size: 64n * MiB, offset: 0n }]);
  t.same(ramRanges(3n * GiB), [{ gpa: 0n, size: 3n * GiB, offset: 0n }]);
  t.same(ramRanges(5n * GiB), [
    { gpa: 0n, size: 3n * GiB, offset: 0n },
    { gpa: 4n * GiB, size: 2n * GiB, offset: 3n * GiB },
  ]);
  t.same(
    ramRanges(256n * MiB, 192n * MiB),
    [
      { gpa: 0n, size: 192n * MiB, offset: 0n },
      { gpa: 4n * GiB, size: 64n * MiB, offset: 192n * MiB },
    ],
    'a lower split gives a small RAM both pieces',
  );
  t.ok(PCI_MMIO32.end <= KVM_TSS_ADDR - 0x1000n, 'the PCI window stays clear of KVM pages');
});

t.test('the most RAM the map holds ends at the ceiling, where 64-bit BARs start, inside the identity map', async (t) => {
  const ranges = ramRanges(MAX_GUEST_RAM);
  t.equal(ranges.at(-1)!.gpa + ranges.at(-1)!.size, RAM_CEILING);
  t.equal(PCI_MMIO64.start, RAM_CEILING);
  // The boot PDPT's last entry maps the GiB that ends the identity map.
  const pdpt = Buffer.from(bootWrites('').find(([gpa]) => gpa === BOOT.pdpt)![1]);
  const mapped = ((pdpt.readBigUInt64LE(511 * 8) & ~0xfffn) >> 30n) + 1n;
  t.ok(RAM_CEILING <= mapped * GiB, `RAM below ${mapped} GiB`);
});

t.test('sizes parse with K/M/G/T and reject anything else', async (t) => {
  t.equal(parseSize('64M', 'm'), 64n * MiB);
  t.equal(parseSize('1g', 'm'), GiB);
  t.equal(parseSize('1T', 'm'), 1024n * GiB);
  t.equal(sizeText(parseSize('65540K', 'm')), '65540K', 'and read back as written');
  t.equal(parseSize('4096', 'm'), 4096n);
  t.throws(() => parseSize('64MB', '--memory'), /--memory '64MB' is not a size; write it like 64M/);
  t.throws(() => parseSize('-1M', '--memory'), /not a size/);
});

function region(name: string, gpa: bigint, size: bigint): MemoryRegion {
  return { name, gpa, size, hva: 0x7f0000000000n + gpa, kind: 'ram' };
}

class Recorder implements MemoryListener {
  log: string[] = [];
  regionAdd(r: MemoryRegion): void {
    this.log.push(`add ${r.name}`);
  }
  regionRemove(r: MemoryRegion): void {
    this.log.push(`remove ${r.name}`);
  }
  commit(): void {
    this.log.push('commit');
  }
}

t.test('listeners get a replay, then removals before additions, then commit', async (t) => {
  const m = new GuestMemory();
  m.update((u) => u.add(region('a', 0n, 0x1000n)));
  const rec = new Recorder();
  m.addListener(rec);
  t.same(rec.log, ['add a', 'commit'], 'late listener sees the current map');
  rec.log = [];
  m.update((u) => {
    u.add(region('b', 0x1000n, 0x1000n));
    u.remove(0n);
    u.add(region('a2', 0n, 0x800n));
  });
  t.same(rec.log, ['remove a', 'add b', 'add a2', 'commit']);
  t.same(
    m.list().map((r) => r.name),
    ['a2', 'b'],
  );
});

t.test('an overlapping update is refused whole and listeners hear nothing', async (t) => {
  const m = new GuestMemory();
  const rec = new Recorder();
  m.addListener(rec);
  m.update((u) => u.add(region('a', 0n, 0x2000n)));
  rec.log = [];
  t.throws(
    () =>
      m.update((u) => {
        u.add(region('c', 0x4000n, 0x1000n));
        u.add(region('b', 0x1000n, 0x1000n));
      }),
    /region b at 0x1000 overlaps a \[0x0, 0x2000\)/,
  );
  t.same(rec.log, []);
  t.same(
    m.list().map((r) => r.name),
    ['a'],
  );
  t.throws(() => m.update((u) => u.remove(0x9000n)), /no guest memory region starts at 0x9000/);
});

t.test('VMM reads and writes go through region views and stay inside RAM', async (t) => {
  const m = new GuestMemory();
  const r = region('ram', 0n, 0x2000n);
  m.update((u) => u.add(r));
  const backing = new Uint8Array(0x2000);
  m.setView(r, backing);
  m.write(0x1ffen, Uint8Array.of(1, 2));
  t.same([...backing.subarray(0x1ffe)], [1, 2]);
  t.throws(() => m.write(0x1fffn, Uint8Array.of(1, 2)), /guest range \[0x1fff, 0x2001\) is not inside guest RAM/);
  t.equal(m.ramEnd(4n * GiB), 0x2000n);
});

t.test('a listener refusing a change puts the old map back in every listener', async (t) => {
  const m = new GuestMemory();
  const rec = new Recorder();
  let refuse = false;
  const picky: MemoryListener = {
    regionAdd: () => {},
    regionRemove: () => {},
    commit: () => {
      if (refuse) throw new Error('over budget');
    },
  };
  m.addListener(rec);
  m.addListener(picky);
  m.update((u) => u.add(region('a', 0n, 0x1000n)));
  rec.log = [];
  refuse = true;
  t.throws(
    () =>
      m.update((u) => {
        u.remove(0n);
        u.add(region('a-moved', 0x10000n, 0x1000n));
      }),
    /over budget/,
  );
  t.same(
    rec.log,
    ['remove a', 'add a-moved', 'commit', 'remove a-moved', 'add a', 'commit'],
    'the first listener saw the change and its undo',
  );
  t.same(
    m.list().map((r) => r.name),
    ['a'],
  );
});

t.test('a listener that refuses the replay of the map is not left listening', async (t) => {
  const m = new GuestMemory();
  m.update((u) => u.add(region('a', 0n, 0x1000n)));
  const seen: string[] = [];
  const refusing: MemoryListener = {
    regionAdd: (r) => void seen.push(`add ${r.name}`),
    regionRemove: (r) => void seen.push(`remove ${r.name}`),
    commit: () => {
      throw new Error('over budget');
    },
  };
  t.throws(() => m.addListener(refusing), /over budget/);
  seen.length = 0;
  m.update((u) => u.add(region('b', 0x10000n, 0x1000n)));
  t.same(seen, [], 'a later change does not reach it');
});
