/*
 * examples/search_photo.c - the products a photo shows, from a shoplens store, through the
 * installed library (what `shoplens search PHOTO --store STORE -k K` prints, in a few lines).
 *
 *   cc -o search_photo search_photo.c $(pkg-config --cflags --libs shoplens)
 *   ./search_photo STORE PHOTO [K]
 *
 * The store is opened read-only, so this may run while another process adds products.
 * Exit status: 0 found (possibly no product), 1 error, 2 usage.
 */
#include <shoplens/engine.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s STORE PHOTO [K]\n", argv[0]);
        return 2;
    }
    sl_query query = {0};
    query.k = argc > 3 ? atoi(argv[3]) : 5;
    if (query.k < SL_ENGINE_K_MIN || query.k > SL_ENGINE_K_MAX) {
        fprintf(stderr, "%s: K must be %d..%d\n", argv[0], SL_ENGINE_K_MIN, SL_ENGINE_K_MAX);
        return 2;
    }

    sl_error err;
    sl_error_clear(&err);
    sl_engine_opts opts = {0};
    opts.read_only = 1;
    sl_engine *engine = NULL;
    if (sl_engine_open(argv[1], &opts, &engine, &err) != SL_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], sl_status_name(err.code), err.message);
        return 1;
    }

    sl_matches matches = {0};
    if (sl_engine_search_file(engine, argv[2], &query, &matches, &err) != SL_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], sl_status_name(err.code), err.message);
        sl_engine_free(engine);
        return 1;
    }
    for (size_t i = 0; i < matches.n; i++) {
        const sl_match *m = &matches.items[i];
        printf("%2zu. %-12s score %.3f  %s", i + 1, m->product_id, m->score,
               m->title ? m->title : "");
        if (m->has_price) printf("  (%.2f)", m->price);
        printf("\n");
    }
    if (matches.n == 0) printf("no products\n");
    sl_matches_free(&matches);
    sl_engine_free(engine);
    return 0;
}
