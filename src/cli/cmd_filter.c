/* lemonpc filter: runs the dataset filters (datagen/filter.h) over an
 * existing JSONL chat dataset. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "check/filter.h"
#include "sheet/sheet.h"
#include "train/chat_jsonl.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc filter IN.jsonl OUT.jsonl --character SHEET.md [--rejected REJ.jsonl]\n"
            "                      [--config FILE] [--phrases FILE] [--report]\n\n"
            "Writes the samples that pass every filter to OUT with meta.filters_passed, and\n"
            "(with --rejected) the others with meta.filters_failed and meta.filter_notes.\n"
            "Near-duplicates are judged against the samples kept before them, in file order.\n"
            "  --character SHEET  the character sheet (name, backstory and opinions for overlap)\n"
            "  --config FILE      thresholds, `key = value` lines (see src/datagen/filter.h)\n"
            "  --phrases FILE     more assistant-speech phrases, one per line\n"
            "  --report           print counts per filter\n"
            "Exit status: 0 ok, 1 error, 2 usage.\n");
}

typedef struct {
    FILE *f;
    char *tmp;
    const char *path;
} outfile;

static int out_open(outfile *o, const char *path) {
    o->path = path;
    o->tmp = malloc(strlen(path) + 5);
    if (!o->tmp) return -1;
    sprintf(o->tmp, "%s.tmp", path);
    o->f = fopen(o->tmp, "w");
    if (!o->f) fprintf(stderr, "lemonpc filter: %s: cannot write\n", o->tmp);
    return o->f ? 0 : -1;
}

static int out_close(outfile *o, int keep) {
    int rc = 0;
    if (o->f) {
        rc = fclose(o->f) ? -1 : 0;
        if (keep && rc == 0) rc = rename(o->tmp, o->path);
        else unlink(o->tmp);
        if (keep && rc) fprintf(stderr, "lemonpc filter: %s: cannot write\n", o->path);
    }
    free(o->tmp);
    return rc;
}

static int put(FILE *f, json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    int rc = !s || fprintf(f, "%s\n", s) < 0 ? -1 : 0;
    free(s);
    return rc;
}

int cmd_filter(int argc, char **argv) {
    const char *in = NULL, *outp = NULL, *sheet = NULL, *rej = NULL, *config = NULL, *phrases = NULL;
    int report = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        const char **dst = !strcmp(a, "--character") ? &sheet : !strcmp(a, "--rejected") ? &rej
                           : !strcmp(a, "--config") ? &config : !strcmp(a, "--phrases") ? &phrases : NULL;
        if (dst && i + 1 < argc) *dst = argv[++i];
        else if (!strcmp(a, "--report")) report = 1;
        else if (a[0] == '-' || dst || (in && outp)) {
            usage(stderr);
            return 2;
        } else if (!in) in = a;
        else outp = a;
    }
    if (!in || !outp || !sheet) {
        usage(stderr);
        return 2;
    }
    lm_diags d = {0};
    lm_character *c = lm_character_load(sheet, &d);
    if (!c || lm_diags_count(&d, LM_DIAG_ERROR)) {
        for (size_t i = 0; i < d.n; i++)
            if (d.v[i].level == LM_DIAG_ERROR)
                fprintf(stderr, "%s:%d: error: %s\n", d.v[i].file, d.v[i].line, d.v[i].msg);
        fprintf(stderr, "lemonpc filter: %s: the sheet has errors (lemonpc check %s)\n", sheet, sheet);
        lm_diags_free(&d);
        lm_character_free(c);
        return 1;
    }
    lm_diags_free(&d);
    lm_err err = {{0}};
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    cfg.phrases_path = phrases;
    lm_filter_set *fs = NULL;
    lm_dedup *dd = NULL;
    lm_chat_jsonl *inf = NULL;
    outfile ok = {0}, rej_out = {0};
    int rc = 1;
    if (config && lm_filter_config_load(&cfg, config, &err)) goto done;
    if (!(fs = lm_filter_set_new(&cfg, c, &err)) || !(dd = lm_dedup_new(&cfg, &err))) goto done;
    err.msg[0] = 0;
    /* lenient: a bad line is reported and skipped, the rest filtered */
    lm_chat_jsonl_opts ro = {.need = LM_CHAT_NEED_USER | LM_CHAT_NEED_ASSISTANT};
    if (!(inf = lm_chat_jsonl_open(in, &ro, &err))) goto done;
    if (out_open(&ok, outp) || (rej && out_open(&rej_out, rej))) goto done;
    size_t n_total = 0, n_pass = 0, per[LM_FILTER_COUNT] = {0};
    lm_chat_line l;
    lm_err bad;
    int got, werr = 0;
    while (!werr && (got = lm_chat_jsonl_next(inf, &l, &bad)) != LM_JSONL_END) {
        if (got != LM_JSONL_OK) {
            fprintf(stderr, "lemonpc filter: %s: skipped\n", bad.msg);
            continue;
        }
        json_t *o = l.root;
        n_total++;
        json_t *meta = json_object_get(o, "meta");
        if (!json_is_object(meta)) {
            meta = json_object();
            json_object_set_new(o, "meta", meta);
        }
        json_t *asker = json_object_get(meta, "asker");
        const char *finish = json_string_value(json_object_get(meta, "finish_reason"));
        lm_filter_sample x = {
            l.msgs[lm_chat_last(&l, "user")].content, l.msgs[lm_chat_last(&l, "assistant")].content,
            json_string_value(json_object_get(meta, "kind")), NULL,
            json_is_string(asker) ? json_string_value(asker) : json_string_value(json_object_get(asker, "name")),
            (finish && !strcmp(finish, "length")) || json_is_true(json_object_get(meta, "truncated")),
            0,
        };
        lm_filter_result r;
        if (lm_filter_run(fs, &x, &r)) lm_dedup_check(dd, &x, &r);
        json_t *names = json_array();
        for (int f = 0; f < LM_FILTER_COUNT; f++)
            if ((r.checked & (1u << f)) && !(r.failed & (1u << f))) json_array_append_new(names, json_string(lm_filter_name(f)));
        json_object_set_new(meta, "filters_passed", names);
        if (r.pass) {
            if (lm_dedup_add(dd, &x, &err) < 0) werr = 1;
            n_pass++;
            werr |= put(ok.f, o) != 0;
        } else {
            json_t *failed = json_array(), *notes = json_array();
            for (size_t k = 0; k < r.n_notes; k++) {
                char buf[LM_FILTER_REASON_MAX + 32];
                snprintf(buf, sizeof buf, "%s: %s", lm_filter_name(r.notes[k].filter), r.notes[k].reason);
                json_array_append_new(failed, json_string(lm_filter_name(r.notes[k].filter)));
                json_array_append_new(notes, json_string(buf));
                per[r.notes[k].filter]++;
            }
            json_object_set_new(meta, "filters_failed", failed);
            json_object_set_new(meta, "filter_notes", notes);
            if (rej_out.f) werr |= put(rej_out.f, o) != 0;
        }
    }
    if (werr) {
        snprintf(err.msg, sizeof err.msg, "%s: write failed", outp);
        goto done;
    }
    rc = 0;
    FILE *rep = report ? stdout : stderr;
    fprintf(rep, "%zu of %zu samples passed", n_pass, n_total);
    if (lm_chat_jsonl_bad(inf)) fprintf(rep, " (%ld unreadable lines skipped)", lm_chat_jsonl_bad(inf));
    fprintf(rep, "\n");
    if (report)
        for (int f = 0; f < LM_FILTER_COUNT; f++)
            printf("  %-18s %zu rejected\n", lm_filter_name(f), per[f]);
done:
    if (out_close(&ok, rc == 0) || out_close(&rej_out, rc == 0)) rc = 1;
    if (rc && err.msg[0]) fprintf(stderr, "lemonpc filter: %s\n", err.msg);
    lm_chat_jsonl_close(inf);
    lm_dedup_free(dd);
    lm_filter_set_free(fs);
    lm_character_free(c);
    return rc;
}
