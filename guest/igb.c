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
 * DMA addresses are guest physical addresses: the VMM maps all guest RAM into
 * the IOMMU at IOVA = GPA, and the guest is identity mapped, so the address
 * of a static array is what the NIC is told. Failure policy: the first
 * failure ends the test with its exit status, the NIC quiesced.
 */
#include "guest.h"
#include "igb.h"
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

#define RING_ENTRIES 8 /* 128 bytes of descriptors: the ring length granule */
#define BUF_SIZE 2048 /* SRRCTL_BSIZEPKT_2K; no frame here is longer */
#define FRAME_LEN 128
#define ETH_HLEN 14
#define ETHERTYPE_LOCAL 0x88b5 /* IEEE 802 local experimental */
#define WIRE_FRAMES 3
#define PAYLOAD_SHOWN 32

/* TSC deadlines, like main.c's check-in timeout (times at ~3 GHz). */
#define WAIT_TICKS (1ull << 34) /* ~5 s: reset, MDIC, TX, the looped frame, the MSI */
#define LINK_TICKS (1ull << 35) /* ~10 s, as igb.ts: QEMU's autoneg timer is 0.5 s */
#define WIRE_TICKS (1ull << 33) /* ~3 s of listening to the wire */

/* In .bss, zeroed by the loader; rings 128-byte aligned as the NIC wants. */
static volatile struct tx_desc tx_ring[RING_ENTRIES] __attribute__((aligned(128)));
static volatile struct rx_desc rx_ring[RING_ENTRIES] __attribute__((aligned(128)));
static uint8_t tx_buf[BUF_SIZE] __attribute__((aligned(BUF_SIZE)));
static uint8_t rx_bufs[RING_ENTRIES][BUF_SIZE] __attribute__((aligned(4096)));

static uint64_t bar0;
static unsigned tx_tail, rx_next;
static uint8_t mac[6] = { 0x02, 0, 0, 0, 0, 0x01 }; /* until RAL0/RAH0 says */

static uint32_t rd(unsigned reg)
{
	return mmio_read32(bar0 + reg);
}

static void wr(unsigned reg, uint32_t v)
{
	mmio_write32(bar0 + reg, v);
}

static bool wait_reg(unsigned reg, uint32_t mask, uint32_t want, uint64_t ticks)
{
	uint64_t start = rdtsc();

	while ((rd(reg) & mask) != want) {
		if (rdtsc() - start > ticks)
			return false;
		cpu_relax();
	}
	return true;
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
	if (!wait_reg(CTRL, CTRL_RST, 0, WAIT_TICKS))
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
	wr(MDIC, MDIC_OP_WRITE | MDIC_PHY_ADDR | 0 << 16 | BMCR_ANENABLE | BMCR_ANRESTART |
			 BMCR_FULLDPLX | BMCR_SPEED1000);
	if (!wait_reg(MDIC, MDIC_READY, MDIC_READY, WAIT_TICKS))
		return "MDIC write to the PHY did not complete";
	if (!wait_reg(STATUS, STATUS_LU, STATUS_LU, LINK_TICKS))
		return "no link (STATUS.LU) after restarting autoneg";
	return NULL;
}

static void rx_arm(unsigned i)
{
	rx_ring[i].addr = (uint64_t)rx_bufs[i];
	rx_ring[i].status_error = 0; /* with length and vlan: header address 0 */
	rx_ring[i].length = 0;
	rx_ring[i].vlan = 0;
}

static void rings_init(void)
{
	wr(TDBAL, (uint32_t)(uint64_t)tx_ring);
	wr(TDBAH, (uint32_t)((uint64_t)tx_ring >> 32));
	wr(TDLEN, sizeof(tx_ring));
	wr(TDH, 0);
	wr(TDT, 0);
	wr(TXDCTL, QUEUE_ENABLE);

	for (unsigned i = 0; i < RING_ENTRIES; i++)
		rx_arm(i);
	wr(RDBAL, (uint32_t)(uint64_t)rx_ring);
	wr(RDBAH, (uint32_t)((uint64_t)rx_ring >> 32));
	wr(RDLEN, sizeof(rx_ring));
	wr(SRRCTL, SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_BSIZEPKT_2K);
	wr(RDH, 0);
	wr(RXDCTL, QUEUE_ENABLE);
	/*
	 * The NIC owns [RDH, RDT): all but one descriptor. RDT == RDH would mean
	 * an empty ring, so the slot at RDT is always ours (armed, not given).
	 */
	wr(RDT, RING_ENTRIES - 1);
	tx_tail = rx_next = 0;
}

static void set_rctl(bool loopback)
{
	wr(RCTL, RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_SECRC |
			 (loopback ? RCTL_LBM_MAC : 0));
}

/*
 * Builds a broadcast frame in tx_buf: our MAC, the local ethertype, `text`
 * and an optional digit, a NUL, then a pattern up to FRAME_LEN bytes.
 */
static unsigned build_frame(const char *text, int digit)
{
	unsigned i = 0;

	for (int k = 0; k < 6; k++)
		tx_buf[i++] = 0xff;
	for (int k = 0; k < 6; k++)
		tx_buf[i++] = mac[k];
	tx_buf[i++] = ETHERTYPE_LOCAL >> 8;
	tx_buf[i++] = ETHERTYPE_LOCAL & 0xff;
	while (*text)
		tx_buf[i++] = (uint8_t)*text++;
	if (digit >= 0)
		tx_buf[i++] = (uint8_t)('0' + digit);
	tx_buf[i++] = 0;
	for (; i < FRAME_LEN; i++)
		tx_buf[i] = (uint8_t)(i * 7 + digit);
	return FRAME_LEN;
}

/* Queues tx_buf and waits until the NIC has taken it (TDH moves, as igb.ts). */
static const char *send(unsigned len)
{
	volatile struct tx_desc *d = &tx_ring[tx_tail];

	d->addr = (uint64_t)tx_buf;
	d->cmd_type_len = len | TXD_DTYP_DATA | TXD_DEXT | TXD_EOP | TXD_IFCS | TXD_RS;
	d->olinfo_status = len << TXD_PAYLEN_SHIFT;
	tx_tail = (tx_tail + 1) % RING_ENTRIES;
	wr(TDT, tx_tail); /* mmio_write32 orders the descriptor writes before it */
	if (!wait_reg(TDH, ~0u, tx_tail, WAIT_TICKS))
		return "TX head did not advance (TX ring not read by DMA?)";
	return NULL;
}

/* The next written-back RX descriptor, or NULL. Its buffer is rx_bufs[rx_next]. */
static volatile struct rx_desc *rx_peek(void)
{
	volatile struct rx_desc *d = &rx_ring[rx_next];

	if (!(d->status_error & RXD_STAT_DD))
		return NULL;
	__asm__ volatile("" : : : "memory"); /* read the buffer after DD */
	return d;
}

/* Hands the descriptor back (re-armed) and moves on. */
static void rx_release(void)
{
	rx_arm(rx_next);
	wr(RDT, rx_next);
	rx_next = (rx_next + 1) % RING_ENTRIES;
}

static bool same_bytes(const uint8_t *a, const uint8_t *b, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

/*
 * QEMU's igb also takes frames from the wire while in loopback: skip (and
 * report) those until ours comes back.
 */
static const char *loopback(void)
{
	unsigned len = build_frame("pinion-guest loopback", -1);
	const char *why = send(len);
	uint64_t start = rdtsc();

	if (why)
		return why;
	while (rdtsc() - start < WAIT_TICKS) {
		volatile struct rx_desc *d = rx_peek();
		bool ours;

		if (!d) {
			cpu_relax();
			continue;
		}
		ours = d->length == len && same_bytes(rx_bufs[rx_next], tx_buf, len);
		if (!ours) {
			line_begin();
			put_str("igb: loopback: skipped a frame of ");
			put_dec(d->length);
			put_str(" bytes that is not the one sent");
			line_end();
		}
		rx_release();
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

static void put_mac(const uint8_t *m)
{
	for (int i = 0; i < 6; i++) {
		if (i)
			put_char(':');
		put_hex(m[i], 2);
	}
}

/* "N bytes from MAC, ethertype 0xXXXX" and the payload's text if printable. */
static void print_frame(unsigned n, const uint8_t *p, unsigned len)
{
	unsigned text = 0;

	line_begin();
	put_str("igb: wire frame ");
	put_dec(n);
	put_str(": ");
	put_dec(len);
	put_str(" bytes");
	if (len >= ETH_HLEN) {
		put_str(" from ");
		put_mac(p + 6);
		put_str(", ethertype 0x");
		put_hex((uint64_t)p[12] << 8 | p[13], 4);
		while (text < PAYLOAD_SHOWN && ETH_HLEN + text < len && p[ETH_HLEN + text] >= 0x20 &&
		       p[ETH_HLEN + text] < 0x7f)
			text++;
		/* Printable up to a NUL, the end, or PAYLOAD_SHOWN bytes. */
		if (text && (text == PAYLOAD_SHOWN || ETH_HLEN + text == len || !p[ETH_HLEN + text])) {
			put_str(", \"");
			for (unsigned i = 0; i < text; i++)
				put_char((char)p[ETH_HLEN + i]);
			put_char('"');
		}
	}
	line_end();
}

static const char *wire(void)
{
	unsigned received = 0;
	uint64_t start;

	set_rctl(false);
	for (int n = 1; n <= WIRE_FRAMES; n++) {
		const char *why = send(build_frame("pinion-guest frame ", n));

		if (why)
			return why;
	}
	line_begin();
	put_str("igb: sent ");
	put_dec(WIRE_FRAMES);
	put_str(" frames to the wire");
	line_end();

	start = rdtsc();
	while (rdtsc() - start < WIRE_TICKS) {
		volatile struct rx_desc *d = rx_peek();

		if (!d) {
			cpu_relax();
			continue;
		}
		print_frame(++received, rx_bufs[rx_next], d->length);
		rx_release();
	}
	line_begin();
	put_str("igb: received ");
	put_dec(received);
	put_str(" frame(s) from the wire");
	line_end();
	return NULL;
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
	unsigned len;
	uint64_t start;

	for (unsigned i = 0; i < RING_ENTRIES; i++) {
		for (unsigned k = 0; k < BUF_SIZE; k++)
			rx_bufs[i][k] = 0xee;
		rx_ring[i].addr = UNMAPPED_IOVA + i * BUF_SIZE;
		rx_ring[i].status_error = 0;
	}
	len = build_frame("pinion-guest unmapped", -1);
	if (send(len))
		return "TX of the frame failed";
	start = rdtsc();
	while (rdtsc() - start < (WAIT_TICKS >> 2))
		cpu_relax();
	for (unsigned i = 0; i < RING_ENTRIES; i++)
		for (unsigned k = 0; k < BUF_SIZE; k++)
			if (rx_bufs[i][k] != 0xee)
				return "a frame landed in guest RAM";
	line_begin();
	put_str("igb: DMA to unmapped IOVA 0x");
	put_hex(UNMAPPED_IOVA, 8);
	put_str(": nothing landed in guest RAM, the guest runs on");
	line_end();
	/* Back to normal rings for what follows. */
	wr(RXDCTL, 0);
	rings_init();
	return NULL;
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
	/* The VMM placed the BARs; turning on decode and DMA is firmware's job, and there is none. */
	pci_write16(f, PCI_COMMAND,
		    (uint16_t)(pci_read16(f, PCI_COMMAND) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));

	if ((why = reset()))
		return failed("loopback", why, EXIT_LOOPBACK);
	print_reset_ok(f);
	if ((why = link_up()))
		return failed("loopback", why, EXIT_LOOPBACK);
	rings_init();
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
