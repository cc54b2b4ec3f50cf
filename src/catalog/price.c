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

#include <ctype.h>
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
            *why = "bad price (a currency is 3 letters, e.g. 12.99 USD)";
            return -1;
        }
        p = sl__skip(p);
    }
    /* the number: digits, at most one '.', at least one digit */
    const char *n0 = p;
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
        *why = p == n0 && (*p == '-' || *p == '+') ? "bad price (must not be negative or signed)"
                                                    : "bad price (not a number like 12.99 or 12.99 USD)";
        return -1;
    }
    p = sl__skip(p);
    if (!code_first && *p) {
        if (!sl__code(&p, cur)) {
            *why = *p == ',' || *p == 'e' || *p == 'E'
                       ? "bad price (use a plain number with a '.' for decimals, like 1299.99)"
                       : "bad price (not a number like 12.99 or 12.99 USD)";
            return -1;
        }
        p = sl__skip(p);
    }
    if (*p) {
        *why = "bad price (not a number like 12.99 or 12.99 USD)";
        return -1;
    }
    double v = strtod(buf, NULL);
    if (!(v <= SL__PRICE_MAX)) {
        *why = "bad price (above the limit of 1000000000000)";
        return -1;
    }
    *value = v;
    memcpy(currency, cur, 4);
    return 1;
}
