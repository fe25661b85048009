/*
 * mtesim's recording shim: preloaded into a program that runs under
 * Valgrind's lackey, it reports the program's allocation calls and its
 * mmap/munmap/brk, in program order, into the same pipe lackey writes its
 * access trace to.
 *
 * Protocol (one line per write(2), so that it lands between lackey's lines
 * exactly where the call happened; numbers in lower-case hex):
 *
 *   #S START END          the shim's own code lies in [START, END)
 *   #>                    a wrapped call starts
 *   #m SIZE PTR           malloc             (each of these ends the call
 *   #c NMEMB SIZE PTR     calloc              that the last #> started)
 *   #r OLD SIZE PTR       realloc, reallocarray (SIZE = nmemb * size)
 *   #f PTR                free
 *   #p ALIGN SIZE PTR     posix_memalign (PTR 0 on failure)
 *   #a ALIGN SIZE PTR     aligned_alloc
 *   #g ALIGN SIZE PTR     memalign, valloc, pvalloc
 *   #M ADDR LEN PROT FLAGS FD OFF RESULT   mmap (FD as 32-bit two's complement)
 *   #U ADDR LEN RESULT    munmap (RESULT as 32-bit two's complement)
 *   #B OLD NEW            brk or sbrk: the program break before and after
 *
 * Every access between "#>" and the line that ends the call was made by the
 * shim or the real allocator on the program's behalf, and every access of
 * an instruction in [START, END) by the shim itself (its prologues and
 * epilogues): the recorder drops both. That is why every function of the
 * shim lives in one section (whose bounds the linker provides) and why the
 * shim writes with a raw system call instruction of its own rather than
 * libc's write().
 *
 * Calls nested inside a wrapped call (glibc's reallocarray calling realloc,
 * an allocator calling another) are the allocator's business and are not
 * reported. The descriptor comes from MTESIM_SHIM_FD; without it the shim
 * only forwards calls.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define SHIM __attribute__((section("mtesim_shim_text"), noinline))
#define EXPORT __attribute__((visibility("default"), section("mtesim_shim_text")))

extern char __start_mtesim_shim_text[] __attribute__((visibility("hidden")));
extern char __stop_mtesim_shim_text[] __attribute__((visibility("hidden")));

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void *(*real_reallocarray)(void *, size_t, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);
static int (*real_brk)(void *);
static void *(*real_sbrk)(intptr_t);

static int trace_fd = -1;
static int resolved;
static int resolving;
/* initial-exec: the shim is preloaded, so its TLS is in the static block
 * and `depth` is one %fs-relative access, not a call to __tls_get_addr
 * outside the shim's section (whose accesses would leak into the trace). */
static __thread int depth __attribute__((tls_model("initial-exec")));

/* dlsym may allocate (its error buffer) before the real calloc is known:
 * those few early allocations come from here and are never freed. */
static char bootstrap[8192] __attribute__((aligned(16)));
static size_t bootstrap_used;

SHIM static long raw_write(int fd, const char *buf, unsigned long len)
{
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"((long)SYS_write), "D"((long)fd), "S"(buf), "d"(len)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_write;
    register long x0 __asm__("x0") = fd;
    register long x1 __asm__("x1") = (long)buf;
    register long x2 __asm__("x2") = (long)len;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
#else
    /* Elsewhere libc's wrapper: its few stack accesses are not filtered. */
    return syscall(SYS_write, fd, buf, len);
#endif
}

SHIM static char *put_hex(char *out, uint64_t value)
{
    char digits[16];
    int n = 0;
    do {
        unsigned d = (unsigned)(value & 15);
        digits[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        value >>= 4;
    } while (value);
    while (n)
        *out++ = digits[--n];
    return out;
}

/* Writes "#K v0 v1 ...\n" with `count` values, in one write. */
SHIM static void emit(char kind, int count, const uint64_t *values)
{
    char line[8 * 18 + 4];
    char *p = line;
    int i;
    if (trace_fd < 0)
        return;
    *p++ = '#';
    *p++ = kind;
    for (i = 0; i < count; i++) {
        *p++ = ' ';
        p = put_hex(p, values[i]);
    }
    *p++ = '\n';
    raw_write(trace_fd, line, (unsigned long)(p - line));
}

SHIM static void emit_enter(void)
{
    if (trace_fd >= 0)
        raw_write(trace_fd, "#>\n", 3);
}

SHIM static int parse_fd(const char *s)
{
    int fd = 0;
    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || fd > 100000)
            return -1;
        fd = fd * 10 + (*s - '0');
    }
    return fd;
}

SHIM static void resolve(void)
{
    if (resolved || resolving)
        return;
    resolving = 1;
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_reallocarray = (void *(*)(void *, size_t, size_t))dlsym(RTLD_NEXT, "reallocarray");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    real_valloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "pvalloc");
    real_mmap = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
    real_munmap = (int (*)(void *, size_t))dlsym(RTLD_NEXT, "munmap");
    real_brk = (int (*)(void *))dlsym(RTLD_NEXT, "brk");
    real_sbrk = (void *(*)(intptr_t))dlsym(RTLD_NEXT, "sbrk");
    trace_fd = parse_fd(getenv("MTESIM_SHIM_FD"));
    resolving = 0;
    resolved = 1;
    {
        uint64_t range[2] = {(uint64_t)(uintptr_t)__start_mtesim_shim_text,
                             (uint64_t)(uintptr_t)__stop_mtesim_shim_text};
        emit('S', 2, range);
    }
}

__attribute__((constructor)) SHIM static void shim_init(void)
{
    resolve();
}

SHIM static void *bootstrap_alloc(size_t size)
{
    size_t rounded = (size + 15) & ~(size_t)15;
    void *p;
    if (rounded > sizeof bootstrap - bootstrap_used)
        return NULL;
    p = bootstrap + bootstrap_used;
    bootstrap_used += rounded;
    return p;
}

SHIM static int is_bootstrap(const void *p)
{
    return (const char *)p >= bootstrap && (const char *)p < bootstrap + sizeof bootstrap;
}

/* Enters a wrapped call: returns whether this call is the outermost one and
 * so is reported. */
SHIM static int enter(void)
{
    resolve();
    if (depth++ == 0 && trace_fd >= 0) {
        emit_enter();
        return 1;
    }
    return 0;
}

SHIM static void leave(void)
{
    depth--;
}

EXPORT void *malloc(size_t size)
{
    void *p;
    int outer;
    if (!real_malloc) {
        resolve();
        if (!real_malloc)
            return bootstrap_alloc(size);
    }
    outer = enter();
    p = real_malloc(size);
    if (outer) {
        uint64_t v[2] = {size, (uint64_t)(uintptr_t)p};
        emit('m', 2, v);
    }
    leave();
    return p;
}

EXPORT void *calloc(size_t nmemb, size_t size)
{
    void *p;
    int outer;
    if (!real_calloc) {
        /* Inside dlsym: zeroed static memory. */
        if (resolving || (resolve(), !real_calloc))
            return bootstrap_alloc(nmemb * size);
    }
    outer = enter();
    p = real_calloc(nmemb, size);
    if (outer) {
        uint64_t v[3] = {nmemb, size, (uint64_t)(uintptr_t)p};
        emit('c', 3, v);
    }
    leave();
    return p;
}

EXPORT void *realloc(void *old, size_t size)
{
    void *p;
    int outer;
    if (is_bootstrap(old)) {
        /* A bootstrap block moves to the real heap (its size is unknown:
         * copy what is left of the arena, at most `size`). */
        size_t left = (size_t)(bootstrap + sizeof bootstrap - (char *)old);
        size_t n = left < size ? left : size;
        size_t i;
        p = malloc(size);
        for (i = 0; p && i < n; i++)
            ((char *)p)[i] = ((char *)old)[i];
        return p;
    }
    outer = enter();
    p = real_realloc(old, size);
    if (outer) {
        uint64_t v[3] = {(uint64_t)(uintptr_t)old, size, (uint64_t)(uintptr_t)p};
        emit('r', 3, v);
    }
    leave();
    return p;
}

EXPORT void *reallocarray(void *old, size_t nmemb, size_t size)
{
    void *p;
    int outer;
    if (is_bootstrap(old))
        return realloc(old, nmemb * size);
    outer = enter();
    p = real_reallocarray(old, nmemb, size);
    if (outer) {
        uint64_t v[3] = {(uint64_t)(uintptr_t)old, (uint64_t)nmemb * size,
                         (uint64_t)(uintptr_t)p};
        emit('r', 3, v);
    }
    leave();
    return p;
}

EXPORT void free(void *ptr)
{
    int outer;
    if (!ptr || is_bootstrap(ptr))
        return;
    outer = enter();
    real_free(ptr);
    if (outer) {
        uint64_t v[1] = {(uint64_t)(uintptr_t)ptr};
        emit('f', 1, v);
    }
    leave();
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    int ret;
    int outer = enter();
    ret = real_posix_memalign(out, align, size);
    if (outer) {
        uint64_t v[3] = {align, size, ret == 0 ? (uint64_t)(uintptr_t)*out : 0};
        emit('p', 3, v);
    }
    leave();
    return ret;
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
    void *p;
    int outer = enter();
    p = real_aligned_alloc(align, size);
    if (outer) {
        uint64_t v[3] = {align, size, (uint64_t)(uintptr_t)p};
        emit('a', 3, v);
    }
    leave();
    return p;
}

SHIM static void *aligned_call(void *(*fn)(size_t, size_t), size_t align, size_t size)
{
    void *p;
    int outer = enter();
    p = fn(align, size);
    if (outer) {
        uint64_t v[3] = {align, size, (uint64_t)(uintptr_t)p};
        emit('g', 3, v);
    }
    leave();
    return p;
}

EXPORT void *memalign(size_t align, size_t size)
{
    resolve();
    return aligned_call(real_memalign, align, size);
}

EXPORT void *valloc(size_t size)
{
    void *p;
    int outer = enter();
    p = real_valloc(size);
    if (outer) {
        uint64_t v[3] = {4096, size, (uint64_t)(uintptr_t)p};
        emit('g', 3, v);
    }
    leave();
    return p;
}

EXPORT void *pvalloc(size_t size)
{
    void *p;
    int outer = enter();
    p = real_pvalloc(size);
    if (outer) {
        uint64_t v[3] = {4096, size, (uint64_t)(uintptr_t)p};
        emit('g', 3, v);
    }
    leave();
    return p;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    void *p;
    int outer = enter();
    p = real_mmap(addr, len, prot, flags, fd, off);
    if (outer) {
        uint64_t v[7] = {(uint64_t)(uintptr_t)addr, len, (uint32_t)prot, (uint32_t)flags,
                         (uint32_t)fd, (uint64_t)off, (uint64_t)(uintptr_t)p};
        emit('M', 7, v);
    }
    leave();
    return p;
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

EXPORT int munmap(void *addr, size_t len)
{
    int ret;
    int outer = enter();
    ret = real_munmap(addr, len);
    if (outer) {
        uint64_t v[3] = {(uint64_t)(uintptr_t)addr, len, (uint32_t)ret};
        emit('U', 3, v);
    }
    leave();
    return ret;
}

EXPORT int brk(void *end)
{
    int ret;
    int outer = enter();
    void *old = real_sbrk(0);
    ret = real_brk(end);
    if (outer) {
        uint64_t v[2] = {(uint64_t)(uintptr_t)old, (uint64_t)(uintptr_t)real_sbrk(0)};
        emit('B', 2, v);
    }
    leave();
    return ret;
}

EXPORT void *sbrk(intptr_t increment)
{
    void *old;
    int outer = enter();
    old = real_sbrk(increment);
    if (outer) {
        uint64_t v[2] = {(uint64_t)(uintptr_t)old, (uint64_t)(uintptr_t)real_sbrk(0)};
        emit('B', 2, v);
    }
    leave();
    return old;
}
