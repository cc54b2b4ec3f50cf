/* tests/test_error.c - the status enum, names, messages and the checked-size helpers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "shoplens/shoplens.h"
#include "util/util.h"

static void test_strerror_known_and_unknown(void **state) {
    (void)state;
    assert_string_equal(sl_strerror(SL_OK), "success");
    assert_string_equal(sl_status_name(SL_E_CORRUPT), "SL_E_CORRUPT");
    assert_string_equal(sl_status_name(SL_E_TOO_LARGE), "SL_E_TOO_LARGE");
    assert_string_equal(sl_strerror(-9999), "unknown status");
    assert_string_equal(sl_status_name(12345), "SL_E_UNKNOWN");
    /* Every defined status has a distinct, non-generic text. */
    for (int s = SL_E_INTERRUPTED; s < 0; s++) {
        assert_string_not_equal(sl_strerror(s), "unknown status");
        for (int t = s + 1; t < 0; t++) assert_string_not_equal(sl_strerror(s), sl_strerror(t));
    }
}

static void test_err_set_formats_and_returns_code(void **state) {
    (void)state;
    sl_error e;
    sl_error_clear(&e);
    assert_int_equal(e.code, SL_OK);
    assert_int_equal(sl__err_set(&e, SL_E_IO, "open %s: %d", "x.jpg", 2), SL_E_IO);
    assert_int_equal(e.code, SL_E_IO);
    assert_string_equal(e.message, "open x.jpg: 2");
    assert_int_equal(sl__err_prefix(&e, "row %d", 7), SL_E_IO);
    assert_string_equal(e.message, "row 7: open x.jpg: 2");
    /* NULL error record is allowed and still returns the code. */
    assert_int_equal(sl__err_set(NULL, SL_E_NOMEM, "x"), SL_E_NOMEM);
    /* Messages longer than the buffer are truncated, not overflowed. */
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    sl__err_set(&e, SL_E_INVALID, "%s", big);
    assert_int_equal(strlen(e.message), SL_ERROR_MSG_MAX - 1);
}

static void test_checked_sizes(void **state) {
    (void)state;
    size_t out = 0;
    assert_int_equal(sl__mul_size(SIZE_MAX / 2 + 1, 2, &out), -1);
    assert_int_equal(sl__mul_size(1000, 1000, &out), 0);
    assert_int_equal(out, 1000000);
    assert_int_equal(sl__add_size(SIZE_MAX, 1, &out), -1);
    assert_null(sl__mallocarray(SIZE_MAX / 4, 8));
}

static void test_rng_deterministic(void **state) {
    (void)state;
    sl__rng a, b;
    sl__rng_seed(&a, 42);
    sl__rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) assert_true(sl__rng_next(&a) == sl__rng_next(&b));
    sl__rng_seed(&b, 43);
    assert_true(sl__rng_next(&a) != sl__rng_next(&b));
    for (int i = 0; i < 1000; i++) {
        double u = sl__rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(sl__rng_below(&a, 7) < 7);
    }
}

/* sl__rng_shuffle: a permutation, the same for a seed, and the Fisher-Yates order of draws the
 * seeded splits of train/select rely on (replayed here with sl__rng_below). */
static void test_rng_shuffle(void **state) {
    (void)state;
    enum { N = 50 };
    size_t a[N], b[N];
    for (size_t i = 0; i < N; i++) a[i] = b[i] = i;
    sl__rng r, q;
    sl__rng_seed(&r, 7);
    sl__rng_seed(&q, 7);
    sl__rng_shuffle(&r, a, N);
    for (size_t i = N; i > 1; i--) {
        size_t j = (size_t)sl__rng_below(&q, i), t = b[i - 1];
        b[i - 1] = b[j];
        b[j] = t;
    }
    unsigned char seen[N] = {0};
    size_t moved = 0;
    for (size_t i = 0; i < N; i++) {
        assert_true(a[i] < N && !seen[a[i]]);
        seen[a[i]] = 1;
        assert_true(a[i] == b[i]);
        moved += a[i] != i;
    }
    assert_true(moved > N / 2);
    sl__rng_shuffle(&r, a, 1); /* n < 2: nothing drawn, nothing moved */
    sl__rng_shuffle(&r, a, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_known_and_unknown),
        cmocka_unit_test(test_err_set_formats_and_returns_code),
        cmocka_unit_test(test_checked_sizes),
        cmocka_unit_test(test_rng_deterministic),
        cmocka_unit_test(test_rng_shuffle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
