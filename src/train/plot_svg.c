/* loss.svg: smoothed train loss (line) and validation loss (line with dots)
 * against the optimizer step, with axes, ticks and labels; for a DPO run
 * (metrics with rewards/margins) two more charts below, the reward margin
 * and the reward accuracy, train (smoothed) and validation. Hand-written
 * SVG so any browser shows it and no image library is needed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "train/jsonl.h"
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

/* One chart of H pixels at vertical offset top: series a (line) and b
 * (line with dots) against the step, y axis labelled ylabel. y_fixed: the
 * y range [lo, hi] as given (accuracies), else fitted to the data. */
typedef struct panel {
    const series *a, *b;
    const char *ylabel, *alabel, *blabel;
    int y_fixed;
    double lo, hi;
} panel;

static void draw_panel(lm_sb *f, const panel *pn, double x1, int top) {
    double x0 = 0, y0 = INFINITY, y1 = -INFINITY;
    const series *ss[2] = {pn->a, pn->b};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < ss[k]->n; i++) {
            y0 = fmin(y0, ss[k]->y[i]);
            y1 = fmax(y1, ss[k]->y[i]);
        }
    if (pn->y_fixed) { y0 = pn->lo; y1 = pn->hi; }
    if (!isfinite(y0)) { y0 = 0; y1 = 1; }
    if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
    double ys = tick_step(y1 - y0, 6), xs = tick_step(x1 - x0, 8);
    y0 = floor(y0 / ys) * ys;
    y1 = ceil(y1 / ys) * ys;
    lm_sb_printf(f, "<g transform=\"translate(0 %d)\">\n", top);
    for (double y = y0; y <= y1 + ys / 2; y += ys) {
        double py = H - MB - (y - y0) / (y1 - y0) * (H - MT - MB);
        lm_sb_printf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                ML, py, W - MR, py, ML - 6, py + 4, fabs(y) < ys / 1e6 ? 0.0 : y);
    }
    for (double x = 0; x <= x1 + xs / 2; x += xs) {
        double px = ML + (x - x0) / (x1 - x0) * (W - ML - MR);
        lm_sb_printf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#333\"/>"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                px, H - MB, px, H - MB + 5, px, H - MB + 18, x);
    }
    lm_sb_printf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", ML, H - MB, W - MR, H - MB);
    lm_sb_printf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", ML, MT, ML, H - MB);
    polyline(f, pn->a, x0, x1, y0, y1, "#1f77b4", 0);
    polyline(f, pn->b, x0, x1, y0, y1, "#d62728", 1);
    lm_sb_printf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">optimizer step</text>\n", (ML + W - MR) / 2, H - 12);
    lm_sb_printf(f, "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">%s</text>\n",
            (MT + H - MB) / 2, (MT + H - MB) / 2, pn->ylabel);
    lm_sb_printf(f, "<text x=\"%d\" y=\"20\" fill=\"#1f77b4\">%s</text>\n", ML + 10, pn->alabel);
    if (pn->b->n) lm_sb_printf(f, "<text x=\"%d\" y=\"20\" fill=\"#d62728\">%s</text>\n", ML + 150, pn->blabel);
    lm_sb_printf(f, "</g>\n");
}

/* A metric of every line: y = the bias-corrected EMA (beta 0.9) of the
 * per-step values when smooth, the value itself otherwise. */
static int take(series *s, json_t *o, const char *key, double step, int smooth, double *ema, long *k) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) return 0;
    double y = json_number_value(v);
    if (smooth) {
        *ema = 0.9 * *ema + 0.1 * y;
        ++*k;
        y = *ema / (1 - pow(0.9, (double)*k));
    }
    return push(s, step, y);
}

int lm_sft_plot_svg(const char *metrics_path, const char *svg_path, lm_err *err) {
    lm_jsonl *in = lm_jsonl_open(metrics_path, err);
    if (!in) return -1;
    /* loss, val_loss; DPO: reward margins and accuracies, train and val */
    series tr = {0}, va = {0}, mt = {0}, mv = {0}, at = {0}, av = {0};
    double ema_m = 0, ema_a = 0;
    long km = 0, ka = 0;
    int rc = -1, got;
    json_t *o;
    while ((got = lm_jsonl_next(in, &o, err)) != LM_JSONL_END) {
        if (got != LM_JSONL_OK) goto done;
        json_t *st = json_object_get(o, "step"), *l = json_object_get(o, "loss_smooth");
        if (!json_is_number(st) || !json_is_number(l)) {
            lm_errf(err, "%s:%d: not a metrics line (step, loss_smooth)", metrics_path, lm_jsonl_line(in));
            goto done;
        }
        double x = json_number_value(st);
        int bad = push(&tr, x, json_number_value(l)) || take(&va, o, "val_loss", x, 0, NULL, NULL) ||
                  take(&mt, o, "rewards/margins", x, 1, &ema_m, &km) ||
                  take(&mv, o, "val_rewards/margins", x, 0, NULL, NULL) ||
                  take(&at, o, "rewards/accuracies", x, 1, &ema_a, &ka) ||
                  take(&av, o, "val_rewards/accuracies", x, 0, NULL, NULL);
        if (bad) { lm_errf(err, "out of memory"); goto done; }
    }
    double x1 = 1;
    for (size_t i = 0; i < tr.n; i++)
        if (tr.x[i] > x1) x1 = tr.x[i];
    int dpo = mt.n > 0;
    panel panels[3] = {
        {&tr, &va, dpo ? "DPO loss" : "loss", "train (smoothed)", "validation", 0, 0, 0},
        {&mt, &mv, "reward margin", "train (smoothed)", "validation", 0, 0, 0},
        {&at, &av, "reward accuracy", "train (smoothed)", "validation", 1, 0, 1},
    };
    int n_panels = dpo ? 3 : 1;

    lm_sb svg = {0}, *f = &svg;
    lm_sb_printf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H * n_panels);
    for (int i = 0; i < n_panels; i++) draw_panel(f, &panels[i], x1, i * H);
    lm_sb_printf(f, "</svg>\n");
    if (svg.oom) { lm_errf(err, "%s: out of memory", svg_path); lm_sb_free(&svg); goto done; }
    int wrc = lm_write_file_atomic(svg_path, svg.p, svg.len, err);
    lm_sb_free(&svg);
    if (wrc) goto done;
    rc = 0;
done:
    lm_jsonl_close(in);
    series *all[6] = {&tr, &va, &mt, &mv, &at, &av};
    for (int i = 0; i < 6; i++) {
        free(all[i]->x);
        free(all[i]->y);
    }
    return rc;
}
