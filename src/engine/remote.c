/*
 * engine/remote.c - image URLs of a feed: downloaded (catalog/fetch.c) into a private directory
 * of the store before extraction, so the rest of the ingest (training sample, workers, the
 * store's own copy) reads them like any local image.
 *
 * The directory is <store>/downloads-<pid>/, one file per distinct URL named by its position;
 * sl__remote_cleanup removes it (files the ingest did not need any more included). A directory
 * left by a killed run is removed by the next ingest of the store once its process is gone.
 *
 * Invariants: a file exists only for a URL whose content was sniffed as an image; the store's
 * catalog never refers to these files (the workers keep their own copy, by content hash).
 */
#include "engine/engine_internal.h"
#include "catalog/fetch.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sl__remote_ctx {
    sl__fetch_item *items;
    const char *dir;
    char **local;
    size_t done, n;
    sl_progress_fn progress;
    void *progress_ctx;
    double t0;
} sl__remote_ctx;

/* Writes a downloaded image to its file (plain write: it lives for this run only). */
static void sl__remote_done(void *arg, size_t i) {
    sl__remote_ctx *c = arg;
    sl__fetch_item *it = &c->items[i];
    c->done++;
    if (c->progress) c->progress(c->progress_ctx, c->done, c->n, sl__now() - c->t0);
    if (it->st != SL_OK) return;
    size_t pl = strlen(c->dir) + 40;
    char *path = malloc(pl);
    if (!path) {
        it->st = SL_E_NOMEM;
        snprintf(it->msg, sizeof it->msg, "out of memory");
        return;
    }
    snprintf(path, pl, "%s/%zu.%s", c->dir, i, it->format);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t off = 0;
    while (fd >= 0 && off < it->len) {
        ssize_t w = write(fd, it->data + off, it->len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    if (fd < 0 || off != it->len || close(fd) != 0) {
        it->st = SL_E_IO;
        snprintf(it->msg, sizeof it->msg, "cannot keep the download: %s", strerror(errno));
        unlink(path);
        free(path);
    } else {
        c->local[i] = path;
    }
    free(it->data);
    it->data = NULL;
}

/* "a/b", malloc'ed (NULL when out of memory). */
static char *sl__path2(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Removes downloads-<pid> directories of processes that are gone (a killed run). */
static void sl__remote_sweep(const char *store_dir) {
    DIR *d = opendir(store_dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        long pid = 0;
        char *end = NULL;
        if (strncmp(de->d_name, "downloads-", 10) != 0) continue;
        pid = strtol(de->d_name + 10, &end, 10);
        if (!end || *end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to know) */
        char *dir = sl__path2(store_dir, de->d_name);
        if (!dir) break;
        sl__remote_rmdir(dir);
        free(dir);
    }
    closedir(d);
}

void sl__remote_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') continue;
            char *p = sl__path2(dir, de->d_name);
            if (!p) break;
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

sl_status sl__remote_fetch(sl_engine *e, const char *const *urls, size_t n, const sl__fetch_opts *o,
                           sl_progress_fn progress, void *progress_ctx, const volatile int *cancel,
                           char **dir, char **local, sl_status *st, char **msg, sl_error *err) {
    *dir = NULL;
    for (size_t i = 0; i < n; i++) {
        local[i] = NULL;
        msg[i] = NULL;
        st[i] = SL_OK;
    }
    if (n == 0) return SL_OK;
    char *root = sl_store_path(e->store, ".");
    char name[40];
    snprintf(name, sizeof name, "downloads-%ld", (long)getpid());
    char *d = sl_store_path(e->store, name);
    sl__fetch_item *items = sl__callocarray(n, sizeof *items);
    if (!root || !d || !items) {
        free(root);
        free(d);
        free(items);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    sl__remote_sweep(root);
    free(root);
    if (mkdir(d, 0700) != 0 && errno != EEXIST) {
        sl_status s = sl__err_set(err, SL_E_IO, "mkdir %s: %s", d, strerror(errno));
        free(d);
        free(items);
        return s;
    }
    for (size_t i = 0; i < n; i++) items[i].url = urls[i];
    sl__remote_ctx c = { items, d, local, 0, n, progress, progress_ctx, sl__now() };
    if (progress) progress(progress_ctx, 0, n, 0);
    sl_status rs = sl__fetch_all(items, n, o, sl__remote_done, &c, cancel, err);
    for (size_t i = 0; i < n; i++) {
        free(items[i].data);
        st[i] = items[i].st;
        if (items[i].st != SL_OK && !(msg[i] = sl__strdup(items[i].msg))) rs = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    free(items);
    *dir = d;
    return rs;
}
