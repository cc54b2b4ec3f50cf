/*
 * image/image.c - decoding untrusted image bytes into clean 8-bit sRGB (or grey) pixels with
 * libvips, encoding JPEG/PNG, and the sl_image handle.
 *
 * Pipeline of a load (sl_image_load_buffer):
 *   1. byte limit (before reading a file: its size from stat);
 *   2. format sniffed from magic bytes; only JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF pass, anything
 *      else is SL_E_UNSUPPORTED naming what was detected. libvips' untrusted loaders are blocked
 *      as well (defence in depth) and the named loader is called directly, never "any loader";
 *   3. header only (lazy vips image): pixel limit from width x height -> SL_E_TOO_LARGE;
 *   4. decode: RGB/grey JPEG through the libjpeg-turbo fast path (jpeg.c, same rules); the rest
 *      through libvips with fail_on=warning so truncated data is an error. With max_side, JPEG and WebP are
 *      decoded reduced (DCT scaling / scaled decode by 2, 4 or 8, never below max_side), then
 *      area-averaged to the exact size in C (sl_image_resize_longest). vips_thumbnail was measured
 *      3-4x slower for 1024 -> 224 px (its per-call pipeline and lanczos reduce dominate);
 *      other formats have no reduced decode and are decoded full size, then resized;
 *   5. normalize: colourspace to sRGB (CMYK via the built-in profile, 16-bit, grey, palette),
 *      alpha flattened on white, cast to 8 bits, optional luminance;
 *   6. vips_image_write_to_memory runs the pipeline; any failure there -> SL_E_CORRUPT and
 *      nothing is returned (never a partly decoded image).
 * The vips operation cache is disabled: loads from caller buffers must never be served from a
 * cache keyed on a pointer that may be reused.
 * Invariants of sl_image: see image_internal.h.
 */
#include "image/image_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <vips/vips.h>

/* ---- the handle ------------------------------------------------------------------------ */

/* A new image, zeroed or not. */
static sl_image *sl__image_make(int width, int height, int channels, int zero) {
    if (width < 1 || height < 1 || width > SL_IMAGE_MAX_SIDE_MAX || height > SL_IMAGE_MAX_SIDE_MAX ||
        (channels != 1 && channels != 3))
        return NULL;
    size_t stride, total;
    if (sl__mul_size((size_t)width, (size_t)channels, &stride) ||
        sl__mul_size(stride, (size_t)height, &total))
        return NULL;
    uint8_t *data = zero ? calloc(total, 1) : malloc(total);
    if (!data) return NULL;
    sl_image *img = sl__image_adopt(width, height, channels, data);
    if (!img) free(data);
    return img;
}

sl_image *sl_image_new(int width, int height, int channels) {
    return sl__image_make(width, height, channels, 1);
}

sl_image *sl__image_alloc(int width, int height, int channels) {
    return sl__image_make(width, height, channels, 0);
}

sl_image *sl__image_adopt(int width, int height, int channels, uint8_t *data) {
    sl_image *img = malloc(sizeof *img);
    if (!img) return NULL;
    img->width = width;
    img->height = height;
    img->channels = channels;
    img->stride = (size_t)width * (size_t)channels;
    img->data = data;
    return img;
}

sl_image *sl_image_from_pixels(int width, int height, int channels, const uint8_t *pixels,
                               size_t stride) {
    if (!pixels) return NULL;
    sl_image *img = sl__image_alloc(width, height, channels); /* every row is copied */
    if (!img) return NULL;
    if (stride < img->stride) { sl_image_free(img); return NULL; }
    for (int y = 0; y < height; y++)
        memcpy(img->data + (size_t)y * img->stride, pixels + (size_t)y * stride, img->stride);
    return img;
}

sl_image *sl_image_clone(const sl_image *img) {
    if (!img) return NULL;
    return sl_image_from_pixels(img->width, img->height, img->channels, img->data, img->stride);
}

void sl_image_free(sl_image *img) {
    if (!img) return;
    free(img->data);
    free(img);
}

int sl_image_width(const sl_image *img) { return img ? img->width : 0; }
int sl_image_height(const sl_image *img) { return img ? img->height : 0; }
int sl_image_channels(const sl_image *img) { return img ? img->channels : 0; }
size_t sl_image_stride(const sl_image *img) { return img ? img->stride : 0; }
uint8_t *sl_image_pixels(sl_image *img) { return img ? img->data : NULL; }
const uint8_t *sl_image_cpixels(const sl_image *img) { return img ? img->data : NULL; }

sl_status sl__image_check_args(const sl_image *src, sl_image **out, sl_error *err,
                               const char *fn) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (!src || !src->data) return sl__err_set(err, SL_E_INVALID, "%s: source image is NULL", fn);
    return SL_OK;
}

/* ---- libvips set-up -------------------------------------------------------------------- */

static pthread_once_t sl__vips_once = PTHREAD_ONCE_INIT;
static int sl__vips_ok;
static char sl__vips_msg[256];

/* Loaders that must never see untrusted bytes, blocked by name on top of
 * vips_block_untrusted_set (some, like matrixload, are not flagged untrusted in 8.14). */
static const char *const sl__blocked_ops[] = {
    "VipsForeignLoadMagick", "VipsForeignLoadPdf", "VipsForeignLoadSvg", "VipsForeignLoadMatrix",
    "VipsForeignLoadCsv", "VipsForeignLoadFits", "VipsForeignLoadRaw", "VipsForeignLoadVips",
    "VipsForeignLoadAnalyze", "VipsForeignLoadPpm", "VipsForeignLoadRad", "VipsForeignLoadJp2k",
    "VipsForeignLoadMat", "VipsForeignLoadOpenexr", "VipsForeignLoadOpenslide",
    "VipsForeignLoadJxl",
};

/* libvips and its loaders report warnings through GLib logging (stderr by default); library
 * code must not print, and every problem reaches the caller through fail_on and the status. */
static void sl__vips_log_silent(const gchar *domain, GLogLevelFlags level, const gchar *msg,
                                gpointer data) {
    (void)domain; (void)level; (void)msg; (void)data;
}

static void sl__vips_init_once(void) {
    if (VIPS_INIT("shoplens") != 0) {
        snprintf(sl__vips_msg, sizeof sl__vips_msg, "libvips init failed: %s", vips_error_buffer());
        vips_error_clear();
        return;
    }
    g_log_set_handler("VIPS", (GLogLevelFlags)(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE |
                      G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG), sl__vips_log_silent, NULL);
    vips_block_untrusted_set(TRUE);
    for (size_t i = 0; i < sizeof sl__blocked_ops / sizeof sl__blocked_ops[0]; i++)
        if (g_type_from_name(sl__blocked_ops[i])) vips_operation_block_set(sl__blocked_ops[i], TRUE);
    /* No operation cache (see the file comment); callers parallelize over images, so one vips
     * worker per pipeline unless the user set VIPS_CONCURRENCY. */
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    if (!getenv("VIPS_CONCURRENCY")) vips_concurrency_set(1);
    vips_leak_set(FALSE);
    sl__vips_ok = 1;
}

sl_status sl_image_global_init(sl_error *err) {
    pthread_once(&sl__vips_once, sl__vips_init_once);
    if (!sl__vips_ok) return sl__err_set(err, SL_E_INTERNAL, "%s", sl__vips_msg);
    return SL_OK;
}

/* Takes the libvips error text (trimmed to one line) and clears it. */
static sl_status sl__vips_fail(sl_error *err, sl_status code, const char *what) {
    char buf[384];
    snprintf(buf, sizeof buf, "%s", vips_error_buffer());
    vips_error_clear();
    for (char *p = buf; *p; p++)
        if (*p == '\n') { *p = (p[1] ? ';' : '\0'); }
    return sl__err_set(err, code, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

/* ---- format detection ------------------------------------------------------------------ */

typedef enum { SL__FMT_NONE = 0, SL__FMT_JPEG, SL__FMT_PNG, SL__FMT_WEBP, SL__FMT_GIF,
               SL__FMT_TIFF, SL__FMT_HEIF } sl__fmt;

static int sl__has(const uint8_t *d, size_t n, size_t off, const char *s, size_t k) {
    return n >= off + k && memcmp(d + off, s, k) == 0;
}

/* Sniffs the type from magic bytes; name is always set ("unknown" when nothing matches). */
static sl__fmt sl__sniff(const uint8_t *d, size_t n, char name[16]) {
    static const struct { size_t off; const char *magic; size_t len; const char *name; sl__fmt f; } tab[] = {
        { 0, "\xff\xd8\xff", 3, "jpeg", SL__FMT_JPEG },
        { 0, "\x89PNG\r\n\x1a\n", 8, "png", SL__FMT_PNG },
        { 0, "GIF87a", 6, "gif", SL__FMT_GIF },
        { 0, "GIF89a", 6, "gif", SL__FMT_GIF },
        { 0, "II*\0", 4, "tiff", SL__FMT_TIFF },
        { 0, "MM\0*", 4, "tiff", SL__FMT_TIFF },
        { 0, "II+\0", 4, "tiff", SL__FMT_TIFF },
        { 0, "MM\0+", 4, "tiff", SL__FMT_TIFF },
        { 0, "%PDF", 4, "pdf", SL__FMT_NONE },
        { 0, "%!PS", 4, "postscript", SL__FMT_NONE },
        { 0, "BM", 2, "bmp", SL__FMT_NONE },
        { 0, "8BPS", 4, "psd", SL__FMT_NONE },
        { 0, "\0\0\1\0", 4, "ico", SL__FMT_NONE },
        { 0, "\0\0\0\x0cjP  ", 8, "jp2", SL__FMT_NONE },
        { 0, "\xff\x4f\xff\x51", 4, "j2k", SL__FMT_NONE },
        { 0, "\xff\x0a", 2, "jxl", SL__FMT_NONE },
        { 0, "\0\0\0\x0cJXL ", 8, "jxl", SL__FMT_NONE },
        { 0, "SIMPLE  =", 9, "fits", SL__FMT_NONE },
        { 0, "#?RADIANCE", 10, "radiance", SL__FMT_NONE },
        { 0, "v/1\x01", 4, "openexr", SL__FMT_NONE },
        { 0, "\x08\xf2\xa6\xb6", 4, "vips", SL__FMT_NONE },
        { 0, "\xb6\xa6\xf2\x08", 4, "vips", SL__FMT_NONE },
        { 0, "MATLAB", 6, "matlab", SL__FMT_NONE },
        { 0, "\x1f\x8b", 2, "gzip", SL__FMT_NONE },
        { 0, "PK\x03\x04", 4, "zip", SL__FMT_NONE },
        { 0, "qoif", 4, "qoi", SL__FMT_NONE },
    };
    snprintf(name, 16, "unknown");
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (sl__has(d, n, tab[i].off, tab[i].magic, tab[i].len)) {
            snprintf(name, 16, "%s", tab[i].name);
            return tab[i].f;
        }
    if (sl__has(d, n, 0, "RIFF", 4) && sl__has(d, n, 8, "WEBP", 4)) {
        snprintf(name, 16, "webp");
        return SL__FMT_WEBP;
    }
    if (sl__has(d, n, 4, "ftyp", 4) && n >= 12) {
        static const char *const heic[] = { "heic", "heix", "hevc", "hevx", "heim", "heis",
                                            "mif1", "msf1" };
        static const char *const avif[] = { "avif", "avis" };
        for (size_t i = 0; i < sizeof avif / sizeof avif[0]; i++)
            if (memcmp(d + 8, avif[i], 4) == 0) { snprintf(name, 16, "avif"); return SL__FMT_HEIF; }
        for (size_t i = 0; i < sizeof heic / sizeof heic[0]; i++)
            if (memcmp(d + 8, heic[i], 4) == 0) { snprintf(name, 16, "heif"); return SL__FMT_HEIF; }
        snprintf(name, 16, "isobmff");
        return SL__FMT_NONE;
    }
    if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7') {
        snprintf(name, 16, "pnm");
        return SL__FMT_NONE;
    }
    /* Text formats: look for markup in the first KiB (SVG may start with a BOM, XML decl, or
     * comments). */
    size_t m = n < 1024 ? n : 1024;
    int text = m > 0;
    for (size_t i = 0; i < m; i++)
        if (d[i] < 0x09 || (d[i] > 0x0d && d[i] < 0x20 && d[i] != 0x1b)) { text = 0; break; }
    if (text) {
        char head[1025];
        memcpy(head, d, m);
        head[m] = '\0';
        if (strstr(head, "<svg") || strstr(head, "<SVG")) snprintf(name, 16, "svg");
        else if (strstr(head, "<?xml")) snprintf(name, 16, "xml");
        else if (strstr(head, "<html") || strstr(head, "<!DOCTYPE")) snprintf(name, 16, "html");
        else snprintf(name, 16, "text");
    }
    return SL__FMT_NONE;
}

/* Loads the header (lazy image) with the loader of fmt; options: sequential, fail on warnings.
 * shrink (1, 2, 4 or 8) asks JPEG (DCT scaling) and WebP (scaled decode) for a reduced decode;
 * other formats ignore it. */
static VipsImage *sl__open(sl__fmt fmt, const void *d, size_t n, int shrink) {
    VipsImage *im = NULL;
    int rc = -1;
    switch (fmt) {
    case SL__FMT_JPEG: rc = vips_jpegload_buffer((void *)d, n, &im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_WARNING, "shrink", shrink, NULL); break;
    case SL__FMT_PNG: rc = vips_pngload_buffer((void *)d, n, &im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_WARNING, NULL); break;
    case SL__FMT_WEBP: rc = vips_webpload_buffer((void *)d, n, &im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_WARNING, "scale", 1.0 / shrink, NULL); break;
    case SL__FMT_GIF: rc = vips_gifload_buffer((void *)d, n, &im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_WARNING, NULL); break;
    case SL__FMT_TIFF: rc = vips_tiffload_buffer((void *)d, n, &im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_WARNING, NULL); break;
    case SL__FMT_HEIF: rc = vips_heifload_buffer((void *)d, n, &im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_WARNING, NULL); break;
    default: break;
    }
    if (rc != 0) {
        if (im) g_object_unref(im);
        return NULL;
    }
    return im;
}

/* Replaces *im by f(*im); returns 0 or -1 (then *im is unchanged and still owned). */
#define SL__STEP(im, call)                                                     \
    do {                                                                       \
        VipsImage *sl__t = NULL;                                               \
        VipsImage *in = (im);                                                  \
        if ((call) != 0) { if (sl__t) g_object_unref(sl__t); goto fail; }      \
        g_object_unref(in);                                                    \
        (im) = sl__t;                                                          \
    } while (0)

/* Brings any decoded image to 8-bit sRGB (3 bands) or 8-bit grey (1 band), alpha flattened on
 * white. Takes ownership of im; returns NULL with the vips error set on failure. */
static VipsImage *sl__normalize(VipsImage *im, int grey) {
    VipsInterpretation want = grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
    VipsInterpretation have = vips_image_guess_interpretation(im);
    /* 16-bit data: colourspace converts RGB16/GREY16 to 8-bit; other interpretations go
     * through the same path after a relabel. */
    if (have == VIPS_INTERPRETATION_CMYK && im->Bands < 4) have = VIPS_INTERPRETATION_B_W;
    if (have != VIPS_INTERPRETATION_sRGB && have != VIPS_INTERPRETATION_B_W &&
        have != VIPS_INTERPRETATION_RGB16 && have != VIPS_INTERPRETATION_GREY16 &&
        have != VIPS_INTERPRETATION_CMYK) {
        if (im->BandFmt == VIPS_FORMAT_USHORT)
            have = im->Bands >= 3 ? VIPS_INTERPRETATION_RGB16 : VIPS_INTERPRETATION_GREY16;
        else
            have = im->Bands >= 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W;
    }
    if (have != want || im->BandFmt != VIPS_FORMAT_UCHAR) {
        VipsInterpretation target = want;
        SL__STEP(im, vips_colourspace(in, &sl__t, target, "source_space", have, NULL));
    }
    /* Whatever the colourspace left, make it 8-bit (ushort -> >> 8, others clamp). */
    if (im->BandFmt == VIPS_FORMAT_USHORT)
        SL__STEP(im, vips_rshift_const1(in, &sl__t, 8, NULL));
    if (im->BandFmt != VIPS_FORMAT_UCHAR)
        SL__STEP(im, vips_cast(in, &sl__t, VIPS_FORMAT_UCHAR, NULL));
    if (vips_image_hasalpha(im)) {
        double white = 255.0;
        VipsArrayDouble *bg = vips_array_double_new(&white, 1);
        VipsImage *t = NULL;
        int rc = vips_flatten(im, &t, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        if (rc != 0) goto fail;
        g_object_unref(im);
        im = t;
        if (im->BandFmt != VIPS_FORMAT_UCHAR)
            SL__STEP(im, vips_cast(in, &sl__t, VIPS_FORMAT_UCHAR, NULL));
    }
    int bands = grey ? 1 : 3;
    if (im->Bands > bands)
        SL__STEP(im, vips_extract_band(in, &sl__t, 0, "n", bands, NULL));
    if (im->Bands < bands) { /* 1 band -> 3 copies */
        VipsImage *v[3] = { im, im, im };
        SL__STEP(im, vips_bandjoin(v, &sl__t, 3, NULL));
    }
    return im;
fail:
    g_object_unref(im);
    return NULL;
}

static void sl__info_from_header(sl_image_info *info, VipsImage *h) {
    info->width = h->Xsize;
    info->height = vips_image_get_page_height(h);
    info->bands = h->Bands;
    info->bits = (int)(vips_format_sizeof(h->BandFmt) * 8);
    info->orientation = vips_image_get_orientation(h);
    if (info->orientation < 1 || info->orientation > 8) info->orientation = 1;
}

/* Resets info to "nothing known" and checks/clears out. */
static sl_status sl__load_start(sl_image_info *info, sl_image **out, sl_error *err) {
    memset(info, 0, sizeof *info);
    snprintf(info->format, sizeof info->format, "unknown");
    info->orientation = 1;
    if (!out) return sl__err_set(err, SL_E_INVALID, "image load: out is NULL");
    *out = NULL;
    return SL_OK;
}

sl_status sl_image_load_buffer(const void *data, size_t len, const sl_image_load_opts *opts,
                               sl_image **out, sl_image_info *info, sl_error *err) {
    sl_image_info dummy;
    if (!info) info = &dummy;
    sl_status st = sl__load_start(info, out, err);
    if (st) return st;
    if (!data && len) return sl__err_set(err, SL_E_INVALID, "image load: data is NULL");
    st = sl_image_global_init(err);
    if (st) return st;
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : SL_IMAGE_MAX_BYTES_DEFAULT;
    uint64_t max_pixels = opts && opts->max_pixels ? opts->max_pixels : SL_IMAGE_MAX_PIXELS_DEFAULT;
    int max_side = opts ? opts->max_side : 0;
    int grey = opts ? opts->grey != 0 : 0;
    if (max_side < 0 || max_side > SL_IMAGE_MAX_SIDE_MAX)
        return sl__err_set(err, SL_E_INVALID, "image load: max_side %d out of range 0..%d",
                           max_side, SL_IMAGE_MAX_SIDE_MAX);
    if (len == 0) return sl__err_set(err, SL_E_CORRUPT, "image load: empty input (0 bytes)");
    if (len > max_bytes)
        return sl__err_set(err, SL_E_TOO_LARGE, "image load: %zu bytes exceed the limit of %zu",
                           len, max_bytes);
    sl__fmt fmt = sl__sniff(data, len, info->format);
    if (fmt == SL__FMT_NONE) {
        if (strcmp(info->format, "unknown") == 0)
            return sl__err_set(err, SL_E_UNSUPPORTED,
                               "image load: not a recognised image format (unknown type, %zu bytes)", len);
        return sl__err_set(err, SL_E_UNSUPPORTED,
                           "image load: format '%s' is not accepted (JPEG, PNG, WebP, GIF, TIFF, "
                           "HEIF/AVIF only)", info->format);
    }
    if (fmt == SL__FMT_JPEG) {
        sl_image *img = NULL;
        int use_vips = 0;
        st = sl__jpeg_decode(data, len, max_side, grey, max_pixels, info, &img, &use_vips, err);
        if (st) return st;
        if (!use_vips) {
            info->out_width = img->width;
            info->out_height = img->height;
            *out = img;
            return SL_OK;
        }
        /* CMYK/YCCK: the libvips path below */
    }
    VipsImage *hdr = sl__open(fmt, data, len, 1);
    if (!hdr) {
        char what[64];
        snprintf(what, sizeof what, "image load: bad %s header", info->format);
        return sl__vips_fail(err, SL_E_CORRUPT, what);
    }
    sl__info_from_header(info, hdr);
    if (info->width < 1 || info->height < 1) {
        g_object_unref(hdr);
        return sl__err_set(err, SL_E_CORRUPT, "image load: %s header has size %dx%d",
                           info->format, info->width, info->height);
    }
    uint64_t px = (uint64_t)info->width * (uint64_t)info->height;
    if (px > max_pixels || info->width > SL_IMAGE_MAX_SIDE_MAX || info->height > SL_IMAGE_MAX_SIDE_MAX) {
        g_object_unref(hdr);
        if (px <= max_pixels)
            return sl__err_set(err, SL_E_TOO_LARGE, "image load: %s of %dx%d has a side over %d",
                               info->format, info->width, info->height, SL_IMAGE_MAX_SIDE_MAX);
        return sl__err_set(err, SL_E_TOO_LARGE,
                           "image load: %s of %dx%d = %llu pixels exceeds the limit of %llu",
                           info->format, info->width, info->height, (unsigned long long)px,
                           (unsigned long long)max_pixels);
    }
    VipsImage *im = NULL;
    /* Upright size, to decide whether shrinking is needed. */
    int uw = info->orientation >= 5 ? info->height : info->width;
    int uh = info->orientation >= 5 ? info->width : info->height;
    int longest = uw > uh ? uw : uh, shrink = 1;
    if (max_side > 0 && longest > max_side && (fmt == SL__FMT_JPEG || fmt == SL__FMT_WEBP)) {
        /* reduced decode by the largest power of two that keeps the longest side >= max_side;
         * the exact size comes from the area-averaging resize below */
        while (shrink < 8 && (longest + 2 * shrink - 1) / (2 * shrink) >= max_side) shrink *= 2;
    }
    if (shrink > 1) {
        g_object_unref(hdr);
        hdr = sl__open(fmt, data, len, shrink);
        if (!hdr) return sl__vips_fail(err, SL_E_CORRUPT, "image load: reduced decode failed");
    }
    int rc = vips_autorot(hdr, &im, NULL);
    g_object_unref(hdr);
    if (rc) return sl__vips_fail(err, SL_E_CORRUPT, "image load: orientation failed");
    im = sl__normalize(im, grey);
    if (!im) return sl__vips_fail(err, SL_E_CORRUPT, "image load: colour conversion failed");
    size_t size = 0;
    void *pix = vips_image_write_to_memory(im, &size);
    int w = im->Xsize, h = im->Ysize, c = im->Bands;
    g_object_unref(im);
    if (!pix) {
        char what[64];
        snprintf(what, sizeof what, "image load: %s data is truncated or corrupt", info->format);
        return sl__vips_fail(err, SL_E_CORRUPT, what);
    }
    sl_image *img = NULL;
    sl_status rs = SL_OK;
    if (size != (size_t)w * (size_t)h * (size_t)c) {
        rs = sl__err_set(err, SL_E_INTERNAL, "image load: decoder returned %zu bytes for %dx%dx%d", size, w, h, c);
    } else if (max_side > 0 && (w > max_side || h > max_side)) {
        /* resize straight from the decoder's buffer (a borrowed view, no copy) */
        sl_image view = { w, h, c, (size_t)w * c, pix };
        rs = sl_image_resize_longest(&view, max_side, 1, &img, err);
    } else if (!(img = sl_image_from_pixels(w, h, c, pix, (size_t)w * c))) {
        rs = sl__err_set(err, SL_E_NOMEM, "image load: out of memory for %dx%d", w, h);
    }
    g_free(pix);
    if (rs) return rs;
    w = img->width;
    h = img->height;
    info->out_width = w;
    info->out_height = h;
    *out = img;
    return SL_OK;
}

sl_status sl_image_load_file(const char *path, const sl_image_load_opts *opts, sl_image **out,
                             sl_image_info *info, sl_error *err) {
    sl_image_info dummy;
    if (!info) info = &dummy;
    sl_status st = sl__load_start(info, out, err);
    if (st) return st;
    if (!path) return sl__err_set(err, SL_E_INVALID, "image load: path is NULL");
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : SL_IMAGE_MAX_BYTES_DEFAULT;
    FILE *f = fopen(path, "rb");
    if (!f) return sl__err_set(err, errno == ENOENT ? SL_E_NOT_FOUND : SL_E_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return sl__err_set(err, SL_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        fclose(f);
        return sl__err_set(err, SL_E_TOO_LARGE, "%s: %lld bytes exceed the limit of %zu", path,
                           (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) { fclose(f); return sl__err_set(err, SL_E_NOMEM, "%s: out of memory", path); }
    size_t got = n ? fread(buf, 1, n, f) : 0;
    int rerr = ferror(f);
    fclose(f);
    if (got != n || rerr) {
        free(buf);
        return sl__err_set(err, SL_E_IO, "%s: read failed", path);
    }
    st = sl_image_load_buffer(buf, n, opts, out, info, err);
    free(buf);
    if (st != SL_OK && err) sl__err_prefix(err, "%s", path);
    return st;
}

/* ---- encoding -------------------------------------------------------------------------- */

sl_status sl_image_encode(const sl_image *img, const char *format, int quality, void **data,
                          size_t *len, sl_error *err) {
    if (!data || !len) return sl__err_set(err, SL_E_INVALID, "image encode: data/len is NULL");
    *data = NULL;
    *len = 0;
    if (!img || !img->data) return sl__err_set(err, SL_E_INVALID, "image encode: image is NULL");
    if (!format) return sl__err_set(err, SL_E_INVALID, "image encode: format is NULL");
    int jpeg = strcmp(format, "jpeg") == 0 || strcmp(format, "jpg") == 0;
    int png = strcmp(format, "png") == 0;
    if (!jpeg && !png)
        return sl__err_set(err, SL_E_UNSUPPORTED, "image encode: format '%s' (jpeg or png only)", format);
    if (quality == 0) quality = 85;
    if (quality < 1 || quality > 100)
        return sl__err_set(err, SL_E_INVALID, "image encode: quality %d not in 1..100", quality);
    sl_status st = sl_image_global_init(err);
    if (st) return st;
    VipsImage *im = vips_image_new_from_memory(img->data, img->stride * (size_t)img->height,
                                               img->width, img->height, img->channels,
                                               VIPS_FORMAT_UCHAR);
    if (!im) return sl__vips_fail(err, SL_E_INTERNAL, "image encode");
    im->Type = img->channels == 1 ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
    void *buf = NULL;
    size_t n = 0;
    int rc = jpeg ? vips_jpegsave_buffer(im, &buf, &n, "Q", quality, "strip", TRUE, NULL)
                  : vips_pngsave_buffer(im, &buf, &n, "strip", TRUE, "compression", 6, NULL);
    g_object_unref(im);
    if (rc != 0) return sl__vips_fail(err, SL_E_INTERNAL, "image encode");
    void *copy = malloc(n ? n : 1);
    if (!copy) { g_free(buf); return sl__err_set(err, SL_E_NOMEM, "image encode: out of memory"); }
    memcpy(copy, buf, n);
    g_free(buf);
    *data = copy;
    *len = n;
    return SL_OK;
}

sl_status sl_image_save_file(const sl_image *img, const char *path, int quality, sl_error *err) {
    if (!path) return sl__err_set(err, SL_E_INVALID, "image save: path is NULL");
    const char *dot = strrchr(path, '.');
    const char *fmt = NULL;
    if (dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0)) fmt = "jpeg";
    else if (dot && strcasecmp(dot, ".png") == 0) fmt = "png";
    if (!fmt)
        return sl__err_set(err, SL_E_UNSUPPORTED, "%s: extension must be .jpg, .jpeg or .png", path);
    void *buf = NULL;
    size_t n = 0;
    sl_status st = sl_image_encode(img, fmt, quality, &buf, &n, err);
    if (st) return st;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(buf);
        return sl__err_set(err, SL_E_IO, "%s: %s", path, strerror(errno));
    }
    size_t w = fwrite(buf, 1, n, f);
    free(buf);
    if (w != n || fclose(f) != 0) return sl__err_set(err, SL_E_IO, "%s: write failed", path);
    return SL_OK;
}
