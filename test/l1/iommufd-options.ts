// Runs in L1 as root: IOMMU_OPTION (HUGE_PAGES per IOAS, RLIMIT_MODE per
// iommufd) and IOMMU_DESTROY through pin-core, answers recorded as they come.
import { pinCore } from '../../src/memory/pin-core.js';

function attempt<T>(f: () => T): { ok: T } | { code: string } {
  try {
    return { ok: f() };
  } catch (e) {
    return { code: (e as { code: string }).code };
  }
}
const str = (v: unknown): unknown => (typeof v === 'bigint' ? Number(v) : v);
const rec = <T>(f: () => T): unknown => {
  const r = attempt(f);
  return 'ok' in r ? { ok: str(r.ok) ?? null } : r;
};

const h = pinCore.iommufdOpen('/dev/iommu', -1);
const out: Record<string, unknown> = {};
out.hugePagesDefault = rec(() => pinCore.iommufdOption(h, 'huge_pages', null));
out.hugePagesSet0 = rec(() => pinCore.iommufdOption(h, 'huge_pages', 0n));
out.hugePagesAfter = rec(() => pinCore.iommufdOption(h, 'huge_pages', null));
out.hugePagesSet2 = rec(() => pinCore.iommufdOption(h, 'huge_pages', 2n));
out.rlimitModeDefault = rec(() => pinCore.iommufdOption(h, 'rlimit_mode', null));
out.rlimitModeSetWithIoas = rec(() => pinCore.iommufdOption(h, 'rlimit_mode', 1n));
const ioas = pinCore.iommufdIoasId(h);
const stdev = pinCore.iommufdMockDomain(h);
const mem = pinCore.memAlloc('anon', 0x200000n);
out.mapWithDomain = rec(() => pinCore.map(h, 0x1000000n, 0x200000n, { vaddr: mem.vaddr }, { read: true, write: true }));
out.destroyIoasInUse = rec(() => pinCore.iommufdDestroy(h, ioas));
out.destroyStdev = rec(() => pinCore.iommufdDestroy(h, stdev));
out.destroyStdevAgain = rec(() => pinCore.iommufdDestroy(h, stdev));
out.destroyIoasMapped = rec(() => pinCore.iommufdDestroy(h, ioas));
out.mapAfterDestroy = rec(() => pinCore.map(h, 0x2000000n, 0x200000n, { vaddr: mem.vaddr }, { read: true, write: true }));
pinCore.close(h);
pinCore.memFree(mem.vaddr, 0x200000n, mem.fd);
console.log(JSON.stringify(out));
