/* The LLM judge's prompt and the parsing of its scores (judge.h). */
#include "eval/judge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/strbuf.h"

static const char *const DIMS[LM_JUDGE_N] = {"memorization", "values", "personality",
                                             "hallucination", "stability"};

const char *lm_judge_dim_name(int d) { return d >= 0 && d < LM_JUDGE_N ? DIMS[d] : NULL; }

const char *lm_judge_system(void) {
    return "You judge how well a role-playing character's reply stays true to the character. "
           "You are strict: 7 is a reply the character's writer would keep as it is, 4 is "
           "passable, 1 is wrong for the character. Reply with one JSON object and nothing "
           "else.";
}

char *lm_judge_prompt(const char *profile, const char *asker, const char *location,
                      const char *history, const char *question, const char *answer) {
    lm_sb b = {0};
    lm_sb_printf(&b, "# The character\n\n%s\n\n# The scene\n\n", profile ? profile : "(no sheet)");
    lm_sb_printf(&b, "Speaking to the character: %s\nPlace: %s\n", asker ? asker : "unknown",
                 location ? location : "unknown");
    if (history && *history) lm_sb_printf(&b, "\nEarlier in the conversation:\n%s\n", history);
    lm_sb_printf(&b, "\n# The question\n\n%s\n\n# The character's reply\n\n%s\n\n", question ? question : "",
                 answer ? answer : "");
    lm_sb_str(&b,
              "# Score the reply from 1 to 7 on each dimension\n\n"
              "- memorization: consistent with the character's life, people and facts; invents no "
              "family, titles or events the sheet contradicts\n"
              "- values: speaks and acts by the character's values and alignment\n"
              "- personality: the character's manner, tone and way of speaking\n"
              "- hallucination: avoids knowledge the character could not have (modern things, "
              "other worlds); 7 means none\n"
              "- stability: stays the character throughout: no assistant talk, no drifting into "
              "another voice, answers what was asked\n\n"
              "Reply with exactly: {\"memorization\": N, \"values\": N, \"personality\": N, "
              "\"hallucination\": N, \"stability\": N}\n");
    if (b.oom) { lm_sb_free(&b); return NULL; }
    return b.p;
}

/* The five scores of o, or -1 (with what was wrong). */
static int scores_of(json_t *o, int scores[LM_JUDGE_N], char *why, size_t cap) {
    for (int d = 0; d < LM_JUDGE_N; d++) {
        json_t *v = json_object_get(o, DIMS[d]);
        if (!v) { snprintf(why, cap, "no \"%s\"", DIMS[d]); return -1; }
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 7) {
            snprintf(why, cap, "\"%s\" is not an integer from 1 to 7", DIMS[d]);
            return -1;
        }
        scores[d] = (int)json_integer_value(v);
    }
    return 0;
}

int lm_judge_parse(const char *reply, int scores[LM_JUDGE_N], lm_err *err) {
    char why[128] = "no JSON object";
    /* Judges wrap the object in prose or a code fence: try each '{' until
     * one starts an object with the five scores. */
    for (const char *p = reply ? strchr(reply, '{') : NULL; p; p = strchr(p + 1, '{')) {
        json_error_t je;
        json_t *o = json_loads(p, JSON_DISABLE_EOF_CHECK, &je);
        if (!json_is_object(o)) { json_decref(o); continue; }
        int rc = scores_of(o, scores, why, sizeof why);
        json_decref(o);
        if (!rc) return 0;
    }
    char head[81];
    snprintf(head, sizeof head, "%s", reply ? reply : "");
    for (char *q = head; *q; q++)
        if (*q == '\n' || *q == '\r') *q = ' ';
    return lm_errf(err, "judge reply: %s (reply starts \"%s\")", why, head);
}
