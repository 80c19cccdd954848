/* Seconds on the monotonic clock: for durations, rates, ETAs and deadlines
 * (it never jumps with the wall clock). Not a date: a timestamp written for
 * a reader (a file's "created") takes time(NULL). */
#ifndef LM_BASE_CLOCK_H
#define LM_BASE_CLOCK_H

double lm_now_s(void);

#endif
