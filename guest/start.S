/*
 * Entry point under Pinion's direct 64-bit boot: long mode with the low 4 GiB
 * identity mapped, interrupts off, no IDT, RSP = 0. RDI = vCPU index,
 * RSI = command line, RDX = vCPU count, RCX = RAM size: already the SysV
 * argument registers of guest_main(cpu, cmdline, ncpus, ram_size).
 *
 * .bss is deliberately not zeroed here: the APs start at the same time as the
 * BSP, so zeroing would race with them, and the ELF loader already zeroes
 * every segment from p_filesz to p_memsz (part of the boot contract).
 */
#define MAX_CPUS 8
#define STACK_SHIFT 14 /* 16 KiB per vCPU */
#define DEBUG_EXIT_PORT 0xf4
#define EXIT_TOO_MANY_CPUS 3

	.section .text.start, "ax"
	.globl _start
	.type _start, @function
_start:
	cmp $MAX_CPUS, %rdx
	ja too_many_cpus
	cmp $MAX_CPUS, %rdi
	jae too_many_cpus

	/* RSP = top of this vCPU's stack: stacks + (index + 1) << STACK_SHIFT. */
	lea 1(%rdi), %rax
	shl $STACK_SHIFT, %rax
	lea stacks(%rip), %rsp
	add %rax, %rsp
	xor %ebp, %ebp /* end of the frame chain for debuggers */
	call guest_main
	/* guest_main never returns; park the vCPU if it does. */
	jmp park

too_many_cpus:
	mov $EXIT_TOO_MANY_CPUS, %eax
	mov $DEBUG_EXIT_PORT, %dx
	out %eax, %dx
park:
	cli
	hlt
	jmp park
	.size _start, . - _start

	.section .bss
	.balign 4096
stacks:
	.skip MAX_CPUS << STACK_SHIFT

	.section .note.GNU-stack, "", @progbits
