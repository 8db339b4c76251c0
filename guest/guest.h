/* Shared declarations of the test guest (see main.c for its behaviour). */
#ifndef GUEST_H
#define GUEST_H

#include <stdint.h>

#define DEBUG_EXIT_PORT 0xf4 /* OUT v: the VMM ends the VM with status v & 0xff */
#define POST_PORT 0x80 /* writes ignored by the VMM: the benchmark port */

/* serial.c: whole lines under a spinlock so vCPUs never interleave. */
void line_begin(void);
void line_end(void);
void put_char(char c);
void put_str(const char *s);
void put_hex(uint64_t v, int digits);
void put_dec(uint64_t v);
void say(const char *s);

/* pci.c */
void pci_scan(void);

#endif
