/*
 * C reference for Pinion's map/unmap benchmarks: the same ioctls on the same
 * kernel, timed with CLOCK_MONOTONIC, so Pinion's figures can be given as a
 * ratio measured in one rig run.
 *
 *   mapbench type1   GROUP_PATH:BDF BACKING SIZE ITERS
 *   mapbench iommufd VFIO_CDEV     BACKING SIZE ITERS
 *   mapbench small   type1|iommufd DEV     ITERS      (4 KiB map+unmap pairs)
 *   mapbench batch   type1|iommufd DEV N   ITERS      (N 4 KiB maps, then their N unmaps)
 *
 * The type1 path opens the device too: iommufd's compat container pins only
 * once a device has a domain. BACKING: anon | thp | memfd | hugetlb. Prints one JSON object per line:
 * {"op":"map","ns":...} and {"op":"unmap","ns":...}, one per iteration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define IOVA_BASE 0x100000000ull

static void die(const char *what)
{
	fprintf(stderr, "mapbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

struct backing {
	void *va;
	int memfd; /* -1 unless memfd */
};

__attribute__((unused)) static struct backing alloc_backing(const char *kind, size_t size)
{
	struct backing b = { .memfd = -1 };
	int flags = MAP_SHARED | MAP_ANONYMOUS;

	if (!strcmp(kind, "memfd")) {
		b.memfd = memfd_create("mapbench", MFD_CLOEXEC);
		if (b.memfd < 0 || ftruncate(b.memfd, size))
			die("memfd");
		b.va = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, b.memfd, 0);
	} else {
		if (!strcmp(kind, "hugetlb"))
			flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
		else
			flags = MAP_PRIVATE | MAP_ANONYMOUS;
		b.va = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
	}
	if (b.va == MAP_FAILED)
		die("mmap");
	if (!strcmp(kind, "thp"))
		madvise(b.va, size, MADV_HUGEPAGE);
	else if (!strcmp(kind, "anon"))
		madvise(b.va, size, MADV_NOHUGEPAGE);
	/* Populate first: the benchmark measures pinning and mapping, not faults. */
	if (madvise(b.va, size, MADV_POPULATE_WRITE))
		die("MADV_POPULATE_WRITE");
	return b;
}

struct path {
	int fd;
	int ioas; /* iommufd only */
	int type1;
};

__attribute__((unused)) static struct path open_type1(const char *group_bdf)
{
	struct path p = { .type1 = 1 };
	char group_path[64];
	const char *bdf = strchr(group_bdf, ':');
	int group;

	if (!bdf || bdf - group_bdf >= (long)sizeof(group_path)) {
		fprintf(stderr, "mapbench: type1 wants GROUP_PATH:BDF\n");
		exit(2);
	}
	memcpy(group_path, group_bdf, bdf - group_bdf);
	group_path[bdf - group_bdf] = 0;
	bdf++;
	p.fd = open("/dev/vfio/vfio", O_RDWR);
	group = open(group_path, O_RDWR);
	if (p.fd < 0 || group < 0)
		die("open container/group");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &p.fd))
		die("VFIO_GROUP_SET_CONTAINER");
	if (ioctl(p.fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("VFIO_SET_IOMMU");
	if (ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf) < 0)
		die("VFIO_GROUP_GET_DEVICE_FD");
	return p;
}

__attribute__((unused)) static struct path open_iommufd(const char *cdev)
{
	struct path p = { 0 };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };
	int dev;

	p.fd = open("/dev/iommu", O_RDWR);
	dev = open(cdev, O_RDWR);
	if (p.fd < 0 || dev < 0)
		die("open /dev/iommu or cdev");
	if (ioctl(p.fd, IOMMU_IOAS_ALLOC, &alloc))
		die("IOMMU_IOAS_ALLOC");
	p.ioas = alloc.out_ioas_id;
	bind.iommufd = p.fd;
	if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		die("VFIO_DEVICE_BIND_IOMMUFD");
	attach.pt_id = p.ioas;
	if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach))
		die("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
	return p;
}

/* 0, or -errno with *what naming the ioctl that failed. */
static int map(struct path *p, struct backing *b, void *va, uint64_t iova, uint64_t size, const char **what)
{
	if (p->type1) {
		struct vfio_iommu_type1_dma_map m = {
			.argsz = sizeof(m),
			.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
			.vaddr = (uintptr_t)va,
			.iova = iova,
			.size = size,
		};
		if (ioctl(p->fd, VFIO_IOMMU_MAP_DMA, &m))
			return *what = "VFIO_IOMMU_MAP_DMA", -errno;
	} else if (b && b->memfd >= 0) {
		struct iommu_ioas_map_file m = {
			.size = sizeof(m),
			.ioas_id = p->ioas,
			.fd = b->memfd,
			.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
			.start = (uint64_t)((char *)va - (char *)b->va),
			.length = size,
			.iova = iova,
		};
		if (ioctl(p->fd, IOMMU_IOAS_MAP_FILE, &m))
			return *what = "IOMMU_IOAS_MAP_FILE", -errno;
	} else {
		struct iommu_ioas_map m = {
			.size = sizeof(m),
			.ioas_id = p->ioas,
			.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
			.user_va = (uintptr_t)va,
			.length = size,
			.iova = iova,
		};
		if (ioctl(p->fd, IOMMU_IOAS_MAP, &m))
			return *what = "IOMMU_IOAS_MAP", -errno;
	}
	return 0;
}

static int unmap(struct path *p, uint64_t iova, uint64_t size, const char **what)
{
	if (p->type1) {
		struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = size };
		if (ioctl(p->fd, VFIO_IOMMU_UNMAP_DMA, &u))
			return *what = "VFIO_IOMMU_UNMAP_DMA", -errno;
	} else {
		struct iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = p->ioas, .iova = iova, .length = size };
		if (ioctl(p->fd, IOMMU_IOAS_UNMAP, &u))
			return *what = "IOMMU_IOAS_UNMAP", -errno;
	}
	return 0;
}

/* n 4 KiB maps (page i of vaddr at iova + i * 4 KiB), then their n unmaps, reps times: ns in all, or -errno. */
static int64_t batch(struct path *p, char *va, uint64_t iova, int n, int reps)
{
	const char *what;
	uint64_t t0 = now_ns();

	for (int r = 0; r < reps; r++) {
		for (int i = 0; i < n; i++) {
			int e = map(p, NULL, va + (size_t)i * 4096, iova + (uint64_t)i * 4096, 4096, &what);
			if (e)
				return e;
		}
		for (int i = 0; i < n; i++) {
			int e = unmap(p, iova + (uint64_t)i * 4096, 4096, &what);
			if (e)
				return e;
		}
	}
	return (int64_t)(now_ns() - t0);
}

#ifdef MAPBENCH_LIB
/* One map+unmap pair of [vaddr, vaddr+size) (or memfd at offset) at iova: ns taken, or -errno. */
int64_t mapbench_pair(int fd, int type1, uint32_t ioas, uint64_t vaddr, int memfd, uint64_t offset, uint64_t iova, uint64_t size)
{
	struct path p = { .fd = fd, .ioas = (int)ioas, .type1 = type1 };
	struct backing b = { .va = (char *)(uintptr_t)vaddr - offset, .memfd = memfd };
	const char *what;
	uint64_t t0 = now_ns();
	int r = map(&p, memfd >= 0 ? &b : NULL, (void *)(uintptr_t)vaddr, iova, size, &what);

	if (!r)
		r = unmap(&p, iova, size, &what);
	return r ? r : (int64_t)(now_ns() - t0);
}

/*
 * n pairs in one clock span: ns taken, or -errno. bench/map.ts times n of its own pairs the same way, so both
 * sides' figure is one span over n pairs and neither pays a clock read per pair.
 */
int64_t mapbench_pairs(int fd, int type1, uint32_t ioas, uint64_t vaddr, int memfd, uint64_t offset, uint64_t iova, uint64_t size,
		       uint32_t n)
{
	struct path p = { .fd = fd, .ioas = (int)ioas, .type1 = type1 };
	struct backing b = { .va = (char *)(uintptr_t)vaddr - offset, .memfd = memfd };
	const char *what;
	uint64_t t0 = now_ns();

	for (uint32_t i = 0; i < n; i++) {
		int r = map(&p, memfd >= 0 ? &b : NULL, (void *)(uintptr_t)vaddr, iova, size, &what);

		if (!r)
			r = unmap(&p, iova, size, &what);
		if (r)
			return r;
	}
	return (int64_t)(now_ns() - t0);
}

/* The ioctls of a batch of n 4 KiB pairs, as Pinion's batch issues them: ns for reps batches, or -errno. */
int64_t mapbench_batch(int fd, int type1, uint32_t ioas, uint64_t vaddr, uint64_t iova, int n, int reps)
{
	struct path p = { .fd = fd, .ioas = (int)ioas, .type1 = type1 };

	return batch(&p, (char *)(uintptr_t)vaddr, iova, n, reps);
}

/*
 * A guest memory map brought up from nothing and taken down again, with the
 * ioctls DmaMapper.sync issues for it: one map per RAM range, in IOVA order,
 * then one unmap per range. ranges holds n triples (gpa, size, offset into
 * the RAM at vaddr, and into memfd when memfd >= 0: mapped by file, as
 * iommufd maps memfd RAM). ns_out[0] gets the maps' ns, ns_out[1] the unmaps';
 * returns their sum, or -errno.
 */
int64_t mapbench_sync(int fd, int type1, uint32_t ioas, uint64_t vaddr, int memfd, const uint64_t *ranges, int n, int64_t *ns_out)
{
	struct path p = { .fd = fd, .ioas = (int)ioas, .type1 = type1 };
	struct backing b = { .va = (void *)(uintptr_t)vaddr, .memfd = memfd };
	const char *what;
	uint64_t t0 = now_ns(), t1;

	for (int i = 0; i < n; i++) {
		const uint64_t *r = &ranges[3 * i];
		int e = map(&p, memfd >= 0 ? &b : NULL, (char *)b.va + r[2], r[0], r[1], &what);
		if (e)
			return e;
	}
	t1 = now_ns();
	for (int i = 0; i < n; i++) {
		int e = unmap(&p, ranges[3 * i], ranges[3 * i + 1], &what);
		if (e)
			return e;
	}
	ns_out[0] = (int64_t)(t1 - t0);
	ns_out[1] = (int64_t)(now_ns() - t1);
	return ns_out[0] + ns_out[1];
}
#else
static void must(int r, const char *what)
{
	if (r) {
		errno = -r;
		die(what);
	}
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "small")) {
		struct path p = !strcmp(argv[2], "type1") ? open_type1(argv[3]) : open_iommufd(argv[3]);
		int iters = atoi(argv[4]);
		struct backing b = alloc_backing("anon", 4096);
		uint64_t t0;

		const char *what = "";

		must(map(&p, NULL, b.va, IOVA_BASE, 4096, &what), what);
		must(unmap(&p, IOVA_BASE, 4096, &what), what);
		t0 = now_ns();

		for (int i = 0; i < iters; i++) {
			must(map(&p, NULL, b.va, IOVA_BASE, 4096, &what), what);
			must(unmap(&p, IOVA_BASE, 4096, &what), what);
		}
		printf("{\"op\":\"map+unmap 4K\",\"ns\":%llu}\n", (unsigned long long)((now_ns() - t0) / iters));
		return 0;
	}
	if (argc == 6 && !strcmp(argv[1], "batch")) {
		struct path p = !strcmp(argv[2], "type1") ? open_type1(argv[3]) : open_iommufd(argv[3]);
		int n = atoi(argv[4]), iters = atoi(argv[5]);
		struct backing b = alloc_backing("anon", (size_t)n * 4096);
		int64_t ns;

		/* One unreported batch first, as the mitata side warms up too. */
		ns = batch(&p, b.va, IOVA_BASE, n, 1);
		if (ns >= 0)
			ns = batch(&p, b.va, IOVA_BASE, n, iters);
		if (ns < 0)
			must((int)ns, "batch");
		printf("{\"op\":\"map+unmap 4K, batch of %d\",\"nsPerPair\":%lld}\n", n, (long long)(ns / ((int64_t)n * iters)));
		return 0;
	}
	if (argc != 6) {
		fprintf(stderr, "usage: mapbench type1|iommufd GROUP|CDEV anon|thp|memfd|hugetlb SIZE ITERS\n"
				"       mapbench small type1|iommufd GROUP|CDEV ITERS\n"
				"       mapbench batch type1|iommufd GROUP|CDEV N ITERS\n");
		return 2;
	}
	struct path p = !strcmp(argv[1], "type1") ? open_type1(argv[2]) : open_iommufd(argv[2]);
	size_t size = strtoull(argv[4], NULL, 0);
	int iters = atoi(argv[5]);
	struct backing b = alloc_backing(argv[3], size);

	/* One unreported pair first, as the mitata side warms up too. */
	for (int i = -1; i < iters; i++) {
		uint64_t t0 = now_ns(), t1, t2;
		const char *what = "";

		must(map(&p, &b, b.va, IOVA_BASE, size, &what), what);
		t1 = now_ns();
		must(unmap(&p, IOVA_BASE, size, &what), what);
		t2 = now_ns();
		if (i < 0)
			continue;
		printf("{\"op\":\"map\",\"ns\":%llu}\n{\"op\":\"unmap\",\"ns\":%llu}\n", (unsigned long long)(t1 - t0),
		       (unsigned long long)(t2 - t1));
	}
	return 0;
}
#endif
