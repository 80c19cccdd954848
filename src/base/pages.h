/* Large buffers whose memory goes back to the system when they are freed.
 *
 * malloc keeps freed memory in the process: glibc serves big blocks with
 * mmap only until a big block is freed, then raises its threshold to that
 * size and carves later blocks from the heap, where a freed block stays
 * resident until the heap's top shrinks. A buffer that is given back after
 * each reply (a context's batch scratch, a sampler's candidates) would then
 * keep its pages. These are mapped and unmapped directly: zeroed, page
 * granular, resident only once touched, and gone from the RSS once freed.
 * Under AddressSanitizer they are calloc/free, so overruns are still caught. */
#ifndef LM_BASE_PAGES_H
#define LM_BASE_PAGES_H

#include <stddef.h>

/* n zeroed bytes (n > 0), or NULL when the system says no (or n == 0). */
void *lm_pages_alloc(size_t n);
/* Frees a buffer of lm_pages_alloc(n) (the same n); NULL is a no-op. */
void lm_pages_free(void *p, size_t n);
/* Gives back the pages of p (a buffer of lm_pages_alloc) from byte offset
 * `from` (page-aligned: 0 or what the last call returned) up to `to`
 * rounded down to a page; they read as zeros afterwards. Returns that
 * rounded `to`, the next call's `from`. For moving a buffer into a bigger
 * one piece by piece without holding both at once. No-op under ASan. */
size_t lm_pages_release(void *p, size_t from, size_t to);

#endif
