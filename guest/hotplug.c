/*
 * The `hotplug` mode: Pinion's memory-hotplug mailbox with no device. The
 * guest claims it and polls it every few ms. On "added" it writes a pattern
 * over the whole new region and reads it back: RAM missing from KVM's
 * memslots would be MMIO nobody claims, reading all ones. On "remove
 * requested" it forgets the region and acks, except boot RAM, which holds
 * this guest: that it does not release. Ends after `events` events (0: never).
 */
#include "guest.h"
#include "io.h"
#include "mem-hotplug.h"

#define EXIT_HOTPLUG 28
#define POLL_TICKS (1ull << 23) /* ~3 ms at 3 GHz */

static uint64_t pattern(uint64_t addr)
{
	return addr ^ 0xa5a5a5a55a5a5a5aull;
}

/*
 * The first and last words first: a region that is not RAM fails there
 * after two exits, not after one exit per word. 0, or where it differs.
 */
static uint64_t check_pattern(uint64_t gpa, uint64_t size)
{
	volatile uint64_t *p = (volatile uint64_t *)gpa;
	uint64_t words = size / 8;

	p[0] = pattern(gpa);
	p[words - 1] = pattern(gpa + size - 8);
	if (p[0] != pattern(gpa))
		return gpa;
	if (p[words - 1] != pattern(gpa + size - 8))
		return gpa + size - 8;
	for (uint64_t i = 0; i < words; i++)
		p[i] = pattern(gpa + i * 8);
	for (uint64_t i = 0; i < words; i++)
		if (p[i] != pattern(gpa + i * 8))
			return gpa + i * 8;
	return 0;
}

static void wait_ticks(uint64_t ticks)
{
	uint64_t start = rdtsc();

	while (rdtsc() - start < ticks)
		cpu_relax();
}

static bool added(const struct memhp_event *e)
{
	bool mapped = memhp_map(e->gpa, e->size);
	uint64_t bad = mapped && e->size >= 8 ? check_pattern(e->gpa, e->size) : e->gpa;

	line_begin();
	put_str("hotplug: added ");
	memhp_put_range(e->gpa, e->size);
	if (!mapped)
		put_str(": cannot map it (beyond 512 GiB, or out of page directories)");
	else if (bad) {
		put_str(": pattern BAD at ");
		put_hex_short(bad);
	} else
		put_str(": pattern ok");
	line_end();
	return !bad;
}

static void remove_requested(const struct memhp_event *e, uint64_t ram_size)
{
	line_begin();
	if (memhp_in_boot_ram(e->gpa, e->size, ram_size)) {
		put_str("hotplug: not releasing ");
		memhp_put_range(e->gpa, e->size);
		put_str(": boot RAM holds this guest");
		line_end();
		return;
	}
	put_str("hotplug: released ");
	memhp_put_range(e->gpa, e->size);
	line_end();
	memhp_ack(e->generation);
}

uint64_t hotplug_run(uint64_t events, uint64_t ram_size)
{
	bool ok = true;

	if (!memhp_claim()) {
		say("hotplug: no memory-hotplug mailbox at port 0x5f0");
		return EXIT_HOTPLUG;
	}
	line_begin();
	put_str("hotplug: mailbox claimed, waiting for ");
	if (events)
		put_dec(events);
	else
		put_str("any number of");
	put_str(" event(s)");
	line_end();
	for (uint64_t n = 0; !events || n < events;) {
		struct memhp_event e;

		wait_ticks(POLL_TICKS);
		if (!memhp_poll(&e))
			continue;
		n++;
		if (e.kind == MEMHP_ADDED) {
			ok = added(&e) && ok;
			memhp_ack(e.generation);
		} else
			remove_requested(&e, ram_size);
	}
	return ok ? 0 : EXIT_HOTPLUG;
}
