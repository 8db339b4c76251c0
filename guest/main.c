/*
 * Pinion's test guest. start.S hands every vCPU to guest_main() with the
 * boot contract's registers: vCPU index, command line, vCPU count, RAM size.
 *
 * Command line words (space separated, unknown words ignored):
 *   exit=N  debug-exit status at the end (decimal, default 0)
 *   fault   after the banner, read a non-canonical address: #GP, and with no
 *           IDT a triple fault (the VMM sees KVM_EXIT_SHUTDOWN)
 *   ud      after the banner, execute ud2 (same escalation)
 *   pio     no output; vCPU 0 writes port 0x80 forever, the others halt
 *   mmio    the same with 32-bit writes to MMIO_BENCH_ADDR (0xd0000000)
 *   hang    after the banner, every vCPU halts forever
 *   igb     after the PCI scan, test the first 82576 PF (igb.c): MAC
 *           loopback, an MSI-X interrupt, an MSI interrupt, frames with the
 *           wire; a failure ends the VM with its own status (20-25)
 *   baddma  with igb: also loop a frame back into RX buffers at an IOVA the
 *           VMM never mapped; nothing may land in RAM and the guest goes on
 *   tick    after the banner, vCPU 0 prints "tick N ms=T gap=G" about every
 *           100 ms of guest time (tick.c), the others halt; what a live
 *           update must carry on without a reset
 *   ticks=N with tick: end the VM (status 0) after tick N
 *   hotplug after the PCI scan, claim Pinion's memory-hotplug mailbox and
 *           answer its events (hotplug.c): a pattern over each added region,
 *           each removed one released; a bad pattern ends with status 28
 *   events=N with hotplug: end after N events (default 0: never)
 *   stream  after the PCI scan, receive the peer's frames on the first 82576
 *           (PF or VF) and check each, send some, and move RX DMA into each
 *           region the mailbox announces (stream.c); ends when the peer says
 *           stop, with status 29 if a frame's bytes were wrong
 *   heartbeat with stream on a VF: raise an MSI-X interrupt (vector 0, by
 *           VTEICS) whenever the last one arrived, and count them
 *   chaos=S after the PCI scan, a hostile guest with the first 82576 from
 *           seed S (chaos.c): config space, BARs, MSI-X, trapped ranges,
 *           ports, DMA rings and interrupts at random; exit 0 if it gets
 *           to the end
 *
 * Default flow: banner, AP check-in (in vCPU order, so the output is the
 * same on every run), PCI scan, a write pattern in RAM, then the debug exit.
 */
#include "guest.h"
#include "io.h"

#define CMDLINE_MAX 4095 /* the contract's limit, NUL excluded */
#define PATTERN_BASE 0x800000ul
#define PATTERN_LEN 0x10000ul
/*
 * How long vCPU 0 waits for the APs, in TSC ticks (2^34: ~6 s at 3 GHz).
 * Time rather than a pause count: under nested KVM on TCG a pause can cost
 * a microsecond and 2^31 of them would be most of an hour.
 */
#define CHECKIN_TSC_LIMIT (1ull << 34)

struct options {
	uint64_t exit_status, ticks, events, chaos_seed;
	bool chaos, fault, ud, pio, mmio, hang, igb, baddma, tick, hotplug, stream, heartbeat;
};

/* Both in .bss, zeroed by the ELF loader before any vCPU runs. */
static int aps_released; /* vCPU 0 has printed its banner */
static int aps_checked_in; /* APs 1..n that printed "cpu i up" */

static bool word_is(const char *w, size_t len, const char *lit)
{
	size_t i = 0;

	while (i < len && lit[i] && w[i] == lit[i])
		i++;
	return i == len && !lit[i];
}

static bool has_prefix(const char *w, size_t len, const char *lit, size_t *plen)
{
	size_t i = 0;

	while (i < len && lit[i] && w[i] == lit[i])
		i++;
	*plen = i;
	return !lit[i];
}

static uint64_t parse_dec(const char *s, size_t len)
{
	uint64_t v = 0;

	for (size_t i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	return v;
}

static struct options parse_cmdline(const char *s)
{
	struct options o = { 0 };
	size_t i = 0;

	while (i < CMDLINE_MAX && s[i]) {
		const char *w;
		size_t len = 0, plen;

		if (s[i] == ' ') {
			i++;
			continue;
		}
		w = &s[i];
		while (i + len < CMDLINE_MAX && w[len] && w[len] != ' ')
			len++;
		i += len;
		if (has_prefix(w, len, "exit=", &plen))
			o.exit_status = parse_dec(w + plen, len - plen);
		else if (has_prefix(w, len, "ticks=", &plen))
			o.ticks = parse_dec(w + plen, len - plen);
		else if (has_prefix(w, len, "events=", &plen))
			o.events = parse_dec(w + plen, len - plen);
		else if (has_prefix(w, len, "chaos=", &plen)) {
			o.chaos = true;
			o.chaos_seed = parse_dec(w + plen, len - plen);
		} else if (word_is(w, len, "fault"))
			o.fault = true;
		else if (word_is(w, len, "ud"))
			o.ud = true;
		else if (word_is(w, len, "pio"))
			o.pio = true;
		else if (word_is(w, len, "mmio"))
			o.mmio = true;
		else if (word_is(w, len, "hang"))
			o.hang = true;
		else if (word_is(w, len, "igb"))
			o.igb = true;
		else if (word_is(w, len, "baddma"))
			o.baddma = true;
		else if (word_is(w, len, "tick"))
			o.tick = true;
		else if (word_is(w, len, "hotplug"))
			o.hotplug = true;
		else if (word_is(w, len, "stream"))
			o.stream = true;
		else if (word_is(w, len, "heartbeat"))
			o.heartbeat = true;
	}
	return o;
}

void finish(uint64_t status)
{
	line_begin();
	put_str("exit ");
	put_dec(status);
	line_end();
	outl(DEBUG_EXIT_PORT, (uint32_t)status);
	halt_forever(); /* a VMM without the debug exit port */
}

static __attribute__((noreturn)) void pio_loop(void)
{
	for (uint8_t i = 0;; i++)
		outb(POST_PORT, i);
}

static __attribute__((noreturn)) void mmio_loop(void)
{
	for (uint32_t i = 0;; i++)
		mmio_write32(MMIO_BENCH_ADDR, i);
}

static void banner(uint64_t ncpus, const char *cmdline, uint64_t ram_size)
{
	line_begin();
	put_str("hello from vCPU 0 of ");
	put_dec(ncpus);
	put_str(", ");
	put_dec(ram_size >> 20);
	put_str(" MiB RAM");
	line_end();

	line_begin();
	put_str("cmdline \"");
	for (size_t i = 0; i < CMDLINE_MAX && cmdline[i]; i++)
		put_char(cmdline[i]);
	put_char('"');
	line_end();
}

/*
 * AP i checks in after vCPU 0's banner and after AP i-1, so the lines come
 * out in the same order every run. A missing AP stalls the ones after it,
 * which the timeout message then reports as "k of n".
 */
static __attribute__((noreturn)) void ap_main(uint64_t cpu, const struct options *o)
{
	if (o->pio || o->mmio || o->hang || o->fault || o->ud || o->tick)
		halt_forever();
	while (!__atomic_load_n(&aps_released, __ATOMIC_ACQUIRE) || (uint64_t)__atomic_load_n(&aps_checked_in, __ATOMIC_ACQUIRE) != cpu - 1)
		cpu_relax();
	line_begin();
	put_str("cpu ");
	put_dec(cpu);
	put_str(" up");
	line_end();
	__atomic_fetch_add(&aps_checked_in, 1, __ATOMIC_RELEASE);
	halt_forever();
}

static void wait_for_aps(uint64_t ncpus)
{
	uint64_t start = rdtsc();
	uint64_t seen;

	__atomic_store_n(&aps_released, 1, __ATOMIC_RELEASE);
	while ((seen = (uint64_t)__atomic_load_n(&aps_checked_in, __ATOMIC_ACQUIRE)) < ncpus - 1) {
		if (rdtsc() - start > CHECKIN_TSC_LIMIT) {
			line_begin();
			put_str("cpu check-in timed out: ");
			put_dec(seen);
			put_str(" of ");
			put_dec(ncpus - 1);
			line_end();
			finish(4);
		}
		cpu_relax();
	}
	line_begin();
	put_str("all ");
	put_dec(ncpus);
	put_str(" vCPUs up");
	line_end();
}

static void write_pattern(uint64_t ram_size)
{
	/* volatile: nothing in the guest reads it back, the VMM's tests do. */
	volatile uint8_t *p = (volatile uint8_t *)PATTERN_BASE;

	if (ram_size < PATTERN_BASE + PATTERN_LEN) {
		say("pattern skipped: RAM too small");
		return;
	}
	for (uint64_t i = 0; i < PATTERN_LEN; i++)
		p[i] = (uint8_t)(i * 13 + 0x5a);
	line_begin();
	put_str("pattern at 0x");
	put_hex(PATTERN_BASE, 6);
	put_str(" len 0x");
	put_hex(PATTERN_LEN, 5);
	line_end();
}

void guest_main(uint64_t cpu, const char *cmdline, uint64_t ncpus, uint64_t ram_size)
{
	struct options o = parse_cmdline(cmdline);

	if (cpu != 0)
		ap_main(cpu, &o);
	if (o.pio)
		pio_loop();
	if (o.mmio)
		mmio_loop();

	banner(ncpus, cmdline, ram_size);
	if (o.fault)
		(void)*(volatile uint64_t *)0x8000000000000000ul;
	if (o.ud)
		__asm__ volatile("ud2");
	if (o.hang)
		halt_forever();
	if (o.tick)
		tick_loop(o.ticks);

	wait_for_aps(ncpus);
	pci_scan();
	if (o.igb) {
		uint64_t status = igb_test(o.baddma);

		if (status)
			finish(status);
	}
	if (o.chaos)
		finish(chaos_run(o.chaos_seed, ram_size));
	if (o.hotplug || o.stream) {
		uint64_t status = o.stream ? stream_run(ram_size, o.heartbeat) : hotplug_run(o.events, ram_size);

		finish(status ? status : o.exit_status);
	}
	write_pattern(ram_size);
	finish(o.exit_status);
}
