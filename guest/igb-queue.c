/*
 * The rings igb.c and igbvf.c share (see igb-queue.h): one TX ring with one
 * buffer, sent a frame at a time and waited on (TDH moves, as igb.ts), and
 * one RX ring polled for written-back descriptors.
 *
 * DMA addresses are guest physical addresses: the VMM maps all guest RAM into
 * the IOMMU at IOVA = GPA, and the guest is identity mapped, so the address
 * of a static array is what the NIC is told.
 */
#include "igb-queue.h"
#include "io.h"

#define ETH_HLEN 14
#define ETHERTYPE_LOCAL 0x88b5 /* IEEE 802 local experimental */
#define WIRE_FRAMES 3
#define WIRE_TICKS (1ull << 33) /* ~3 s of listening to the wire */
#define PAYLOAD_SHOWN 32
#define FRAMES_SHOWN 3 /* of ours reflected, and of others: the count says the rest */

/* In .bss, zeroed by the loader; rings 128-byte aligned as the NIC wants. */
static volatile struct tx_desc tx_ring[TX_ENTRIES] __attribute__((aligned(128)));
static volatile struct rx_desc rx_ring[RX_ENTRIES] __attribute__((aligned(128)));
static uint8_t tx_buf[BUF_SIZE] __attribute__((aligned(BUF_SIZE)));
static uint8_t rx_bufs[RX_ENTRIES][BUF_SIZE] __attribute__((aligned(4096)));
static uint64_t rx_use[RX_ENTRIES]; /* the buffer descriptor i gets when armed next */
static uint64_t rx_at[RX_ENTRIES]; /* the buffer descriptor i was armed with */

static const struct igbq *q;
static unsigned tx_tail, rx_next;

static void wr(unsigned reg, uint32_t v)
{
	mmio_write32(q->bar0 + reg, v);
}

bool igb_wait_reg(uint64_t bar0, unsigned reg, uint32_t mask, uint32_t want, uint64_t ticks)
{
	uint64_t start = rdtsc();

	while ((mmio_read32(bar0 + reg) & mask) != want) {
		if (rdtsc() - start > ticks)
			return false;
		cpu_relax();
	}
	return true;
}

static void rx_arm(unsigned i)
{
	rx_at[i] = rx_use[i];
	rx_ring[i].addr = rx_use[i];
	rx_ring[i].status_error = 0; /* with length and vlan: header address 0 */
	rx_ring[i].length = 0;
	rx_ring[i].vlan = 0;
}

/*
 * Queues disabled first: the PF's unmapped-DMA test re-inits live rings.
 * The tail moves only once RXDCTL reads back enabled, the datasheet's order.
 */
const char *igbq_init(const struct igbq *queue)
{
	const struct igbq_regs *r = queue->regs;

	q = queue;
	wr(r->txdctl, 0);
	wr(r->tdbal, (uint32_t)(uint64_t)tx_ring);
	wr(r->tdbah, (uint32_t)((uint64_t)tx_ring >> 32));
	wr(r->tdlen, sizeof(tx_ring));
	wr(r->tdh, 0);
	wr(r->tdt, 0);
	wr(r->txdctl, QUEUE_ENABLE);

	wr(r->rxdctl, 0);
	for (unsigned i = 0; i < RX_ENTRIES; i++) {
		rx_use[i] = (uint64_t)rx_bufs[i];
		rx_arm(i);
	}
	wr(r->rdbal, (uint32_t)(uint64_t)rx_ring);
	wr(r->rdbah, (uint32_t)((uint64_t)rx_ring >> 32));
	wr(r->rdlen, sizeof(rx_ring));
	wr(r->srrctl, SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_BSIZEPKT_2K);
	wr(r->rdh, 0);
	wr(r->rxdctl, QUEUE_ENABLE);
	if (!igb_wait_reg(q->bar0, r->rxdctl, QUEUE_ENABLE, QUEUE_ENABLE, WAIT_TICKS))
		return "RXDCTL.ENABLE did not stick";
	/*
	 * The NIC owns [RDH, RDT): all but one descriptor. RDT == RDH would mean
	 * an empty ring, so the slot at RDT is always ours (armed, not given).
	 */
	wr(r->rdt, RX_ENTRIES - 1);
	tx_tail = rx_next = 0;
	return NULL;
}

/* After `text`: a NUL, then a pattern up to FRAME_LEN bytes. */
unsigned igbq_build_frame(const char *text, int64_t n)
{
	char digits[20];
	unsigned i = 0, nd = 0;

	for (int k = 0; k < 6; k++)
		tx_buf[i++] = 0xff;
	for (int k = 0; k < 6; k++)
		tx_buf[i++] = q->mac[k];
	tx_buf[i++] = ETHERTYPE_LOCAL >> 8;
	tx_buf[i++] = ETHERTYPE_LOCAL & 0xff;
	while (*text)
		tx_buf[i++] = (uint8_t)*text++;
	for (uint64_t v = (uint64_t)n; n >= 0 && (nd == 0 || v); v /= 10)
		digits[nd++] = (char)('0' + v % 10);
	while (nd)
		tx_buf[i++] = (uint8_t)digits[--nd];
	tx_buf[i++] = 0;
	for (; i < FRAME_LEN; i++)
		tx_buf[i] = (uint8_t)(i * 7 + n);
	return FRAME_LEN;
}

const uint8_t *igbq_tx_buf(void)
{
	return tx_buf;
}

const uint8_t *igbq_mac(void)
{
	return q->mac;
}

const char *igbq_send(unsigned len)
{
	volatile struct tx_desc *d = &tx_ring[tx_tail];

	d->addr = (uint64_t)tx_buf;
	d->cmd_type_len = len | TXD_DTYP_DATA | TXD_DEXT | TXD_EOP | TXD_IFCS | TXD_RS;
	d->olinfo_status = len << TXD_PAYLEN_SHIFT;
	tx_tail = (tx_tail + 1) % TX_ENTRIES;
	wr(q->regs->tdt, tx_tail); /* mmio_write32 orders the descriptor writes before it */
	if (!igb_wait_reg(q->bar0, q->regs->tdh, ~0u, tx_tail, WAIT_TICKS))
		return q->tx_stuck;
	return NULL;
}

const uint8_t *igbq_rx_peek(unsigned *len)
{
	volatile struct rx_desc *d = &rx_ring[rx_next];

	if (!(d->status_error & RXD_STAT_DD))
		return NULL;
	__asm__ volatile("" : : : "memory"); /* read the buffer after DD */
	*len = d->length;
	return (const uint8_t *)rx_at[rx_next];
}

/* Hands the descriptor back (re-armed) and moves on. */
void igbq_rx_release(void)
{
	rx_arm(rx_next);
	wr(q->regs->rdt, rx_next);
	rx_next = (rx_next + 1) % RX_ENTRIES;
}

uint8_t *igbq_rx_buf(unsigned i)
{
	return rx_bufs[i];
}

/* Until the next igbq_init(): rx_arm() would point it back. */
void igbq_rx_point(unsigned i, uint64_t addr)
{
	rx_at[i] = addr;
	rx_ring[i].addr = addr;
	rx_ring[i].status_error = 0;
	rx_ring[i].length = 0;
	rx_ring[i].vlan = 0;
}

void igbq_rx_use(unsigned i, uint64_t addr)
{
	rx_use[i] = addr;
}

uint64_t igbq_rx_armed(unsigned i)
{
	return rx_at[i];
}

unsigned igbq_rx_next(void)
{
	return rx_next;
}

void put_mac(const uint8_t *m)
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
	put_str(q->prefix);
	put_str("wire frame ");
	put_dec(n);
	put_str(": ");
	put_dec(len);
	put_str(" bytes");
	if (len >= ETH_HLEN) {
		put_str(" from ");
		put_mac(p + 6);
		put_str(", ethertype 0x");
		put_hex((uint64_t)p[12] << 8 | p[13], 4);
		while (text < PAYLOAD_SHOWN && ETH_HLEN + text < len && p[ETH_HLEN + text] >= 0x20 && p[ETH_HLEN + text] < 0x7f)
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

bool igbq_same_bytes(const uint8_t *a, const uint8_t *b, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

const char *igbq_wire(const char *text)
{
	unsigned received = 0, shown[2] = { 0, 0 };
	uint64_t start;

	for (int n = 1; n <= WIRE_FRAMES; n++) {
		const char *why = igbq_send(igbq_build_frame(text, n));

		if (why)
			return why;
	}
	line_begin();
	put_str(q->prefix);
	put_str("sent ");
	put_dec(WIRE_FRAMES);
	put_str(" frames to the wire");
	line_end();

	start = rdtsc();
	while (rdtsc() - start < WIRE_TICKS) {
		unsigned len;
		const uint8_t *p = igbq_rx_peek(&len);

		if (!p) {
			cpu_relax();
			continue;
		}
		received++;
		/* A VF also gets its own broadcasts back from the PF's switch. */
		bool ours = len >= ETH_HLEN && igbq_same_bytes(p + 6, q->mac, 6);
		if (shown[ours]++ < FRAMES_SHOWN)
			print_frame(received, p, len);
		igbq_rx_release();
	}
	line_begin();
	put_str(q->prefix);
	put_str("received ");
	put_dec(received);
	put_str(" frame(s) from the wire");
	line_end();
	return NULL;
}
