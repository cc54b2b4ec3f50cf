/*
 * nn/onnx.c - a small reader of ONNX ModelProto files (protobuf wire format,
 * https://protobuf.dev/programming-guides/encoding/ ; message schema onnx/onnx.proto, IR v3-v8).
 *
 * Only the messages the engine needs are decoded: ModelProto (ir_version, opset_import,
 * producer_name, graph), GraphProto (node, initializer, input, output), NodeProto,
 * AttributeProto, TensorProto (raw_data and the typed fields; float16/bfloat16/double converted
 * to float32, every integer type widened to int64), ValueInfoProto with tensor shapes.
 * Unknown fields are skipped by wire type, as protobuf requires.
 *
 * Invariants: every read is bounds-checked against the enclosing length; every size derived from
 * the file goes through checked arithmetic; element counts must match the declared dims; on any
 * error the partly built model is freed and the error names the message and field. Nesting is
 * bounded (no recursion deeper than the schema; subgraph attributes are skipped), so hostile
 * input cannot exhaust the stack.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/nn_internal.h"
#include "util/util.h"

typedef struct rd {
    const uint8_t *p, *end;
    const char *msg;   /* message being decoded, for errors */
    sl_error *err;
} rd;

static sl_status corrupt(rd *r, const char *what) {
    return sl__err_set(r->err, SL_E_CORRUPT, "ONNX %s: %s", r->msg, what);
}

static int rd_varint(rd *r, uint64_t *v) {
    uint64_t x = 0;
    for (int s = 0; s < 64; s += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return -1;
}

/* Reads a field key; returns 1 with field/wire set, 0 at end, -1 on malformed key. */
static int rd_key(rd *r, uint32_t *field, int *wire) {
    if (r->p >= r->end) return 0;
    uint64_t k;
    if (rd_varint(r, &k) || (k >> 3) == 0 || (k >> 3) > 0x1fffffff) return -1;
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    return 1;
}

/* Length-delimited payload as a sub-reader. */
static int rd_bytes(rd *r, rd *sub, const char *msg) {
    uint64_t n;
    if (rd_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
    sub->p = r->p;
    sub->end = r->p + n;
    sub->msg = msg;
    sub->err = r->err;
    r->p += n;
    return 0;
}

static int rd_skip(rd *r, int wire) {
    uint64_t v;
    switch (wire) {
    case 0: return rd_varint(r, &v);
    case 1: if (r->end - r->p < 8) return -1; r->p += 8; return 0;
    case 2: { rd s; return rd_bytes(r, &s, r->msg); }
    case 5: if (r->end - r->p < 4) return -1; r->p += 4; return 0;
    default: return -1; /* groups (3, 4) and reserved types are not valid in ONNX */
    }
}

static char *rd_string(rd *r) {
    rd s;
    if (rd_bytes(r, &s, r->msg)) return NULL;
    size_t n = (size_t)(s.end - s.p);
    char *c = malloc(n + 1);
    if (!c) return NULL;
    memcpy(c, s.p, n);
    c[n] = 0;
    /* Names with embedded NULs would alias other names; replace them. */
    for (size_t k = 0; k < n; k++) if (!c[k]) c[k] = '?';
    return c;
}

static float rd_f32le(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint64_t rd_u64le(const uint8_t *p) {
    uint64_t u = 0;
    for (int k = 7; k >= 0; k--) u = u << 8 | p[k];
    return u;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0) {
        if (m == 0) u = sign;
        else { /* subnormal */
            int sh = 0;
            while (!(m & 0x400)) { m <<= 1; sh++; }
            m &= 0x3ff;
            u = sign | (uint32_t)(113 - sh) << 23 | m << 13;
        }
    } else if (e == 31) u = sign | 0x7f800000u | m << 13;
    else u = sign | (e + 112) << 23 | m << 13;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Growable array push helper. */
static void *grow(void *arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return arr;
    size_t nc = *cap ? *cap * 2 : 8;
    void *p = sl__reallocarray(arr, nc, elem);
    if (!p) return NULL;
    memset((char *)p + *cap * elem, 0, (nc - *cap) * elem);
    *cap = nc;
    return p;
}

/* Repeated int64 (packed or not) appended to *v. */
static int rd_rep_varint(rd *r, int wire, int64_t **v, size_t *n, size_t *cap) {
    if (wire == 0) {
        uint64_t x;
        if (rd_varint(r, &x)) return -1;
        int64_t *p = grow(*v, cap, *n, sizeof **v);
        if (!p) return -2;
        *v = p;
        (*v)[(*n)++] = (int64_t)x;
        return 0;
    }
    if (wire != 2) return -1;
    rd s;
    if (rd_bytes(r, &s, r->msg)) return -1;
    while (s.p < s.end) {
        uint64_t x;
        if (rd_varint(&s, &x)) return -1;
        int64_t *p = grow(*v, cap, *n, sizeof **v);
        if (!p) return -2;
        *v = p;
        (*v)[(*n)++] = (int64_t)x;
    }
    return 0;
}

/* Repeated float (packed fixed32 or single fixed32). */
static int rd_rep_float(rd *r, int wire, float **v, size_t *n, size_t *cap) {
    if (wire == 5) {
        if (r->end - r->p < 4) return -1;
        float *p = grow(*v, cap, *n, sizeof **v);
        if (!p) return -2;
        *v = p;
        (*v)[(*n)++] = rd_f32le(r->p);
        r->p += 4;
        return 0;
    }
    if (wire != 2) return -1;
    rd s;
    if (rd_bytes(r, &s, r->msg)) return -1;
    size_t len = (size_t)(s.end - s.p);
    if (len % 4) return -1;
    size_t total;
    if (sl__add_size(*n, len / 4, &total)) return -1;
    if (total > *cap) {
        float *p = sl__reallocarray(*v, total, sizeof **v);
        if (!p) return -2;
        *v = p;
        *cap = total;
    }
    for (size_t k = 0; k < len / 4; k++) (*v)[(*n)++] = rd_f32le(s.p + 4 * k);
    return 0;
}

/* Repeated double (packed fixed64 or single fixed64), stored as float. */
static int rd_rep_double(rd *r, int wire, float **v, size_t *n, size_t *cap) {
    const uint8_t *p0;
    size_t cnt;
    rd s;
    if (wire == 1) {
        if (r->end - r->p < 8) return -1;
        p0 = r->p; cnt = 1; r->p += 8;
    } else if (wire == 2) {
        if (rd_bytes(r, &s, r->msg)) return -1;
        if ((s.end - s.p) % 8) return -1;
        p0 = s.p; cnt = (size_t)(s.end - s.p) / 8;
    } else return -1;
    size_t total;
    if (sl__add_size(*n, cnt, &total)) return -1;
    if (total > *cap) {
        float *q = sl__reallocarray(*v, total, sizeof **v);
        if (!q) return -2;
        *v = q;
        *cap = total;
    }
    for (size_t k = 0; k < cnt; k++) {
        uint64_t u = rd_u64le(p0 + 8 * k);
        double d;
        memcpy(&d, &u, 8);
        (*v)[(*n)++] = (float)d;
    }
    return 0;
}

void sl__onnx_tensor_clear(sl__onnx_tensor *t) {
    if (!t) return;
    free(t->name);
    free(t->f);
    free(t->i);
    memset(t, 0, sizeof *t);
}

static int is_float_type(int t) { return t == 1 || t == 10 || t == 11 || t == 16; }
static int is_int_type(int t) {
    return t == 2 || t == 3 || t == 4 || t == 5 || t == 6 || t == 7 || t == 9 || t == 12 ||
           t == 13;
}
static size_t raw_elem_size(int t) {
    switch (t) {
    case 1: case 6: case 12: return 4;
    case 2: case 3: case 9: return 1;
    case 4: case 5: case 10: case 16: return 2;
    case 7: case 11: case 13: return 8;
    default: return 0;
    }
}

static sl_status parse_tensor(rd *r, sl__onnx_tensor *t) {
    int64_t *dims = NULL; size_t ndims = 0, capd = 0;
    float *fd = NULL; size_t nf = 0, capf = 0;
    int64_t *id = NULL; size_t ni = 0, capi = 0;
    const uint8_t *raw = NULL; size_t rawlen = 0; int have_raw = 0, external = 0;
    int dtype = 0;
    uint32_t field; int wire, k, rc;
    sl_status st = SL_OK;
    while ((k = rd_key(r, &field, &wire)) == 1) {
        rc = 0;
        switch (field) {
        case 1: rc = rd_rep_varint(r, wire, &dims, &ndims, &capd); break;
        case 2: { uint64_t v; if (wire != 0 || rd_varint(r, &v)) rc = -1; else dtype = (int)v; break; }
        case 4: rc = rd_rep_float(r, wire, &fd, &nf, &capf); break;
        case 5: case 7: case 11: rc = rd_rep_varint(r, wire, &id, &ni, &capi); break;
        case 10: rc = rd_rep_double(r, wire, &fd, &nf, &capf); break;
        case 8:
            if (wire != 2) { rc = -1; break; }
            free(t->name);
            if (!(t->name = rd_string(r))) rc = -1;
            break;
        case 9: {
            rd s;
            if (wire != 2 || rd_bytes(r, &s, r->msg)) { rc = -1; break; }
            raw = s.p; rawlen = (size_t)(s.end - s.p); have_raw = 1;
            break;
        }
        case 13: external = 1; rc = rd_skip(r, wire); break;
        case 14: { uint64_t v; if (wire != 0 || rd_varint(r, &v)) rc = -1; else if (v == 1) external = 1; break; }
        default: rc = rd_skip(r, wire);
        }
        if (rc == -2) { st = sl__err_set(r->err, SL_E_NOMEM, "ONNX tensor: out of memory"); goto done; }
        if (rc) { st = corrupt(r, "malformed TensorProto field"); goto done; }
    }
    if (k < 0) { st = corrupt(r, "malformed TensorProto key"); goto done; }
    const char *nm = t->name ? t->name : "(unnamed)";
    if (external) {
        st = sl__err_set(r->err, SL_E_UNSUPPORTED,
                         "ONNX tensor '%s': external data files are not supported; save the model "
                         "as one file", nm);
        goto done;
    }
    if (ndims > SL__NN_MAX_RANK) {
        st = sl__err_set(r->err, SL_E_UNSUPPORTED, "ONNX tensor '%s': rank %zu > %d", nm, ndims,
                         SL__NN_MAX_RANK);
        goto done;
    }
    t->rank = (int)ndims;
    size_t count = 1;
    for (size_t d = 0; d < ndims; d++) {
        if (dims[d] < 0 || (uint64_t)dims[d] > SIZE_MAX ||
            sl__mul_size(count, (size_t)dims[d], &count)) {
            st = sl__err_set(r->err, SL_E_CORRUPT, "ONNX tensor '%s': bad dimension %lld", nm,
                             (long long)dims[d]);
            goto done;
        }
        t->dims[d] = dims[d];
    }
    t->count = count;
    t->onnx_type = dtype;
    if (is_float_type(dtype)) t->dtype = SL__DT_F32;
    else if (is_int_type(dtype)) t->dtype = SL__DT_I64;
    else {
        st = sl__err_set(r->err, SL_E_UNSUPPORTED, "ONNX tensor '%s': data type %d not supported",
                         nm, dtype);
        goto done;
    }
    if (have_raw) {
        size_t es = raw_elem_size(dtype), need;
        if (sl__mul_size(count, es, &need) || need != rawlen) {
            st = sl__err_set(r->err, SL_E_CORRUPT,
                             "ONNX tensor '%s': raw_data has %zu bytes, dims need %zu x %zu", nm,
                             rawlen, count, es);
            goto done;
        }
        if (t->dtype == SL__DT_F32) {
            t->f = sl__mallocarray(count ? count : 1, sizeof(float));
            if (!t->f) goto nomem;
            for (size_t e = 0; e < count; e++) {
                const uint8_t *q = raw + e * es;
                if (dtype == 1) t->f[e] = rd_f32le(q);
                else if (dtype == 10) t->f[e] = half_to_float((uint16_t)(q[0] | q[1] << 8));
                else if (dtype == 16) t->f[e] = bf16_to_float((uint16_t)(q[0] | q[1] << 8));
                else { uint64_t u = rd_u64le(q); double dd; memcpy(&dd, &u, 8); t->f[e] = (float)dd; }
            }
        } else {
            t->i = sl__mallocarray(count ? count : 1, sizeof(int64_t));
            if (!t->i) goto nomem;
            for (size_t e = 0; e < count; e++) {
                const uint8_t *q = raw + e * es;
                int64_t v;
                switch (dtype) {
                case 2: case 9: v = q[0]; break;
                case 3: v = (int8_t)q[0]; break;
                case 4: v = (uint16_t)(q[0] | q[1] << 8); break;
                case 5: v = (int16_t)(uint16_t)(q[0] | q[1] << 8); break;
                case 6: case 12: { uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24; v = dtype == 6 ? (int64_t)(int32_t)u : (int64_t)u; break; }
                default: v = (int64_t)rd_u64le(q);
                }
                t->i[e] = v;
            }
        }
    } else if (t->dtype == SL__DT_F32) {
        if (dtype == 10 || dtype == 16) {
            /* float16 / bfloat16 values live in int32_data as uint16 bit patterns */
            if (ni != count) goto countbad;
            t->f = sl__mallocarray(count ? count : 1, sizeof(float));
            if (!t->f) goto nomem;
            for (size_t e = 0; e < count; e++)
                t->f[e] = dtype == 10 ? half_to_float((uint16_t)id[e]) : bf16_to_float((uint16_t)id[e]);
        } else {
            if (nf != count) goto countbad;
            t->f = fd ? fd : malloc(sizeof(float));
            if (!t->f) goto nomem;
            fd = NULL;
        }
    } else {
        if (ni != count) goto countbad;
        t->i = id ? id : malloc(sizeof(int64_t));
        if (!t->i) goto nomem;
        id = NULL;
    }
    goto done;
countbad:
    st = sl__err_set(r->err, SL_E_CORRUPT, "ONNX tensor '%s': %zu values for dims of %zu elements",
                     t->name ? t->name : "(unnamed)", t->dtype == SL__DT_F32 && dtype != 10 && dtype != 16 ? nf : ni,
                     count);
    goto done;
nomem:
    st = sl__err_set(r->err, SL_E_NOMEM, "ONNX tensor: out of memory");
done:
    free(dims); free(fd); free(id);
    return st;
}

static void attr_clear(sl__onnx_attr *a) {
    free(a->name); free(a->s); free(a->floats); free(a->ints);
    if (a->t) { sl__onnx_tensor_clear(a->t); free(a->t); }
    memset(a, 0, sizeof *a);
}

static sl_status parse_attr(rd *r, sl__onnx_attr *a) {
    uint32_t field; int wire, k, rc;
    size_t capf = 0, capi = 0;
    while ((k = rd_key(r, &field, &wire)) == 1) {
        rc = 0;
        switch (field) {
        case 1: if (wire != 2) { rc = -1; break; } free(a->name); if (!(a->name = rd_string(r))) rc = -1; break;
        case 2: if (wire != 5 || r->end - r->p < 4) { rc = -1; break; } a->f = rd_f32le(r->p); r->p += 4; break;
        case 3: { uint64_t v; if (wire != 0 || rd_varint(r, &v)) rc = -1; else a->i = (int64_t)v; break; }
        case 4: if (wire != 2) { rc = -1; break; } free(a->s); if (!(a->s = rd_string(r))) rc = -1; break;
        case 5: {
            rd s;
            if (wire != 2 || rd_bytes(r, &s, "AttributeProto.t")) { rc = -1; break; }
            if (a->t) { sl__onnx_tensor_clear(a->t); free(a->t); }
            a->t = calloc(1, sizeof *a->t);
            if (!a->t) return sl__err_set(r->err, SL_E_NOMEM, "ONNX attribute: out of memory");
            sl_status st = parse_tensor(&s, a->t);
            if (st) return st;
            break;
        }
        case 7: rc = rd_rep_float(r, wire, &a->floats, &a->nfloats, &capf); break;
        case 8: rc = rd_rep_varint(r, wire, &a->ints, &a->nints, &capi); break;
        case 20: { uint64_t v; if (wire != 0 || rd_varint(r, &v)) rc = -1; else a->type = (int)v; break; }
        default: rc = rd_skip(r, wire); /* g, graphs, strings, sparse tensors: not needed */
        }
        if (rc == -2) return sl__err_set(r->err, SL_E_NOMEM, "ONNX attribute: out of memory");
        if (rc) return corrupt(r, "malformed AttributeProto field");
    }
    if (k < 0) return corrupt(r, "malformed AttributeProto key");
    if (!a->name) return corrupt(r, "attribute without a name");
    if (!a->type) { /* IR < 3 files may omit the type; infer it from the field present */
        if (a->t) a->type = SL__AT_TENSOR;
        else if (a->nints) a->type = SL__AT_INTS;
        else if (a->nfloats) a->type = SL__AT_FLOATS;
        else if (a->s) a->type = SL__AT_STRING;
        else a->type = SL__AT_INT;
    }
    return SL_OK;
}

static void node_clear(sl__onnx_node *n) {
    free(n->name); free(n->op); free(n->domain);
    for (int k = 0; k < n->nin; k++) free(n->in[k]);
    for (int k = 0; k < n->nout; k++) free(n->out[k]);
    free(n->in); free(n->out);
    for (int k = 0; k < n->nattrs; k++) attr_clear(&n->attrs[k]);
    free(n->attrs);
    memset(n, 0, sizeof *n);
}

#define SL__ONNX_MAX_IO 4096

static sl_status parse_node(rd *r, sl__onnx_node *n) {
    uint32_t field; int wire, k;
    size_t capin = 0, capout = 0, capat = 0, nin = 0, nout = 0, nat = 0;
    while ((k = rd_key(r, &field, &wire)) == 1) {
        if ((field == 1 || field == 2 || field == 3 || field == 4 || field == 5 || field == 7) &&
            wire != 2)
            return corrupt(r, "NodeProto field has the wrong wire type");
        if (field == 1 || field == 2) {
            char ***arr = field == 1 ? &n->in : &n->out;
            size_t *cnt = field == 1 ? &nin : &nout, *cap = field == 1 ? &capin : &capout;
            if (*cnt >= SL__ONNX_MAX_IO) return corrupt(r, "too many node inputs/outputs");
            char **p = grow(*arr, cap, *cnt, sizeof(char *));
            if (!p) return sl__err_set(r->err, SL_E_NOMEM, "ONNX node: out of memory");
            *arr = p;
            if (!(p[*cnt] = rd_string(r))) return corrupt(r, "malformed node input/output name");
            (*cnt)++;
            if (field == 1) n->nin = (int)nin; else n->nout = (int)nout;
        } else if (field == 3 || field == 4 || field == 7) {
            char **dst = field == 3 ? &n->name : field == 4 ? &n->op : &n->domain;
            free(*dst);
            if (!(*dst = rd_string(r))) return corrupt(r, "malformed node string");
        } else if (field == 5) {
            if (nat >= SL__ONNX_MAX_IO) return corrupt(r, "too many attributes");
            sl__onnx_attr *p = grow(n->attrs, &capat, nat, sizeof *p);
            if (!p) return sl__err_set(r->err, SL_E_NOMEM, "ONNX node: out of memory");
            n->attrs = p;
            rd s;
            if (rd_bytes(r, &s, "AttributeProto")) return corrupt(r, "truncated attribute");
            n->nattrs = (int)++nat;
            sl_status st = parse_attr(&s, &p[nat - 1]);
            if (st) return st;
        } else if (rd_skip(r, wire)) return corrupt(r, "malformed NodeProto field");
    }
    if (k < 0) return corrupt(r, "malformed NodeProto key");
    if (!n->op || !n->op[0]) return corrupt(r, "node without op_type");
    return SL_OK;
}

static sl_status parse_value_info(rd *r, sl__onnx_value *v) {
    uint32_t field; int wire, k;
    v->rank = -1;
    while ((k = rd_key(r, &field, &wire)) == 1) {
        if (field == 1 && wire == 2) {
            free(v->name);
            if (!(v->name = rd_string(r))) return corrupt(r, "malformed value name");
        } else if (field == 2 && wire == 2) {
            rd type;
            if (rd_bytes(r, &type, "TypeProto")) return corrupt(r, "truncated type");
            uint32_t f2; int w2, k2;
            while ((k2 = rd_key(&type, &f2, &w2)) == 1) {
                if (f2 != 1 || w2 != 2) { if (rd_skip(&type, w2)) return corrupt(&type, "malformed field"); continue; }
                rd tt;
                if (rd_bytes(&type, &tt, "TypeProto.Tensor")) return corrupt(&type, "truncated tensor type");
                uint32_t f3; int w3, k3;
                while ((k3 = rd_key(&tt, &f3, &w3)) == 1) {
                    if (f3 == 1 && w3 == 0) {
                        uint64_t e;
                        if (rd_varint(&tt, &e)) return corrupt(&tt, "bad elem_type");
                        v->elem_type = (int)e;
                    } else if (f3 == 2 && w3 == 2) {
                        rd sh;
                        if (rd_bytes(&tt, &sh, "TensorShapeProto")) return corrupt(&tt, "truncated shape");
                        v->rank = 0;
                        uint32_t f4; int w4, k4;
                        while ((k4 = rd_key(&sh, &f4, &w4)) == 1) {
                            if (f4 != 1 || w4 != 2) { if (rd_skip(&sh, w4)) return corrupt(&sh, "malformed field"); continue; }
                            rd dim;
                            if (rd_bytes(&sh, &dim, "TensorShapeProto.Dimension")) return corrupt(&sh, "truncated dim");
                            int64_t dv = -1;
                            uint32_t f5; int w5, k5;
                            while ((k5 = rd_key(&dim, &f5, &w5)) == 1) {
                                if (f5 == 1 && w5 == 0) {
                                    uint64_t x;
                                    if (rd_varint(&dim, &x)) return corrupt(&dim, "bad dim_value");
                                    dv = (int64_t)x;
                                } else if (rd_skip(&dim, w5)) return corrupt(&dim, "malformed field");
                            }
                            if (k5 < 0) return corrupt(&dim, "malformed key");
                            if (v->rank >= SL__NN_MAX_RANK) return corrupt(&sh, "shape rank above 8");
                            v->dims[v->rank++] = dv < 0 ? -1 : dv;
                        }
                        if (k4 < 0) return corrupt(&sh, "malformed key");
                    } else if (rd_skip(&tt, w3)) return corrupt(&tt, "malformed field");
                }
                if (k3 < 0) return corrupt(&tt, "malformed key");
            }
            if (k2 < 0) return corrupt(&type, "malformed key");
        } else if (rd_skip(r, wire)) return corrupt(r, "malformed ValueInfoProto field");
    }
    if (k < 0) return corrupt(r, "malformed ValueInfoProto key");
    if (!v->name) return corrupt(r, "value without a name");
    return SL_OK;
}

static sl_status parse_graph(rd *r, sl__onnx_model *m) {
    uint32_t field; int wire, k;
    size_t capn = 0, capt = 0, capi = 0, capo = 0;
    while ((k = rd_key(r, &field, &wire)) == 1) {
        if (wire != 2 && (field == 1 || field == 2 || field == 5 || field == 11 || field == 12))
            return corrupt(r, "GraphProto field has the wrong wire type");
        rd s;
        sl_status st = SL_OK;
        switch (field) {
        case 1: {
            sl__onnx_node *p = grow(m->nodes, &capn, m->nnodes, sizeof *p);
            if (!p) return sl__err_set(r->err, SL_E_NOMEM, "ONNX graph: out of memory");
            m->nodes = p;
            if (rd_bytes(r, &s, "NodeProto")) return corrupt(r, "truncated node");
            m->nnodes++;
            st = parse_node(&s, &p[m->nnodes - 1]);
            if (st) return sl__err_prefix(r->err, "node %zu", m->nnodes - 1);
            break;
        }
        case 2:
            free(m->graph_name);
            if (!(m->graph_name = rd_string(r))) return corrupt(r, "malformed graph name");
            break;
        case 5: {
            sl__onnx_tensor *p = grow(m->inits, &capt, m->ninits, sizeof *p);
            if (!p) return sl__err_set(r->err, SL_E_NOMEM, "ONNX graph: out of memory");
            m->inits = p;
            if (rd_bytes(r, &s, "TensorProto")) return corrupt(r, "truncated initializer");
            m->ninits++;
            st = parse_tensor(&s, &p[m->ninits - 1]);
            if (st) return sl__err_prefix(r->err, "initializer %zu", m->ninits - 1);
            if (!p[m->ninits - 1].name) return corrupt(r, "initializer without a name");
            break;
        }
        case 11: case 12: {
            sl__onnx_value **arr = field == 11 ? &m->inputs : &m->outputs;
            size_t *cnt = field == 11 ? &m->ninputs : &m->noutputs;
            sl__onnx_value *p = grow(*arr, field == 11 ? &capi : &capo, *cnt, sizeof *p);
            if (!p) return sl__err_set(r->err, SL_E_NOMEM, "ONNX graph: out of memory");
            *arr = p;
            if (rd_bytes(r, &s, "ValueInfoProto")) return corrupt(r, "truncated graph input/output");
            (*cnt)++;
            st = parse_value_info(&s, &p[*cnt - 1]);
            if (st) return st;
            break;
        }
        case 15:
            return sl__err_set(r->err, SL_E_UNSUPPORTED, "ONNX graph: sparse initializers are not supported");
        default:
            if (rd_skip(r, wire)) return corrupt(r, "malformed GraphProto field");
        }
    }
    if (k < 0) return corrupt(r, "malformed GraphProto key");
    return SL_OK;
}

void sl__onnx_free(sl__onnx_model *m) {
    if (!m) return;
    for (size_t k = 0; k < m->nnodes; k++) node_clear(&m->nodes[k]);
    for (size_t k = 0; k < m->ninits; k++) sl__onnx_tensor_clear(&m->inits[k]);
    for (size_t k = 0; k < m->ninputs; k++) free(m->inputs[k].name);
    for (size_t k = 0; k < m->noutputs; k++) free(m->outputs[k].name);
    free(m->nodes); free(m->inits); free(m->inputs); free(m->outputs);
    free(m->producer); free(m->graph_name);
    free(m);
}

static int starts_nocase(const uint8_t *p, size_t n, const char *lit) {
    size_t L = strlen(lit);
    if (n < L) return 0;
    for (size_t k = 0; k < L; k++) {
        int c = p[k];
        if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
        if (c != lit[k]) return 0;
    }
    return 1;
}

/* Files that are often saved as .onnx by mistake, recognised from their first bytes so the
 * error says what the file is: a Git LFS pointer (a clone without `git lfs pull`), an HTML page
 * (a download link saved from a browser or a hub's login page), other text. A model starts with
 * a protobuf key byte (0x08 for ir_version), never with printable text. */
static sl_status sniff_not_onnx(const uint8_t *d, size_t n, sl_error *err) {
    if (starts_nocase(d, n, "version https://git-lfs"))
        return sl__err_set(err, SL_E_CORRUPT, "this is a Git LFS pointer, not the model: run `git lfs pull` "
                           "in the repository it came from (or download the file itself)");
    size_t k = 0;
    if (n >= 3 && d[0] == 0xEF && d[1] == 0xBB && d[2] == 0xBF) k = 3; /* UTF-8 BOM */
    while (k < n && (d[k] == ' ' || d[k] == '\t' || d[k] == '\r' || d[k] == '\n')) k++;
    static const char *const html[] = {"<!doctype html", "<html", "<head", "<body", "<!--", "<?xml", "<meta", "<title"};
    for (size_t h = 0; h < sizeof html / sizeof html[0]; h++)
        if (starts_nocase(d + k, n - k, html[h]))
            return sl__err_set(err, SL_E_CORRUPT, "this is an HTML page, not an ONNX model (a web page was "
                               "saved instead of the file: download the raw .onnx)");
    size_t look = n < 64 ? n : 64, text = 0;
    for (size_t i = 0; i < look; i++) text += (d[i] >= 0x20 && d[i] < 0x7f) || d[i] == '\n' || d[i] == '\r' || d[i] == '\t';
    if (look >= 4 && text == look) {
        char head[41];
        size_t hn = n - k < 40 ? n - k : 40, o = 0;
        for (size_t i = 0; i < hn; i++) {
            uint8_t c = d[k + i];
            if (c == '\n' || c == '\r') break;
            head[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
        }
        head[o] = 0;
        return sl__err_set(err, SL_E_CORRUPT, "this is a text file, not an ONNX model (it starts with \"%s\")", head);
    }
    return SL_OK;
}

sl_status sl__onnx_parse(const uint8_t *data, size_t len, sl__onnx_model **out, sl_error *err) {
    *out = NULL;
    sl_status sn = sniff_not_onnx(data, len, err);
    if (sn) return sn;
    sl__onnx_model *m = calloc(1, sizeof *m);
    if (!m) return sl__err_set(err, SL_E_NOMEM, "ONNX model: out of memory");
    rd r = { data, data + len, "ModelProto", err };
    uint32_t field; int wire, k;
    int have_graph = 0, have_opset = 0;
    sl_status st = SL_OK;
    while ((k = rd_key(&r, &field, &wire)) == 1) {
        rd s;
        if (field == 1 && wire == 0) {
            uint64_t v;
            if (rd_varint(&r, &v)) { st = corrupt(&r, "bad ir_version"); goto fail; }
            m->ir_version = (int64_t)v;
        } else if (field == 2 && wire == 2) {
            free(m->producer);
            if (!(m->producer = rd_string(&r))) { st = corrupt(&r, "bad producer_name"); goto fail; }
        } else if (field == 7 && wire == 2) {
            if (have_graph) { st = corrupt(&r, "more than one graph"); goto fail; }
            if (rd_bytes(&r, &s, "GraphProto")) { st = corrupt(&r, "truncated graph (the file is cut short: download it again)"); goto fail; }
            have_graph = 1;
            if ((st = parse_graph(&s, m))) goto fail;
        } else if (field == 8 && wire == 2) {
            if (rd_bytes(&r, &s, "OperatorSetIdProto")) { st = corrupt(&r, "truncated opset_import"); goto fail; }
            int default_domain = 1;
            int64_t ver = 0;
            uint32_t f2; int w2, k2;
            while ((k2 = rd_key(&s, &f2, &w2)) == 1) {
                if (f2 == 1 && w2 == 2) {
                    rd d;
                    if (rd_bytes(&s, &d, s.msg)) { st = corrupt(&s, "bad domain"); goto fail; }
                    size_t dl = (size_t)(d.end - d.p);
                    default_domain = dl == 0 || (dl == 7 && !memcmp(d.p, "ai.onnx", 7));
                } else if (f2 == 2 && w2 == 0) {
                    uint64_t v;
                    if (rd_varint(&s, &v)) { st = corrupt(&s, "bad version"); goto fail; }
                    ver = (int64_t)v;
                } else if (rd_skip(&s, w2)) { st = corrupt(&s, "malformed field"); goto fail; }
            }
            if (k2 < 0) { st = corrupt(&s, "malformed key"); goto fail; }
            if (default_domain) { m->opset = ver; have_opset = 1; }
        } else if (rd_skip(&r, wire)) { st = corrupt(&r, "malformed field"); goto fail; }
    }
    if (k < 0) { st = corrupt(&r, "malformed field key (not an ONNX file?)"); goto fail; }
    if (!have_graph) { st = corrupt(&r, "no graph (not an ONNX model file?)"); goto fail; }
    if (!have_opset) m->opset = 1;
    *out = m;
    return SL_OK;
fail:
    sl__onnx_free(m);
    return st;
}

sl_status sl__onnx_read_file(const char *path, sl__onnx_model **out, sl_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl__err_set(err, SL_E_IO, "open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return sl__err_set(err, SL_E_IO, "stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) { close(fd); return sl__err_set(err, SL_E_IO, "%s: not a regular file", path); }
    if ((uint64_t)sb.st_size > SL_NN_MAX_FILE_BYTES) {
        close(fd);
        return sl__err_set(err, SL_E_TOO_LARGE, "%s: %lld bytes, more than the %zu accepted", path,
                           (long long)sb.st_size, SL_NN_MAX_FILE_BYTES);
    }
    if (sb.st_size == 0) { close(fd); return sl__err_set(err, SL_E_CORRUPT, "%s: empty file", path); }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return sl__err_set(err, SL_E_IO, "mmap %s: %s", path, strerror(e));
    madvise(map, len, MADV_SEQUENTIAL);
    sl_status st = sl__onnx_parse(map, len, out, err);
    munmap(map, len);
    if (st) sl__err_prefix(err, "%s", path);
    return st;
}

sl_status sl__onnx_parse_tensor(const uint8_t *data, size_t len, sl__onnx_tensor *t, sl_error *err) {
    memset(t, 0, sizeof *t);
    rd r = { data, data + len, "TensorProto", err };
    sl_status st = parse_tensor(&r, t);
    if (st) sl__onnx_tensor_clear(t);
    return st;
}

const sl__onnx_attr *sl__onnx_attr_find(const sl__onnx_node *n, const char *name) {
    for (int k = 0; k < n->nattrs; k++)
        if (!strcmp(n->attrs[k].name, name)) return &n->attrs[k];
    return NULL;
}
