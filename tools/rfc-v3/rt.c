/*
 * The runtime of exported workloads (rt.h has the protocol), and /init.
 *
 * Every process of a workload shares one page of control state: the step
 * allowed to run (`go`), the last step finished (`done`), the pointer
 * variables and the running step's result. The workload's root hands out
 * steps one at a time and waits for each; a process waits on `go` with a
 * futex and runs the steps that are its own. A step that does not finish
 * within RT_STUCK_SECONDS is reported `stuck` (the kernel retried it for
 * ever, as the model's liveness bound says): its processes are killed and the
 * rest of the workload is abandoned.
 */
#include "rt.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_TAGGED_ADDR_CTRL
#define PR_SET_TAGGED_ADDR_CTRL 55
#define PR_GET_TAGGED_ADDR_CTRL 56
#endif
#define RT_TAGGED_ADDR (1UL << 0)
#define RT_TCF_SYNC (1UL << 1)
#define RT_TCF_ASYNC (1UL << 2)
#define RT_TAG_SHIFT 3
#define RT_TAG_MASK (0xffffUL << RT_TAG_SHIFT)
#ifndef SEGV_MTEAERR
#define SEGV_MTEAERR 8
#define SEGV_MTESERR 9
#endif

#define RT_MAX_PROCS 64
#define RT_MAX_PTRS 1024
#define RT_STUCK_SECONDS 20

struct rt_ctl {
	volatile int go;
	volatile int done;
	volatile int pid[RT_MAX_PROCS];
	volatile uint64_t ptr[RT_MAX_PTRS];
	char result[256];
};

static struct rt_ctl *ctl;
static const struct rt_workload *cur;
static int cur_step;
static sigjmp_buf fault_jmp;
static volatile int in_access;
static volatile int fault_code;
static volatile uint64_t fault_addr;

/* --- small helpers ------------------------------------------------------ */

static long futex(volatile int *word, int op, int val, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static void wake(volatile int *word)
{
	futex(word, FUTEX_WAKE, 0x7fffffff, NULL);
}

void rt_result(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctl->result, sizeof(ctl->result), fmt, ap);
	va_end(ap);
}

static const char *errno_name(int err)
{
	switch (err) {
	case EINVAL: return "EINVAL";
	case ENOMEM: return "ENOMEM";
	case EFAULT: return "EFAULT";
	case EIO: return "EIO";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ESRCH: return "ESRCH";
	case EAGAIN: return "EAGAIN";
	default: return NULL;
	}
}

void rt_error(int err)
{
	const char *name = errno_name(err);
	if (name)
		rt_result("error %s", name);
	else
		rt_result("error errno%d", err);
}

uint64_t rt_ptr(int slot, long offset)
{
	uint64_t p = ctl->ptr[slot];
	/* The offset moves bits 55:0; the top byte (the logical tag) stays. */
	return (p & ~0x00ffffffffffffffUL) | ((p + (uint64_t)offset) & 0x00ffffffffffffffUL);
}

void rt_bind(int slot, uint64_t value)
{
	ctl->ptr[slot] = value;
}

uint64_t rt_with_tag(uint64_t ptr, int tag)
{
	return (ptr & ~(0xfUL << 56)) | ((uint64_t)tag << 56);
}

/* --- faults --------------------------------------------------------------- */

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	fault_code = sig == SIGBUS ? -si->si_code : si->si_code;
	fault_addr = (uint64_t)si->si_addr;
	if (in_access)
		siglongjmp(fault_jmp, 1);
	/* An asynchronous tag check fault arrives at the next kernel entry,
	 * after the access: it belongs to the step that made it. */
	if (sig == SIGSEGV && si->si_code == SEGV_MTEAERR) {
		rt_result("fault SEGV_MTEAERR");
		return;
	}
	dprintf(1, "rt: unexpected signal %d code %d at %p\n", sig, si->si_code, si->si_addr);
	_exit(99);
}

static void report_fault(void)
{
	const char *code;
	switch (fault_code) {
	case SEGV_MTESERR: code = "SEGV_MTESERR"; break;
	case SEGV_MTEAERR: code = "SEGV_MTEAERR"; break;
	case SEGV_MAPERR: code = "SEGV_MAPERR"; break;
	case SEGV_ACCERR: code = "SEGV_ACCERR"; break;
	case -BUS_ADRALN: code = "BUS_ADRALN"; break;
	default: code = "SIGNAL"; break;
	}
	rt_result("fault %s addr=0x%llx", code, (unsigned long long)fault_addr);
}

/* Runs an access with faults turned into the step's result. */
#define ACCESS(body)                                                           \
	do {                                                                   \
		if (sigsetjmp(fault_jmp, 1) == 0) {                            \
			in_access = 1;                                         \
			body;                                                  \
			in_access = 0;                                         \
		} else {                                                       \
			in_access = 0;                                         \
			report_fault();                                        \
			return;                                                \
		}                                                              \
	} while (0)

/* --- processes ------------------------------------------------------------- */

static void proc_loop(int id, int from) __attribute__((noreturn));

static void proc_loop(int id, int from)
{
	struct rt_proc self = { id };
	int seen = from - 1;

	ctl->pid[id] = getpid();
	for (;;) {
		int go = ctl->go;
		if (go <= seen) {
			futex(&ctl->go, FUTEX_WAIT, go, NULL);
			continue;
		}
		seen = go;
		if (go >= cur->nsteps)
			_exit(0);
		if (cur->steps[go].proc != id)
			continue;
		cur_step = go;
		rt_result("ok");
		cur->run(&self, go);
		ctl->done = go;
		wake(&ctl->done);
		if (cur->steps[go].kind == RT_STEP_EXIT)
			_exit(0);
	}
}

void rt_spawn(struct rt_proc *self, int id)
{
	(void)self;
	pid_t pid = fork();
	if (pid == 0)
		proc_loop(id, cur_step + 1);
	if (pid < 0)
		rt_error(errno);
	else
		ctl->pid[id] = pid;
}

void rt_fork(struct rt_proc *self, int child)
{
	(void)self;
	pid_t pid = fork();
	if (pid == 0)
		proc_loop(child, cur_step + 1);
	if (pid < 0)
		rt_error(errno);
	else
		ctl->pid[child] = pid;
}

void rt_exit(struct rt_proc *self)
{
	(void)self; /* proc_loop exits once the step is reported done */
}

/* A process is gone once it is a zombie: its memory is released by then. */
static int process_gone(pid_t pid)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static void wait_gone(pid_t pid)
{
	while (!process_gone(pid))
		usleep(1000);
}

/* --- machine commands --------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, text, strlen(text)) < 0)
		dprintf(1, "rt: cannot write %s to %s: %s\n", text, path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

void rt_compact(void)
{
	write_file("/proc/sys/vm/compact_memory", "1");
}

static long read_long(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return atol(buf);
}

/* `ksm-scan`: let ksmd make `passes` full passes over the mergeable memory,
 * as fast as it can, then stop it (merged pages stay merged). */
void rt_ksm_scan(int passes)
{
	const char *full = "/sys/kernel/mm/ksm/full_scans";
	write_file("/sys/kernel/mm/ksm/pages_to_scan", "100000");
	write_file("/sys/kernel/mm/ksm/sleep_millisecs", "0");
	long start = read_long(full);
	write_file("/sys/kernel/mm/ksm/run", "1");
	while (read_long(full) < start + passes)
		usleep(1000);
	write_file("/sys/kernel/mm/ksm/run", "0");
}

/* --- system calls ---------------------------------------------------------- */

void rt_prctl(int tagged, int tcf, int include)
{
	long ctrl = prctl(PR_GET_TAGGED_ADDR_CTRL, 0, 0, 0, 0);
	if (ctrl < 0) {
		rt_error(errno);
		return;
	}
	if (tagged >= 0)
		ctrl = tagged ? ctrl | RT_TAGGED_ADDR : ctrl & ~RT_TAGGED_ADDR;
	if (tcf >= 0) {
		ctrl &= ~(RT_TCF_SYNC | RT_TCF_ASYNC);
		/* mte::CheckMode order: none, sync, async, asymm (both). */
		if (tcf == 1 || tcf == 3)
			ctrl |= RT_TCF_SYNC;
		if (tcf == 2 || tcf == 3)
			ctrl |= RT_TCF_ASYNC;
	}
	if (include >= 0)
		ctrl = (ctrl & ~RT_TAG_MASK) | ((long)include << RT_TAG_SHIFT);
	if (prctl(PR_SET_TAGGED_ADDR_CTRL, ctrl, 0, 0, 0) < 0)
		rt_error(errno);
}

void rt_prctl_get(void)
{
	long ctrl = prctl(PR_GET_TAGGED_ADDR_CTRL, 0, 0, 0, 0);
	if (ctrl < 0)
		rt_error(errno);
	else
		rt_result("value 0x%lx", ctrl);
}

void rt_tco(int on)
{
	if (on)
		__asm__ volatile(".arch_extension memtag\n\tmsr tco, #1" ::: "memory");
	else
		__asm__ volatile(".arch_extension memtag\n\tmsr tco, #0" ::: "memory");
}

void rt_yield(void)
{
	sched_yield();
}

void rt_mmap(int slot, unsigned long len, int prot, int flags, int backing, uint64_t fixed)
{
	int fd = -1;
	if (backing == RT_SHM) {
		fd = memfd_create("rt-shm", 0);
	} else if (backing == RT_FILE) {
		char path[64];
		snprintf(path, sizeof(path), "/rt-file-%d-%d", getpid(), cur_step);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	} else {
		flags |= MAP_ANONYMOUS;
	}
	if (backing != RT_ANON && (fd < 0 || ftruncate(fd, (off_t)len) < 0)) {
		rt_error(errno);
		rt_bind(slot, 0);
		return;
	}
	void *p = mmap((void *)fixed, len, prot, flags, fd, 0);
	int err = errno;
	if (fd >= 0)
		close(fd);
	if (p == MAP_FAILED) {
		rt_error(err);
		rt_bind(slot, 0);
		return;
	}
	rt_bind(slot, (uint64_t)p);
}

void rt_munmap(uint64_t p, unsigned long len)
{
	if (munmap((void *)p, len) < 0)
		rt_error(errno);
}

void rt_mprotect(uint64_t p, unsigned long len, int prot)
{
	if (mprotect((void *)p, len, prot) < 0)
		rt_error(errno);
}

void rt_madvise(uint64_t p, unsigned long len, int advice)
{
	if (madvise((void *)p, len, advice) < 0)
		rt_error(errno);
}

static int fd_of_process = -1;

static int scratch_fd(void)
{
	if (fd_of_process < 0)
		fd_of_process = memfd_create("rt-fd", 0);
	return fd_of_process;
}

void rt_write_fd(uint64_t p, unsigned long len)
{
	int fd = scratch_fd();
	ssize_t n = pwrite(fd, (void *)p, len, 0);
	if (n < 0)
		rt_error(errno);
	else
		rt_result("ok %zd", n);
}

void rt_read_fd(uint64_t p, unsigned long len, int byte)
{
	int fd = scratch_fd();
	char buf[4096];
	memset(buf, byte, sizeof(buf));
	for (unsigned long off = 0; off < len; off += sizeof(buf)) {
		size_t chunk = len - off < sizeof(buf) ? len - off : sizeof(buf);
		if (pwrite(fd, buf, chunk, (off_t)off) < 0) {
			rt_error(errno);
			return;
		}
	}
	ssize_t n = pread(fd, (void *)p, len, 0);
	if (n < 0)
		rt_error(errno);
	else
		rt_result("ok %zd", n);
}

/* --- accesses and MTE instructions -------------------------------------------------- */

void rt_load(uint64_t p, int size)
{
	uint64_t lo = 0, hi = 0;
	ACCESS(switch (size) {
		case 1: lo = *(volatile uint8_t *)p; break;
		case 2: lo = *(volatile uint16_t *)p; break;
		case 4: lo = *(volatile uint32_t *)p; break;
		case 8: lo = *(volatile uint64_t *)p; break;
		default:
			__asm__ volatile("ldp %0, %1, [%2]" : "=r"(lo), "=r"(hi) : "r"(p) : "memory");
		});
	if (hi)
		rt_result("value 0x%llx%016llx", (unsigned long long)hi, (unsigned long long)lo);
	else
		rt_result("value 0x%llx", (unsigned long long)lo);
}

void rt_store(uint64_t p, int size, uint64_t value)
{
	ACCESS(switch (size) {
		case 1: *(volatile uint8_t *)p = (uint8_t)value; break;
		case 2: *(volatile uint16_t *)p = (uint16_t)value; break;
		case 4: *(volatile uint32_t *)p = (uint32_t)value; break;
		default: *(volatile uint64_t *)p = value; break;
		});
}

void rt_store16(uint64_t p, uint64_t lo, uint64_t hi)
{
	ACCESS(__asm__ volatile("stp %0, %1, [%2]" ::"r"(lo), "r"(hi), "r"(p) : "memory"));
}

/* memset in address order: bytes up to 8-byte alignment, words, bytes. A
 * fault stops it, as the model's `fill` stops at the first faulting byte
 * (a word store faults on the granule that byte lies in). */
void rt_fill(uint64_t p, unsigned long len, int byte)
{
	uint64_t word = 0x0101010101010101UL * (uint8_t)byte;
	uint64_t a = p, end = p + len;
	ACCESS({
		for (; a < end && (a & 7); a++)
			*(volatile uint8_t *)a = (uint8_t)byte;
		for (; a + 8 <= end; a += 8)
			*(volatile uint64_t *)a = word;
		for (; a < end; a++)
			*(volatile uint8_t *)a = (uint8_t)byte;
	});
}

void rt_verify(uint64_t p, unsigned long len, int byte)
{
	uint64_t a = p, end = p + len;
	ACCESS({
		for (; a < end; a++) {
			if (!(a & 7) && a + 8 <= end &&
			    *(volatile uint64_t *)a == 0x0101010101010101UL * (uint8_t)byte) {
				a += 7;
				continue;
			}
			if (*(volatile uint8_t *)a != (uint8_t)byte)
				break;
		}
	});
	if (a < end)
		rt_result("mismatch %llu", (unsigned long long)(a - p));
}

void rt_irg(int slot, uint64_t p, unsigned exclude)
{
	uint64_t r;
	__asm__ volatile(".arch_extension memtag\n\tirg %0, %1, %2"
			 : "=r"(r)
			 : "r"(p), "r"((uint64_t)exclude));
	rt_bind(slot, r);
	rt_result("tag %d", (int)((r >> 56) & 0xf));
}

void rt_addg_result(int slot, uint64_t value)
{
	rt_bind(slot, value);
	rt_result("tag %d", (int)((value >> 56) & 0xf));
}

static void store_tag(int op, uint64_t p)
{
	switch (op) {
	case RT_STG:
		__asm__ volatile(".arch_extension memtag\n\tstg %0, [%0]" ::"r"(p) : "memory");
		break;
	case RT_STZG:
		__asm__ volatile(".arch_extension memtag\n\tstzg %0, [%0]" ::"r"(p) : "memory");
		break;
	case RT_ST2G:
		__asm__ volatile(".arch_extension memtag\n\tst2g %0, [%0]" ::"r"(p) : "memory");
		break;
	default:
		__asm__ volatile(".arch_extension memtag\n\tstz2g %0, [%0]" ::"r"(p) : "memory");
		break;
	}
}

void rt_store_tag(int op, uint64_t p)
{
	ACCESS(store_tag(op, p));
}

void rt_settag(uint64_t p, unsigned long len)
{
	ACCESS(for (unsigned long off = 0; off < len; off += 16) store_tag(RT_STG, p + off));
}

void rt_ldg(uint64_t p)
{
	uint64_t r = p;
	ACCESS(__asm__ volatile(".arch_extension memtag\n\tldg %0, [%1]" : "+r"(r) : "r"(p) : "memory"));
	rt_result("tag %d", (int)((r >> 56) & 0xf));
}

/* --- counters ------------------------------------------------------------------ */

static const char *vmstat_keys[] = {
	"cma_alloc_success", "cma_alloc_fail", "cma_release_success", "cma_release_fail",
	"pgmigrate_success", "pgmigrate_fail", "nr_free_cma", "nr_free_pages", "nr_anon_pages",
	"nr_anon_transparent_hugepages", "thp_fault_alloc", "thp_fault_fallback",
	"thp_zero_page_alloc", "thp_split_pmd", "pgfault", "pswpin", "pswpout",
	"compact_migrate_scanned", "compact_free_scanned", "compact_isolated", "compact_stall",
	"ksm_swpin_copy", "cow_ksm", NULL
};

static void print_value_file(const char *key, const char *path)
{
	long value = read_long(path);
	if (value >= 0)
		printf("%s %ld\n", key, value);
}

static void print_counters(void)
{
	char line[256], key[128];
	unsigned long long value;
	FILE *f = fopen("/proc/vmstat", "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%127s %llu", key, &value) != 2)
			continue;
		for (int i = 0; vmstat_keys[i]; i++)
			if (!strcmp(key, vmstat_keys[i]))
				printf("%s %llu\n", key, value);
	}
	if (f)
		fclose(f);
	print_value_file("cma_used", "/sys/kernel/debug/cma/cma0/used");
	print_value_file("ksm_pages_shared", "/sys/kernel/mm/ksm/pages_shared");
	print_value_file("ksm_pages_sharing", "/sys/kernel/mm/ksm/pages_sharing");
	printf("-- end\n");
	fflush(stdout);
}

#ifdef RT_PAGETYPEINFO
/* The harness's probe (PROBE=pagetypeinfo): the kernel's free blocks per
 * migrate type and order (/proc/pagetypeinfo) at a workload's start, on the
 * console only; records.py ignores these `## ` lines. */
static void print_pagetypeinfo(void)
{
	char line[512];
	FILE *f = fopen("/proc/pagetypeinfo", "r");
	while (f && fgets(line, sizeof(line), f))
		printf("## %s", line);
	if (f)
		fclose(f);
}
#endif

/* The free-memory shape a workload starts from, into its record
 * (`start_free_area`, `start_pcp`): the buddy free blocks per zone, migrate
 * type and order (the first table of /proc/pagetypeinfo) as `free ZONE TYPE
 * N0 N1 ...`, and the pages on each CPU's per-CPU lists (`count:` of each
 * pageset in /proc/zoneinfo) as `pcp ZONE CPU COUNT HIGH`. The model can
 * start from it (docs/reference.md, "The free-memory shape"). */
static void print_free_shape(void)
{
	char line[512], zone[32] = "", type[32];
	int cpu = -1;
	long count = -1, v;
	printf("-- shape start\n");
	FILE *f = fopen("/proc/pagetypeinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		int node, used = 0;
		if (sscanf(line, "Node %d, zone %31[^,], type %31s%n", &node, zone, type, &used) != 3)
			continue;
		printf("free %s %s", zone, type);
		for (char *p = line + used; sscanf(p, "%ld%n", &v, &used) == 1; p += used)
			printf(" %ld", v);
		printf("\n");
	}
	if (f)
		fclose(f);
	f = fopen("/proc/zoneinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		int node;
		if (sscanf(line, "Node %d, zone %31s", &node, zone) == 2) {
			cpu = -1;
			continue;
		}
		if (sscanf(line, " cpu: %d", &cpu) == 1) {
			count = -1;
			continue;
		}
		if (cpu >= 0 && sscanf(line, " count: %ld", &v) == 1) {
			count = v;
			continue;
		}
		if (cpu >= 0 && count >= 0 && sscanf(line, " high: %ld", &v) == 1) {
			printf("pcp %s %d %ld %ld\n", zone, cpu, count, v);
			count = -1;
		}
	}
	if (f)
		fclose(f);
	printf("-- end\n");
	fflush(stdout);
}

/* The positions of the free frames a workload starts from, into its record
 * (`start_free_frames`), from /proc/kpageflags and /proc/kpagecount (8 bytes
 * per PFN) over the tag-capable RAM and its tag storage. KPF_BUDDY marks
 * every frame of a free buddy block (v6.8's stable_page_flags() tests
 * is_free_buddy_page(), not only the head), so a run of them is free buddy
 * memory: Linux merges free buddies, so it is the run's maximal aligned
 * blocks. /proc/kpagecount is the map count, not the reference count, so it
 * cannot tell a per-CPU list page from a kernel allocation that sets no
 * flag (stacks, vmalloc): frames with no flag and no mapping are printed as
 * `other`, a superset of the per-CPU pages. Printed as `frames OFFSET COUNT
 * buddy|other` runs, OFFSET in frames from RT_DRAM_PFN; records.py stores
 * them as [offset, count, kind]. docs/reference.md, "The free-frame
 * positions". */
#define RT_DRAM_PFN 0x40000UL
#define RT_FRAMES (131072UL + 4096UL)
#define RT_KPF_BUDDY 10
static void print_free_frames(void)
{
	static uint64_t flags[512], counts[512];
	int ff = open("/proc/kpageflags", O_RDONLY);
	int fc = open("/proc/kpagecount", O_RDONLY);
	/* 0: neither; 1: free buddy frames; 2: unflagged, unmapped frames. */
	int kind = 0;
	unsigned long run_start = 0;
	printf("-- frames start\n");
	if (ff < 0 || fc < 0) {
		printf("-- frames unavailable %s\n", strerror(errno));
		goto out;
	}
	for (unsigned long base = 0; base < RT_FRAMES; base += 512) {
		size_t n = RT_FRAMES - base < 512 ? RT_FRAMES - base : 512;
		off_t at = (off_t)((RT_DRAM_PFN + base) * 8);
		if (pread(ff, flags, n * 8, at) != (ssize_t)(n * 8) ||
		    pread(fc, counts, n * 8, at) != (ssize_t)(n * 8)) {
			printf("-- frames unavailable %s\n", strerror(errno));
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			unsigned long pfn = base + i;
			uint64_t fl = flags[i];
			int next = 0;
			if (fl & (1ULL << RT_KPF_BUDDY))
				next = 1;
			else if (fl == 0 && counts[i] == 0)
				next = 2;
			if (kind && next != kind)
				printf("frames %lu %lu %s\n", run_start, pfn - run_start,
				       kind == 1 ? "buddy" : "other");
			if (next && next != kind)
				run_start = pfn;
			kind = next;
		}
	}
	if (kind)
		printf("frames %lu %lu %s\n", run_start, RT_FRAMES - run_start,
		       kind == 1 ? "buddy" : "other");
out:
	if (ff >= 0)
		close(ff);
	if (fc >= 0)
		close(fc);
	printf("-- end\n");
	fflush(stdout);
}

/* The buddy and per-CPU free lists a workload starts from, in list order,
 * into its record (`start_free_lists`): the text of the harness's kernel
 * probe (tools/rfc-v3/free-lists-probe.patch, debugfs
 * `mtesim_free_lists`), between `-- lists start` and `-- end`. Read last,
 * just before the first command. The buffer is touched before the read so
 * that nothing is allocated between the kernel's snapshot and the
 * workload but what printing it to the console takes. docs/reference.md,
 * "The free lists". */
#define RT_LISTS_MAX (768 * 1024)
static void print_free_lists(void)
{
	static char buf[RT_LISTS_MAX];
	size_t len = 0;
	ssize_t n;
	memset(buf, 0, sizeof(buf));
	int fd = open("/sys/kernel/debug/mtesim_free_lists", O_RDONLY);
	printf("-- lists start\n");
	if (fd < 0) {
		printf("-- lists unavailable %s\n", strerror(errno));
		printf("-- end\n");
		fflush(stdout);
		return;
	}
	while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = 0;
	if (len == sizeof(buf) - 1)
		printf("-- lists unavailable the buffer is too small\n");
	else
		fputs(buf, stdout);
	printf("-- end\n");
	fflush(stdout);
}

/* --- swap on the RAM disk ---------------------------------------------------- */

/* mkswap: a version 1 header on the first page, SWAPSPACE2 at its end. */
static int make_swap(unsigned long bytes)
{
	static uint32_t page[1024];
	memset(page, 0, sizeof(page));
	page[256] = 1;				/* version */
	page[257] = (uint32_t)(bytes / 4096 - 1);	/* last_page */
	memcpy((char *)page + 4096 - 10, "SWAPSPACE2", 10);
	int fd = open("/dev/ram0", O_WRONLY);
	if (fd < 0 || pwrite(fd, page, sizeof(page), 0) != sizeof(page)) {
		dprintf(1, "rt: cannot write a swap header on /dev/ram0: %s\n", strerror(errno));
		return -1;
	}
	fsync(fd);
	close(fd);
	if (swapon("/dev/ram0", 0) < 0) {
		dprintf(1, "rt: swapon /dev/ram0: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

/* --- the workload ------------------------------------------------------------- */

/* 0: the step finished; -1: it did not within RT_STUCK_SECONDS (the kernel
 * keeps retrying it); -2: its process died first (the OOM killer). */
static int wait_done(int step, pid_t owner)
{
	struct timespec slice = { 0, 100 * 1000 * 1000 };
	for (int waited = 0; ctl->done != step;) {
		int seen = ctl->done;
		if (seen == step)
			break;
		if (futex(&ctl->done, FUTEX_WAIT, seen, &slice) < 0 && errno == ETIMEDOUT) {
			if (ctl->done != step && process_gone(owner))
				return -2;
			if (++waited >= RT_STUCK_SECONDS * 10)
				return -1;
		}
	}
	return 0;
}

static void kill_all(const struct rt_workload *w)
{
	for (int i = 0; i < w->nprocs && i < RT_MAX_PROCS; i++)
		if (ctl->pid[i] > 0) {
			kill(ctl->pid[i], SIGKILL);
			wait_gone(ctl->pid[i]);
		}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int rt_run_workload(const struct rt_workload *w)
{
	struct sigaction sa = { 0 };
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);

	cur = w;
	ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED || w->nprocs > RT_MAX_PROCS || w->nptrs > RT_MAX_PTRS)
		return 1;
	ctl->go = -1;
	ctl->done = -1;

	write_file("/sys/kernel/mm/transparent_hugepage/enabled", w->thp);
	write_file("/sys/kernel/mm/transparent_hugepage/use_zero_page", w->huge_zero_page ? "1" : "0");
	if (w->swap_bytes && make_swap(w->swap_bytes) < 0)
		return 1;

	printf("== %s\n-- snap %s start\n", w->name, w->name);
	print_counters();
	print_free_shape();
	print_free_frames();
#ifdef RT_PAGETYPEINFO
	print_pagetypeinfo();
#endif
	print_free_lists();
	struct rt_proc root = { -1 };
	int status = 0;
	for (int i = 0; i < w->nsteps; i++) {
		const struct rt_step *s = &w->steps[i];
		cur_step = i;
		rt_result("ok");
		if (s->proc < 0) {
			w->run(&root, i);
		} else {
			ctl->go = i;
			wake(&ctl->go);
			int waited = wait_done(i, ctl->pid[s->proc]);
			if (waited < 0) {
				/* `killed`: no outcome of the language; the comparison
				 * reports it as the kernel's. */
				printf("-- step %s %d %d %s\n", w->name, i, s->line,
				       waited == -1 ? "stuck" : "killed");
				kill_all(w);
				print_counters();
				status = 2;
				break;
			}
			if (s->kind == RT_STEP_EXIT)
				wait_gone(ctl->pid[s->proc]);
		}
		printf("-- step %s %d %d %s\n", w->name, i, s->line, ctl->result);
		print_counters();
	}
	ctl->go = w->nsteps;
	wake(&ctl->go);
	kill_all(w);
	if (w->swap_bytes)
		swapoff("/dev/ram0");
	printf("-- done %s\n", w->name);
	fflush(stdout);
	return status;
}

/* --- /init -------------------------------------------------------------------- */

extern const struct rt_workload *const rt_workloads[];

int main(void)
{
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("rt: %d workloads\n", ({ int n = 0; while (rt_workloads[n]) n++; n; }));
	for (int i = 0; rt_workloads[i]; i++) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(rt_run_workload(rt_workloads[i]));
		int status = 0;
		waitpid(pid, &status, 0);
		/* Let freed memory settle on the free lists, as between workloads
		 * of the model (a fresh machine each). */
		write_file("/proc/sys/vm/drop_caches", "3");
		printf("rt: %s exit %d\n", rt_workloads[i]->name, status);
	}
	printf("rt: all done\n");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
