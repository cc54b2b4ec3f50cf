/*
 * catalog/fileio.c - whole-file reads and atomic writes (temp + fsync + rename + directory
 * fsync), so that a crash leaves either the old or the new file, never a torn one.
 */
#include "catalog/catalog.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

sl_status sl__read_file(const char *path, size_t max, void **data, size_t *len, sl_error *err) {
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl__err_set(err, SL_E_IO, "open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return sl__err_set(err, SL_E_IO, "%s: %s", path, e ? strerror(e) : "not a regular file");
    }
    if (max && (uint64_t)st.st_size > max) {
        close(fd);
        return sl__err_set(err, SL_E_TOO_LARGE, "%s: %lld bytes exceed the limit of %zu", path,
                           (long long)st.st_size, max);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return sl__err_set(err, SL_E_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 == cap) { /* file grew: extend */
            if (max && n >= max) break;
            char *nb = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                close(fd);
                return sl__err_set(err, SL_E_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            return sl__err_set(err, SL_E_IO, "read %s: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return SL_OK;
}

sl_status sl__write_file_atomic(const char *path, const void *data, size_t len, sl_error *err) {
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 48);
    if (!tmp) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    /* unique per writer: several threads may write the same content-addressed name at once */
    static _Atomic unsigned long seq;
    snprintf(tmp, pl + 48, "%s.tmp.%ld.%lu", path, (long)getpid(), (unsigned long)atomic_fetch_add(&seq, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sl_status st = sl__err_set(err, SL_E_IO, "create %s: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            sl_status st = sl__err_set(err, SL_E_IO, "write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return st;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        sl_status st = sl__err_set(err, SL_E_IO, "fsync %s: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        sl_status st = sl__err_set(err, SL_E_IO, "rename %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    /* Make the rename durable. */
    char *dir = sl__strdup(path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0'; else strcpy(dir, ".");
        int dfd = open(slash ? (dir[0] ? dir : "/") : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    return SL_OK;
}
