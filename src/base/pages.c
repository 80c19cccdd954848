#include "base/pages.h"

#include <stdlib.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define LM_PAGES_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LM_PAGES_MALLOC 1
#endif
#endif

#ifdef LM_PAGES_MALLOC

void *lm_pages_alloc(size_t n) { return n ? calloc(1, n) : NULL; }

void lm_pages_free(void *p, size_t n) {
    (void)n;
    free(p);
}

size_t lm_pages_release(void *p, size_t from, size_t to) {
    (void)p;   /* calloc'd: nothing to give back, but the same offsets */
    size_t page = (size_t)sysconf(_SC_PAGESIZE), end = to / page * page;
    return end > from ? end : from;
}

#else

#include <sys/mman.h>

void *lm_pages_alloc(size_t n) {
    if (!n) return NULL;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void lm_pages_free(void *p, size_t n) {
    if (p) munmap(p, n);
}

size_t lm_pages_release(void *p, size_t from, size_t to) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t end = to / page * page;
    if (!p || end <= from) return from;
    madvise((char *)p + from, end - from, MADV_DONTNEED);   /* advice: a failure frees nothing */
    return end;
}

#endif
