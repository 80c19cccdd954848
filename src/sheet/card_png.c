/* Cards inside PNGs: tEXt chunks "chara" (V2) and "ccv3" (V3), each the
 * card JSON in base64. libpng does the chunk walking and CRC checks; its
 * errors longjmp back here, so everything allocated lives in a state
 * struct that the error path frees. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"
#include "sheet/card.h"
#include "sheet/util.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *lm_base64_encode(const unsigned char *d, size_t n) {
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16;
        if (i + 1 < n) v |= (unsigned)d[i + 1] << 8;
        if (i + 2 < n) v |= d[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? B64[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

unsigned char *lm_base64_decode(const char *s, size_t n, size_t *out_len, lm_err *err) {
    unsigned char *out = malloc(n / 4 * 3 + 3);
    if (!out) {
        lm_errf(err, "out of memory decoding %zu bytes of base64", n);
        return NULL;
    }
    size_t o = 0, k = 0, pad = 0;
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') continue;
        if (ch == '=') { pad++; continue; }
        const char *p = ch ? strchr(B64, ch) : NULL;
        if (!p || pad) {
            free(out);
            lm_errf(err, "bad base64: unexpected byte 0x%02X at offset %zu", (unsigned char)ch, i);
            return NULL;
        }
        acc = acc << 6 | (unsigned)(p - B64);
        if (++k == 4) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            k = 0;
            acc = 0;
        }
    }
    if (k == 1 || pad > 2) {
        free(out);
        lm_errf(err, "bad base64: the text ends in the middle of a byte");
        return NULL;
    }
    if (k == 2) out[o++] = (unsigned char)(acc >> 4);
    if (k == 3) {
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

void lm_image_clear(lm_image *img) {
    if (!img) return;
    free(img->rgba);
    memset(img, 0, sizeof *img);
}

typedef struct {
    const unsigned char *buf;
    size_t len, pos;
    char msg[256];
    unsigned char *pixels;
    png_bytep *rows;
    char **keys, **texts;
    size_t n_text;
} rd_state;

static void on_error(png_structp png, png_const_charp msg) {
    rd_state *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void on_read(png_structp png, png_bytep out, size_t n) {
    rd_state *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) png_error(png, "truncated PNG: the file ends inside a chunk");
    memcpy(out, s->buf + s->pos, n);
    s->pos += n;
}

static void take_text(rd_state *s, png_structp png, png_infop info) {
    png_textp t;
    int n = 0;
    png_get_text(png, info, &t, &n);
    for (int i = 0; i < n; i++) {
        /* keys and texts grow together: both by one, n_text counting both */
        char **k = lm_sh_push(&s->keys, &s->n_text, sizeof *k);
        if (!k) png_error(png, "out of memory");
        s->n_text--;
        char **v = lm_sh_push(&s->texts, &s->n_text, sizeof *v);
        if (!v) png_error(png, "out of memory");
        *k = strdup(t[i].key);
        *v = strdup(t[i].text ? t[i].text : "");
        if (!*k || !*v) png_error(png, "out of memory"); /* rd_free frees the one that was made */
    }
}

static void rd_free(rd_state *s) {
    free(s->pixels);
    free(s->rows);
    for (size_t i = 0; i < s->n_text; i++) {
        free(s->keys[i]);
        free(s->texts[i]);
    }
    free(s->keys);
    free(s->texts);
}

/* Decodes the whole PNG (text after IDAT counts too) into s. */
static int read_png(rd_state *s, const char *src, unsigned *w_out, unsigned *h_out, lm_err *err) {
    if (s->len < 8 || png_sig_cmp(s->buf, 0, 8))
        return lm_errf(err, "%s: not a PNG file (bad signature)", src);
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s, on_error, on_warning);
    if (!png) return lm_errf(err, "%s: cannot start libpng", src);
    png_infop info = png_create_info_struct(png), end = png_create_info_struct(png);
    if (!info || !end) {
        png_destroy_read_struct(&png, &info, &end);
        return lm_errf(err, "%s: cannot start libpng", src);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, &end);
        return lm_errf(err, "%s: %s", src, s->msg);
    }
    png_set_read_fn(png, s, on_read);
    png_set_user_limits(png, LM_CARD_IMAGE_MAX, LM_CARD_IMAGE_MAX);
    png_set_chunk_malloc_max(png, LM_CARD_FILE_MAX);
    /* A damaged card chunk is an error, not something to skip silently. */
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    /* Deflate expands at most 1032:1, so a file shorter than its rows over
     * that cannot hold the image: without this a 121-byte PNG claiming
     * 4096x4096 got its 64 MB pixel buffer before libpng found the data
     * missing, once per input under the fuzzer (the likely source of the
     * 2 GB out-of-memory fuzz_card once reported; not reproduced). */
    double rows = (double)h * ((double)png_get_rowbytes(png, info) + 1);
    if (rows / 1032.0 > (double)s->len) {
        snprintf(s->msg, sizeof s->msg, "the %ux%u image cannot fit in a %zu-byte file "
                 "(damaged PNG)", (unsigned)w, (unsigned)h, s->len);
        png_longjmp(png, 1);
    }
    int ct = png_get_color_type(png, info);
    png_set_expand(png);
    png_set_strip_16(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (!(ct & PNG_COLOR_MASK_ALPHA) && !png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_add_alpha(png, 0xFF, PNG_FILLER_AFTER);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 4) png_error(png, "unsupported pixel format");
    s->pixels = malloc((size_t)w * h * 4);
    s->rows = malloc(h * sizeof *s->rows);
    if (!s->pixels || !s->rows) png_error(png, "out of memory for the image");
    for (png_uint_32 y = 0; y < h; y++) s->rows[y] = s->pixels + (size_t)y * w * 4;
    png_read_image(png, s->rows);
    png_read_end(png, end);
    take_text(s, png, info);
    take_text(s, png, end);
    png_destroy_read_struct(&png, &info, &end);
    *w_out = w;
    *h_out = h;
    return 0;
}

int lm_png_text_get(const unsigned char *buf, size_t len, const char *src, const char *keyword,
                    char **text, lm_err *err) {
    rd_state s = {.buf = buf, .len = len};
    unsigned w, h;
    *text = NULL;
    int rc = read_png(&s, src, &w, &h, err);
    for (size_t i = 0; rc == 0 && i < s.n_text; i++)
        if (!strcmp(s.keys[i], keyword) && !*text && !(*text = strdup(s.texts[i])))
            rc = lm_errf(err, "%s: out of memory", src);
    rd_free(&s);
    return rc;
}

int lm_png_card_read(const unsigned char *buf, size_t len, const char *src, char **json,
                     size_t *json_len, const char **chunk, lm_image *img, lm_err *err) {
    rd_state s = {.buf = buf, .len = len};
    unsigned w, h;
    *json = NULL;
    if (read_png(&s, src, &w, &h, err)) {
        rd_free(&s);
        return -1;
    }
    const char *found = NULL, *text = NULL;
    for (size_t i = 0; i < s.n_text; i++)
        if (!strcmp(s.keys[i], "ccv3")) { found = "ccv3"; text = s.texts[i]; break; }
    for (size_t i = 0; !found && i < s.n_text; i++)
        if (!strcmp(s.keys[i], "chara")) { found = "chara"; text = s.texts[i]; }
    if (!found) {
        rd_free(&s);
        return lm_errf(err, "%s: PNG has no character card (no 'chara' or 'ccv3' text chunk)", src);
    }
    size_t n;
    unsigned char *dec = lm_base64_decode(text, strlen(text), &n, err);
    if (!dec) {
        rd_free(&s);
        return lm_err_prefix(err, "%s: '%s' chunk", src, found);
    }
    *json = (char *)dec;
    *json_len = n;
    *chunk = found;
    if (img) {
        img->w = w;
        img->h = h;
        img->rgba = s.pixels;
        s.pixels = NULL;
    }
    rd_free(&s);
    return 0;
}

typedef struct {
    lm_sb out;
    char msg[256];
} wr_state;

static void on_write(png_structp png, png_bytep data, size_t n) {
    wr_state *s = png_get_io_ptr(png);
    lm_sb_add(&s->out, (const char *)data, n);
    if (s->out.oom) png_error(png, "out of memory");
}

static void on_flush(png_structp png) { (void)png; }

static void on_werror(png_structp png, png_const_charp msg) {
    wr_state *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* A lemon on a transparent background, for sheets without a picture;
 * -1 when out of memory. */
static int placeholder(lm_image *img) {
    enum { N = 64 };
    img->w = img->h = N;
    img->rgba = calloc(N * N, 4);
    if (!img->rgba) return -1;
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++) {
            double dx = (x - 31.5) / 26.0, dy = (y - 31.5) / 20.0, r = dx * dx + dy * dy;
            unsigned char *p = img->rgba + (y * N + x) * 4;
            if (r <= 1.0) {
                p[0] = r > 0.8 ? 222 : 250;
                p[1] = r > 0.8 ? 190 : 226;
                p[2] = r > 0.8 ? 20 : 60;
                p[3] = 255;
            }
        }
    return 0;
}

/* The libpng part, alone so nothing of the caller lives across setjmp. */
static int encode(wr_state *s, const lm_image *img, png_bytep *rows, png_text *text, int nt,
                  lm_err *err) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s, on_werror, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return lm_errf(err, "cannot start libpng");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return lm_errf(err, "PNG encoding failed: %s", s->msg);
    }
    png_set_write_fn(png, s, on_write, on_flush);
    png_set_IHDR(png, info, img->w, img->h, 8, PNG_COLOR_TYPE_RGBA, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (nt) png_set_text(png, info, text, nt);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int lm_png_card_write(const lm_image *img, const char *chara_json, const char *ccv3_json,
                      unsigned char **out, size_t *out_len, lm_err *err) {
    lm_image ph = {0};
    if (!img || !img->rgba) {
        if (placeholder(&ph)) return lm_errf(err, "out of memory for the PNG's placeholder image");
        img = &ph;
    }
    wr_state *s = calloc(1, sizeof *s);
    png_bytep *rows = malloc((img->h ? img->h : 1) * sizeof *rows);
    char *b64[2] = {chara_json ? lm_base64_encode((const unsigned char *)chara_json, strlen(chara_json)) : NULL,
                    ccv3_json ? lm_base64_encode((const unsigned char *)ccv3_json, strlen(ccv3_json)) : NULL};
    int rc = -1;
    if (!s || !rows || (chara_json && !b64[0]) || (ccv3_json && !b64[1])) {
        lm_errf(err, "out of memory encoding the PNG card");
        goto done;
    }
    for (unsigned y = 0; y < img->h; y++) rows[y] = img->rgba + (size_t)y * img->w * 4;
    png_text text[2];
    int nt = 0;
    memset(text, 0, sizeof text);
    if (b64[0]) {
        text[nt].compression = PNG_TEXT_COMPRESSION_NONE;
        text[nt].key = (char *)"chara";
        text[nt].text = b64[0];
        text[nt++].text_length = strlen(b64[0]);
    }
    if (b64[1]) {
        text[nt].compression = PNG_TEXT_COMPRESSION_NONE;
        text[nt].key = (char *)"ccv3";
        text[nt].text = b64[1];
        text[nt++].text_length = strlen(b64[1]);
    }
    rc = encode(s, img, rows, text, nt, err);
    if (rc == 0) {
        *out_len = s->out.len;
        *out = (unsigned char *)lm_sb_take(&s->out);
        if (!*out) rc = lm_errf(err, "out of memory encoding the PNG card");
    }
done:
    if (s) lm_sb_free(&s->out);
    free(s);
    free(rows);
    free(b64[0]);
    free(b64[1]);
    lm_image_clear(&ph);
    return rc;
}

int lm_png_image_read(const unsigned char *buf, size_t len, const char *src, lm_image *img,
                      lm_err *err) {
    rd_state s = {.buf = buf, .len = len};
    unsigned w, h;
    int rc = read_png(&s, src, &w, &h, err);
    if (rc == 0) {
        img->w = w;
        img->h = h;
        img->rgba = s.pixels;
        s.pixels = NULL;
    }
    rd_free(&s);
    return rc;
}
