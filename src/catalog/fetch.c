/*
 * catalog/fetch.c - image URLs of product feeds, fetched with libcurl (see fetch.h).
 *
 * One curl multi handle runs up to `parallel` transfers; items wait in a first-in first-out
 * queue, retries in a short list with the time they may start again (exponential backoff from
 * backoff_s, or the server's Retry-After when it asks for at most a minute). Everything runs on
 * the calling thread; `done` is called there too.
 *
 * Invariants: a transfer never holds more than max_bytes + 1 bytes (the write callback refuses
 * the byte past the limit, CURLOPT_MAXFILESIZE refuses an announced larger body before it
 * comes); only http and https are spoken, also after a redirect; an item is finished exactly
 * once (done is called once per item); no handle outlives the call.
 */
#include "catalog/fetch.h"
#include "shoplens/image.h"
#include "util/util.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

void sl__fetch_opts_init(sl__fetch_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_bytes = SL_IMAGE_MAX_BYTES_DEFAULT;
    o->timeout_s = 30;
    o->connect_timeout_s = 10;
    o->retries = 3;
    o->backoff_s = 0.5;
    o->parallel = 8;
}

int sl__is_url(const char *s) {
    return s && (strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0);
}

const char *sl__sniff_image(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return "jpeg";
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return "png";
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return "webp";
    /* ISO BMFF: a first box 'ftyp' whose major or compatible brands name HEIF/HEVC images */
    if (n >= 16 && memcmp(d + 4, "ftyp", 4) == 0) {
        size_t box = ((size_t)d[0] << 24) | ((size_t)d[1] << 16) | ((size_t)d[2] << 8) | d[3];
        if (box < 16 || box > n) box = n < 64 ? n : 64;
        static const char *const brands[] = { "heic", "heix", "hevc", "hevx", "heim", "heis", "hevm", "hevs" };
        for (size_t off = 8; off + 4 <= box; off += off == 8 ? 8 : 4) /* major brand, then compatible */
            for (size_t b = 0; b < sizeof brands / sizeof brands[0]; b++)
                if (memcmp(d + off, brands[b], 4) == 0) return "heic";
    }
    return NULL;
}

/* ---- one transfer ------------------------------------------------------------------------ */

typedef struct sl__xfer {
    size_t item;
    CURL *h;
    struct sl__xfer *prev, *next; /* the batch's running transfers */
    uint8_t *buf;
    size_t len, cap, max;
    int too_large;
    char errbuf[CURL_ERROR_SIZE];
} sl__xfer;

static size_t sl__write(char *p, size_t size, size_t nmemb, void *ud) {
    sl__xfer *x = ud;
    size_t n = size * nmemb;
    if (n > x->max - x->len) {
        x->too_large = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (x->len + n > x->cap) {
        size_t cap = x->cap ? x->cap : 65536;
        while (cap < x->len + n) cap *= 2;
        if (cap > x->max) cap = x->max;
        uint8_t *nb = realloc(x->buf, cap);
        if (!nb) return 0;
        x->buf = nb;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, p, n);
    x->len += n;
    return n;
}

static const char *sl__reason(long code) {
    switch (code) {
    case 400: return " Bad Request";
    case 401: return " Unauthorized";
    case 403: return " Forbidden";
    case 404: return " Not Found";
    case 408: return " Request Timeout";
    case 410: return " Gone";
    case 429: return " Too Many Requests";
    case 500: return " Internal Server Error";
    case 502: return " Bad Gateway";
    case 503: return " Service Unavailable";
    case 504: return " Gateway Timeout";
    default: return "";
    }
}

/* What non-image content looks like, in words. */
static void sl__describe(const uint8_t *d, size_t n, char *out, size_t cap) {
    size_t i = 0;
    while (i < n && i < 64 && isspace(d[i])) i++;
    if (i < n && d[i] == '<') snprintf(out, cap, "an HTML or XML document");
    else if (i < n && (d[i] == '{' || d[i] == '[')) snprintf(out, cap, "a JSON document");
    else if (n >= 4 && memcmp(d, "%PDF", 4) == 0) snprintf(out, cap, "a PDF document");
    else if (n >= 4 && memcmp(d, "GIF8", 4) == 0) snprintf(out, cap, "a GIF image (only JPEG, PNG, WebP and HEIC are accepted)");
    else if (n >= 4) snprintf(out, cap, "something else (first bytes %02x %02x %02x %02x)", d[0], d[1], d[2], d[3]);
    else snprintf(out, cap, "%zu bytes", n);
}

/* The Content-Type the server claimed, printable, for messages. */
static void sl__ctype(CURL *h, char *out, size_t cap) {
    char *ct = NULL;
    out[0] = '\0';
    if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK || !ct) return;
    size_t k = 0;
    for (const char *c = ct; *c && k + 1 < cap && k < 48; c++)
        out[k++] = (*c >= 0x20 && *c < 0x7f) ? *c : '?';
    out[k] = '\0';
}

/* ---- the batch --------------------------------------------------------------------------- */

typedef struct sl__retry {
    size_t item;
    double at;
} sl__retry;

typedef struct sl__batch {
    sl__fetch_item *items;
    size_t n;
    const sl__fetch_opts *o;
    void (*done)(void *ctx, size_t i);
    void *ctx;
    CURLM *m;
    size_t next;              /* first item never started */
    size_t finished;
    int running;
    sl__xfer *xfers;          /* running transfers */
    sl__retry *retry;         /* waiting for their next attempt */
    size_t n_retry;
    sl__rng rng;
} sl__batch;

static sl_status sl__start(sl__batch *b, size_t i, sl_error *err) {
    sl__xfer *x = calloc(1, sizeof *x);
    CURL *h = curl_easy_init();
    if (!x || !h) {
        free(x);
        if (h) curl_easy_cleanup(h);
        return sl__err_set(err, SL_E_NOMEM, "out of memory starting a download");
    }
    x->item = i;
    x->h = h;
    x->max = b->o->max_bytes;
    char ua[48];
    snprintf(ua, sizeof ua, "shoplens/%s", SL_VERSION);
    curl_easy_setopt(h, CURLOPT_URL, b->items[i].url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sl__write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)SL__FETCH_MAX_REDIRECTS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(b->o->timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(b->o->connect_timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)b->o->max_bytes);
    curl_easy_setopt(h, CURLOPT_USERAGENT, ua);
    if (curl_multi_add_handle(b->m, h) != CURLM_OK) {
        curl_easy_cleanup(h);
        free(x);
        return sl__err_set(err, SL_E_INTERNAL, "libcurl refused a download");
    }
    x->next = b->xfers;
    if (b->xfers) b->xfers->prev = x;
    b->xfers = x;
    b->running++;
    return SL_OK;
}

static void sl__finish_item(sl__batch *b, size_t i) {
    sl__fetch_item *it = &b->items[i];
    if (it->st != SL_OK && it->attempts > 1) {
        size_t l = strlen(it->msg);
        snprintf(it->msg + l, sizeof it->msg - l, " (%d attempts)", it->attempts);
    }
    b->finished++;
    if (b->done) b->done(b->ctx, i);
}

static void sl__drop_xfer(sl__batch *b, sl__xfer *x) {
    if (x->prev) x->prev->next = x->next;
    else b->xfers = x->next;
    if (x->next) x->next->prev = x->prev;
    curl_multi_remove_handle(b->m, x->h);
    curl_easy_cleanup(x->h);
    free(x->buf);
    free(x);
    b->running--;
}

/* A transfer ended with rc: success, retry later, or a final failure. */
static sl_status sl__ended(sl__batch *b, sl__xfer *x, CURLcode rc, sl_error *err) {
    sl__fetch_item *it = &b->items[x->item];
    const sl__fetch_opts *o = b->o;
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    it->attempts++;
    it->http_status = (int)code;
    it->st = SL_OK;
    it->msg[0] = '\0';
    int transient = 0;
    curl_off_t retry_after = 0;
    if (rc == CURLE_OK) {
        if (code >= 200 && code < 300) {
            const char *fmt = sl__sniff_image(x->buf, x->len);
            if (x->len == 0) {
                it->st = SL_E_IO;
                snprintf(it->msg, sizeof it->msg, "the server sent nothing (HTTP %ld)", code);
            } else if (!fmt) {
                char what[96], ct[52];
                sl__describe(x->buf, x->len, what, sizeof what);
                sl__ctype(x->h, ct, sizeof ct);
                it->st = SL_E_UNSUPPORTED;
                snprintf(it->msg, sizeof it->msg, "not an image: the server sent %s%s%s%s", what,
                         ct[0] ? " (Content-Type: " : "", ct, ct[0] ? ")" : "");
            } else {
                it->data = x->buf;
                it->len = x->len;
                snprintf(it->format, sizeof it->format, "%s", fmt);
                x->buf = NULL;
            }
        } else {
            transient = code == 408 || code == 429 || code >= 500;
            it->st = code == 404 || code == 410 ? SL_E_NOT_FOUND : SL_E_IO;
            snprintf(it->msg, sizeof it->msg, "HTTP %ld%s", code, sl__reason(code));
            if (transient) curl_easy_getinfo(x->h, CURLINFO_RETRY_AFTER, &retry_after);
        }
    } else if (rc == CURLE_FILESIZE_EXCEEDED || (rc == CURLE_WRITE_ERROR && x->too_large)) {
        it->st = SL_E_TOO_LARGE;
        snprintf(it->msg, sizeof it->msg, "the image is larger than the limit of %zu bytes", o->max_bytes);
    } else if (rc == CURLE_TOO_MANY_REDIRECTS) {
        it->st = SL_E_IO;
        snprintf(it->msg, sizeof it->msg, "more than %d redirects", SL__FETCH_MAX_REDIRECTS);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        it->st = SL_E_IO;
        transient = 1;
        snprintf(it->msg, sizeof it->msg, "timed out after %g s", code ? o->timeout_s : o->connect_timeout_s);
    } else if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT) {
        it->st = SL_E_INVALID;
        snprintf(it->msg, sizeof it->msg, "%.180s (only http and https URLs are fetched)",
                 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    } else {
        it->st = SL_E_IO;
        transient = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                    rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR || rc == CURLE_GOT_NOTHING ||
                    rc == CURLE_PARTIAL_FILE || rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_HTTP2 ||
                    rc == CURLE_HTTP2_STREAM;
        snprintf(it->msg, sizeof it->msg, "%.200s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    }
    size_t i = x->item;
    sl__drop_xfer(b, x);
    if (it->st != SL_OK && transient && it->attempts <= o->retries) {
        double wait = o->backoff_s * pow(2.0, it->attempts - 1);
        wait *= 1.0 + 0.25 * sl__rng_uniform(&b->rng); /* spread retries of a busy server */
        if (retry_after > 0 && retry_after <= 60) wait = (double)retry_after;
        sl__retry *nr = sl__reallocarray(b->retry, b->n_retry + 1, sizeof *nr);
        if (!nr) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        b->retry = nr;
        b->retry[b->n_retry].item = i;
        b->retry[b->n_retry].at = sl__now() + wait;
        b->n_retry++;
        return SL_OK;
    }
    sl__finish_item(b, i);
    return SL_OK;
}

static pthread_once_t sl__curl_once = PTHREAD_ONCE_INIT;
static CURLcode sl__curl_rc = CURLE_FAILED_INIT;
static void sl__curl_init(void) { sl__curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

sl_status sl__fetch_all(sl__fetch_item *items, size_t n, const sl__fetch_opts *opts,
                        void (*done)(void *ctx, size_t i), void *ctx,
                        const volatile int *cancel, sl_error *err) {
    sl__fetch_opts o;
    if (opts) o = *opts;
    else sl__fetch_opts_init(&o);
    if (o.parallel < 1) o.parallel = 1;
    if (o.max_bytes == 0) o.max_bytes = SL_IMAGE_MAX_BYTES_DEFAULT;
    for (size_t i = 0; i < n; i++) {
        items[i].data = NULL;
        items[i].len = 0;
        items[i].format[0] = '\0';
        items[i].st = SL_OK;
        items[i].msg[0] = '\0';
        items[i].attempts = 0;
        items[i].http_status = 0;
    }
    if (n == 0) return SL_OK;
    pthread_once(&sl__curl_once, sl__curl_init);
    if (sl__curl_rc != CURLE_OK) return sl__err_set(err, SL_E_INTERNAL, "libcurl: %s", curl_easy_strerror(sl__curl_rc));
    sl__batch b;
    memset(&b, 0, sizeof b);
    b.items = items;
    b.n = n;
    b.o = &o;
    b.done = done;
    b.ctx = ctx;
    sl__rng_seed(&b.rng, (uint64_t)(sl__now() * 1e6));
    b.m = curl_multi_init();
    if (!b.m) return sl__err_set(err, SL_E_INTERNAL, "libcurl: cannot create a multi handle");
    sl_status st = SL_OK;
    while (b.finished < n && st == SL_OK) {
        if (cancel && *cancel) {
            st = sl__err_set(err, SL_E_INTERRUPTED, "interrupted after %zu of %zu downloads", b.finished, n);
            break;
        }
        /* start what may start: due retries first, then new items */
        double now = sl__now(), next_retry = INFINITY;
        for (size_t r = 0; r < b.n_retry && st == SL_OK;) {
            if (b.running < o.parallel && b.retry[r].at <= now) {
                st = sl__start(&b, b.retry[r].item, err);
                b.retry[r] = b.retry[--b.n_retry];
                continue;
            }
            if (b.retry[r].at < next_retry) next_retry = b.retry[r].at;
            r++;
        }
        while (st == SL_OK && b.running < o.parallel && b.next < n) {
            size_t i = b.next++;
            if (!sl__is_url(items[i].url)) {
                items[i].st = SL_E_INVALID;
                snprintf(items[i].msg, sizeof items[i].msg, "not an http(s) URL");
                sl__finish_item(&b, i);
                continue;
            }
            st = sl__start(&b, i, err);
        }
        if (st != SL_OK) break;
        int still = 0;
        if (curl_multi_perform(b.m, &still) != CURLM_OK) {
            st = sl__err_set(err, SL_E_INTERNAL, "libcurl: the transfer loop failed");
            break;
        }
        CURLMsg *msg;
        int left = 0;
        while (st == SL_OK && (msg = curl_multi_info_read(b.m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) continue;
            sl__xfer *x = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            st = sl__ended(&b, x, msg->data.result, err);
        }
        if (b.finished >= n || st != SL_OK) break;
        /* wait for network activity, or for the next retry when nothing runs */
        int wait_ms = 200;
        if (b.running == 0 && b.n_retry > 0 && b.next >= n) {
            double d = (next_retry - sl__now()) * 1000;
            wait_ms = d < 1 ? 1 : d > 1000 ? 1000 : (int)d;
        }
        if (b.running > 0 || b.n_retry > 0) curl_multi_poll(b.m, NULL, 0, wait_ms, NULL);
    }
    /* stop whatever still runs (a run-level error or an interruption) */
    while (b.xfers) sl__drop_xfer(&b, b.xfers);
    curl_multi_cleanup(b.m);
    free(b.retry);
    return st;
}
