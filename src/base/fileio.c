#include "base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int read_file(const char *path, size_t max, char **data, size_t *len, bool missing_ok,
                     lm_err *err) {
    *data = NULL;
    *len = 0;
    bool is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        if (missing_ok && errno == ENOENT) return 0;
        return lm_errno(err, "%s: cannot open", path);
    }
    /* fopen opens a folder, and reading it fails with a bare EISDIR */
    struct stat st;
    if (!is_stdin && fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return lm_errf(err, "%s: is a folder, not a file", path);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - n - 1;
        if (max - n < want) want = max - n + 1; /* one past max tells a file too big */
        size_t k = fread(buf + n, 1, want, f);
        n += k;
        if (k == 0 || n > max) break;
    }
    int bad = ferror(f), why = errno;
    if (!is_stdin) fclose(f);
    if (!buf) return lm_errf(err, "%s: out of memory", path);
    if (bad) { free(buf); return lm_errf(err, "%s: read error: %s", path, strerror(why)); }
    if (n > max) { free(buf); return lm_errf(err, "%s: larger than %zu bytes", path, max); }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

int lm_read_file(const char *path, char **data, size_t *len, bool missing_ok, lm_err *err) {
    return read_file(path, (size_t)-1, data, len, missing_ok, err);
}

int lm_read_file_max(const char *path, size_t max, char **data, size_t *len, lm_err *err) {
    return read_file(path, max, data, len, false, err);
}

int lm_mkdir_p(const char *path, lm_err *err) {
    char buf[4096];
    size_t n = strlen(path);
    if (!n || n >= sizeof buf) return lm_errf(err, "%s: not a usable folder name", n ? path : "\"\"");
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p && *p != '/') continue;
        char c = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(buf, 0777) && errno != EEXIST) return lm_errno(err, "%s: cannot create the folder", buf);
        if (stat(buf, &st) || !S_ISDIR(st.st_mode))
            return lm_errf(err, "%s: exists and is not a folder", buf);
        if (!c) return 0;
        *p = c;
    }
}

int lm_write_file_atomic(const char *path, const void *data, size_t len, lm_err *err) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) return lm_errf(err, "%s: out of memory", path);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { lm_errno(err, "%s: cannot create", tmp); goto done; }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { lm_errno(err, "%s: write failed", tmp); close(fd); unlink(tmp); goto done; }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd)) { lm_errno(err, "%s: fsync failed", tmp); close(fd); unlink(tmp); goto done; }
    if (close(fd)) { lm_errno(err, "%s: close failed", tmp); unlink(tmp); goto done; }
    if (rename(tmp, path)) { lm_errno(err, "%s: cannot rename to %s", tmp, path); unlink(tmp); goto done; }
    rc = 0;
done:
    free(tmp);
    return rc;
}
