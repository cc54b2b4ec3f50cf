/*
 * catalog/price.h - the price text of a feed row (internal; price.c).
 */
#ifndef SL_CATALOG_PRICE_H
#define SL_CATALOG_PRICE_H

/* Parses a price as feeds write it: a plain decimal number ("12.99", "7") optionally with an
 * ISO 4217 currency code before or after it, spaces allowed around ("12.99 USD" as in Google
 * Merchant feeds, "USD 12.99", "12.99usd"). The code is returned upper-case in currency[4] ("" when
 * none). Refused: signs, exponents, thousands separators, decimal commas, anything after the
 * code, more than 3 letters, values above SL_PRODUCT_PRICE_MAX (store.h). Returns 1 with *value and currency set, 0 for
 * an empty or blank text (no price), -1 with *why (a static phrase) for anything else. */
int sl__price_parse(const char *text, double *value, char currency[4], const char **why);

#endif
