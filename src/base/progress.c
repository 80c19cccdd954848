/* Progress line: see progress.h. */
#include "base/progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"

#define REDRAW_SECONDS 0.1

static void copy_str(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

/* "1:02:03" or "2:03" */
static void fmt_time(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 359999) { snprintf(buf, cap, "--:--"); return; }
    int t = (int)(s + 0.5); /* < 100 hours, so at most "99:59:59" */
    if (t >= 3600) snprintf(buf, cap, "%d:%02d:%02d", t / 3600 % 100, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%d:%02d", t / 60 % 60, t % 60);
}

void lm_progress_begin_clock(lm_progress *p, FILE *out, const char *label, int64_t total,
                             const char *unit, double (*now)(void)) {
    memset(p, 0, sizeof *p);
    p->out = out;
    copy_str(p->label, sizeof p->label, label);
    copy_str(p->unit, sizeof p->unit, unit ? unit : "steps");
    p->total = total;
    p->now = now ? now : lm_now_s;
    p->t_start = p->now();
    p->t_drawn = -1;
}

void lm_progress_begin_file(lm_progress *p, FILE *out, const char *label, int64_t total,
                            const char *unit) {
    lm_progress_begin_clock(p, out, label, total, unit, NULL);
}

void lm_progress_begin(lm_progress *p, const char *label, int64_t total, const char *unit) {
    int tty = isatty(STDERR_FILENO);
    lm_progress_begin_file(p, tty ? stderr : NULL, label, total, unit);
    if (!tty) p->log = stderr;
}

static void draw(lm_progress *p, const char *extra, double t, int final) {
    char line[256], eta[32], el[32];
    double elapsed = t - p->t_start;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
    int n;
    if (p->total > 0)
        n = snprintf(line, sizeof line, "%s  %lld/%lld %s  %3d%%  %.1f %s/s", p->label,
                     (long long)p->done, (long long)p->total, p->unit,
                     (int)(100.0 * (double)p->done / (double)p->total), rate, p->unit);
    else
        n = snprintf(line, sizeof line, "%s  %lld %s  %.1f %s/s", p->label, (long long)p->done,
                     p->unit, rate, p->unit);
    if (n < 0) return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (final) {
        fmt_time(el, sizeof el, elapsed);
        len += (size_t)snprintf(line + len, sizeof line - len, "  done in %s", el);
    } else if (p->total > 0 && p->done > 0 && p->done < p->total) {
        fmt_time(eta, sizeof eta, (double)(p->total - p->done) / rate);
        len += (size_t)snprintf(line + len, sizeof line - len, "  ETA %s", eta);
    }
    if (len >= sizeof line) len = sizeof line - 1;
    if (extra && *extra && !final && len + 2 < sizeof line)
        len += (size_t)snprintf(line + len, sizeof line - len, "  %s", extra);
    if (len >= sizeof line) len = sizeof line - 1;
    /* pad with spaces over the rest of a longer previous line */
    int pad = p->width > (int)len ? p->width - (int)len : 0;
    fprintf(p->out, "\r%s%*s%s", line, pad, "", final ? "\n" : "");
    fflush(p->out);
    p->width = (int)len;
    p->t_drawn = t;
}

void lm_progress_update(lm_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (!p->out) return;
    double t = p->now();
    if (p->t_drawn >= 0 && t - p->t_drawn < REDRAW_SECONDS) return;
    draw(p, extra, t, 0);
}

void lm_progress_mark(lm_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (p->out) {
        draw(p, extra, p->now(), 0);
    } else if (p->log) {
        if (p->total > 0)
            fprintf(p->log, "%s  %lld/%lld %s", p->label, (long long)done, (long long)p->total, p->unit);
        else
            fprintf(p->log, "%s  %lld %s", p->label, (long long)done, p->unit);
        fprintf(p->log, "%s%s\n", extra && *extra ? "  " : "", extra ? extra : "");
        fflush(p->log);
    }
}

void lm_progress_end(lm_progress *p) {
    if (!p->out) return;
    draw(p, NULL, p->now(), 1);
    p->out = NULL; /* a second end is a no-op */
}
