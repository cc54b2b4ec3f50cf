/*
 * server/page.c - the web page served at "/", embedded at build time.
 *
 * src/server/page.html is turned into a byte array by src/server/module.cmake (no C string
 * literal: those are limited to 4095 bytes in ISO C). The page is self-contained (inline CSS and
 * JS, no external resources; the server sends a Content-Security-Policy that forbids them).
 */
#include "server/srv.h"

#include "sl_page.h"

const unsigned char *const sl__page_html = sl__page_bytes;
const size_t sl__page_html_len = SL__PAGE_HTML_LEN;
