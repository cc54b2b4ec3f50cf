/*
 * eval/report.c - the evaluation report: one self-contained HTML page (no external resource)
 * with the metrics, the 11-point interpolated precision-recall curve as inline SVG, and for a
 * sample of queries the query thumbnail followed by its top results, outlined green when
 * relevant and red otherwise. Thumbnails are JPEG data URIs (base64, RFC 4648).
 *
 * Invariants: every text from the file system (paths, labels) is HTML-escaped; the page is
 * written atomically (temp file + rename).
 */
#include "eval/eval_internal.h"
#include "catalog/catalog.h"
#include "shoplens/image.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL__THUMB_SIDE 112

typedef struct sl__buf {
    char *p;
    size_t n, cap;
    int oom;
} sl__buf;

static void sl__put(sl__buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 65536;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* Appends a string literal (length from sizeof, never miscounted). */
#define SL__PUTS(b, lit) sl__put((b), (lit), sizeof(lit) - 1)

static void sl__putf(sl__buf *b, const char *fmt, ...) SL__PRINTF(2, 3);
static void sl__putf(sl__buf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sl__put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sl__esc(sl__buf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': SL__PUTS(b, "&lt;"); break;
        case '>': SL__PUTS(b, "&gt;"); break;
        case '&': SL__PUTS(b, "&amp;"); break;
        case '"': SL__PUTS(b, "&quot;"); break;
        case '\'': SL__PUTS(b, "&#39;"); break;
        default: sl__put(b, s, 1);
        }
    }
}

static void sl__base64(sl__buf *b, const unsigned char *d, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        out[0] = t[v >> 18 & 63];
        out[1] = t[v >> 12 & 63];
        out[2] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[3] = i + 2 < n ? t[v & 63] : '=';
        sl__put(b, out, 4);
    }
}

/* <img> of a thumbnail, outlined with colour (NULL = none). */
static void sl__thumb(sl__buf *b, const char *path, const char *colour, const char *caption) {
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = SL__THUMB_SIDE;
    sl_image *img = NULL;
    void *jpg = NULL;
    size_t len = 0;
    SL__PUTS(b, "<figure>");
    if (sl_image_load_file(path, &o, &img, NULL, NULL) == SL_OK &&
        sl_image_encode(img, "jpeg", 80, &jpg, &len, NULL) == SL_OK) {
        sl__putf(b, "<img style=\"border:4px solid %s\" src=\"data:image/jpeg;base64,", colour ? colour : "#888");
        sl__base64(b, jpg, len);
        SL__PUTS(b, "\" alt=\"");
        sl__esc(b, caption);
        SL__PUTS(b, "\">");
    } else {
        sl__putf(b, "<div class=\"missing\" style=\"border:4px solid %s\">unreadable</div>", colour ? colour : "#888");
    }
    free(jpg);
    sl_image_free(img);
    SL__PUTS(b, "<figcaption>");
    sl__esc(b, caption);
    SL__PUTS(b, "</figcaption></figure>");
}

static void sl__pr_svg(sl__buf *b, const sl_eval_metrics *m) {
    const int W = 360, H = 260, L = 50, T = 15, PW = 290, PH = 200;
    sl__putf(b, "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
                "aria-label=\"precision-recall curve\">", W, H, W, H);
    sl__putf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" stroke=\"#999\"/>", L, T, PW, PH);
    for (int i = 0; i <= 10; i += 2) {
        double v = i / 10.0;
        sl__putf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.1f</text>",
                 L + (int)(v * PW), T + PH + 14, v);
        sl__putf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%.1f</text>",
                 L - 4, T + PH - (int)(v * PH) + 3, v);
    }
    sl__putf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">recall</text>", L + PW / 2, H - 4);
    sl__putf(b, "<text x=\"12\" y=\"%d\" font-size=\"11\" transform=\"rotate(-90 12 %d)\" "
                "text-anchor=\"middle\">precision</text>", T + PH / 2, T + PH / 2);
    SL__PUTS(b, "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"");
    for (int i = 0; i < SL_EVAL_PR_POINTS; i++) {
        double r = (double)i / (SL_EVAL_PR_POINTS - 1), p = m->pr_curve[i];
        sl__putf(b, "%.1f,%.1f ", L + r * PW, T + PH - p * PH);
    }
    SL__PUTS(b, "\"/>");
    for (int i = 0; i < SL_EVAL_PR_POINTS; i++) {
        double r = (double)i / (SL_EVAL_PR_POINTS - 1), p = m->pr_curve[i];
        sl__putf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#1565c0\"><title>recall %.1f: "
                    "precision %.3f</title></circle>", L + r * PW, T + PH - p * PH, r, p);
    }
    SL__PUTS(b, "</svg>");
}

sl_status sl__eval_report(const char *path, const sl_eval_opts *opts, const char *spec,
                          const sl_eval_metrics *m, const sl__eval_set *g, const sl__eval_set *q,
                          const sl__eval_shown *shown, size_t n_shown, int max_side, sl_error *err) {
    (void)max_side;
    sl__buf b = {0};
    static const char head[] =
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>shoplens evaluation</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
        "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}"
        ".row{display:flex;gap:6px;align-items:flex-start;margin:8px 0;flex-wrap:wrap}"
        "figure{margin:0;width:124px;font-size:11px;word-break:break-all}"
        "figure img{display:block;max-width:112px;max-height:112px}"
        ".q figcaption{font-weight:bold}.missing{width:104px;height:104px}code{word-break:break-all}"
        "</style></head><body><h1>shoplens evaluation</h1>";
    sl__put(&b, head, sizeof head - 1);
    SL__PUTS(&b, "<p>gallery <code>");
    sl__esc(&b, opts->gallery_dir);
    SL__PUTS(&b, "</code>, queries <code>");
    sl__esc(&b, opts->queries_dir ? opts->queries_dir : "leave-one-out over the gallery");
    SL__PUTS(&b, "</code><br>features <code>");
    sl__esc(&b, spec);
    SL__PUTS(&b, "</code></p><table>");
    const struct { const char *name; double v; int integer; } rows[] = {
        {"queries", (double)m->queries, 1}, {"gallery", (double)m->gallery, 1},
        {"k", (double)m->k, 1}, {"mAP", m->map, 0}, {"precision@1", m->precision_1, 0},
        {"precision@k", m->precision_k, 0}, {"recall@k", m->recall_k, 0}, {"hit@1", m->hit_1, 0},
        {"hit@5", m->hit_5, 0}, {"hit@k", m->hit_k, 0}, {"F1@k", m->f1_k, 0},
        {"hits@4 (of 4)", m->hits_4, 0}, {"index images/s", m->index_images_per_s, 0},
        {"query ms p50", m->query_ms_p50, 0}, {"query ms p99", m->query_ms_p99, 0},
        {"skipped (unreadable or no relevant)", (double)m->skipped, 1}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (rows[i].integer) sl__putf(&b, "<tr><th>%s</th><td>%.0f</td></tr>", rows[i].name, rows[i].v);
        else sl__putf(&b, "<tr><th>%s</th><td>%.4f</td></tr>", rows[i].name, rows[i].v);
    }
    SL__PUTS(&b, "</table><h2>Precision-recall (interpolated, mean over queries)</h2>");
    sl__pr_svg(&b, m);
    sl__putf(&b, "<h2>Sample queries and their top %d results</h2><p>green: same label as the query; "
                 "red: another label</p>", SL__EVAL_SHOW_TOP);
    for (size_t s = 0; s < n_shown; s++) {
        const sl__eval_shown *sh = &shown[s];
        SL__PUTS(&b, "<div class=\"row\"><div class=\"q\">");
        char cap[512];
        snprintf(cap, sizeof cap, "query: %s", q->label_names[q->labels[sh->query]]);
        sl__thumb(&b, q->paths[sh->query], "#333", cap);
        SL__PUTS(&b, "</div>");
        for (size_t i = 0; i < sh->n; i++) {
            size_t r = sh->result[i];
            snprintf(cap, sizeof cap, "%zu. %s", i + 1, g->label_names[g->labels[r]]);
            sl__thumb(&b, g->paths[r], sh->relevant[i] ? "#2e7d32" : "#c62828", cap);
        }
        SL__PUTS(&b, "</div>");
    }
    SL__PUTS(&b, "</body></html>\n");
    if (b.oom) {
        free(b.p);
        return sl__err_set(err, SL_E_NOMEM, "out of memory writing the report");
    }
    sl_status st = sl__write_file_atomic(path, b.p, b.n, err);
    free(b.p);
    return st;
}
