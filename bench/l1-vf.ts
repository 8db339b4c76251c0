// What the map benchmarks share in L1: the C reference library, one VF of
// the assignable PF bound to vfio-pci, and its two IOMMU paths opened.
import koffi from 'koffi';
import { existsSync, writeFileSync } from 'node:fs';
import { assignablePf, bindVfio, createVfs, type PciDevice } from '../rig/l1/sysfs.js';
import { VfioCdev } from '../src/devices/vfio/cdev.js';
import { VfioGroup } from '../src/devices/vfio/group.js';
import { DmaMapper } from '../src/memory/dma-mapper.js';
import { closeFd } from '../src/sys/libc.js';

/** bench/ref/mapbench.c built with -DMAPBENCH_LIB (bench/run.sh). */
export function loadMapbench(path: string): ReturnType<typeof koffi.load> {
  if (!existsSync(path))
    throw new Error(`C reference ${path || '(none)'} not found: pass libmapbench.so built from bench/ref/mapbench.c with -DMAPBENCH_LIB`);
  return koffi.load(path);
}

export function benchVf(): { dev: PciDevice; groupPath: string } {
  const [vf] = createVfs(assignablePf().bdf, 1);
  const dev = bindVfio(vf!);
  return { dev, groupPath: `/dev/vfio/${dev.iommuGroup}` };
}

/** The VF's IOMMU path opened for a benchmark: the DMA space (type1v2 container or IOAS) with the VF attached. */
export interface BenchPath {
  mapper: DmaMapper;
  type1: boolean;
  /** The IOAS id on iommufd, 0 on the legacy container. */
  ioas: number;
  close: () => void;
}

export function benchPaths(dev: PciDevice, groupPath: string): Record<'legacy' | 'iommufd', () => BenchPath> {
  return {
    legacy() {
      const g = VfioGroup.open(groupPath);
      const mapper = DmaMapper.legacy((fd) => g.joinContainer(fd));
      // Opening the device gives it a domain: iommufd's compat container pins only then.
      const devFd = g.deviceFd(dev.bdf);
      return { mapper, type1: true, ioas: 0, close: () => (closeFd(devFd), mapper.close(), g.close()) };
    },
    iommufd() {
      const mapper = DmaMapper.iommufd();
      const c = VfioCdev.bind(dev.vfioCdev!, mapper.fd);
      c.attach(mapper.ioasId);
      return { mapper, type1: false, ioas: mapper.ioasId, close: () => (c.close(), mapper.close()) };
    },
  };
}

/** 2 MiB pages for the hugetlb cells; false where the kernel refuses. */
export function reserveHugepages(n: number): boolean {
  try {
    writeFileSync('/proc/sys/vm/nr_hugepages', String(n));
    return true;
  } catch {
    return false;
  }
}
