/*
 * C reference VMM for Pinion's vCPU benchmarks and boot tests: boots the test
 * guest (dist/guest/pinion-guest.elf, built by scripts/build-guest.sh) with
 * exactly Pinion's direct 64-bit boot contract, so the TypeScript VMM's exit
 * cost can be given as a ratio measured in the same rig run.
 *
 * Build: cc -O2 -Wall -pthread -I <kernel uapi headers> -o piobench bench/ref/piobench.c
 * (the host's /usr/include/linux/kvm.h works too).
 *
 *   piobench GUEST_ELF console [CMDLINE] [NCPUS]
 *       Runs the guest, one thread per vCPU; bytes written to the UART's THR
 *       (port 0x3f8) go to stdout. Exits with the guest's debug-exit status
 *       (port 0xf4, v & 0xff), or prints one line on stderr and exits 1 on
 *       KVM_EXIT_SHUTDOWN / FAIL_ENTRY / INTERNAL_ERROR / an unexpected exit.
 *   piobench GUEST_ELF pio N_EXITS ROUNDS
 *       Boots one vCPU with cmdline "pio"; per round, runs until N_EXITS
 *       KVM_EXIT_IO writes to port 0x80 were handled and prints
 *       {"op":"pio","exits":N,"ns":<total>,"nsPerExit":<float>}. The first
 *       round includes the guest's boot up to its loop.
 *
 * Built with -DPIOBENCH_LIB -shared -fPIC it is instead a library of one
 * function, piobench_batch(), the same exit loop on a vCPU someone else made:
 * bench/pio.ts runs it on Pinion's own vCPU, so both sides drive the same VM,
 * guest and vCPU in one process and only the exit loop differs.
 *
 * Boot contract: ELF PT_LOAD segments copied to p_paddr (>= 1 MiB), the rest
 * to p_memsz zeroed; GDT at 0x500 (null, code 0x08, data 0x10, busy TSS 0x18);
 * identity map of the low 4 GiB with 2 MiB pages (PML4 0x9000, PDPT 0xa000,
 * PDs 0xb000..0xefff); command line at 0x20000; long mode, no IDT,
 * RFLAGS = 0x2, RSP = 0, RDI = vCPU index, RSI = 0x20000, RDX = vCPU count,
 * RCX = RAM size. Ports: 16550 at 0x3f8, debug exit 0xf4, POST 0x80 ignored,
 * everything else (PCI config included) reads all ones.
 *
 * Errors: one line on stderr naming the failing call and strerror, exit 1.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE (64ull << 20)
#define TSS_ADDR 0xfffbd000ull
#define IDENTITY_MAP_ADDR 0xfffbc000ull

#define GDT_ADDR 0x500ull
#define PML4_ADDR 0x9000ull
#define PDPT_ADDR 0xa000ull
#define PD_ADDR 0xb000ull /* four PDs, 0xb000..0xefff */
#define CMDLINE_ADDR 0x20000ull
#define CMDLINE_MAX 4095
#define LOAD_MIN 0x100000ull

#define SEL_CODE 0x08
#define SEL_DATA 0x10
#define SEL_TSS 0x18

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_WP (1ull << 16)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

#define PORT_COM1 0x3f8
#define PORT_DEBUG_EXIT 0xf4
#define PORT_POST 0x80
#define UART_LSR_THRE_TEMT 0x60
#define UART_IIR_NO_INT 0x01

#define MAX_VCPUS 64

struct vm {
	int kvm;
	int fd;
	uint8_t *ram;
	uint64_t entry;
	int ncpus;
	struct kvm_cpuid2 *cpuid;
	size_t run_size;
};

struct vcpu {
	struct vm *vm;
	int index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

#ifndef PIOBENCH_LIB
static void die(const char *what)
{
	fprintf(stderr, "piobench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *msg)
{
	fprintf(stderr, "piobench: %s\n", msg);
	exit(1);
}

/* ioctl or die, naming the request as the kernel headers do. */
#define IOCTL(fd, req, arg) xioctl((fd), (req), (unsigned long)(arg), #req)

static int xioctl(int fd, unsigned long req, unsigned long arg, const char *name)
{
	int r = ioctl(fd, req, arg);

	if (r < 0)
		die(name);
	return r;
}

/* ---- ELF loading ---- */

static uint8_t *read_file(const char *path, size_t *size)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die(path);
	if (fstat(fd, &st))
		die("fstat");
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		die("malloc");
	for (size_t done = 0; done < (size_t)st.st_size;) {
		ssize_t n = read(fd, buf + done, st.st_size - done);

		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			die("read");
		}
		done += n;
	}
	close(fd);
	*size = st.st_size;
	return buf;
}

/* Copies every PT_LOAD to p_paddr and zeroes up to p_memsz; returns e_entry. */
static uint64_t load_elf(uint8_t *ram, const char *path)
{
	size_t size;
	uint8_t *f = read_file(path, &size);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
	uint64_t entry;
	int loaded = 0;

	if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_machine != EM_X86_64 || eh->e_type != ET_EXEC)
		fail("guest: not an ELF64 x86-64 executable");
	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phoff > size || (size - eh->e_phoff) / sizeof(Elf64_Phdr) < eh->e_phnum)
		fail("guest: bad program header table");
	for (int i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr *ph = (Elf64_Phdr *)(f + eh->e_phoff) + i;

		if (ph->p_type != PT_LOAD)
			continue;
		if (ph->p_filesz > ph->p_memsz || ph->p_offset > size || size - ph->p_offset < ph->p_filesz)
			fail("guest: PT_LOAD outside the file");
		if (ph->p_paddr < LOAD_MIN || ph->p_paddr > RAM_SIZE || RAM_SIZE - ph->p_paddr < ph->p_memsz)
			fail("guest: PT_LOAD outside [1 MiB, end of RAM)");
		memcpy(ram + ph->p_paddr, f + ph->p_offset, ph->p_filesz);
		memset(ram + ph->p_paddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
		loaded++;
	}
	if (!loaded)
		fail("guest: no PT_LOAD segment");
	entry = eh->e_entry;
	free(f);
	return entry;
}

/* ---- VMM-owned low memory: GDT, page tables, command line ---- */

static void write_boot_tables(uint8_t *ram, const char *cmdline)
{
	uint64_t *gdt = (uint64_t *)(ram + GDT_ADDR);
	uint64_t *pml4 = (uint64_t *)(ram + PML4_ADDR);
	uint64_t *pdpt = (uint64_t *)(ram + PDPT_ADDR);
	uint64_t *pd = (uint64_t *)(ram + PD_ADDR);
	size_t len = strlen(cmdline);

	gdt[0] = 0;
	gdt[1] = 0x00af9b000000ffffull; /* 64-bit code, selector 0x08 */
	gdt[2] = 0x00cf93000000ffffull; /* data, selector 0x10 */
	/* Busy TSS placeholder: VMX and SVM want a usable TR, nothing loads it. */
	gdt[3] = 0x008f8b000000ffffull;

	/* Identity map of [0, 4 GiB): 2048 2 MiB pages in four PDs. */
	pml4[0] = PDPT_ADDR | 0x3; /* present | rw */
	for (int i = 0; i < 4; i++)
		pdpt[i] = (PD_ADDR + i * 0x1000ull) | 0x3;
	for (uint64_t i = 0; i < 4 * 512; i++)
		pd[i] = (i << 21) | 0x83; /* present | rw | PS */

	if (len > CMDLINE_MAX)
		fail("command line longer than 4095 bytes");
	memcpy(ram + CMDLINE_ADDR, cmdline, len + 1);
}

/* ---- VM and vCPUs ---- */

static struct kvm_cpuid2 *supported_cpuid(int kvm)
{
	for (unsigned n = 128;; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c)
			die("calloc");
		c->nent = n;
		if (!ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c))
			return c;
		if (errno != E2BIG || n >= 4096)
			die("KVM_GET_SUPPORTED_CPUID");
		free(c);
	}
}

static void create_vm(struct vm *vm, int ncpus, const char *elf, const char *cmdline)
{
	struct kvm_pit_config pit = { .flags = 0 };
	struct kvm_userspace_memory_region mem = { .slot = 0 };
	int r;

	vm->ncpus = ncpus;
	vm->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm < 0)
		die("open /dev/kvm");
	r = IOCTL(vm->kvm, KVM_GET_API_VERSION, 0);
	if (r != KVM_API_VERSION) {
		fprintf(stderr, "piobench: KVM_GET_API_VERSION: %d, want %d\n", r, KVM_API_VERSION);
		exit(1);
	}
	vm->fd = IOCTL(vm->kvm, KVM_CREATE_VM, 0);
	IOCTL(vm->fd, KVM_SET_TSS_ADDR, TSS_ADDR);
	uint64_t identity = IDENTITY_MAP_ADDR;
	IOCTL(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &identity);
	/* In-kernel LAPIC/IOAPIC/PIC: HLT and the APs' MP state stay in KVM. */
	IOCTL(vm->fd, KVM_CREATE_IRQCHIP, 0);
	IOCTL(vm->fd, KVM_CREATE_PIT2, &pit);

	vm->ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->ram == MAP_FAILED)
		die("mmap guest RAM");
	mem.guest_phys_addr = 0;
	mem.memory_size = RAM_SIZE;
	mem.userspace_addr = (uintptr_t)vm->ram;
	IOCTL(vm->fd, KVM_SET_USER_MEMORY_REGION, &mem);

	vm->entry = load_elf(vm->ram, elf);
	write_boot_tables(vm->ram, cmdline);
	vm->cpuid = supported_cpuid(vm->kvm);
	vm->run_size = IOCTL(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
}

/* The supported CPUID with this vCPU's initial APIC id (= its LAPIC id). */
static void set_cpuid(struct vcpu *v)
{
	struct kvm_cpuid2 *src = v->vm->cpuid;
	size_t bytes = sizeof(*src) + src->nent * sizeof(src->entries[0]);
	struct kvm_cpuid2 *c = malloc(bytes);

	if (!c)
		die("malloc");
	memcpy(c, src, bytes);
	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffff) | (uint32_t)v->index << 24;
		else if (e->function == 0xb || e->function == 0x1f)
			e->edx = v->index; /* x2APIC id, every subleaf */
	}
	IOCTL(v->fd, KVM_SET_CPUID2, c);
	free(c);
}

static void set_sregs(struct vcpu *v)
{
	struct kvm_sregs s;
	struct kvm_segment code = {
		.base = 0,
		.limit = 0xffffffff,
		.selector = SEL_CODE,
		.type = 11,
		.present = 1,
		.dpl = 0,
		.db = 0,
		.s = 1,
		.l = 1,
		.g = 1,
	};
	struct kvm_segment data = {
		.base = 0,
		.limit = 0xffffffff,
		.selector = SEL_DATA,
		.type = 3,
		.present = 1,
		.dpl = 0,
		.db = 1,
		.s = 1,
		.l = 0,
		.g = 1,
	};

	IOCTL(v->fd, KVM_GET_SREGS, &s); /* keeps apic_base and the rest */
	s.cs = code;
	s.ds = s.es = s.fs = s.gs = s.ss = data;
	s.tr = (struct kvm_segment){
		.base = 0,
		.limit = 0xffff,
		.selector = SEL_TSS,
		.type = 11,
		.present = 1,
		.s = 0,
	};
	s.ldt = (struct kvm_segment){
		.base = 0,
		.limit = 0xffff,
		.selector = 0,
		.type = 2,
		.present = 1,
		.s = 0,
	};
	s.gdt.base = GDT_ADDR;
	s.gdt.limit = 4 * 8 - 1;
	s.idt.base = 0;
	s.idt.limit = 0; /* no IDT: any exception ends in a triple fault */
	s.cr3 = PML4_ADDR;
	s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	/* 0x80010033: as src/vmm/boot.ts; no AM (Linux's CR0_STATE has it), CPL 0 only. */
	s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	s.efer = EFER_LME | EFER_LMA;
	IOCTL(v->fd, KVM_SET_SREGS, &s);
}

static void set_regs(struct vcpu *v)
{
	struct kvm_regs r = {
		.rflags = 0x2,
		.rip = v->vm->entry,
		.rsp = 0,
		.rdi = v->index,
		.rsi = CMDLINE_ADDR,
		.rdx = v->vm->ncpus,
		.rcx = RAM_SIZE,
	};

	IOCTL(v->fd, KVM_SET_REGS, &r);
}

static void create_vcpu(struct vm *vm, struct vcpu *v, int index)
{
	v->vm = vm;
	v->index = index;
	v->fd = IOCTL(vm->fd, KVM_CREATE_VCPU, index);
	set_cpuid(v);
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED)
		die("mmap kvm_run");
	set_sregs(v);
	set_regs(v);
	if (index > 0) {
		/* With the in-kernel LAPIC an AP waits for INIT/SIPI; start it now. */
		struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };

		IOCTL(v->fd, KVM_SET_MP_STATE, &mp);
	}
}

/* ---- exits ---- */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* Ends the process: the first vCPU to get here decides the exit status. */
static void __attribute__((noreturn)) vm_end(int status)
{
	pthread_mutex_lock(&out_lock);
	fflush(stdout);
	fflush(stderr);
	_exit(status);
}

static void serial_out(uint8_t c)
{
	pthread_mutex_lock(&out_lock);
	putchar(c);
	if (c == '\n')
		fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

static uint8_t port_read(uint16_t port)
{
	if (port < PORT_COM1 || port > PORT_COM1 + 7)
		return 0xff; /* nothing claims it: all ones (PCI config included) */
	switch (port - PORT_COM1) {
	case 2:
		return UART_IIR_NO_INT;
	case 5:
		return UART_LSR_THRE_TEMT;
	default:
		return 0;
	}
}

/* Handles one KVM_EXIT_IO; returns -1 to keep going, else the exit status. */
static int handle_io(struct kvm_run *run)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	uint32_t bytes = run->io.size * run->io.count;

	if (run->io.direction == KVM_EXIT_IO_IN) {
		for (uint32_t i = 0; i < bytes; i++)
			data[i] = run->io.size == 1 ? port_read(run->io.port) : 0xff;
		return -1;
	}
	switch (run->io.port) {
	case PORT_COM1:
		for (uint32_t i = 0; i < run->io.count; i++)
			serial_out(data[i * run->io.size]);
		return -1;
	case PORT_DEBUG_EXIT:
		return data[0]; /* low byte of any width: little endian */
	default:
		return -1; /* POST port and everything else: ignored */
	}
}

static void __attribute__((noreturn)) report_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	struct kvm_regs regs;
	char detail[96] = "";
	const char *what;

	switch (run->exit_reason) {
	case KVM_EXIT_SHUTDOWN:
		what = "KVM_EXIT_SHUTDOWN (triple fault)";
		break;
	case KVM_EXIT_FAIL_ENTRY:
		what = "KVM_EXIT_FAIL_ENTRY";
		snprintf(detail, sizeof(detail), " reason 0x%llx", (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		what = "KVM_EXIT_INTERNAL_ERROR";
		snprintf(detail, sizeof(detail), " suberror %u", run->internal.suberror);
		break;
	default:
		what = "unexpected exit";
		snprintf(detail, sizeof(detail), " reason %u", run->exit_reason);
	}
	/* On SVM, KVM resets the vCPU after a shutdown, so RIP reads 0xfff0 there. */
	if (ioctl(v->fd, KVM_GET_REGS, &regs))
		regs.rip = ~0ull;
	pthread_mutex_lock(&out_lock);
	fflush(stdout);
	fprintf(stderr, "piobench: vcpu %d: %s%s at rip 0x%llx\n", v->index, what, detail, (unsigned long long)regs.rip);
	fflush(stderr);
	_exit(1);
}

/* One KVM_RUN and its exit; returns -1 to keep going, else the exit status. */
static int run_once(struct vcpu *v)
{
	if (ioctl(v->fd, KVM_RUN, 0) < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return -1;
		die("KVM_RUN");
	}
	if (v->run->exit_reason != KVM_EXIT_IO)
		report_exit(v);
	return handle_io(v->run);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	int status;

	while ((status = run_once(v)) < 0)
		;
	vm_end(status);
}

static int console(struct vm *vm, struct vcpu *vcpus)
{
	for (int i = 0; i < vm->ncpus; i++) {
		errno = pthread_create(&vcpus[i].thread, NULL, vcpu_thread, &vcpus[i]);
		if (errno)
			die("pthread_create");
	}
	for (int i = 0; i < vm->ncpus; i++)
		pthread_join(vcpus[i].thread, NULL); /* vm_end() exits first */
	return 1;
}

static int pio(struct vcpu *v, unsigned long exits, unsigned long rounds)
{
	struct kvm_run *run = v->run;

	for (unsigned long r = 0; r < rounds; r++) {
		unsigned long done = 0;
		uint64_t t0 = now_ns(), ns;

		while (done < exits) {
			int status = run_once(v);

			if (status >= 0) {
				fprintf(stderr, "piobench: guest exited with %d in pio mode\n", status);
				return 1;
			}
			if (run->io.port == PORT_POST && run->io.direction == KVM_EXIT_IO_OUT)
				done++;
		}
		ns = now_ns() - t0;
		printf("{\"op\":\"pio\",\"exits\":%lu,\"ns\":%llu,\"nsPerExit\":%.1f}\n", exits, (unsigned long long)ns,
		       (double)ns / exits);
		fflush(stdout);
	}
	return 0;
}

static unsigned long parse_count(const char *s, const char *what)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || !v) {
		fprintf(stderr, "piobench: %s must be a positive integer, got '%s'\n", what, s);
		exit(2);
	}
	return v;
}

static void usage(void)
{
	fprintf(stderr, "usage: piobench GUEST_ELF console [CMDLINE] [NCPUS]\n"
			"       piobench GUEST_ELF pio N_EXITS ROUNDS\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct vm vm = { 0 };
	struct vcpu *vcpus;
	unsigned long ncpus = 1, exits = 0, rounds = 0;
	const char *cmdline = "";
	int is_pio;

	if (argc < 3)
		usage();
	is_pio = !strcmp(argv[2], "pio");
	if (is_pio ? argc != 5 : strcmp(argv[2], "console") || argc > 5)
		usage();
	if (is_pio) {
		cmdline = "pio";
		exits = parse_count(argv[3], "N_EXITS");
		rounds = parse_count(argv[4], "ROUNDS");
	} else {
		if (argc > 3)
			cmdline = argv[3];
		if (argc > 4)
			ncpus = parse_count(argv[4], "NCPUS");
		if (ncpus > MAX_VCPUS)
			fail("NCPUS: at most 64");
	}
	create_vm(&vm, ncpus, argv[1], cmdline);
	vcpus = calloc(ncpus, sizeof(*vcpus));
	if (!vcpus)
		die("calloc");
	for (int i = 0; i < vm.ncpus; i++)
		create_vcpu(&vm, &vcpus[i], i);
	return is_pio ? pio(&vcpus[0], exits, rounds) : console(&vm, vcpus);
}
#else

/* One row per kind of exit seen besides the target: reason, port or address, is write, size, count. */
#define TALLY_COLS 5
#define REASON_INTERRUPTED 0xffffffffull /* KVM_RUN returned EINTR or EAGAIN: no exit to handle */

static void tally(uint64_t *t, uint32_t rows, uint64_t reason, uint64_t addr, uint64_t write, uint64_t size)
{
	for (uint32_t i = 0; i < rows; i++) {
		uint64_t *r = t + i * TALLY_COLS;

		/* The last row takes whatever finds no row of its own. */
		if (!r[4] || i == rows - 1 || (r[0] == reason && r[1] == addr && r[2] == write && r[3] == size)) {
			if (!r[4]) {
				r[0] = reason;
				r[1] = addr;
				r[2] = write;
				r[3] = size;
			}
			r[4]++;
			return;
		}
	}
}

/*
 * Runs vcpu_fd (its kvm_run mapped by the caller at run_addr) until `want` target exits were handled (mmio = 0: OUT to port `target`; mmio = 1: a write to
 * guest-physical `target`), reads answered all ones and writes ignored as Pinion's unclaimed ports and addresses
 * are. Every other exit is counted in `t` (rows x TALLY_COLS, zeroed by the caller). Returns the ns taken, or
 * -errno (-EPROTO: an exit the loop cannot go on from, e.g. a shutdown; its reason is in the tally).
 */
int64_t piobench_batch(int vcpu_fd, uint64_t run_addr, int mmio, uint64_t target, uint64_t want, uint64_t *t, uint32_t rows)
{
	struct kvm_run *run = (struct kvm_run *)(uintptr_t)run_addr;
	uint64_t done = 0, t0;

	t0 = now_ns();
	while (done < want) {
		if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
			if (errno != EINTR && errno != EAGAIN)
				return -errno;
			run->immediate_exit = 0;
			tally(t, rows, REASON_INTERRUPTED, 0, 0, 0);
			continue;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			int out = run->io.direction == KVM_EXIT_IO_OUT;

			if (!mmio && out && run->io.port == target) {
				done++;
				continue;
			}
			if (!out)
				memset((uint8_t *)run + run->io.data_offset, 0xff, run->io.size * run->io.count);
			tally(t, rows, KVM_EXIT_IO, run->io.port, out, run->io.size);
			break;
		}
		case KVM_EXIT_MMIO:
			if (mmio && run->mmio.is_write && run->mmio.phys_addr == target) {
				done++;
				continue;
			}
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0xff, run->mmio.len);
			tally(t, rows, KVM_EXIT_MMIO, run->mmio.phys_addr, run->mmio.is_write, run->mmio.len);
			break;
		case KVM_EXIT_INTR:
			tally(t, rows, KVM_EXIT_INTR, 0, 0, 0);
			break;
		default:
			tally(t, rows, run->exit_reason, 0, 0, 0);
			return -EPROTO;
		}
	}
	return (int64_t)(now_ns() - t0);
}
#endif
