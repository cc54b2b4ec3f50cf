/*
 * image/jpeg.c - the JPEG fast path: YCbCr/RGB/grey JPEGs decoded straight with libjpeg-turbo
 * (the library libvips itself uses), with DCT-domain scaling by 1/2, 1/4 or 1/8 for
 * shrink-on-load. Profiling the libvips path for 1024x768 -> 224 px showed about a third of the
 * time in the per-call pipeline (GObject construction, regions, worker thread hand-off); this
 * path skips it. libvips handles everything else (CMYK/YCCK JPEGs, the other formats, encoding).
 * Same contract as the libvips path: any libjpeg warning (corrupt or truncated data, the
 * equivalent of fail_on=warning) or error is SL_E_CORRUPT and no pixels are returned; EXIF
 * orientation (read by libvips from the header) is applied after the resize; embedded ICC
 * profiles are ignored as on the libvips path. The header (size, EXIF orientation from APP1) is
 * read here too, and the pixel limit checked before any scanline is decoded.
 */
#include "image/image_internal.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} sl__jerr;

static void sl__jerr_exit(j_common_ptr c) {
    sl__jerr *e = (sl__jerr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings (level < 0) mean damaged data: fail like libvips' fail_on=warning. Trace messages
 * (level >= 0) are ignored. */
static void sl__jerr_emit(j_common_ptr c, int level) {
    if (level < 0) sl__jerr_exit(c);
}

static unsigned sl__rd16(const uint8_t *p, int le) { return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | p[1]; }
static uint32_t sl__rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* EXIF orientation (tag 0x0112 of IFD0) from an APP1 payload; 1 when absent or malformed. */
static int sl__exif_orientation(const uint8_t *d, size_t n) {
    if (n < 14 || memcmp(d, "Exif\0\0", 6) != 0) return 1;
    d += 6;
    n -= 6;
    int le;
    if (memcmp(d, "II*\0", 4) == 0) le = 1;
    else if (memcmp(d, "MM\0*", 4) == 0) le = 0;
    else return 1;
    uint32_t ifd = sl__rd32(d + 4, le);
    if (ifd > n || n - ifd < 2) return 1;
    unsigned count = sl__rd16(d + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) return 1;
        if (sl__rd16(d + e, le) == 0x0112 && sl__rd16(d + e + 2, le) == 3) {
            unsigned v = sl__rd16(d + e + 8, le);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

sl_status sl__jpeg_decode(const uint8_t *data, size_t len, int max_side, int grey,
                          uint64_t max_pixels, sl_image_info *info, sl_image **out, int *use_vips,
                          sl_error *err) {
    *out = NULL;
    *use_vips = 0;
    struct jpeg_decompress_struct c;
    sl__jerr e;
    uint8_t *volatile pix = NULL;
    memset(&c, 0, sizeof c);
    c.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = sl__jerr_exit;
    e.pub.emit_message = sl__jerr_emit;
    e.msg[0] = '\0';
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&c);
        free(pix);
        int code = e.pub.msg_code;
        if (code == JERR_BAD_PRECISION || code == JERR_ARITH_NOTIMPL || code == JERR_NOT_COMPILED)
            return sl__err_set(err, SL_E_UNSUPPORTED, "image load: jpeg variant not supported: %s", e.msg);
        return sl__err_set(err, SL_E_CORRUPT, "image load: jpeg data is truncated or corrupt: %s", e.msg);
    }
    jpeg_create_decompress(&c);
    jpeg_mem_src(&c, data, (unsigned long)len);
    jpeg_save_markers(&c, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&c, TRUE);
    int orientation = 1;
    for (jpeg_saved_marker_ptr m = c.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && (orientation = sl__exif_orientation(m->data, m->data_length)) != 1) break;
    info->width = (int)c.image_width;
    info->height = (int)c.image_height;
    info->bands = c.num_components;
    info->bits = c.data_precision;
    info->orientation = orientation;
    uint64_t px = (uint64_t)c.image_width * c.image_height;
    if (c.image_width < 1 || c.image_height < 1) {
        jpeg_destroy_decompress(&c);
        return sl__err_set(err, SL_E_CORRUPT, "image load: jpeg header has size %ux%u", c.image_width, c.image_height);
    }
    if (px > max_pixels) {
        jpeg_destroy_decompress(&c);
        return sl__err_set(err, SL_E_TOO_LARGE, "image load: jpeg of %ux%u = %llu pixels exceeds the limit of %llu",
                           c.image_width, c.image_height, (unsigned long long)px, (unsigned long long)max_pixels);
    }
    if (c.jpeg_color_space != JCS_YCbCr && c.jpeg_color_space != JCS_RGB &&
        c.jpeg_color_space != JCS_GRAYSCALE) {
        jpeg_destroy_decompress(&c);
        *use_vips = 1; /* CMYK, YCCK, ...: the caller uses libvips */
        return SL_OK;
    }
    c.out_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
    unsigned longest = c.image_width > c.image_height ? c.image_width : c.image_height;
    unsigned shrink = 1;
    if (max_side > 0)
        while (shrink < 8 && (longest + 2 * shrink - 1) / (2 * shrink) >= (unsigned)max_side) shrink *= 2;
    c.scale_num = 1;
    c.scale_denom = shrink;
    if (shrink > 1) {
        /* a reduced decode is about speed and is area-averaged afterwards: like PIL's draft
         * mode, take the fast integer IDCT and plain chroma replication (which lets
         * libjpeg-turbo merge upsampling with colour conversion) */
        c.dct_method = JDCT_IFAST;
        c.do_fancy_upsampling = FALSE;
    }
    jpeg_start_decompress(&c);
    int w = (int)c.output_width, h = (int)c.output_height, ch = c.output_components;
    if (w < 1 || h < 1 || w > SL_IMAGE_MAX_SIDE_MAX || h > SL_IMAGE_MAX_SIDE_MAX || (ch != 1 && ch != 3)) {
        jpeg_destroy_decompress(&c);
        return sl__err_set(err, SL_E_CORRUPT, "image load: jpeg decodes to %dx%dx%d", w, h, ch);
    }
    size_t stride = (size_t)w * (size_t)ch;
    pix = sl__mallocarray(stride, (size_t)h);
    if (!pix) {
        jpeg_destroy_decompress(&c);
        return sl__err_set(err, SL_E_NOMEM, "image load: out of memory for %dx%d", w, h);
    }
    while (c.output_scanline < c.output_height) {
        JSAMPROW rows[16];
        int k = 0;
        for (; k < 16 && c.output_scanline + (unsigned)k < c.output_height; k++)
            rows[k] = pix + (size_t)(c.output_scanline + (unsigned)k) * stride;
        jpeg_read_scanlines(&c, rows, (JDIMENSION)k);
    }
    jpeg_finish_decompress(&c);
    jpeg_destroy_decompress(&c);
    /* resize from the decoded buffer, then turn upright (the longest side does not change) */
    sl_image view = { w, h, ch, stride, pix };
    sl_image *sized = NULL;
    sl_status st;
    if (max_side > 0 && (w > max_side || h > max_side)) st = sl_image_resize_longest(&view, max_side, 1, &sized, err);
    else if ((sized = sl__image_adopt(w, h, ch, pix))) { pix = NULL; st = SL_OK; } /* no copy */
    else st = sl__err_set(err, SL_E_NOMEM, "image load: out of memory");
    free(pix);
    if (st) return st;
    if (sized->channels == 1 && !grey) { /* cannot happen with JCS_RGB output, kept for safety */
        sl_image_free(sized);
        return sl__err_set(err, SL_E_INTERNAL, "image load: jpeg gave 1 channel for RGB output");
    }
    if (orientation > 1 && orientation <= 8) {
        sl_image *up = NULL;
        st = sl__image_orient(sized, orientation, &up, err);
        sl_image_free(sized);
        if (st) return st;
        sized = up;
    }
    *out = sized;
    return SL_OK;
}
