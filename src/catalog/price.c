/*
 * catalog/price.c - the price text of a feed row: "12.99", "12.99 USD" (Google Merchant's
 * "price" attribute: number, space, ISO 4217 code), "USD 12.99".
 *
 * Invariants: only plain decimal notation is accepted (digits with at most one '.', at least
 * one digit), so what is stored is what the feed meant - no locale, no exponent, no hex, no
 * infinity; the currency is exactly three ASCII letters; the parser reads nothing past the
 * text's NUL.
 */
#include "catalog/price.h"
#include "shoplens/store.h"

#include <ctype.h>

#define SL__BAD_NUMBER "bad price (must be a number in 0..1000000000000, like 12.99 or 12.99 USD)"
#define SL__BAD_CODE "bad price (the currency must be 3 letters, like 12.99 USD)"
#include <stdlib.h>
#include <string.h>

/* Reads 3 letters at *p (then no further letter) into cur, upper-cased. */
static int sl__code(const char **p, char cur[4]) {
    const char *s = *p;
    for (int i = 0; i < 3; i++)
        if (!isalpha((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80) return 0;
    if (isalpha((unsigned char)s[3])) return 0;
    for (int i = 0; i < 3; i++) cur[i] = (char)toupper((unsigned char)s[i]);
    cur[3] = '\0';
    *p = s + 3;
    return 1;
}

static const char *sl__skip(const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

int sl__price_parse(const char *text, double *value, char currency[4], const char **why) {
    currency[0] = '\0';
    *why = NULL;
    if (!text) return 0;
    const char *p = sl__skip(text);
    if (!*p) return 0;
    char cur[4] = "";
    int code_first = isalpha((unsigned char)*p);
    if (code_first) {
        if (!sl__code(&p, cur)) {
            *why = SL__BAD_CODE;
            return -1;
        }
        p = sl__skip(p);
    }
    /* the number: digits, at most one '.', at least one digit */
    int digits = 0, dots = 0;
    char buf[48];
    size_t k = 0;
    for (; *p && (isdigit((unsigned char)*p) || *p == '.'); p++) {
        if (*p == '.') dots++;
        else digits++;
        if (k + 1 < sizeof buf) buf[k++] = *p;
    }
    buf[k] = '\0';
    if (!digits || dots > 1 || k + 1 >= sizeof buf) {
        *why = SL__BAD_NUMBER;
        return -1;
    }
    p = sl__skip(p);
    if (!code_first && *p) {
        /* letters only: a currency code; anything else ("2e12", "12,99") is a bad number */
        size_t run = 0, alpha = 0;
        for (; isalnum((unsigned char)p[run]) && (unsigned char)p[run] < 0x80; run++) alpha += isalpha((unsigned char)p[run]) != 0;
        if (!sl__code(&p, cur)) {
            *why = run > 0 && alpha == run ? SL__BAD_CODE : SL__BAD_NUMBER;
            return -1;
        }
        p = sl__skip(p);
    }
    if (*p) {
        *why = SL__BAD_NUMBER;
        return -1;
    }
    double v = strtod(buf, NULL);
    if (!(v <= SL_PRODUCT_PRICE_MAX)) {
        *why = SL__BAD_NUMBER;
        return -1;
    }
    *value = v;
    memcpy(currency, cur, 4);
    return 1;
}
