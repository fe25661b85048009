/*
 * N tag-checked 8-byte loads over a 64 KiB PROT_MTE buffer, in sync mode,
 * set up as the Linux selftests' helpers do
 * (tools/testing/selftests/arm64/mte/mte_common_util.c): prctl
 * PR_SET_TAGGED_ADDR_CTRL with PR_MTE_TCF_SYNC, mmap with PROT_MTE, IRG for
 * a random tag, STG on every granule. The loads walk the buffer with a
 * stride of 72 bytes (different granules and pages in turn), as
 * mtesim's `checked_loads` example and access bench do.
 *
 * Usage: checked_loads N    prints "ns/load <float>" on stdout: the best
 * of five rounds of N loads, in CPU time of the thread
 * (CLOCK_THREAD_CPUTIME_ID, which qemu-user answers with the host thread's
 * CPU time), so that other work on a shared machine does not count.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>

#ifndef PR_SET_TAGGED_ADDR_CTRL
#define PR_SET_TAGGED_ADDR_CTRL 55
#endif
#ifndef PR_TAGGED_ADDR_ENABLE
#define PR_TAGGED_ADDR_ENABLE (1UL << 0)
#endif
#ifndef PR_MTE_TCF_SYNC
#define PR_MTE_TCF_SYNC (1UL << 1)
#endif
#ifndef PR_MTE_TAG_SHIFT
#define PR_MTE_TAG_SHIFT 3
#endif
#ifndef PROT_MTE
#define PROT_MTE 0x20
#endif

#define LEN (64 * 1024)
#define STRIDE 72
#define GRANULE 16

static inline uint64_t *irg(uint64_t *p)
{
	uint64_t *out;
	asm volatile("irg %0, %1" : "=r"(out) : "r"(p));
	return out;
}

static inline void stg(void *p)
{
	asm volatile("stg %0, [%0]" : : "r"(p) : "memory");
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s N\n", argv[0]);
		return 2;
	}
	long n = atol(argv[1]);
	if (n <= 0) {
		fprintf(stderr, "N must be a positive number of loads\n");
		return 2;
	}
	if (prctl(PR_SET_TAGGED_ADDR_CTRL,
		  PR_TAGGED_ADDR_ENABLE | PR_MTE_TCF_SYNC | (0xfffeUL << PR_MTE_TAG_SHIFT),
		  0, 0, 0)) {
		perror("prctl(PR_SET_TAGGED_ADDR_CTRL): no MTE");
		return 1;
	}
	uint64_t *buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE | PROT_MTE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap(PROT_MTE)");
		return 1;
	}
	uint64_t *tagged = irg(buf);
	for (char *g = (char *)tagged; g < (char *)tagged + LEN; g += GRANULE)
		stg(g);
	for (size_t i = 0; i < LEN / 8; i++)
		tagged[i] = 0x5a5a5a5a5a5a5a5aULL;
	volatile uint64_t sink = 0;
	double best = 0;
	for (int round = 0; round < 5; round++) {
		uint64_t sum = 0;
		double start = now_ns();
		for (long i = 0; i < n; i++) {
			uint64_t off = ((uint64_t)i * STRIDE) % (LEN - 8);
			sum += *(volatile uint64_t *)((char *)tagged + off);
		}
		double t = now_ns() - start;
		sink = sum;
		if (round == 0 || t < best)
			best = t;
	}
	(void)sink;
	printf("ns/load %.3f\n", best / n);
	return 0;
}
