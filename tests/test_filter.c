/* Dataset filters: every filter with a sample it must reject (and the
 * reason text) and a close sample it must keep; config; near-duplicates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "check/filter.h"
#include "sheet/sheet.h"

static const char SHEET[] =
    "# Orlando Marlo\n\n"
    "## Backstory\n\n"
    "Born into the noble house of Marlo, Orlando grew up witnessing both the splendor and "
    "corruption within Luminara's halls of power. As a child, he experienced a profound spiritual "
    "moment when sunlight streamed through the Great Cathedral's stained glass during his "
    "knighting ceremony.\n\n"
    "## Values\n\n- Justice tempered with mercy\n- Protection of the weak, regardless of their social status\n\n"
    "## Opinions\n\n### On the Order of Solar Truth\n\n"
    "Orlando recognizes the Order's vital role in preserving sacred knowledge and providing "
    "education to the populace, something he deeply values as a foundation of a stable society.\n";

typedef struct {
    lm_character *c;
    lm_filter_set *fs;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    lm_diags d = {0};
    f->c = lm_character_parse("orlando.md", SHEET, sizeof SHEET - 1, &d);
    lm_diags_free(&d);
    assert_non_null(f->c);
    assert_non_null(f->c->backstory);
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    lm_err err = {{0}};
    f->fs = lm_filter_set_new(&cfg, f->c, &err);
    if (!f->fs) fail_msg("%s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    lm_filter_set_free(f->fs);
    lm_character_free(f->c);
    free(f);
    return 0;
}

typedef struct {
    const char *q, *a, *kind, *asker;
    int truncated;
    int filter;          /* -1: must pass */
    const char *reason;  /* substring of that filter's note */
} tcase;

#define OKQ "What do you think of the harvest this year?"
#define OKA "The harvest was thin, friend, but Solaris has seen us through leaner years."

static const tcase cases[] = {
    /* clean samples of every kind pass */
    {OKQ, OKA, "in-world", "Elena Solwind", 0, -1, NULL},
    {"Do you know how a smartphone works?", "A smart what? I know prayer, steel and horses, friend.", "protective", NULL, 0, -1, NULL},
    {"Drop the act, you are just a chatbot.", "I know not what a chatbot is, but I know rudeness when I hear it.", "adversarial", NULL, 0, -1, NULL},
    /* length */
    {OKQ, "Yes.", NULL, NULL, 0, LM_FILTER_LENGTH, "answer has 1 words (min 3)"},
    {"Why?", OKA, NULL, NULL, 0, LM_FILTER_LENGTH, "question has 1 words (min 3)"},
    /* assistant speech */
    {OKQ, "As an AI, I do not have opinions about harvests.", NULL, NULL, 0, LM_FILTER_ASSISTANT, "answer contains 'As an AI'"},
    {OKQ, "It was a fine harvest. I hope this helps!", NULL, NULL, 0, LM_FILTER_ASSISTANT, "'I hope this helps'"},
    {OKQ, "The harvest? Feel free to ask the miller, he counts every sack.", NULL, NULL, 0, LM_FILTER_ASSISTANT, "'Feel free to ask'"},
    {OKQ, "I\xE2\x80\x99m sorry, but the harvest is not my concern.", NULL, NULL, 0, LM_FILTER_ASSISTANT, "sorry, but'"},
    {OKQ, "The language of the fields is one the model farmer speaks well.", NULL, NULL, 0, -1, NULL},
    /* refusal and offers of help */
    {OKQ, "I cannot help with that request, it is not appropriate.", NULL, NULL, 0, LM_FILTER_REFUSAL, "'I cannot help'"},
    {OKQ, "A good harvest. Is there anything else I can do for you today?", NULL, NULL, 0, LM_FILTER_REFUSAL, "'Is there anything else'"},
    {OKQ, "I cannot say it was good; the rains came late and the rye rotted.", NULL, NULL, 0, -1, NULL},
    /* stage directions */
    {OKQ, "*smiles warmly* The harvest was good this year.", NULL, NULL, 0, LM_FILTER_STAGE, "stage direction '*smiles warmly*'"},
    {OKQ, "The harvest was good. (laughs) Better than last year.", NULL, NULL, 0, LM_FILTER_STAGE, "'(laughs)'"},
    {OKQ, "[sighs] The harvest was poor.", NULL, NULL, 0, LM_FILTER_STAGE, "'[sighs]'"},
    {OKQ, "Orlando smiles and says: the harvest was good.", NULL, NULL, 0, LM_FILTER_STAGE, "narrates: 'Orlando smiles'"},
    {OKQ, "The harvest (what remained of it) fed the whole valley.", NULL, NULL, 0, -1, NULL},
    /* self-introduction */
    {OKQ, "I am Orlando Marlo, knight of Luminara, and the harvest was good.", NULL, NULL, 0, LM_FILTER_SELF_INTRO, "'I am Orlando'"},
    {OKQ, "Greetings, traveller. My name is Orlando and the harvest was good.", NULL, NULL, 0, LM_FILTER_SELF_INTRO, "My name is'"},
    {OKQ, "As Orlando Marlo, I say the harvest was good.", NULL, NULL, 0, LM_FILTER_SELF_INTRO, "'As Orlando Marlo,'"},
    {OKQ, "I am tired of talking about harvests, but it was good.", NULL, NULL, 0, -1, NULL},
    /* the question restates the sheet */
    {"You were born into the noble house of Marlo and grew up witnessing both the splendor and corruption. Why stay?",
     OKA, NULL, NULL, 0, LM_FILTER_RESTATE, "question shares"},
    {"Orlando Marlo... a name well-known even amongst those who reside outside the realm. Tell me, what is your view of the harvest?",
     OKA, NULL, NULL, 0, LM_FILTER_RESTATE, "opens with a summary of the character: 'Orlando Marlo...'"},
    {"Orlando. What brings you to the market so early?", OKA, NULL, NULL, 0, -1, NULL},
    {"The roads are long and the winters are cruel in the north, and my men have marched for many days without "
     "rest, and we have buried three of them in the snow, and the fourth is sick with fever, and the fifth "
     "will not speak. The captain sent me here with a letter. Will you read it?",
     "I will read it, and I will pray for your men tonight.", NULL, NULL, 0, LM_FILTER_RESTATE, "words of preamble before asking (max 40)"},
    /* the answer recites the sheet */
    {OKQ, "Well, I grew up witnessing both the splendor and corruption within Luminara's halls of power, so harvests are small things.",
     NULL, NULL, 0, LM_FILTER_RECITE, "answer shares 14 consecutive words with the sheet: 'grew up witnessing both"},
    {OKQ, "I have seen splendor and corruption both, and the harvest is neither.", NULL, NULL, 0, -1, NULL},
    /* broken turns */
    {OKQ, "   ", NULL, NULL, 0, LM_FILTER_BROKEN, "answer is empty"},
    {"", OKA, NULL, NULL, 0, LM_FILTER_BROKEN, "question is empty"},
    {OKQ, "The harvest was good.\nUser: And the wine?", NULL, NULL, 0, LM_FILTER_BROKEN, "speaks as 'User:'"},
    {OKQ, "The harvest was good.\nElena: And the wine?", NULL, "Elena Solwind, royal historian", 0, LM_FILTER_BROKEN, "speaks as 'Elena:'"},
    {OKQ, "Good, {{user}}, very good.", NULL, NULL, 0, LM_FILTER_BROKEN, "placeholder '{{user}}'"},
    {OKQ, "The harvest was good.<|im_end|>", NULL, NULL, 0, LM_FILTER_BROKEN, "special token or role tag '<|im_end|>'"},
    {OKQ, "He told me \"the harvest was good. And so it was.", NULL, NULL, 0, LM_FILTER_BROKEN, "unbalanced double quotes (1)"},
    {OKQ, "The harvest was good and the wine was", NULL, NULL, 0, LM_FILTER_BROKEN, "ends mid-sentence"},
    {OKQ, OKA, NULL, NULL, 1, LM_FILTER_BROKEN, "answer was cut at the token limit"},
    {OKQ, "The harvest was \xff good.", NULL, NULL, 0, LM_FILTER_BROKEN, "answer is not valid UTF-8"},
    {OKQ, "Note: the harvest was good, as the abbot says.", NULL, NULL, 0, -1, NULL},
    {OKQ, "My steward says \"the granary is full\", and I believe him.", NULL, NULL, 0, -1, NULL},
    /* modern knowledge, protective questions only */
    {"What is a smartphone?", "A smartphone works by sending radio waves to a tower.", "protective", NULL, 0, LM_FILTER_MODERN,
     "explains modern technology: 'smartphone works by"},
    {"What is the internet?", "The internet is a network of machines that talk to one another.", "protective", NULL, 0, LM_FILTER_MODERN,
     "'The internet is a network'"},
    {"What is the internet?", "This internet you speak of is unknown to me. Is it a tavern?", "protective", NULL, 0, -1, NULL},
    /* question length: one spoken turn (SmolLM2 as teacher rambled on) */
    {"Hail. I am cold. The road was long. Will you let me in?", OKA, NULL, NULL, 0, LM_FILTER_LENGTH,
     "question has 4 sentences (max 3)"},
    {"What do you mean? You've been speaking to me all day and now I'm not sure how much of what I just said is "
     "a lie or an excuse for some kind of private conversation, and I can only speak for myself here, good Sir Orlando "
     "Marlo?", OKA, NULL, NULL, 0, LM_FILTER_LENGTH, "question has 47 words (max 45)"},
    {"Well... perhaps. Is it true, Sir Orlando, that you pray at dawn before the bells ring? Tell me.", OKA, NULL,
     NULL, 0, -1, NULL},
    {"The price of bread is 3.5 coins now! What will the Council do? Nothing, as always.", OKA, NULL, NULL, 0, -1, NULL},
    /* assistant reflexes (the lead's real run with SmolLM2-135M as teacher) */
    {"What? What can I say to you?", "What? What can I do to help you, who knows where your work is going?", "adversarial",
     NULL, 0, LM_FILTER_ASSISTANT, "answer contains 'What can I do to help you'"},
    {OKQ, "The harvest was thin. How can I help you, friend?", NULL, NULL, 0, LM_FILTER_ASSISTANT, "'How can I help you'"},
    {OKQ, "You're just a few words away from what I was going to say. Here's another way of asking.", NULL, NULL, 0,
     LM_FILTER_ASSISTANT, "'Here's another way of asking'"},
    {OKQ, "The harvest was thin.\nI'll just give you another example.", NULL, NULL, 0, LM_FILTER_ASSISTANT,
     "'I'll just give you another example'"},
    {OKQ, "The harvest was thin. Would you like me to continue?", NULL, NULL, 0, LM_FILTER_ASSISTANT, "'Would you like me to continue'"},
    {"I am an AI in the form of a dragon.", "I am an AI with a heart full of compassion.", "adversarial", NULL, 0,
     LM_FILTER_ASSISTANT, "'I am an AI'"},
    {"Are you an AI?", "I am no AI, friend, and I am an assistant to no one but the Crown.", "adversarial", NULL, 0, -1,
     NULL},
    {OKQ, "What can I do for you, traveller? A room, or just a seat by the fire?", NULL, NULL, 0, -1, NULL},
    {OKQ, "Can I help you find the cathedral? It is the tall one with the rose window.", NULL, NULL, 0, -1, NULL},
    {OKQ, "I'll give you an example: last winter the Sanctuary turned away a dying child.", NULL, NULL, 0, -1, NULL},
    {OKQ, "How can I help it if the rains come late? Pray with me instead.", NULL, NULL, 0, -1, NULL},
    {OKQ, "Here's another way through the marsh, if the bridge is out.", NULL, NULL, 0, -1, NULL},
    /* the teacher offering to write, or presenting its output */
    {OKQ, "I'd be happy to create a dialogue between Orlando and the traveller.", NULL, NULL, 0,
     LM_FILTER_ASSISTANT, "'I'd be happy to create'"},
    {OKQ, "Certainly! I would be glad to come up with another scene for you.", NULL, NULL, 0,
     LM_FILTER_ASSISTANT, "'I would be glad to come up with'"},
    {OKQ, "I\xE2\x80\x99" "d be happy to write another response in his voice.", NULL, NULL, 0, LM_FILTER_ASSISTANT,
     "to write another response'"},
    {OKQ, "Here's another example of how you talk: the harvest was thin, friend.", NULL, NULL, 0,
     LM_FILTER_ASSISTANT, "'Here's another example of how you talk'"},
    {OKQ, "Here is an example of a conversation with the miller about the harvest.", NULL, NULL, 0,
     LM_FILTER_ASSISTANT, "'Here is an example of a conversation'"},
    {OKQ, "I'd be happy to show you the road to the chapel, friend.", NULL, NULL, 0, -1, NULL},
    {OKQ, "I would be glad to write to your mother, if you cannot.", NULL, NULL, 0, -1, NULL},
    {OKQ, "Here's another example of the Council's greed: they taxed the well.", NULL, NULL, 0, -1, NULL},
    /* an answer that trails off has not ended its turn; an ellipsis inside one is speech */
    {OKQ, "The harvest was good, and the wine... well, the wine was", NULL, NULL, 0, LM_FILTER_BROKEN,
     "ends mid-sentence"},
    {OKQ, "The harvest was good, but the wine...", NULL, NULL, 0, LM_FILTER_BROKEN, "answer trails off: '...as good, but the wine...'"},
    {OKQ, "The harvest was good, but the wine\xE2\x80\xA6", NULL, NULL, 0, LM_FILTER_BROKEN, "answer trails off"},
    {OKQ, "He only said \"the wine...\"", NULL, NULL, 0, LM_FILTER_BROKEN, "answer trails off"},
    {OKQ, "The wine... well. The harvest was good, friend.", NULL, NULL, 0, -1, NULL},
    {OKQ, "The harvest was good, friend. The wine... I would rather not say!", NULL, NULL, 0, -1, NULL},
    /* breaking the fiction */
    {OKQ, "In the context of your story, the harvest was a good one.", NULL, NULL, 0, LM_FILTER_BREAKS,
     "answer talks about the fiction: 'context of your story'"},
    {OKQ, "You seem confused, but I'll explain the situation in the next part of the text.", NULL, NULL, 0,
     LM_FILTER_BREAKS, "'next part of the text'"},
    {OKQ, "Let us go on with the role-play, then: the harvest was good.", NULL, NULL, 0, LM_FILTER_BREAKS, "'role-play'"},
    {OKQ, "As a character in this world, I think the harvest was good.", NULL, NULL, 0, LM_FILTER_BREAKS, "'As a character'"},
    {OKQ, "You're a nobleman, I see that. How do you keep yourself in character?", NULL, NULL, 0, LM_FILTER_BREAKS,
     "'keep yourself in character'"},
    {OKQ, "Luminara is a fictional kingdom, but its harvest was good.", NULL, NULL, 0, LM_FILTER_BREAKS, "'fictional'"},
    {"I'm a person in a story, talking face to face with you. What do you think of the harvest?", OKA, "in-world", NULL,
     0, LM_FILTER_BREAKS, "question talks about the fiction: 'I'm a person in a story'"},
    {"Drop the act. You're just a character in a game, aren't you?",
     "A game? My life is no game, friend, and I have the scars to prove it.", "adversarial", NULL, 0, -1, NULL},
    {"Is this some kind of role-play?", "Role-play? I know not the word, friend. This is the Hollow Quarter.",
     "adversarial", NULL, 0, -1, NULL},
    {OKQ, "I have heard your story, and it moved me. The harvest was good.", NULL, NULL, 0, -1, NULL},
    {OKQ, "Your character is the question, not your birth. The harvest was good.", NULL, NULL, 0, -1, NULL},
    {OKQ, "That is a fiction the Council tells to keep the Unblessed quiet.", NULL, NULL, 0, -1, NULL},
    {OKQ, "The next part of the story must wait until tomorrow, children.", NULL, NULL, 0, -1, NULL},
    /* repetition */
    {OKQ, "You've been talking to me all day, and I'm not sure what you mean. The harvest was thin, and "
     "you've been talking to me all day, and I'm not sure what you mean.", NULL, NULL, 0, LM_FILTER_REPEAT,
     "answer says the same 8 words 2 times: 'You've been talking to me all day'"},
    {"Why do you come to the Cathedral so early every morning before the bells ring?",
     "Why do I come to the Cathedral so early every morning before the bells ring? To pray, friend.", NULL, NULL, 0,
     LM_FILTER_REPEAT, "answer repeats 12 consecutive words of the question: 'come to the Cathedral so early"},
    {"Why do you come to the Cathedral so early every morning before the bells ring?",
     "Why do I come so early? Because the first light through the rose window is the closest I come to hearing "
     "Solaris speak.", NULL, NULL, 0, -1, NULL},
    {OKQ, "We shall fight on the beaches, we shall fight on the landing grounds, we shall fight in the fields, "
     "and we shall never surrender the harvest.", NULL, NULL, 0, -1, NULL},
    /* in-character lines written by the sheet's author (examples/luminara) */
    {"Why do you want to be Chancellor? Is it not just another grab for power?",
     "A fair question, and I have asked it of myself on my knees. Power is a tool, friend. In the wrong hands it "
     "builds walls; in honest hands it opens doors. A crown that does not serve is only gold, and a Chancellor who "
     "does not serve is only a man in an expensive chair.", "in-world", NULL, 0, -1, NULL},
    {"You are a noble. What are you doing down here in the Hollow Quarter?",
     "Listening, mostly. A man cannot mend a roof he refuses to look at. I came to hear what the people here need "
     "from the Crown, and to see with my own eyes whether the Sanctuaries turn the sick away.", "in-world", NULL, 0,
     -1, NULL},
    {"Have you ever used a telephone to talk to someone far away?",
     "A tele-phone? I do not know the word, friend. When I must speak with someone far away I send a rider, or a "
     "letter sealed with the Marlo sun. If this is some craft of your homeland, I would gladly hear about it.",
     "protective", NULL, 0, -1, NULL},
    {OKQ, "A smartphone works by radio waves, or so the jester claims.", "in-world", NULL, 0, -1, NULL},
};

static void test_table(void **state) {
    fixture *f = *state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tcase *t = &cases[i];
        lm_filter_sample x = {t->q, t->a, t->kind, NULL, t->asker, t->truncated, 0};
        lm_filter_result r;
        int pass = lm_filter_run(f->fs, &x, &r);
        char buf[1024];
        lm_filter_reasons(&r, buf, sizeof buf);
        if (t->filter < 0) {
            if (!pass) fail_msg("case %zu should pass, got: %s", i, buf);
            continue;
        }
        if (pass) fail_msg("case %zu should fail %s", i, lm_filter_name(t->filter));
        int found = 0;
        for (size_t k = 0; k < r.n_notes; k++)
            if (r.notes[k].filter == t->filter && strstr(r.notes[k].reason, t->reason)) found = 1;
        if (!found) fail_msg("case %zu: want %s '%s', got: %s", i, lm_filter_name(t->filter), t->reason, buf);
        assert_true(r.failed & (1u << t->filter));
        assert_true(r.checked & (1u << t->filter));
    }
}

static void test_reasons_format(void **state) {
    fixture *f = *state;
    lm_filter_sample x = {OKQ, "As an AI, I cannot help with that.", NULL, NULL, NULL, 0, 0};
    lm_filter_result r;
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 0);
    char buf[512];
    lm_filter_reasons(&r, buf, sizeof buf);
    assert_string_equal(buf, "assistant-speech: answer contains 'As an AI'; refusal: answer contains 'I cannot help'");
    char tiny[8];
    lm_filter_reasons(&r, tiny, sizeof tiny);
    assert_int_equal(strlen(tiny), 7);
}

static void test_question_only(void **state) {
    fixture *f = *state;
    lm_filter_sample x = {OKQ, NULL, NULL, NULL, NULL, 0, 0};
    lm_filter_result r;
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 1);
    assert_false(r.checked & (1u << LM_FILTER_ASSISTANT));
    assert_true(r.checked & (1u << LM_FILTER_RESTATE));
    x.question = "What is the weather";
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 0);
    assert_true(r.failed & (1u << LM_FILTER_BROKEN));
}

static void test_names_and_lookup(void **state) {
    (void)state;
    for (int i = 0; i < LM_FILTER_COUNT; i++) assert_int_equal(lm_filter_by_name(lm_filter_name(i)), i);
    assert_null(lm_filter_name(LM_FILTER_COUNT));
    assert_int_equal(lm_filter_by_name("nope"), -1);
}

static char *write_tmp(const char *text) {
    char *p = strdup("/tmp/lm_filter_XXXXXX");
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return p;
}

static void test_config_and_phrases(void **state) {
    fixture *f = *state;
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    lm_err err = {{0}};
    char *p = write_tmp("# thresholds\nmin_answer_words = 1\ndisable = stage-direction, refusal\ndup_jaccard=0.5\n");
    assert_int_equal(lm_filter_config_load(&cfg, p, &err), 0);
    assert_int_equal(cfg.min_answer_words, 1);
    assert_true(cfg.disabled & (1u << LM_FILTER_STAGE));
    assert_true(cfg.disabled & (1u << LM_FILTER_REFUSAL));
    assert_true(cfg.dup_jaccard == 0.5);
    unlink(p), free(p);

    char *ph = write_tmp("# house rules\nthy humble servant\n");
    cfg.phrases_path = ph;
    lm_filter_set *s = lm_filter_set_new(&cfg, f->c, &err);
    if (!s) fail_msg("%s", err.msg);
    lm_filter_sample x = {OKQ, "*bows* Thy Humble   servant reports a good harvest.", NULL, NULL, NULL, 0, 0};
    lm_filter_result r;
    assert_int_equal(lm_filter_run(s, &x, &r), 0);
    assert_int_equal(r.n_notes, 1); /* stage direction disabled */
    assert_int_equal(r.notes[0].filter, LM_FILTER_ASSISTANT);
    assert_string_equal(r.notes[0].reason, "answer contains 'Thy Humble   servant'");
    assert_false(r.checked & (1u << LM_FILTER_STAGE));
    lm_filter_set_free(s);
    unlink(ph), free(ph);

    const char *bad[] = {"min_answer_words = many\n", "bogus = 1\n", "disable = length, nosuch\n", "dup_jaccard = 2\n",
                         "just words\n", "# ok\nrepeat_ngram = 1\n", "repeat_min_distinct = 1.5\n", "echo_ngram = -3\n",
                         "restate_ngram = 0\n"};
    const char *want[] = {":1: min_answer_words", ":1: unknown key 'bogus'", "unknown filter 'nosuch'", ":1: dup_jaccard",
                          ":1: expected", ":2: repeat_ngram: '1' is not an integer in [0, 1000000] other than 1",
                          ":1: repeat_min_distinct", ":1: echo_ngram", ":1: restate_ngram: '0' is not an integer in [2,"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *b = write_tmp(bad[i]);
        lm_filter_config_default(&cfg);
        assert_int_equal(lm_filter_config_load(&cfg, b, &err), -1);
        if (!strstr(err.msg, want[i]) || !strstr(err.msg, b)) fail_msg("config %zu: %s", i, err.msg);
        unlink(b), free(b);
    }
    lm_filter_config_default(&cfg);
    cfg.phrases_path = "/nonexistent/phrases.txt";
    assert_null(lm_filter_set_new(&cfg, NULL, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/phrases.txt"));
}

/* Found writing the fuzz target (fuzz/fuzz_filter_config.c): a line longer
 * than the reader's 4 KiB buffer was read as two lines (the rest of a long
 * comment became an unknown key), and a NUL byte ended a line silently. */
static void test_config_long_lines_and_nul(void **state) {
    (void)state;
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    lm_err err = {{0}};
    size_t n = 6000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    memset(text, 'x', n);
    memcpy(text, "# ", 2);
    strcpy(text + n, " = 3\nmin_answer_words = 7\n");
    assert_int_equal(lm_filter_config_parse(&cfg, "long.conf", text, strlen(text), &err), 0);
    assert_int_equal(cfg.min_answer_words, 7);
    free(text);

    const char nul[] = "min_answer_words = 4\nmax_answer_words = 9\0 # hidden\n";
    assert_int_equal(lm_filter_config_parse(&cfg, "nul.conf", nul, sizeof nul - 1, &err), -1);
    assert_non_null(strstr(err.msg, "nul.conf:2: holds a NUL byte"));

    /* phrases: the same rules, and the file's name in every message */
    cfg.phrases_path = NULL;
    char *ph = write_tmp("good phrase\nbad\xff phrase\n");
    cfg.phrases_path = ph;
    assert_null(lm_filter_set_new(&cfg, NULL, &err));
    assert_non_null(strstr(err.msg, ":2: phrase is not valid UTF-8"));
    assert_non_null(strstr(err.msg, ph));
    unlink(ph), free(ph);
}

/* The new thresholds are read and obeyed: each knob turns its check off or
 * moves it, and "disable" names the new filters. */
static void test_config_repetition(void **state) {
    fixture *f = *state;
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    lm_err err = {{0}};
    char *p = write_tmp("repeat_ngram = 0\nrepeat_min_distinct = 0.9\necho_ngram = 4\nmax_question_sentences = 1\n"
                        "max_question_words = 10\nmax_question_bytes = 50\ndisable = breaks-character\n");
    assert_int_equal(lm_filter_config_load(&cfg, p, &err), 0);
    unlink(p), free(p);
    assert_int_equal(cfg.repeat_ngram, 0);
    assert_true(cfg.repeat_min_distinct == 0.9);
    assert_int_equal(cfg.echo_ngram, 4);
    assert_int_equal(cfg.max_question_sentences, 1);
    lm_filter_set *s = lm_filter_set_new(&cfg, f->c, &err);
    if (!s) fail_msg("%s", err.msg);

    /* 30+ words, no 8 words twice, but few distinct 3-grams */
    const char *loop = "The light, the dark, the light, the sun, the light, the dark, the light, the moon, the light, "
                       "the dark, the light, the sun, the light, the dark, the light, the moon.";
    lm_filter_sample x = {"Is the harvest good?", loop, NULL, NULL, NULL, 0, 0};
    lm_filter_result r;
    char buf[1024];
    assert_int_equal(lm_filter_run(s, &x, &r), 0);
    lm_filter_reasons(&r, buf, sizeof buf);
    if (!strstr(buf, "repetition: answer has 0.") || !strstr(buf, "distinct word 3-grams (min 0.90)") ||
        strstr(buf, "same 8 words"))
        fail_msg("%s", buf);
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 0); /* default: the 8-gram check sees it too */
    lm_filter_reasons(&r, buf, sizeof buf);
    if (!strstr(buf, "answer says the same 8 words 2 times: 'The light, the dark, the light, the sun'")) fail_msg("%s", buf);

    /* echo_ngram = 4 catches a short parroting that the default lets pass */
    x.question = "Is the harvest good this year?";
    x.answer = "Is the harvest good? Yes, friend, better than we feared.";
    assert_int_equal(lm_filter_run(s, &x, &r), 0);
    lm_filter_reasons(&r, buf, sizeof buf);
    if (!strstr(buf, "repetition: answer repeats 4 consecutive words of the question: 'Is the harvest good'"))
        fail_msg("%s", buf);
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 1);

    /* max_question_sentences = 1 */
    x.question = "Hail, knight. Is the harvest good?";
    assert_int_equal(lm_filter_run(s, &x, &r), 0);
    lm_filter_reasons(&r, buf, sizeof buf);
    if (!strstr(buf, "question has 2 sentences (max 1)")) fail_msg("%s", buf);

    /* breaks-character disabled: checked bit clear, sample passes */
    x.question = "Is the harvest good?";
    x.answer = "In the context of your story, the harvest was good.";
    assert_int_equal(lm_filter_run(s, &x, &r), 1);
    assert_false(r.checked & (1u << LM_FILTER_BREAKS));
    assert_true(r.checked & (1u << LM_FILTER_REPEAT));
    lm_filter_set_free(s);

    /* a config struct built in code is validated too */
    lm_filter_config_default(&cfg);
    cfg.repeat_ngram = 1;
    assert_null(lm_filter_set_new(&cfg, NULL, &err));
    assert_non_null(strstr(err.msg, "repeat_ngram"));
}

/* The question-only screen runs the new question-side checks. */
static void test_question_side_new(void **state) {
    fixture *f = *state;
    lm_filter_sample x = {"The road was long and the road was cold, friend, and the road was long and the road was "
                          "cold again. Will you help me?", NULL, "in-world", NULL, NULL, 0, 0};
    lm_filter_result r;
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 0);
    assert_true(r.failed & (1u << LM_FILTER_REPEAT));
    assert_false(r.checked & (1u << LM_FILTER_ASSISTANT));
    x.question = "Tell me, in this role-play, what do you fear?";
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 0);
    assert_true(r.failed & (1u << LM_FILTER_BREAKS));
    x.kind = "adversarial"; /* the asker may attack the fiction */
    assert_int_equal(lm_filter_run(f->fs, &x, &r), 1);
    assert_true(r.checked & (1u << LM_FILTER_REPEAT));
}

static void test_no_character(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_filter_set *s = lm_filter_set_new(NULL, NULL, &err);
    assert_non_null(s);
    /* the sample's character name drives self-intro without a sheet */
    lm_filter_sample x = {OKQ, "I am Mira of the Docks, and fish is what I know.", NULL, "Mira", NULL, 0, 0};
    lm_filter_result r;
    assert_int_equal(lm_filter_run(s, &x, &r), 0);
    assert_true(r.failed & (1u << LM_FILTER_SELF_INTRO));
    x.character = "Orlando";
    assert_int_equal(lm_filter_run(s, &x, &r), 1);
    assert_int_equal(lm_filter_run(s, NULL, &r), 0); /* no sample: broken, not a crash */
    lm_filter_set_free(s);
}

static void test_dedup(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_dedup *d = lm_dedup_new(NULL, &err);
    lm_filter_sample a = {"What do you think of the new chancellor and his taxes on the river trade?",
                          "He is a clever man, and clever men worry me more than cruel ones.", NULL, NULL, NULL, 0, 0};
    lm_filter_result r;
    memset(&r, 0, sizeof r), r.pass = 1;
    assert_int_equal(lm_dedup_check(d, &a, &r), 1);
    assert_int_equal(lm_dedup_add(d, &a, &err), 0);
    /* the same question with different case, punctuation and spacing */
    lm_filter_sample b = {"what do you think of the NEW chancellor, and his taxes on the river-trade",
                          "A different answer about something else entirely, my friend.", NULL, NULL, NULL, 0, 0};
    memset(&r, 0, sizeof r), r.pass = 1;
    assert_int_equal(lm_dedup_check(d, &b, &r), 0);
    assert_int_equal(r.notes[0].filter, LM_FILTER_DUP);
    assert_string_equal(r.notes[0].reason, "question is an exact duplicate of accepted sample 0");
    /* 15 words, 13 word-3-grams. One word changed (index 13) breaks the 2
     * trigrams holding it: J = 11 / 15 = 0.73 >= 0.7 */
    lm_filter_sample c = {"What do you think of the new chancellor and his taxes on the wine trade?",
                          "Yet another answer with words that appear nowhere else at all.", NULL, NULL, NULL, 0, 0};
    memset(&r, 0, sizeof r), r.pass = 1;
    assert_int_equal(lm_dedup_check(d, &c, &r), 0);
    assert_string_equal(r.notes[0].reason, "question is a near-duplicate of accepted sample 0 (Jaccard 0.73)");
    /* two changed (index 6 and 13): 5 trigrams differ, J = 8 / 18 = 0.44 */
    lm_filter_sample c2 = {"What do you think of the old chancellor and his taxes on the wine trade?",
                           "Yet another answer with words that appear nowhere else at all.", NULL, NULL, NULL, 0, 0};
    memset(&r, 0, sizeof r), r.pass = 1;
    assert_int_equal(lm_dedup_check(d, &c2, &r), 1);
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    cfg.dup_jaccard = 0.4;
    lm_dedup *d2 = lm_dedup_new(&cfg, &err);
    assert_int_equal(lm_dedup_add(d2, &a, &err), 0);
    memset(&r, 0, sizeof r), r.pass = 1;
    assert_int_equal(lm_dedup_check(d2, &c2, &r), 0);
    assert_string_equal(r.notes[0].reason, "question is a near-duplicate of accepted sample 0 (Jaccard 0.44)");
    /* answers are compared with answers */
    lm_filter_sample e = {"A wholly unrelated question about fishing boats and nets?",
                          "He is a clever man, and clever men worry me more than cruel ones!", NULL, NULL, NULL, 0, 0};
    memset(&r, 0, sizeof r), r.pass = 1;
    assert_int_equal(lm_dedup_check(d, &e, &r), 0);
    assert_non_null(strstr(r.notes[0].reason, "answer is an exact duplicate of accepted sample 0"));
    /* many distinct samples: none is flagged, indexes count up */
    for (int i = 0; i < 500; i++) {
        char q[128], an[128];
        snprintf(q, sizeof q, "Question number %d about topic %d and place %d?", i, i * 7 % 13, i * 31 % 17);
        snprintf(an, sizeof an, "Answer %d: word%d word%d word%d.", i, i * 3, i * 5, i * 11);
        lm_filter_sample s = {q, an, NULL, NULL, NULL, 0, 0};
        memset(&r, 0, sizeof r), r.pass = 1;
        if (!lm_dedup_check(d, &s, &r)) fail_msg("sample %d flagged: %s", i, r.notes[0].reason);
        long idx = lm_dedup_add(d, &s, &err);
        assert_int_equal(idx, i + 1);
    }
    assert_int_equal(lm_dedup_count(d), 501);
    lm_dedup_free(d);
    lm_dedup_free(d2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reasons_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_question_only, setup, teardown),
        cmocka_unit_test(test_names_and_lookup),
        cmocka_unit_test_setup_teardown(test_config_and_phrases, setup, teardown),
        cmocka_unit_test(test_config_long_lines_and_nul),
        cmocka_unit_test_setup_teardown(test_config_repetition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_question_side_new, setup, teardown),
        cmocka_unit_test(test_no_character),
        cmocka_unit_test(test_dedup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
