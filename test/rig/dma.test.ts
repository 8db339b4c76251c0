// Real DMA proves a mapping: the igb PF, driven from userspace through VFIO,
// loops a frame from its TX ring to its RX ring through pages pin-core mapped
// in the emulated Intel IOMMU; once a page is unmapped, DMA no longer reaches
// it and the IOMMU logs a fault. The IOMMU's own page table (debugfs) is
// checked against the page's physical frame. Both paths on both kernels.
import t from 'tap';
import { inRig, l1Script } from '../support/rig.js';

for (const kernel of ['type1', 'compat'] as const) {
  t.test(`${kernel} kernel`, async (t) => {
    const run = await inRig(kernel, [process.execPath, l1Script('dma'), 'legacy', 'iommufd'], { timeoutSec: 300 });
    t.equal(run.exitCode, 0, run.stderr.toString().slice(-2000));
    const rows = run.stdout
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    t.same(
      rows.map((r) => r.path),
      ['legacy', 'iommufd'],
    );
    for (const r of rows) {
      t.equal(r.received, true, `${r.path}: the looped frame was received`);
      t.equal(r.receivedLength, 128, `${r.path}: with its length`);
      t.equal(r.payloadMatches, true, `${r.path}: bytes equal end to end`);
      t.equal(r.iommuFrameMatchesPage, true, `${r.path}: the IOMMU page table maps the IOVA to the page's physical frame (debugfs)`);
      // A BAR is a PFNMAP VMA: VFIO's type1 maps it by pfn; iommufd (cdev, or
      // behind the compat container) pins only struct pages and refuses it.
      const barWanted = kernel === 'type1' && r.path === 'legacy' ? 'ok' : 'EFAULT';
      t.equal(r.barMap, barWanted, `${r.path}: mapping the device's own BAR`);
      t.equal(r.unmappedBufferUntouched, true, `${r.path}: DMA to an unmapped page does not land`);
      t.equal(r.dmarFaultLogged, true, `${r.path}: the IOMMU logged the blocked DMA`);
    }
  });
}
