/*
 * nn/npy.c - NumPy .npy files (format 1.0-3.0, https://numpy.org/neps/nep-0001-npy-format.html)
 * restricted to what `shoplens cnn run` and the tests exchange: little-endian float32 ('<f4'),
 * C order, rank 0..8. Reading validates the magic, header length, dtype, order and that the
 * payload has exactly the bytes the shape needs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/npy.h"
#include "util/util.h"

sl_status sl__npy_read(const char *path, float **data, int64_t *dims, int *rank, size_t *count,
                       sl_error *err) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sl__err_set(err, SL_E_IO, "open %s: %s", path, strerror(errno));
    unsigned char pre[12];
    sl_status st = SL_OK;
    char *hdr = NULL;
    float *buf = NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) { st = sl__err_set(err, SL_E_CORRUPT, "%s: not a .npy file", path); goto done; }
    size_t hl;
    if (pre[6] == 1) hl = (size_t)pre[8] | (size_t)pre[9] << 8;
    else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) { st = sl__err_set(err, SL_E_CORRUPT, "%s: truncated header", path); goto done; }
        hl = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    } else { st = sl__err_set(err, SL_E_UNSUPPORTED, "%s: .npy version %d", path, pre[6]); goto done; }
    if (hl > 1 << 20 || !(hdr = malloc(hl + 1))) { st = sl__err_set(err, SL_E_CORRUPT, "%s: bad header length", path); goto done; }
    if (fread(hdr, 1, hl, f) != hl) { st = sl__err_set(err, SL_E_CORRUPT, "%s: truncated header", path); goto done; }
    hdr[hl] = 0;
    if (!strstr(hdr, "'descr': '<f4'")) { st = sl__err_set(err, SL_E_UNSUPPORTED, "%s: dtype must be little-endian float32 ('<f4')", path); goto done; }
    if (!strstr(hdr, "'fortran_order': False")) { st = sl__err_set(err, SL_E_UNSUPPORTED, "%s: Fortran order not supported (C order needed)", path); goto done; }
    char *sp = strstr(hdr, "'shape': (");
    if (!sp) { st = sl__err_set(err, SL_E_CORRUPT, "%s: header has no shape", path); goto done; }
    sp += 10;
    *rank = 0;
    size_t cnt = 1;
    while (*sp && *sp != ')') {
        while (*sp == ' ' || *sp == ',') sp++;
        if (*sp == ')') break;
        char *e;
        errno = 0;
        long long v = strtoll(sp, &e, 10);
        if (e == sp || v < 0 || errno || *rank >= 8 || sl__mul_size(cnt, (size_t)v, &cnt)) {
            st = sl__err_set(err, SL_E_CORRUPT, "%s: bad shape", path); goto done;
        }
        dims[(*rank)++] = v;
        sp = e;
    }
    buf = sl__mallocarray(cnt ? cnt : 1, sizeof(float));
    if (!buf) { st = sl__err_set(err, SL_E_NOMEM, "%s: out of memory", path); goto done; }
    if (fread(buf, sizeof(float), cnt, f) != cnt || fgetc(f) != EOF) {
        st = sl__err_set(err, SL_E_CORRUPT, "%s: payload size does not match the shape", path); goto done;
    }
    *count = cnt;
    *data = buf;
    buf = NULL;
done:
    free(hdr);
    free(buf);
    fclose(f);
    return st;
}

sl_status sl__npy_write(const char *path, const float *data, const int64_t *dims, int rank,
                        sl_error *err) {
    char shape[256] = "";
    size_t cnt = 1, o = 0;
    for (int d = 0; d < rank; d++) {
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%lld%s", (long long)dims[d], rank == 1 ? "," : d + 1 < rank ? ", " : "");
        cnt *= (size_t)dims[d];
    }
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", shape);
    size_t total = 10 + (size_t)n + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return sl__err_set(err, SL_E_IO, "create %s: %s", path, strerror(errno));
    unsigned hl = (unsigned)(n + (int)pad + 1);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)n, f) == (size_t)n;
    for (size_t k = 0; k < pad && ok; k++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, sizeof(float), cnt, f) == cnt;
    if (fclose(f) != 0) ok = 0;
    return ok ? SL_OK : sl__err_set(err, SL_E_IO, "write %s: %s", path, strerror(errno));
}
