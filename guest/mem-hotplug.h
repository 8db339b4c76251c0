/*
 * The guest's driver of Pinion's memory-hotplug mailbox (src/devices/mem-hotplug.ts,
 * whose header has the register layout): ports 0x5f0-0x60f, 32-bit accesses,
 * served by the VMM thread, so every access is an exit and an RPC there
 * (about a millisecond in the rig): poll it every few ms at most.
 */
#ifndef GUEST_MEM_HOTPLUG_H
#define GUEST_MEM_HOTPLUG_H

#include "guest.h"

#define MEMHP_PORT 0x5f0
#define MEMHP_ID 0x50484d50u /* "PMHP"; written to ID, it claims the mailbox */
#define MEMHP_REG_ID 0x00
#define MEMHP_REG_GEN 0x04
#define MEMHP_REG_KIND 0x08
#define MEMHP_REG_GPA_LO 0x0c
#define MEMHP_REG_GPA_HI 0x10
#define MEMHP_REG_SIZE_LO 0x14
#define MEMHP_REG_SIZE_HI 0x18
#define MEMHP_REG_ACK 0x1c

#define MEMHP_NONE 0
#define MEMHP_ADDED 1
#define MEMHP_REMOVE_REQUESTED 2

struct memhp_event {
	uint32_t generation;
	uint32_t kind; /* MEMHP_ADDED or MEMHP_REMOVE_REQUESTED */
	uint64_t gpa, size;
};

/* Claims the mailbox; false when there is none (the ID reads otherwise). */
bool memhp_claim(void);
/* The event posted since the last call that returned one, if any. */
bool memhp_poll(struct memhp_event *e);
/* For ADDED: the region is known; for REMOVE_REQUESTED: nothing points into it any more. */
void memhp_ack(uint32_t generation);
/*
 * Makes [gpa, gpa+size) reachable with 2 MiB pages of this guest's own:
 * the boot contract maps RAM above 4 GiB with 1 GiB pages, which a vCPU
 * may lack (kvm-pvm's shadow MMU faults on them as reserved). False when
 * the range is beyond 512 GiB or the pool of page directories is used up.
 */
bool memhp_map(uint64_t gpa, uint64_t size);
/* Whether [gpa, gpa+size) overlaps the RAM this guest booted with (ram_size from the boot contract's RCX). */
bool memhp_in_boot_ram(uint64_t gpa, uint64_t size, uint64_t ram_size);
/* "0x<gpa>+0x<size>" */
void memhp_put_range(uint64_t gpa, uint64_t size);

#endif
