/*
 * The runtime of the programs `mtesim export-c` writes: one workload = the
 * steps of one `.mte` scenario, each run by the process the scenario names,
 * one at a time, in file order, with the command's result (in the scenario's
 * syntax) and the kernel's counters printed after every step.
 *
 * Serial output, read by tools/rfc-v3/records.py:
 *   == NAME                         a workload starts
 *   -- snap NAME start              counters before its first step
 *   -- step NAME INDEX LINE RESULT  a step's result, then its counters
 *   KEY VALUE                       (one per line)
 *   -- end                          end of a counter block
 *   -- done NAME                    the workload finished (or was abandoned)
 */
#ifndef MTESIM_RT_H
#define MTESIM_RT_H

#define _GNU_SOURCE
#include <stdint.h>
#include <sys/mman.h>

#ifndef PROT_MTE
#define PROT_MTE 0x20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_MERGEABLE
#define MADV_MERGEABLE 12
#define MADV_UNMERGEABLE 13
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#define MADV_NOHUGEPAGE 15
#endif

enum rt_step_kind { RT_STEP_PLAIN, RT_STEP_SPAWN, RT_STEP_FORK, RT_STEP_EXIT };
enum rt_backing { RT_ANON, RT_SHM, RT_FILE };
enum rt_tag_store { RT_STG, RT_STZG, RT_ST2G, RT_STZ2G };

struct rt_step {
	int line;
	int proc;		/* -1: the workload's root (machine commands, spawn) */
	int kind;		/* enum rt_step_kind */
	const char *text;	/* the command as written */
};

struct rt_proc {
	int id;
};

struct rt_workload {
	const char *name;
	const char *thp;	/* /sys/kernel/mm/transparent_hugepage/enabled */
	int huge_zero_page;
	unsigned long swap_bytes;
	int nprocs, nptrs, nsteps;
	const struct rt_step *steps;
	void (*run)(struct rt_proc *self, int step);
};

/* Pointer variables, shared by every process of the workload. */
uint64_t rt_ptr(int slot, long offset);
void rt_bind(int slot, uint64_t value);
uint64_t rt_with_tag(uint64_t ptr, int tag);

/* The result of the running step, in the scenario's syntax. */
void rt_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void rt_error(int err);

void rt_spawn(struct rt_proc *self, int id);
void rt_fork(struct rt_proc *self, int child);
void rt_exit(struct rt_proc *self);
void rt_compact(void);
void rt_ksm_scan(int passes);
void rt_prctl(int tagged, int tcf, int include);
void rt_prctl_get(void);
void rt_tco(int on);
void rt_yield(void);
void rt_mmap(int slot, unsigned long len, int prot, int flags, int backing, uint64_t fixed);
void rt_munmap(uint64_t p, unsigned long len);
void rt_mprotect(uint64_t p, unsigned long len, int prot);
void rt_madvise(uint64_t p, unsigned long len, int advice);
void rt_write_fd(uint64_t p, unsigned long len);
void rt_read_fd(uint64_t p, unsigned long len, int byte);
void rt_load(uint64_t p, int size);
void rt_store(uint64_t p, int size, uint64_t value);
void rt_store16(uint64_t p, uint64_t lo, uint64_t hi);
void rt_fill(uint64_t p, unsigned long len, int byte);
void rt_verify(uint64_t p, unsigned long len, int byte);
void rt_irg(int slot, uint64_t p, unsigned exclude);
void rt_store_tag(int op, uint64_t p);
void rt_settag(uint64_t p, unsigned long len);
void rt_ldg(uint64_t p);
void rt_addg_result(int slot, uint64_t value);

/* ADDG takes its offsets as immediates: the generator writes them in. */
#define RT_ADDG(slot, p, off, toff)                                            \
	do {                                                                   \
		uint64_t rt_r_, rt_p_ = (p);                                   \
		__asm__ volatile(".arch_extension memtag\n\taddg %0, %1, #" #off \
				 ", #" #toff                                   \
				 : "=r"(rt_r_)                                 \
				 : "r"(rt_p_));                                \
		rt_addg_result((slot), rt_r_);                                 \
	} while (0)

/* Runs one workload to its end in the calling process (a child of /init). */
int rt_run_workload(const struct rt_workload *w);

#endif
