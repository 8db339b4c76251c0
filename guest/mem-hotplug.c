/*
 * Pinion's memory-hotplug mailbox, the guest side (see mem-hotplug.h). An
 * event is read as a seqlock: GEN, the fields, GEN again; the VMM may post
 * between two of these reads, each its own exit.
 */
#include "mem-hotplug.h"
#include "io.h"

/* The boot map's split (src/memory/layout.ts): RAM below 3 GiB, the rest from 4 GiB. */
#define LOW_RAM_END 0xc0000000ull
#define HIGH_RAM_START 0x100000000ull
#define SEQ_TRIES 4

#define PT_PRESENT 0x1ull
#define PT_RW 0x2ull
#define PT_PS 0x80ull
#define PT_ADDR 0x000ffffffffff000ull
#define PDS_MAX 16 /* GiBs above 4 GiB a guest can reach: 64 KiB of .bss */

static uint64_t pds[PDS_MAX][512] __attribute__((aligned(4096)));
static unsigned pds_used;

static uint32_t seen; /* the generation handed out last */

static uint32_t rd(unsigned reg)
{
	return inl((uint16_t)(MEMHP_PORT + reg));
}

bool memhp_claim(void)
{
	if (rd(MEMHP_REG_ID) != MEMHP_ID)
		return false;
	outl(MEMHP_PORT + MEMHP_REG_ID, MEMHP_ID);
	/* Events from before this claim are not ours (a VMM posts none while unclaimed). */
	seen = rd(MEMHP_REG_GEN);
	return true;
}

bool memhp_poll(struct memhp_event *e)
{
	for (int i = 0; i < SEQ_TRIES; i++) {
		uint32_t gen = rd(MEMHP_REG_GEN);

		if (gen == seen)
			return false;
		e->generation = gen;
		e->kind = rd(MEMHP_REG_KIND);
		e->gpa = (uint64_t)rd(MEMHP_REG_GPA_HI) << 32 | rd(MEMHP_REG_GPA_LO);
		e->size = (uint64_t)rd(MEMHP_REG_SIZE_HI) << 32 | rd(MEMHP_REG_SIZE_LO);
		if (rd(MEMHP_REG_GEN) != gen)
			continue;
		seen = gen;
		return e->kind == MEMHP_ADDED || e->kind == MEMHP_REMOVE_REQUESTED;
	}
	return false; /* posting faster than we read: the next poll tries again */
}

void memhp_ack(uint32_t generation)
{
	outl(MEMHP_PORT + MEMHP_REG_ACK, generation);
}

static uint64_t read_cr3(void)
{
	uint64_t v;

	__asm__ volatile("mov %%cr3, %0" : "=r"(v));
	return v;
}

static void write_cr3(uint64_t v)
{
	__asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}

bool memhp_map(uint64_t gpa, uint64_t size)
{
	volatile uint64_t *pml4 = (volatile uint64_t *)(read_cr3() & PT_ADDR);
	volatile uint64_t *pdpt = (volatile uint64_t *)(pml4[0] & PT_ADDR);
	bool changed = false;

	if (!size || gpa + size > (512ull << 30))
		return false;
	for (uint64_t g = gpa >> 30; g <= (gpa + size - 1) >> 30; g++) {
		uint64_t *pd;

		if ((pdpt[g] & (PT_PRESENT | PT_PS)) == PT_PRESENT)
			continue; /* a page directory already: below 4 GiB, or mapped before */
		if (pds_used == PDS_MAX)
			return false;
		pd = pds[pds_used++];
		for (uint64_t i = 0; i < 512; i++)
			pd[i] = (g << 30 | i << 21) | PT_PRESENT | PT_RW | PT_PS;
		pdpt[g] = (uint64_t)pd | PT_PRESENT | PT_RW;
		changed = true;
	}
	if (changed)
		write_cr3(read_cr3()); /* drops the 1 GiB translations */
	return true;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

bool memhp_in_boot_ram(uint64_t gpa, uint64_t size, uint64_t ram_size)
{
	uint64_t low = ram_size < LOW_RAM_END ? ram_size : LOW_RAM_END;

	return overlaps(gpa, size, 0, low) || (ram_size > low && overlaps(gpa, size, HIGH_RAM_START, ram_size - low));
}

void memhp_put_range(uint64_t gpa, uint64_t size)
{
	put_hex_short(gpa);
	put_char('+');
	put_hex_short(size);
}
