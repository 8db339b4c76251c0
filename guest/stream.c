/*
 * The `stream` mode: a steady stream of frames from L1's peer
 * (test/support/peer-send.py: "pinion-peer frame N" broadcasts, ethertype
 * 0x88b5, zero padded to 60 bytes) received on the first 82576 function,
 * each checked byte for byte, its sequence number followed for gaps; one
 * frame of our own sent every TX_EVERY; a status line about once a second.
 *
 * Meanwhile the memory-hotplug mailbox (mem-hotplug.c) is polled, at most
 * every POLL_TICKS so RX never waits on it (each read is an exit served on
 * the VMM thread). For an added region the next LANDED_WANTED descriptors
 * are re-armed into it as the NIC hands them back, one buffer at its start
 * and one at its end (the IOMMU maps it whole, or not), each poisoned
 * first; a descriptor goes back to its own buffer once a peer frame landed
 * in the region through it with its bytes right, and once every descriptor
 * is armed to its own the event is acked: about one lap of the ring. A
 * remove request is acked once nothing points into the region, which is
 * always so between events. Boot RAM is never released: it holds this guest.
 *
 * A turn of the loop (a status line's included) longer than GAP_TICKS is a
 * pause the guest saw with its own clock: a gap line with the TSC ticks it
 * lasted and the TSC at its end.
 *
 * Ends when the peer's stop frame arrives: a last line, and status 0 unless
 * a frame's bytes were wrong.
 */
#include "guest.h"
#include "igb-queue.h"
#include "io.h"
#include "mem-hotplug.h"

#define EXIT_BAD 29
#define EXIT_NO_NIC 30

#define ETH_HLEN 14
#define PEER_LEN 60 /* peer-send.py: the header and a 46-byte payload */
#define FCS_LEN 4 /* there too if the PF's RCTL.SECRC is off: not ours to check */
#define PEER_TEXT "pinion-peer frame "
#define STOP_TEXT "pinion-peer stop"
#define GUEST_TEXT "pinion-guest "
#define TX_EVERY 16
#define LANDED_WANTED 2
#define POISON 0xa5 /* a region buffer before the NIC writes it */

/* TSC ticks, as elsewhere in the guest at ~3 GHz. */
#define POLL_TICKS (1ull << 26) /* ~20 ms */
#define STATUS_TICKS (3ull << 30) /* ~1 s */
#define LAND_TICKS (1ull << 34) /* ~5 s for frames to land in a region */
#define GAP_TICKS (1ull << 27) /* ~45 ms for one turn of the loop: the vCPU did not run (a pause) */

enum kind {
	PEER,
	STOP,
	OWN,
	OTHER,
	BAD
};
enum phase {
	IDLE,
	TO_REGION,
	HOME
};

static struct {
	uint64_t rx, lost, bad, tx, txerr, own, other, inregion, landfail, first, last;
	uint64_t gaps, gapmax;
	bool started;
} c;

/* The event being handled, and how far. */
static struct {
	enum phase phase;
	struct memhp_event e;
	unsigned landed;
	uint64_t since;
} mv;

static bool starts_with(const uint8_t *p, unsigned len, const char *s)
{
	unsigned i = 0;

	for (; s[i]; i++)
		if (i >= len || p[i] != (uint8_t)s[i])
			return false;
	return true;
}

static unsigned text_len(const char *s)
{
	unsigned n = 0;

	while (s[n])
		n++;
	return n;
}

/* A peer frame exactly as peer-send.py builds it, and its number. */
static bool peer_frame(const uint8_t *p, unsigned len, uint64_t *n)
{
	const uint8_t *pay = p + ETH_HLEN;
	unsigned i = text_len(PEER_TEXT), digits = 0;

	if ((len != PEER_LEN && len != PEER_LEN + FCS_LEN) || !starts_with(pay, PEER_LEN - ETH_HLEN, PEER_TEXT))
		return false;
	len = PEER_LEN;
	for (unsigned k = 0; k < 6; k++)
		if (p[k] != 0xff)
			return false;
	*n = 0;
	for (; ETH_HLEN + i < len && pay[i] >= '0' && pay[i] <= '9' && digits < 19; i++, digits++)
		*n = *n * 10 + (pay[i] - '0');
	if (!digits)
		return false;
	for (; ETH_HLEN + i < len; i++)
		if (pay[i])
			return false;
	return true;
}

static enum kind classify(const uint8_t *p, unsigned len, uint64_t *n)
{
	if (len >= ETH_HLEN && igbq_same_bytes(p + 6, igbq_mac(), 6))
		return OWN; /* a VF gets its own broadcasts back from the PF's switch */
	if (len < ETH_HLEN || p[12] != 0x88 || p[13] != 0xb5)
		return OTHER; /* L1's own traffic on the wire */
	if (starts_with(p + ETH_HLEN, len - ETH_HLEN, STOP_TEXT))
		return STOP;
	if (starts_with(p + ETH_HLEN, len - ETH_HLEN, GUEST_TEXT))
		return OTHER; /* another guest's, on a VF of the same PF: the PF's switch floods broadcasts to every VF */
	return peer_frame(p, len, n) ? PEER : BAD;
}

static bool in_region(uint64_t a, const struct memhp_event *e)
{
	return a >= e->gpa && a - e->gpa < e->size;
}

/* MSI-X heartbeats raised (VTEICS) and whether they are on: irq_count() has those delivered. */
static uint64_t raised;
static bool heartbeat;

/* One heartbeat at a time: the next once the last arrived. */
static void beat(void)
{
	if (heartbeat && irq_count() == raised) {
		raised++;
		igb_stream_irq_raise();
	}
}

static void status(void)
{
	line_begin();
	put_str("stream: rx=");
	put_dec(c.rx);
	put_str(" lost=");
	put_dec(c.lost);
	put_str(" bad=");
	put_dec(c.bad);
	put_str(" tx=");
	put_dec(c.tx);
	put_str(" inregion=");
	put_dec(c.inregion);
	put_str(" irqs=");
	put_dec(irq_count());
	put_str(" raised=");
	put_dec(raised);
	line_end();
}

static void use_home(void)
{
	for (unsigned i = 0; i < RX_ENTRIES; i++)
		igbq_rx_use(i, (uint64_t)igbq_rx_buf(i));
}

static void added(const struct memhp_event *e)
{
	bool big = e->size >= LANDED_WANTED * BUF_SIZE;

	mv.e = *e;
	mv.landed = 0;
	mv.since = rdtsc();
	if (!big || !memhp_map(e->gpa, e->size)) {
		line_begin();
		put_str("stream: region ");
		memhp_put_range(e->gpa, e->size);
		put_str(big ? " cannot be mapped: not used" : " is smaller than two RX buffers: not used");
		line_end();
		c.landfail++;
		mv.phase = HOME;
		return;
	}
	for (unsigned k = 0; k < LANDED_WANTED; k++) {
		/* The first 2 KiB, the last 2 KiB: LANDED_WANTED is 2. */
		uint64_t a = k ? e->gpa + e->size - BUF_SIZE : e->gpa;
		volatile uint8_t *b = (volatile uint8_t *)a;

		for (unsigned j = 0; j < BUF_SIZE; j++)
			b[j] = POISON;
		igbq_rx_use((igbq_rx_next() + k) % RX_ENTRIES, a);
	}
	mv.phase = TO_REGION;
}

static void remove_requested(const struct memhp_event *e, uint64_t ram_size)
{
	line_begin();
	if (memhp_in_boot_ram(e->gpa, e->size, ram_size)) {
		put_str("stream: not releasing ");
		memhp_put_range(e->gpa, e->size);
		put_str(": boot RAM holds this guest");
		line_end();
		return;
	}
	/* Between events every descriptor is armed to the rings' own buffers: nothing points into it. */
	for (unsigned i = 0; i < RX_ENTRIES; i++)
		if (in_region(igbq_rx_armed(i), e)) {
			put_str("stream: descriptor still in the region to release; not acked");
			line_end();
			return;
		}
	put_str("stream: released ");
	memhp_put_range(e->gpa, e->size);
	line_end();
	memhp_ack(e->generation);
}

static void poll_mailbox(uint64_t ram_size)
{
	struct memhp_event e;

	if (!memhp_poll(&e))
		return;
	if (e.kind == MEMHP_ADDED)
		added(&e);
	else
		remove_requested(&e, ram_size);
}

/* The event's progress, checked each turn: cheap, no exits. */
static void advance(uint64_t now)
{
	if (mv.phase == TO_REGION && now - mv.since > LAND_TICKS) {
		line_begin();
		put_str("stream: no frame landed in ");
		memhp_put_range(mv.e.gpa, mv.e.size);
		put_str(" within ~5 s");
		line_end();
		c.landfail++;
		use_home();
		mv.phase = HOME;
	}
	if (mv.phase != HOME)
		return;
	for (unsigned i = 0; i < RX_ENTRIES; i++)
		if (igbq_rx_armed(i) != (uint64_t)igbq_rx_buf(i))
			return;
	memhp_ack(mv.e.generation);
	mv.phase = IDLE;
	status();
}

/* A peer frame came through descriptor igbq_rx_next() into the region: that descriptor goes back to its own buffer. */
static void landed(uint64_t n, uint64_t addr, bool ok)
{
	unsigned i = igbq_rx_next();

	igbq_rx_use(i, (uint64_t)igbq_rx_buf(i));
	line_begin();
	put_str("stream: frame ");
	put_dec(n);
	put_str(" landed in ");
	put_hex_short(addr);
	put_str(ok ? ": bytes ok" : ": bytes BAD");
	line_end();
	if (ok && ++mv.landed == LANDED_WANTED)
		mv.phase = HOME;
}

/* Counts one received frame; true for the peer's stop. */
static bool frame(const uint8_t *p, unsigned len)
{
	uint64_t n = 0;
	enum kind k = classify(p, len, &n);
	bool region = mv.phase != IDLE && in_region((uint64_t)p, &mv.e);

	if (region)
		c.inregion++;
	if (k == STOP)
		return true;
	if (k == OWN) {
		c.own++;
		return false;
	}
	if (k == OTHER) {
		c.other++;
		return false;
	}
	if (k == PEER && c.started && n <= c.last)
		k = BAD; /* a repeat, or out of order */
	if (region && mv.phase == TO_REGION)
		landed(n, (uint64_t)p, k == PEER);
	if (k == BAD) {
		c.bad++;
		return false;
	}
	if (!c.started) {
		c.first = n;
		c.started = true;
	} else
		c.lost += n - c.last - 1;
	c.last = n;
	if (++c.rx % TX_EVERY == 0) {
		if (igbq_send(igbq_build_frame("pinion-guest stream ", (int64_t)(c.rx / TX_EVERY))))
			c.txerr++;
		else
			c.tx++;
	}
	return false;
}

/* The guest's own clock of a pause: the TSC runs on while the vCPU is out (a live update keeps its offset). */
static void gap(uint64_t ticks, uint64_t end)
{
	c.gaps++;
	if (ticks > c.gapmax)
		c.gapmax = ticks;
	line_begin();
	put_str("stream: gap ticks=");
	put_dec(ticks);
	put_str(" end=");
	put_dec(end);
	put_str(" rx=");
	put_dec(c.rx);
	line_end();
}

static void done(void)
{
	line_begin();
	put_str("stream: done rx=");
	put_dec(c.rx);
	put_str(" lost=");
	put_dec(c.lost);
	put_str(" bad=");
	put_dec(c.bad);
	put_str(" tx=");
	put_dec(c.tx);
	put_str(" first=");
	put_dec(c.first);
	put_str(" last=");
	put_dec(c.last);
	put_str(" gaps=");
	put_dec(c.gaps);
	put_str(" gapmax=");
	put_dec(c.gapmax);
	put_str(" inregion=");
	put_dec(c.inregion);
	put_str(" landfail=");
	put_dec(c.landfail);
	put_str(" txerr=");
	put_dec(c.txerr);
	put_str(" own=");
	put_dec(c.own);
	put_str(" other=");
	put_dec(c.other);
	put_str(" irqs=");
	put_dec(irq_count());
	put_str(" raised=");
	put_dec(raised);
	line_end();
}

uint64_t stream_run(uint64_t ram_size, bool with_heartbeat)
{
	const char *why = igb_stream_open();
	bool mailbox;
	uint64_t polled, reported, turn;

	if (why) {
		line_begin();
		put_str("stream: no NIC to stream on: ");
		put_str(why);
		line_end();
		igb_stream_close();
		return EXIT_NO_NIC;
	}
	mailbox = memhp_claim();
	heartbeat = with_heartbeat && igb_stream_irq_start() == NULL;
	if (heartbeat)
		irq_enable();
	say(mailbox ? "stream: ready, memory-hotplug mailbox claimed" : "stream: ready, no memory-hotplug mailbox");
	polled = reported = turn = rdtsc();
	for (;;) {
		unsigned len;
		const uint8_t *p;
		uint64_t now = rdtsc();

		if (now - turn > GAP_TICKS) {
			gap(now - turn, now);
			now = rdtsc();
		}
		turn = now;
		p = igbq_rx_peek(&len);
		if (p) {
			bool stop = frame(p, len);

			igbq_rx_release();
			if (stop)
				break;
		} else
			cpu_relax();
		now = rdtsc();
		advance(now);
		if (now - polled > POLL_TICKS) {
			if (mailbox && mv.phase == IDLE)
				poll_mailbox(ram_size);
			beat();
			polled = rdtsc();
		}
		if (now - reported > STATUS_TICKS) {
			/* Its line is a turn's few ms of exits, and a pause can fall inside it. */
			status();
			reported = now;
		}
	}
	irq_disable();
	igb_stream_close();
	done();
	return c.bad ? EXIT_BAD : 0;
}
