/* loss.svg: smoothed train loss (line) and validation loss (line with dots)
 * against the optimizer step, with axes, ticks and labels. Hand-written SVG
 * so any browser shows it and no image library is needed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "train/sft.h"

typedef struct { double *x, *y; size_t n, cap; } series;

static int push(series *s, double x, double y) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 256;
        double *nx = realloc(s->x, nc * sizeof *nx);
        if (!nx) return -1;
        s->x = nx;
        double *ny = realloc(s->y, nc * sizeof *ny);
        if (!ny) return -1;
        s->y = ny;
        s->cap = nc;
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
    return 0;
}

/* A "nice" tick spacing: 1, 2 or 5 times a power of ten, about n ticks. */
static double tick_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

enum { W = 720, H = 420, ML = 64, MR = 20, MT = 30, MB = 50 };

static void polyline(lm_sb *f, const series *s, double x0, double x1, double y0, double y1,
                     const char *color, int dots) {
    if (!s->n) return;
    lm_sb_printf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
    for (size_t i = 0; i < s->n; i++)
        lm_sb_printf(f, "%.1f,%.1f ", ML + (s->x[i] - x0) / (x1 - x0) * (W - ML - MR),
                H - MB - (s->y[i] - y0) / (y1 - y0) * (H - MT - MB));
    lm_sb_printf(f, "\"/>\n");
    if (dots)
        for (size_t i = 0; i < s->n; i++)
            lm_sb_printf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                    ML + (s->x[i] - x0) / (x1 - x0) * (W - ML - MR),
                    H - MB - (s->y[i] - y0) / (y1 - y0) * (H - MT - MB), color);
}

int lm_sft_plot_svg(const char *metrics_path, const char *svg_path, lm_err *err) {
    FILE *in = fopen(metrics_path, "r");
    if (!in) return lm_errno(err, "%s", metrics_path);
    series tr = {0}, va = {0};
    char *line = NULL;
    size_t cap = 0;
    int rc = -1, ln = 0;
    while (getline(&line, &cap, in) > 0) {
        ln++;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        json_t *st = o ? json_object_get(o, "step") : NULL, *l = o ? json_object_get(o, "loss_smooth") : NULL;
        json_t *v = o ? json_object_get(o, "val_loss") : NULL;
        if (!json_is_number(st) || !json_is_number(l)) {
            json_decref(o);
            lm_errf(err, "%s:%d: not a metrics line (step, loss_smooth)", metrics_path, ln);
            goto done;
        }
        int bad = push(&tr, json_number_value(st), json_number_value(l)) ||
                  (json_is_number(v) && push(&va, json_number_value(st), json_number_value(v)));
        json_decref(o);
        if (bad) { lm_errf(err, "out of memory"); goto done; }
    }
    double x0 = 0, x1 = 1, y0 = INFINITY, y1 = -INFINITY;
    for (size_t i = 0; i < tr.n; i++) {
        if (tr.x[i] > x1) x1 = tr.x[i];
        y0 = fmin(y0, tr.y[i]);
        y1 = fmax(y1, tr.y[i]);
    }
    for (size_t i = 0; i < va.n; i++) { y0 = fmin(y0, va.y[i]); y1 = fmax(y1, va.y[i]); }
    if (!isfinite(y0)) { y0 = 0; y1 = 1; }
    if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
    double ys = tick_step(y1 - y0, 6), xs = tick_step(x1 - x0, 8);
    y0 = floor(y0 / ys) * ys;
    y1 = ceil(y1 / ys) * ys;

    lm_sb svg = {0}, *f = &svg;
    lm_sb_printf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    for (double y = y0; y <= y1 + ys / 2; y += ys) {
        double py = H - MB - (y - y0) / (y1 - y0) * (H - MT - MB);
        lm_sb_printf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                ML, py, W - MR, py, ML - 6, py + 4, y);
    }
    for (double x = 0; x <= x1 + xs / 2; x += xs) {
        double px = ML + (x - x0) / (x1 - x0) * (W - ML - MR);
        lm_sb_printf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#333\"/>"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                px, H - MB, px, H - MB + 5, px, H - MB + 18, x);
    }
    lm_sb_printf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", ML, H - MB, W - MR, H - MB);
    lm_sb_printf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", ML, MT, ML, H - MB);
    polyline(f, &tr, x0, x1, y0, y1, "#1f77b4", 0);
    polyline(f, &va, x0, x1, y0, y1, "#d62728", 1);
    lm_sb_printf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">optimizer step</text>\n", (ML + W - MR) / 2, H - 12);
    lm_sb_printf(f, "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">loss</text>\n",
            (MT + H - MB) / 2, (MT + H - MB) / 2);
    lm_sb_printf(f, "<text x=\"%d\" y=\"20\" fill=\"#1f77b4\">train (smoothed)</text>\n", ML + 10);
    if (va.n) lm_sb_printf(f, "<text x=\"%d\" y=\"20\" fill=\"#d62728\">validation</text>\n", ML + 150);
    lm_sb_printf(f, "</svg>\n");
    if (svg.oom) { lm_errf(err, "%s: out of memory", svg_path); lm_sb_free(&svg); goto done; }
    int wrc = lm_write_file_atomic(svg_path, svg.p, svg.len, err);
    lm_sb_free(&svg);
    if (wrc) goto done;
    rc = 0;
done:
    free(line);
    fclose(in);
    free(tr.x); free(tr.y); free(va.x); free(va.y);
    return rc;
}
