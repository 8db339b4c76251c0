/*
 * A polled driver for the Intel 82576 PF (igb), the device the VMM assigns
 * through VFIO. The register sequence is test/support/igb.ts's, which drives
 * the same emulated igb (QEMU's model) from the host: reset, autoneg kicked
 * through MDIC (QEMU raises STATUS.LU only from its autoneg timer), advanced
 * descriptors (the only RX format QEMU implements), MAC loopback through
 * RCTL.LBM. Then INTx through the IOAPIC (twice: the second needs the host
 * line unmasked by the EOI), MSI-X (and a masked vector held pending), one
 * MSI interrupt and a few frames with the peer on the wire.
 *
 * The rings and frames are igb-queue.c's, shared with igbvf.c. Failure
 * policy: the first failure ends the test with its exit status, the NIC
 * quiesced.
 */
#include "guest.h"
#include "igb.h"
#include "igb-queue.h"
#include "io.h"

#define EXIT_NOT_FOUND 21
#define EXIT_LOOPBACK 22 /* also: reset, link, sending to the wire */
#define EXIT_MSIX 24
#define EXIT_MSI 25
#define EXIT_INTX 27

#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_INTERRUPT_LINE 0x3c /* low byte: the line (IOAPIC pin); high byte: INTA#..INTD# */
#define INTX_ROUNDS 2

#define LINK_TICKS (1ull << 35) /* ~10 s, as igb.ts: QEMU's autoneg timer is 0.5 s */

static uint64_t bar0;
static uint8_t mac[6] = { 0x02, 0, 0, 0, 0, 0x01 }; /* until RAL0/RAH0 says */

static const struct igbq_regs queue0 = {
	.rdbal = RDBAL,
	.rdbah = RDBAH,
	.rdlen = RDLEN,
	.srrctl = SRRCTL,
	.rdh = RDH,
	.rdt = RDT,
	.rxdctl = RXDCTL,
	.tdbal = TDBAL,
	.tdbah = TDBAH,
	.tdlen = TDLEN,
	.tdh = TDH,
	.tdt = TDT,
	.txdctl = TXDCTL,
};
static struct igbq queue = {
	.prefix = "igb: ",
	.regs = &queue0,
	.mac = mac,
	.tx_stuck = "TX head did not advance (TX ring not read by DMA?)",
};

static uint32_t rd(unsigned reg)
{
	return mmio_read32(bar0 + reg);
}

static void wr(unsigned reg, uint32_t v)
{
	mmio_write32(bar0 + reg, v);
}

/* Masks every interrupt cause, legacy and extended. */
static void mask_all(void)
{
	wr(IMC, ~0u);
	wr(EIMC, ~0u);
}

/* Stops DMA: the VM ends soon after, the device lives on in the host. */
static void quiesce(void)
{
	wr(RCTL, 0);
	wr(TCTL, 0);
	mask_all();
}

static uint64_t failed(const char *what, const char *why, uint64_t status)
{
	if (bar0)
		quiesce();
	line_begin();
	put_str("igb: ");
	put_str(what);
	put_str(" FAILED: ");
	put_str(why);
	line_end();
	return status;
}

static const char *reset(void)
{
	mask_all();
	wr(CTRL, rd(CTRL) | CTRL_RST);
	if (!igb_wait_reg(bar0, CTRL, CTRL_RST, 0, WAIT_TICKS))
		return "reset did not complete (CTRL.RST stays set)";
	mask_all();
	if (rd(RAH0) & RAH_AV) {
		uint32_t lo = rd(RAL0), hi = rd(RAH0);

		for (int i = 0; i < 4; i++)
			mac[i] = (uint8_t)(lo >> 8 * i);
		mac[4] = (uint8_t)hi;
		mac[5] = (uint8_t)(hi >> 8);
	}
	return NULL;
}

static const char *link_up(void)
{
	wr(CTRL, rd(CTRL) | CTRL_SLU);
	/* PHY register 0 (BMCR): autoneg on and restarted, 1000 full. */
	wr(MDIC, MDIC_OP_WRITE | MDIC_PHY_ADDR | 0 << 16 | BMCR_ANENABLE | BMCR_ANRESTART | BMCR_FULLDPLX | BMCR_SPEED1000);
	if (!igb_wait_reg(bar0, MDIC, MDIC_READY, MDIC_READY, WAIT_TICKS))
		return "MDIC write to the PHY did not complete";
	if (!igb_wait_reg(bar0, STATUS, STATUS_LU, STATUS_LU, LINK_TICKS))
		return "no link (STATUS.LU) after restarting autoneg";
	return NULL;
}

static void set_rctl(bool loopback)
{
	wr(RCTL, RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_SECRC | (loopback ? RCTL_LBM_MAC : 0));
}

/*
 * QEMU's igb also takes frames from the wire while in loopback: skip (and
 * report) those until ours comes back.
 */
static const char *loopback(void)
{
	unsigned len = igbq_build_frame("pinion-guest loopback", -1);
	const char *why = igbq_send(len);
	uint64_t start = rdtsc();

	if (why)
		return why;
	while (rdtsc() - start < WAIT_TICKS) {
		unsigned got;
		const uint8_t *p = igbq_rx_peek(&got);
		bool ours;

		if (!p) {
			cpu_relax();
			continue;
		}
		ours = got == len && igbq_same_bytes(p, igbq_tx_buf(), len);
		if (!ours) {
			line_begin();
			put_str("igb: loopback: skipped a frame of ");
			put_dec(got);
			put_str(" bytes that is not the one sent");
			line_end();
		}
		igbq_rx_release();
		if (ours)
			return NULL;
	}
	return "the frame sent did not come back (no RX write-back with its bytes)";
}

/* Legacy mode: reading ICR clears the causes, and with them the INTx line. */
static void intx_ack(void)
{
	(void)rd(ICR);
}

/*
 * INTx: the VMM wired the function's pin to the IOAPIC pin it reports in
 * Interrupt Line (no firmware here to route it). ICS raises a cause, the
 * handler clears ICR, then EOIs. Two rounds: VFIO masks the host line when
 * it fires and unmasks it only on the resample KVM signals at the EOI.
 */
static const char *intx_interrupt(struct pci_fn f)
{
	uint16_t intr = pci_read16(f, PCI_INTERRUPT_LINE);
	unsigned line = intr & 0xff, pin = intr >> 8;
	uint64_t start;

	if (pin == 0)
		return "Interrupt Pin is 0: the function has no INTx";
	if (line < 16 || line > 23)
		return "Interrupt Line is not an IOAPIC PCI pin (16-23)";
	pci_write16(f, PCI_COMMAND, (uint16_t)(pci_read16(f, PCI_COMMAND) & ~PCI_COMMAND_INTX_DISABLE));
	interrupts_init();
	mask_all();
	wr(GPIE, 0);
	(void)rd(ICR);
	ioapic_route_intx(line, intx_ack);
	wr(IMS, ICR_LSC);
	irq_enable();
	for (unsigned n = 1; n <= INTX_ROUNDS; n++) {
		wr(ICS, ICR_LSC);
		start = rdtsc();
		while (intx_count() < n && rdtsc() - start < WAIT_TICKS)
			cpu_relax();
		if (intx_count() < n)
			break;
	}
	irq_disable();
	wr(IMC, ~0u);
	(void)rd(ICR);
	ioapic_mask(line);
	if (intx_count() == 0)
		return "no interrupt on vector 0x42 after ICS (INTx -> IOAPIC)";
	if (intx_count() < INTX_ROUNDS)
		return "the second INTx never came: the host line stayed masked after the EOI";
	line_begin();
	put_str("igb: INTx interrupt received ");
	put_dec(intx_count());
	put_str(" times through IOAPIC pin ");
	put_dec(line);
	put_str(" (level, unmasked at each EOI)");
	line_end();
	return NULL;
}

/*
 * GPIE in MSI-X mode first: QEMU's model ignores EIAC outside it and masks
 * EICS/EIMS with the mode's bits. EICS sets extended cause 0 directly (no
 * IVAR needed: that maps queue causes), and cause n is MSI-X vector n.
 */
static const char *msix_interrupt(struct pci_fn f)
{
	const char *why;
	uint64_t start;

	interrupts_init();
	why = pci_msix_route(f, 0, LAPIC_MSI_ADDRESS, IRQ_VECTOR);
	if (why)
		return why;
	wr(GPIE, GPIE_MULTIPLE_MSIX | GPIE_EIAME | GPIE_PBA_SUPPORT);
	wr(EITR0, 0); /* no throttling: the message goes at once */
	wr(EIAC, 1); /* cause 0 clears itself once its message is sent */
	wr(EICR, ~0u); /* write 1 to clear: nothing stale pending */
	wr(EIMS, 1);
	irq_enable();
	wr(EICS, 1);
	start = rdtsc();
	while (!irq_count() && rdtsc() - start < WAIT_TICKS)
		cpu_relax();
	irq_disable();
	mask_all();
	if (!irq_count())
		return "no interrupt on vector 0x40 after EICS (MSI-X table entry 0 -> APIC 0)";
	return NULL;
}

/*
 * A masked vector must not deliver: the message waits as the vector's PBA
 * bit and goes out when the guest unmasks it (PCI's MSI-X rules).
 */
static const char *msix_masked(struct pci_fn f)
{
	uint64_t before = irq_count();
	uint64_t start;
	const char *why;
	bool pending;

	if ((why = pci_msix_mask(f, 0, true)))
		return why;
	wr(EICR, ~0u);
	wr(EIMS, 1);
	irq_enable();
	wr(EICS, 1);
	start = rdtsc();
	while (!(pending = pci_msix_pending(f) & 1) && rdtsc() - start < WAIT_TICKS)
		cpu_relax();
	if (irq_count() != before)
		why = "vector 0 delivered while masked";
	else if (!pending)
		why = "PBA bit 0 not set while vector 0 was masked and signalled";
	else if ((why = pci_msix_mask(f, 0, false)) == NULL) {
		start = rdtsc();
		while (irq_count() == before && rdtsc() - start < WAIT_TICKS)
			cpu_relax();
		if (irq_count() == before)
			why = "nothing delivered when vector 0 was unmasked with its PBA bit set";
		else if (pci_msix_pending(f) & 1)
			why = "PBA bit 0 still set after the delivery";
	}
	irq_disable();
	mask_all();
	return why;
}

/*
 * MSI-X off and GPIE back to 0: QEMU's model then signals ICR causes (masked
 * by IMS) through MSI if that is enabled, else INTx. Everything is masked and
 * ICR read clear (with IMS 0 a read clears it) before MSI goes on, so the only
 * message is the one ICS raises: an edge on ICR & IMS.
 */
static const char *msi_interrupt(struct pci_fn f)
{
	uint64_t msix_before = irq_count();
	const char *why;
	uint64_t start;

	mask_all();
	wr(EICR, ~0u);
	if ((why = pci_msix_disable(f)))
		return why;
	wr(GPIE, 0);
	(void)rd(ICR);
	why = pci_msi_route(f, LAPIC_MSI_ADDRESS, MSI_VECTOR);
	if (why) {
		pci_msi_disable(f);
		return why;
	}
	wr(IMS, ICR_LSC);
	irq_enable();
	wr(ICS, ICR_LSC);
	start = rdtsc();
	while (!msi_count() && rdtsc() - start < WAIT_TICKS)
		cpu_relax();
	irq_disable();
	wr(IMC, ~0u);
	(void)rd(ICR);
	pci_msi_disable(f);
	if (!msi_count()) {
		if (irq_count() != msix_before)
			return "no interrupt on vector 0x41, but one on 0x40 (MSI-X still routed?)";
		return "no interrupt on vector 0x41 after ICS (MSI -> APIC 0)";
	}
	return NULL;
}

static const char *wire(void)
{
	set_rctl(false);
	return igbq_wire("pinion-guest frame ");
}

static void print_reset_ok(struct pci_fn f)
{
	line_begin();
	put_str("igb 00:");
	put_hex(f.dev, 2);
	put_char('.');
	put_hex(f.fn, 1);
	put_str(": BAR0 0x");
	put_hex(bar0, bar0 >> 32 ? 16 : 8);
	put_str(" reset ok");
	line_end();
}

/*
 * Points every RX descriptor at an IOVA the VMM never mapped (beyond guest
 * RAM) and loops a frame back: the IOMMU must stop the NIC's write (the host
 * sees a DMA fault), no RX buffer in RAM may change, and the guest goes on.
 */
#define UNMAPPED_IOVA 0x7f000000ull
static const char *unmapped_dma(void)
{
	uint64_t start;

	for (unsigned i = 0; i < RX_ENTRIES; i++) {
		uint8_t *buf = igbq_rx_buf(i);

		for (unsigned k = 0; k < BUF_SIZE; k++)
			buf[k] = 0xee;
		igbq_rx_point(i, UNMAPPED_IOVA + i * BUF_SIZE);
	}
	if (igbq_send(igbq_build_frame("pinion-guest unmapped", -1)))
		return "TX of the frame failed";
	start = rdtsc();
	while (rdtsc() - start < (WAIT_TICKS >> 2))
		cpu_relax();
	for (unsigned i = 0; i < RX_ENTRIES; i++) {
		const uint8_t *buf = igbq_rx_buf(i);

		for (unsigned k = 0; k < BUF_SIZE; k++)
			if (buf[k] != 0xee)
				return "a frame landed in guest RAM";
	}
	line_begin();
	put_str("igb: DMA to unmapped IOVA 0x");
	put_hex(UNMAPPED_IOVA, 8);
	put_str(": nothing landed in guest RAM, the guest runs on");
	line_end();
	/* Back to normal rings for what follows. */
	return igbq_init(&queue);
}

static bool stream_on_vf;
static struct pci_fn stream_fn;

/* The PF as igb_test() brings it up, without loopback: frames from the wire only. */
const char *igb_stream_open(void)
{
	struct pci_fn f;
	const char *why;

	if (!pci_find(IGB_VENDOR, IGB_DEVICE_PF, &f)) {
		if (!pci_find(IGB_VENDOR, IGB_DEVICE_VF, &f))
			return "no 82576 found";
		stream_on_vf = true;
		stream_fn = f;
		return igbvf_open(f);
	}
	bar0 = pci_bar(f, 0);
	if (!bar0)
		return "BAR0 is not an assigned memory BAR";
	queue.bar0 = bar0;
	pci_write16(f, PCI_COMMAND, (uint16_t)(pci_read16(f, PCI_COMMAND) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
	if ((why = reset()))
		return why;
	print_reset_ok(f);
	if ((why = link_up()) || (why = igbq_init(&queue)))
		return why;
	set_rctl(false);
	wr(TCTL, TCTL_EN | TCTL_PSP);
	return NULL;
}

/* The stream's MSI-X heartbeat (on a VF only): NULL once vector 0 is routed. */
const char *igb_stream_irq_start(void)
{
	if (!stream_on_vf)
		return "the stream runs on the PF";
	interrupts_init();
	return igbvf_stream_irq_start(stream_fn);
}

void igb_stream_irq_raise(void)
{
	igbvf_stream_irq_raise();
}

void igb_stream_close(void)
{
	if (stream_on_vf)
		igbvf_close();
	else if (bar0)
		quiesce();
}

uint64_t igb_test(bool baddma)
{
	struct pci_fn f;
	const char *why;

	if (!pci_find(IGB_VENDOR, IGB_DEVICE_PF, &f)) {
		if (pci_find(IGB_VENDOR, IGB_DEVICE_VF, &f))
			return igbvf_test(f);
		say("igb: no 82576 found");
		return EXIT_NOT_FOUND;
	}
	bar0 = pci_bar(f, 0);
	if (!bar0)
		return failed("loopback", "BAR0 is not an assigned memory BAR", EXIT_LOOPBACK);
	queue.bar0 = bar0;
	/* The VMM placed the BARs; turning on decode and DMA is firmware's job, and there is none. */
	pci_write16(f, PCI_COMMAND, (uint16_t)(pci_read16(f, PCI_COMMAND) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));

	if ((why = reset()))
		return failed("loopback", why, EXIT_LOOPBACK);
	print_reset_ok(f);
	if ((why = link_up()))
		return failed("loopback", why, EXIT_LOOPBACK);
	if ((why = igbq_init(&queue)))
		return failed("loopback", why, EXIT_LOOPBACK);
	set_rctl(true);
	wr(TCTL, TCTL_EN | TCTL_PSP);
	if ((why = loopback()))
		return failed("loopback", why, EXIT_LOOPBACK);
	line_begin();
	put_str("igb: loopback frame of ");
	put_dec(FRAME_LEN);
	put_str(" bytes received and checked");
	line_end();

	if (baddma && (why = unmapped_dma()))
		return failed("unmapped DMA", why, EXIT_LOOPBACK);

	if ((why = intx_interrupt(f)))
		return failed("INTx interrupt", why, EXIT_INTX);

	if ((why = msix_interrupt(f)))
		return failed("MSI-X interrupt", why, EXIT_MSIX);
	say("igb: MSI-X vector 0 interrupt received");
	if ((why = msix_masked(f)))
		return failed("MSI-X masking", why, EXIT_MSIX);
	say("igb: MSI-X vector 0 masked: held pending (PBA bit 0 set), delivered on unmask");

	if ((why = msi_interrupt(f)))
		return failed("MSI interrupt", why, EXIT_MSI);
	say("igb: MSI interrupt received");

	if ((why = wire()))
		return failed("sending to the wire", why, EXIT_LOOPBACK);
	quiesce();
	return 0;
}
