/*
 * The chaos mode: a hostile guest with the first 82576 function (VF, else
 * PF), driven from one seed so that a failing run can be repeated. It
 * brings the NIC up first ("chaos: nic up": the previous VM left the
 * function usable), then, with interrupts off (so that an interrupt it
 * provokes cannot end it), for CHAOS_OPS rounds (a "chaos: ops=N" line
 * every CHAOS_PROGRESS) picks one of:
 *   - a random 32-bit write anywhere in the function's config space,
 *     capabilities (MSI, MSI-X, PM, PCIe) included;
 *   - a BAR moved onto RAM, onto the other BAR, onto the MSI window, the
 *     IOAPIC, a random 32-bit or 64-bit address, or back where it was;
 *   - garbage in an MSI-X table entry, the function mask and MSI-X enable
 *     toggled (through the BAR only while it sits in the PCI hole or high,
 *     where nothing of the guest's own lives);
 *   - reads and writes all over the trapped MSI-X BAR (table and PBA);
 *   - port I/O to ports nothing claims;
 *   - a receive or transmit ring pointed at an IOVA that is unmapped, MMIO
 *     (the MSI window, a BAR) or beyond any address width, and its tail bumped;
 *   - random writes to the device's registers;
 *   - an interrupt storm (every cause set, again and again).
 * Ports that end or reset the VM (debug exit, i8042, 0x92, 0xcf9) and the
 * serial port stay out of it. Then "chaos: done" and exit 0; a guest the
 * chaos broke ends however it ends, and that is the VMM's to survive.
 */
#include "guest.h"
#include "igb.h"
#include "igbvf.h"
#include "io.h"

#define CHAOS_OPS 1000
/* A line every so many rounds: a run stopped at its limit shows it was still going (no vCPU held). */
#define CHAOS_PROGRESS 100
#define PCI_COMMAND 0x04
#define PCI_BAR0 0x10
#define MSI_WINDOW 0xfee00000u
#define IOAPIC_BASE 0xfec00000u
#define PCI_HOLE_START 0xc0000000u
#define IDENTITY_MAPPED (512ull << 30)

static uint64_t state;

static uint64_t next(void)
{
	/* xorshift64*: enough spread for picking; never 0 once seeded. */
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return state * 0x2545f4914f6cdd1dull;
}

static uint32_t below(uint32_t n)
{
	return (uint32_t)(next() >> 32) % n;
}

/*
 * Where writing through a BAR cannot land in the guest's own RAM, APIC or
 * IOAPIC, and the guest's page tables reach (the VMM identity-maps 512 GiB):
 * a BAR moved beyond is still the VMM's to handle, but not to touch.
 */
static bool bar_usable(uint64_t a)
{
	return (a >= PCI_HOLE_START && a + 0x10000 <= IOAPIC_BASE) || (a >= 1ull << 32 && a + 0x10000 <= IDENTITY_MAPPED);
}

static bool port_allowed(uint16_t p)
{
	if (p == DEBUG_EXIT_PORT || p == 0x92)
		return false;
	if (p >= 0x60 && p <= 0x6f) /* i8042: 0xfe to 0x64 resets */
		return false;
	if (p >= 0x3f8 && p <= 0x3ff) /* the console */
		return false;
	if (p >= 0xcf8 && p <= 0xcff) /* config mechanism; 0xcf9 resets */
		return false;
	return true;
}

/*
 * A value for an MSI-X table word: any address and vector, but the delivery
 * mode of a data word kept to fixed (bits 8-10 clear), which the guest, with
 * interrupts off, never takes: garbage NMIs stormed L1 (one run stalled it
 * under the rig's emulation), and INIT, SIPI or SMI reset or hang the vCPU,
 * which tests the guest, not the VMM. The VMM and KVM still route and
 * deliver every one.
 */
static uint32_t sane_msi(uint32_t v)
{
	return v & ~0x700u;
}

static void bar_move(struct pci_fn f, unsigned bar, uint64_t to)
{
	pci_write32(f, PCI_BAR0 + 4 * bar, (uint32_t)to);
	pci_write32(f, PCI_BAR0 + 4 * (bar + 1), (uint32_t)(to >> 32));
}

uint64_t chaos_run(uint64_t seed, uint64_t ram_size)
{
	struct pci_fn f;
	bool vf = pci_find(IGB_VENDOR, IGB_DEVICE_VF, &f);
	const char *why;
	uint64_t bar0, bar3, home0, home3, counts[8] = { 0 };
	unsigned msix;

	state = seed * 0x9e3779b97f4a7c15ull + 1;
	if (!vf && !pci_find(IGB_VENDOR, IGB_DEVICE_PF, &f)) {
		say("chaos: no 82576 found");
		return 30;
	}
	why = igb_stream_open();
	line_begin();
	put_str(why ? "chaos: nic not up: " : "chaos: nic up");
	if (why)
		put_str(why);
	line_end();
	/* Garbage MSIs may come as NMIs: an IDT that counts them (and anything from vector 32 up). */
	interrupts_tolerate();
	irq_disable();
	home0 = pci_bar(f, 0);
	home3 = pci_bar(f, 3);
	msix = pci_find_cap(f, 0x11);
	for (unsigned i = 0; i < CHAOS_OPS; i++) {
		unsigned op = below(8);

		counts[op]++;
		bar0 = pci_bar(f, 0);
		bar3 = pci_bar(f, 3);
		switch (op) {
		case 0: /* config space, anywhere */
			pci_write32(f, below(64) * 4, (uint32_t)next());
			break;
		case 1: { /* a BAR moved */
			static const uint64_t onto[] = { 0x200000, 0, MSI_WINDOW, IOAPIC_BASE, 1, 2, 3 };
			unsigned bar = below(2) ? 0 : 3;
			uint64_t to = onto[below(7)];

			if (to == 0)
				to = bar ? bar0 : bar3;
			else if (to == 1)
				to = next() & 0xfffff000u;
			else if (to == 2)
				to = next() & 0xfffffffff000ull;
			else if (to == 3)
				to = bar ? home3 : home0;
			bar_move(f, bar, to);
			break;
		}
		case 2: { /* MSI-X table garbage, masks and enable toggled */
			uint32_t tbl = msix ? pci_read32(f, msix + 4) : 0;
			uint64_t base = tbl ? pci_bar(f, tbl & 7) : 0;

			if (msix && below(2))
				pci_write16(f, msix + 2, (uint16_t)(below(4) << 14));
			if (base && bar_usable(base))
				mmio_write32(base + (tbl & ~7u) + below(3) * 16 + below(4) * 4, sane_msi((uint32_t)next()));
			break;
		}
		case 3: /* the trapped MSI-X BAR, all over */
			if (bar3 && bar_usable(bar3)) {
				uint64_t at = bar3 + below(0x4000 / 4) * 4;

				if (below(2))
					mmio_write32(at, sane_msi((uint32_t)next()));
				else
					(void)mmio_read32(at);
			}
			break;
		case 4: { /* ports nothing claims */
			uint16_t p = (uint16_t)below(0x10000);

			if (port_allowed(p)) {
				if (below(2))
					outl(p & ~3, (uint32_t)next());
				else
					(void)inl(p & ~3);
			}
			break;
		}
		case 5: /* a ring at an IOVA nothing maps (or MMIO, or beyond any width), its tail bumped */
			if (bar0 && bar_usable(bar0)) {
				static const uint64_t bad[] = { 0x7f0000000000ull, MSI_WINDOW, PCI_HOLE_START, 1ull << 52, 0 };
				uint64_t iova = bad[below(5)];
				bool rx = below(2);

				if (!iova)
					iova = ram_size + (next() & 0xfffff000u);
				mmio_write32(bar0 + (rx ? VF_RDBAL : VF_TDBAL), (uint32_t)iova & ~0x7fu);
				mmio_write32(bar0 + (rx ? VF_RDBAH : VF_TDBAH), (uint32_t)(iova >> 32));
				mmio_write32(bar0 + (rx ? VF_RDT : VF_TDT), below(64));
			}
			break;
		case 6: /* the device's registers */
			if (bar0 && bar_usable(bar0))
				mmio_write32(bar0 + below(0x4000 / 4) * 4, (uint32_t)next());
			break;
		case 7: /* an interrupt storm */
			if (bar0 && bar_usable(bar0))
				for (int k = 0; k < 16; k++) {
					mmio_write32(bar0 + VTEIMS, ~0u);
					mmio_write32(bar0 + VTEICS, ~0u);
				}
			break;
		}
		if ((i + 1) % CHAOS_PROGRESS == 0) {
			line_begin();
			put_str("chaos: ops=");
			put_dec(i + 1);
			line_end();
		}
	}
	/* Decoding and DMA off at the end: what is left for the VMM to clean up is the rest. */
	pci_write16(f, PCI_COMMAND, 0);
	line_begin();
	put_str("chaos: done seed=");
	put_dec(seed);
	put_str(" ops=");
	put_dec(CHAOS_OPS);
	put_str(" interrupts=");
	put_dec(tolerated_count());
	for (unsigned k = 0; k < 8; k++) {
		put_str(k ? "," : " by-kind=");
		put_dec(counts[k]);
	}
	line_end();
	return 0;
}
