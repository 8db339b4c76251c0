/*
 * One TX and one RX ring of advanced descriptors on an 82576 function, the
 * part igb.c (PF) and igbvf.c (VF) share: only where queue 0's registers sit
 * in BAR0 differs. One function is driven per boot, so there is one set of
 * rings; igbq_init() points it at the function's registers and MAC.
 */
#ifndef GUEST_IGB_QUEUE_H
#define GUEST_IGB_QUEUE_H

#include "guest.h"
#include "igb.h"

#define TX_ENTRIES 8 /* 128 bytes of descriptors: the ring length granule */
/*
 * 128: ~640 ms of the stream's 5 ms frames. A VF's frames are dropped once
 * its ring is full, and the stream's vCPU may be held that long: paused
 * for a memory change's copy, or printing under nested virtualization.
 */
#define RX_ENTRIES 128
#define BUF_SIZE 2048 /* SRRCTL_BSIZEPKT_2K; no frame here is longer */
#define FRAME_LEN 128 /* every frame sent */

/* TSC deadlines, like main.c's check-in timeout (times at ~3 GHz). */
#define WAIT_TICKS (1ull << 34) /* ~5 s: reset, MDIC, TX, a looped frame, an interrupt */

/* Queue 0's registers, as offsets in BAR0 (the datasheet's names). */
struct igbq_regs {
	unsigned rdbal, rdbah, rdlen, srrctl, rdh, rdt, rxdctl;
	unsigned tdbal, tdbah, tdlen, tdh, tdt, txdctl;
};

struct igbq {
	const char *prefix; /* starts every line printed: "igb: ", "igbvf: " */
	uint64_t bar0;
	const struct igbq_regs *regs;
	const uint8_t *mac; /* the source address of frames sent, read when built */
	const char *tx_stuck; /* the failure when TDH does not follow TDT */
};

/* Polls a BAR register until (value & mask) == want; false after ticks. */
bool igb_wait_reg(uint64_t bar0, unsigned reg, uint32_t mask, uint32_t want, uint64_t ticks);

/* Programs both rings (queues disabled first) and enables them; NULL or why not. */
const char *igbq_init(const struct igbq *q);

/*
 * Builds a broadcast frame of FRAME_LEN bytes in the TX buffer, returns its
 * length: our MAC, the local ethertype, `text` and `n` in decimal (none if < 0).
 */
unsigned igbq_build_frame(const char *text, int64_t n);
const uint8_t *igbq_tx_buf(void);
const uint8_t *igbq_mac(void); /* the function's MAC: the source of frames sent */
/* Sends the TX buffer's first len bytes; NULL once the NIC has taken them. */
const char *igbq_send(unsigned len);

/* The next received frame and its length, or NULL; then igbq_rx_release(). */
const uint8_t *igbq_rx_peek(unsigned *len);
void igbq_rx_release(void);

/* For a test of where RX DMA goes: buffer i in RAM, and pointing descriptor i elsewhere now. */
uint8_t *igbq_rx_buf(unsigned i);
void igbq_rx_point(unsigned i, uint64_t addr);

/*
 * Moving RX DMA: advanced write-back overwrites a descriptor's address, so
 * each is armed from a shadow of buffer addresses. igbq_rx_use() sets where
 * descriptor i points from its next arming on (the NIC owns the armed ones
 * until it writes them back); igbq_rx_armed() is where it points now, and
 * igbq_rx_next() the descriptor armed next.
 */
void igbq_rx_use(unsigned i, uint64_t addr);
uint64_t igbq_rx_armed(unsigned i);
unsigned igbq_rx_next(void);

/* Sends 3 frames `text`1..3 to the wire, then listens for ~3 s: prints the first frames, counts all. */
const char *igbq_wire(const char *text);

void put_mac(const uint8_t *m);
bool igbq_same_bytes(const uint8_t *a, const uint8_t *b, unsigned len);

#endif
