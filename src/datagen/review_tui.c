/* The review terminal UI: plain ANSI, raw mode through termios. Signals
 * (INT, TERM, HUP, QUIT, WINCH) are blocked and read from a signalfd, so
 * the terminal is restored on every way out without a global handler. */
#include "datagen/review.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "base/fileio.h"

typedef struct {
    struct termios saved;
    int raw;
    int sfd;
    sigset_t old_mask;
    char msg[256]; /* one-line message under the status line */
} tui;

static int raw_on(tui *t) {
    struct termios r = t->saved;
    r.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ISIG | IEXTEN);
    r.c_iflag &= ~(tcflag_t)(IXON | ICRNL);
    r.c_cc[VMIN] = 1, r.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &r)) return -1;
    t->raw = 1;
    fputs("\x1b[?25l", stdout); /* hide the cursor */
    fflush(stdout);
    return 0;
}

static void raw_off(tui *t) {
    if (!t->raw) return;
    fputs("\x1b[?25h\x1b[0m", stdout);
    fflush(stdout);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &t->saved);
    t->raw = 0;
}

static const char *state_label(const lm_review_item *it) {
    if (it->state == LM_REVIEW_REJECTED) return "\x1b[31mrejected\x1b[0m";
    if (it->state == LM_REVIEW_UNDECIDED) return "undecided";
    if (it->promoted) return "\x1b[32mpromoted\x1b[0m";
    return it->edited ? "\x1b[32medited\x1b[0m" : "\x1b[32maccepted\x1b[0m";
}

/* The screen is composed in memory and written with one write(2), so a
 * reader never sees half a screen. */
static void draw(tui *t, const lm_review *r, long cur) {
    lm_review_counts c = lm_review_tally(r);
    char *scr = NULL;
    size_t scr_n = 0;
    FILE *o = open_memstream(&scr, &scr_n);
    if (!o) return;
    fputs("\x1b[H\x1b[2J", o);
    if (cur >= 0) {
        const lm_review_item *it = lm_review_get(r, (size_t)cur);
        fprintf(o, "\x1b[1msample %ld/%zu\x1b[0m  id %s  line %d  [%s]\n\n", cur + 1, c.total, it->id, it->line,
               state_label(it));
        fprintf(o, "\x1b[1;36mQUESTION\x1b[0m\n%s\n\n", it->question);
        fprintf(o, "\x1b[1;33mANSWER%s\x1b[0m\n%s\n\n", it->edited ? " (edited)" : "", it->answer);
        fprintf(o, "\x1b[2mmeta %s\x1b[0m\n", it->meta);
        if (*it->notes) fprintf(o, "\x1b[35mfilter notes: %s\x1b[0m\n", it->notes);
    } else {
        fputs("(the dataset is empty)\n", o);
    }
    fprintf(o, "\n\x1b[7m accepted %zu  rejected %zu  edited %zu  promoted %zu  undecided %zu  of %zu \x1b[0m\n",
           c.accepted, c.rejected, c.edited, c.promoted, c.undecided, c.total);
    fputs("a accept  r reject  e edit  p promote  s skip  u undo  q quit\n", o);
    if (t->msg[0]) fprintf(o, "%s\n", t->msg);
    fclose(o);
    fflush(stdout);
    for (size_t off = 0; scr && off < scr_n;) {
        ssize_t k = write(STDOUT_FILENO, scr + off, scr_n - off);
        if (k <= 0 && errno != EINTR) break;
        if (k > 0) off += (size_t)k;
    }
    free(scr);
}

/* Runs the editor on the answer; *out gets the new text (caller frees),
 * NULL when the editor failed (t->msg says why). */
static int edit_answer(tui *t, const char *editor, const char *answer, char **out, lm_err *err) {
    *out = NULL;
    char path[] = "/tmp/lemonpc-answer-XXXXXX.txt";
    int fd = mkstemps(path, 4);
    if (fd < 0) return lm_errno(err, "creating a temporary file for the editor");
    size_t n = strlen(answer);
    int bad = write(fd, answer, n) != (ssize_t)n || write(fd, "\n", 1) != 1;
    close(fd);
    if (bad) {
        unlink(path);
        return lm_errno(err, "%s", path);
    }
    raw_off(t);
    fputs("\x1b[H\x1b[2J", stdout);
    fflush(stdout);
    size_t cl = strlen(editor) + 8;
    char *cmd = malloc(cl);
    if (!cmd) {
        unlink(path);
        return lm_errf(err, "out of memory");
    }
    snprintf(cmd, cl, "%s \"$1\"", editor);
    pid_t pid = fork();
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &t->old_mask, NULL);
        execl("/bin/sh", "sh", "-c", cmd, "sh", path, (char *)NULL);
        _exit(127);
    }
    free(cmd);
    int st = 0;
    while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (raw_on(t)) {
        unlink(path);
        return lm_errno(err, "terminal: back to raw mode");
    }
    if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(t->msg, sizeof t->msg, "editor '%s' failed (status %d): answer unchanged", editor,
                 pid < 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        unlink(path);
        return 0;
    }
    char *text;
    size_t tl;
    int rrc = lm_read_file(path, &text, &tl, false, err);
    unlink(path);
    if (rrc) return lm_err_prefix(err, "reading the edited answer");
    tl = strlen(text);
    while (tl && (text[tl - 1] == '\n' || text[tl - 1] == '\r' || text[tl - 1] == ' ' || text[tl - 1] == '\t'))
        text[--tl] = 0;
    *out = text;
    return 0;
}

static int loop(tui *t, lm_review *r, const char *editor, lm_err *err) {
    size_t n = lm_review_count(r);
    long cur = n ? lm_review_next_undecided(r, 0) : -1;
    if (n && cur < 0) cur = 0, snprintf(t->msg, sizeof t->msg, "every sample is decided (u undoes, q quits)");
    for (;;) {
        draw(t, r, cur);
        t->msg[0] = 0;
        struct pollfd p[2] = {{STDIN_FILENO, POLLIN, 0}, {t->sfd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return lm_errno(err, "poll");
        }
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(t->sfd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo != SIGWINCH) return 0;
            continue;
        }
        if (!(p[0].revents & (POLLIN | POLLHUP))) continue;
        char ch;
        ssize_t k = read(STDIN_FILENO, &ch, 1);
        if (k <= 0) return 0; /* the terminal went away */
        if (ch == 'q' || ch == 3 || ch == 4) return 0;
        if (cur < 0) continue;
        size_t i = (size_t)cur;
        int moved = 0;
        switch (ch) {
        case 'a':
        case 'r':
        case 'p':
            if (lm_review_decide(r, i, ch == 'a' ? LM_REVIEW_ACCEPT : ch == 'r' ? LM_REVIEW_REJECT : LM_REVIEW_PROMOTE,
                                 NULL, err))
                return -1;
            moved = 1;
            break;
        case 'e': {
            const char *ed = editor ? editor : getenv("VISUAL");
            if (!ed || !*ed) ed = getenv("EDITOR");
            if (!ed || !*ed) ed = "vi";
            char *text;
            if (edit_answer(t, ed, lm_review_get(r, i)->answer, &text, err)) return -1;
            if (!text) break;
            if (!*text) snprintf(t->msg, sizeof t->msg, "the edited answer is empty: unchanged (r rejects)");
            else if (strcmp(text, lm_review_get(r, i)->answer) == 0) snprintf(t->msg, sizeof t->msg, "answer unchanged");
            else if (lm_review_decide(r, i, LM_REVIEW_EDIT, text, err)) {
                free(text);
                return -1;
            } else moved = 1;
            free(text);
            break;
        }
        case 's': {
            long nx = lm_review_next_undecided(r, (i + 1) % n);
            cur = nx >= 0 && nx != (long)i ? nx : (long)((i + 1) % n);
            break;
        }
        case 'u': {
            long w;
            if (lm_review_undo(r, &w, err)) return -1;
            if (w >= 0) cur = w, snprintf(t->msg, sizeof t->msg, "undone");
            else snprintf(t->msg, sizeof t->msg, "nothing to undo");
            break;
        }
        default:
            snprintf(t->msg, sizeof t->msg, "unknown key: a r e p s u q");
        }
        if (moved) {
            long nx = lm_review_next_undecided(r, (i + 1) % n);
            if (nx >= 0) cur = nx;
            else snprintf(t->msg, sizeof t->msg, "every sample is decided (u undoes, q quits)");
        }
    }
}

int lm_review_tui(lm_review *r, const char *editor, lm_err *err) {
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        return lm_errf(err, "review needs a terminal on stdin and stdout");
    tui t;
    memset(&t, 0, sizeof t);
    if (tcgetattr(STDIN_FILENO, &t.saved)) return lm_errno(err, "terminal: tcgetattr");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT), sigaddset(&set, SIGTERM), sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT), sigaddset(&set, SIGWINCH);
    if (sigprocmask(SIG_BLOCK, &set, &t.old_mask)) return lm_errno(err, "sigprocmask");
    t.sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (t.sfd < 0) {
        sigprocmask(SIG_SETMASK, &t.old_mask, NULL);
        return lm_errno(err, "signalfd");
    }
    int rc = raw_on(&t) ? lm_errno(err, "terminal: raw mode") : loop(&t, r, editor, err);
    raw_off(&t);
    fputs("\x1b[H\x1b[2J", stdout);
    lm_review_counts c = lm_review_tally(r);
    printf("accepted %zu, rejected %zu, edited %zu, promoted %zu, undecided %zu of %zu\n"
           "decisions: %s\n", c.accepted, c.rejected, c.edited, c.promoted, c.undecided, c.total,
           lm_review_decisions_path(r));
    fflush(stdout);
    close(t.sfd);
    sigprocmask(SIG_SETMASK, &t.old_mask, NULL);
    return rc;
}
