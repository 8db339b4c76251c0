/*
 * A polled driver for the Intel 82576 VF (igbvf), as QEMU's igbvf model
 * emulates it, with the PF in the host driven by Linux's igb (which answers
 * the VF mailbox). Sequence after Linux's igbvf (vf.c, mbx.c): CTRL.RST, the
 * VF_RESET mailbox handshake (the PF answers with our MAC and enables our
 * queues), one TX and one RX ring of advanced descriptors, a few broadcast
 * frames to the wire, a listen, then one MSI-X interrupt raised by VTEICS.
 *
 * The rings and frames are igb-queue.c's, shared with igb.c. The first
 * failure ends the test with EXIT_VF, the queues disabled.
 */
#include "guest.h"
#include "igb.h"
#include "igb-queue.h"
#include "igbvf.h"
#include "io.h"

#define EXIT_VF 26

#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4

#define SETTLE_TICKS (1ull << 25) /* ~10 ms, as igbvf's mdelay(10) */

static uint64_t bar0;
static uint8_t mac[6];
static uint32_t mbx_seen; /* read-to-clear mailbox bits seen but not yet consumed */

static const struct igbq_regs queue0 = {
	.rdbal = VF_RDBAL,
	.rdbah = VF_RDBAH,
	.rdlen = VF_RDLEN,
	.srrctl = VF_SRRCTL,
	.rdh = VF_RDH,
	.rdt = VF_RDT,
	.rxdctl = VF_RXDCTL,
	.tdbal = VF_TDBAL,
	.tdbah = VF_TDBAH,
	.tdlen = VF_TDLEN,
	.tdh = VF_TDH,
	.tdt = VF_TDT,
	.txdctl = VF_TXDCTL,
};
static struct igbq queue = {
	.prefix = "igbvf: ",
	.regs = &queue0,
	.mac = mac,
	.tx_stuck = "TX head did not advance (TX ring not read by DMA, or VFTE off in the PF?)",
};

static uint32_t rd(unsigned reg)
{
	return mmio_read32(bar0 + reg);
}

static void wr(unsigned reg, uint32_t v)
{
	mmio_write32(bar0 + reg, v);
}

static void spin(uint64_t ticks)
{
	uint64_t start = rdtsc();

	while (rdtsc() - start < ticks)
		cpu_relax();
}

static void quiesce(void)
{
	wr(VF_RXDCTL, 0);
	wr(VF_TXDCTL, 0);
	wr(VTEIMC, ~0u);
}

static uint64_t failed(const char *what, const char *why)
{
	if (bar0)
		quiesce();
	line_begin();
	put_str("igbvf: ");
	put_str(what);
	put_str(" FAILED: ");
	put_str(why);
	line_end();
	return EXIT_VF;
}

/* V2PMAILBOX, remembering its read-to-clear bits (as igbvf's v2p_mailbox). */
static uint32_t mbx_read(void)
{
	uint32_t v = rd(V2PMAILBOX);

	mbx_seen |= v & V2PMAILBOX_R2C_BITS;
	return v | mbx_seen;
}

/* True (and consumed) once any bit of mask has been seen. */
static bool mbx_bit(uint32_t mask)
{
	bool set = mbx_read() & mask;

	mbx_seen &= ~mask;
	return set;
}

static bool mbx_wait_bit(uint32_t mask)
{
	uint64_t start = rdtsc();

	while (!mbx_bit(mask)) {
		if (rdtsc() - start > WAIT_TICKS)
			return false;
		cpu_relax();
	}
	return true;
}

static bool mbx_lock(void)
{
	uint64_t start = rdtsc();

	for (;;) {
		wr(V2PMAILBOX, V2PMAILBOX_VFU);
		if (mbx_read() & V2PMAILBOX_VFU)
			return true;
		if (rdtsc() - start > WAIT_TICKS)
			return false;
		cpu_relax();
	}
}

/* Writes msg into the mailbox, raises REQ, waits for the PF's ACK. */
static const char *mbx_write_posted(const uint32_t *msg, unsigned n)
{
	if (!mbx_lock())
		return "could not take the mailbox (V2PMAILBOX.VFU stays clear)";
	(void)mbx_bit(V2PMAILBOX_PFSTS); /* stale message and ack: we overwrite */
	(void)mbx_bit(V2PMAILBOX_PFACK);
	for (unsigned i = 0; i < n; i++)
		wr(VMBMEM + 4 * i, msg[i]);
	wr(V2PMAILBOX, V2PMAILBOX_REQ); /* also drops VFU */
	if (!mbx_wait_bit(V2PMAILBOX_PFACK))
		return "no PFACK from the PF (is the PF's igb netdev up?)";
	return NULL;
}

/* Waits for the PF's message (PFSTS), reads n words, ACKs. */
static const char *mbx_read_posted(uint32_t *msg, unsigned n)
{
	if (!mbx_wait_bit(V2PMAILBOX_PFSTS))
		return "no reply from the PF (V2PMAILBOX.PFSTS)";
	if (!mbx_lock())
		return "could not take the mailbox to read the reply";
	for (unsigned i = 0; i < n; i++)
		msg[i] = rd(VMBMEM + 4 * i);
	wr(V2PMAILBOX, V2PMAILBOX_ACK); /* also drops VFU */
	return NULL;
}

/*
 * The PF NACKs VF_RESET when nobody assigned the VF a MAC (ip link set PF vf
 * 0 mac ...): like Linux's igbvf, pick a random locally administered unicast
 * one and tell the PF (E1000_VF_SET_MAC_ADDR), which filters and spoof-checks
 * on it from then on.
 */
static const char *set_random_mac(void)
{
	uint64_t r = rdtsc() * 0x9e3779b97f4a7c15ull;
	uint32_t msg[3] = { VF_MSG_SET_MAC_ADDR, 0, 0 };
	const char *why;

	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)(r >> (8 * i + 13));
	mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
	for (int i = 0; i < 6; i++)
		msg[1 + i / 4] |= (uint32_t)mac[i] << 8 * (i % 4);
	if ((why = mbx_write_posted(msg, 3)))
		return why;
	if ((why = mbx_read_posted(msg, 1)))
		return why;
	msg[0] &= ~VT_MSGTYPE_CTS;
	if (msg[0] != (VF_MSG_SET_MAC_ADDR | VT_MSGTYPE_ACK))
		return "the PF refused the random MAC (reply to SET_MAC_ADDR is not ACK)";
	say("igbvf: no MAC assigned by the PF; set a random one");
	return NULL;
}

static const char *reset(void)
{
	uint32_t msg[3] = { VF_MSG_RESET, 0, 0 };
	const char *why;
	uint64_t start;

	wr(VTEIMC, ~0u);
	wr(VF_CTRL, rd(VF_CTRL) | VF_CTRL_RST);
	if (!igb_wait_reg(bar0, VF_CTRL, VF_CTRL_RST, 0, WAIT_TICKS))
		return "reset did not complete (CTRL.RST stays set)";
	/* As igbvf: no mailbox traffic while RSTI/RSTD are asserted. */
	start = rdtsc();
	while (mbx_bit(V2PMAILBOX_RSTI | V2PMAILBOX_RSTD) && rdtsc() - start < WAIT_TICKS)
		cpu_relax();
	mbx_seen = 0;
	if ((why = mbx_write_posted(msg, 1)))
		return why;
	spin(SETTLE_TICKS);
	if ((why = mbx_read_posted(msg, 3)))
		return why;
	msg[0] &= ~VT_MSGTYPE_CTS;
	if (msg[0] == (VF_MSG_RESET | VT_MSGTYPE_NACK))
		return set_random_mac(); /* as igbvf: no MAC from the administrator */
	if (msg[0] != (VF_MSG_RESET | VT_MSGTYPE_ACK))
		return "unexpected reply to VF_RESET (want 0x80000001)";
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)(msg[1 + i / 4] >> 8 * (i % 4));
	return NULL;
}

/*
 * VTEICS sets the VF's extended cause 0 (MSI-X vector 0) directly; VTEIAC
 * clears it once sent, VTEIAM masks it again. VTIVAR_MISC maps only the
 * mailbox cause, so it is left alone.
 */
static const char *msix_interrupt(struct pci_fn f)
{
	const char *why;
	uint64_t start, before;

	interrupts_init();
	before = irq_count();
	why = pci_msix_route(f, 0, LAPIC_MSI_ADDRESS, IRQ_VECTOR);
	if (why)
		return why;
	wr(VTEIMC, ~0u);
	wr(VTEITR0, 0);
	wr(VTEICR, ~0u); /* write 1 to clear */
	wr(VTEIAC, 1);
	wr(VTEIAM, 1);
	wr(VTEIMS, 1);
	irq_enable();
	wr(VTEICS, 1);
	start = rdtsc();
	while (irq_count() == before && rdtsc() - start < WAIT_TICKS)
		cpu_relax();
	irq_disable();
	wr(VTEIMC, ~0u);
	if (irq_count() == before)
		return "no interrupt on vector 0x40 after VTEICS (MSI-X table entry 0 -> APIC 0)";
	return NULL;
}

/* BAR0 and bus mastering on, the reset handshake with the PF, then the rings. */
static const char *bring_up(struct pci_fn f, const char **step)
{
	const char *why;

	*step = "reset";
	bar0 = pci_bar(f, 0);
	if (!bar0)
		return "BAR0 is not an assigned memory BAR";
	queue.bar0 = bar0;
	pci_write16(f, PCI_COMMAND, (uint16_t)(pci_read16(f, PCI_COMMAND) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));

	if ((why = reset()))
		return why;
	line_begin();
	put_str("igbvf 00:");
	put_hex(f.dev, 2);
	put_char('.');
	put_hex(f.fn, 1);
	put_str(": reset ok, MAC ");
	put_mac(mac);
	line_end();

	*step = "rings";
	return igbq_init(&queue);
}

const char *igbvf_open(struct pci_fn f)
{
	const char *step;
	const char *why = bring_up(f, &step);

	if (why && bar0)
		quiesce();
	return why;
}

/*
 * The stream's MSI-X heartbeat: vector 0 routed to IRQ_VECTOR, raised by
 * VTEICS; VTEIAM masks the cause again once sent, so each raise unmasks it
 * first. A NIC interrupt then goes device -> VFIO eventfd -> KVM irqfd ->
 * guest, the path a live update hands over.
 */
const char *igbvf_stream_irq_start(struct pci_fn f)
{
	const char *why = pci_msix_route(f, 0, LAPIC_MSI_ADDRESS, IRQ_VECTOR);

	if (why)
		return why;
	wr(VTEIMC, ~0u);
	wr(VTEITR0, 0);
	wr(VTEICR, ~0u);
	wr(VTEIAC, 1);
	wr(VTEIAM, 1);
	return NULL;
}

void igbvf_stream_irq_raise(void)
{
	wr(VTEIMS, 1);
	wr(VTEICS, 1);
}

void igbvf_close(void)
{
	if (bar0) {
		wr(VTEIMC, ~0u);
		quiesce();
	}
}

uint64_t igbvf_test(struct pci_fn f)
{
	const char *step;
	const char *why;

	if ((why = bring_up(f, &step)))
		return failed(step, why);
	if ((why = igbq_wire("pinion-guest vf frame ")))
		return failed("sending to the wire", why);

	if ((why = msix_interrupt(f)))
		return failed("MSI-X interrupt", why);
	say("igbvf: MSI-X vector 0 interrupt received");
	quiesce();
	return 0;
}
