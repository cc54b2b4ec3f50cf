/*
 * shoplens/error.h - the one status enum of the library, and the error record.
 *
 * Every public function that can fail returns an sl_status (SL_OK = 0, errors negative).
 * Handles keep the detail of their last failure (`sl_<module>_errmsg(handle)`); functions that
 * create a handle, or have none, take an optional `sl_error *err` (may be NULL) that is filled
 * with the status and a message naming the problem. No library function prints to stderr.
 */
#ifndef SHOPLENS_ERROR_H
#define SHOPLENS_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sl_status {
    SL_OK = 0,
    SL_E_NOMEM = -1,        /* an allocation failed */
    SL_E_INVALID = -2,      /* an argument is out of range or malformed */
    SL_E_IO = -3,           /* reading or writing a file failed (errno in the message) */
    SL_E_UNSUPPORTED = -4,  /* a format, operator or option this build does not handle */
    SL_E_CORRUPT = -5,      /* data is truncated, damaged or not what it claims to be */
    SL_E_TOO_LARGE = -6,    /* an input exceeds a configured limit */
    SL_E_NOT_FOUND = -7,    /* an id, file or key does not exist */
    SL_E_EXISTS = -8,       /* something that must not exist already does */
    SL_E_VERSION = -9,      /* a file or store written by an older/newer incompatible version */
    SL_E_BUSY = -10,        /* a resource is locked or a limit of concurrent work is reached */
    SL_E_STATE = -11,       /* the call is not valid in the object's current state */
    SL_E_INTERNAL = -12,    /* a broken invariant: a bug, please report */
    SL_E_AUTH = -13,        /* missing or wrong credentials */
    SL_E_INTERRUPTED = -14  /* stopped by a cancel request or a signal */
} sl_status;

#define SL_ERROR_MSG_MAX 512

/* A plain error record: status plus a human-readable message naming the problem. */
typedef struct sl_error {
    sl_status code;
    char message[SL_ERROR_MSG_MAX];
} sl_error;

/* Static English description of a status ("invalid argument"); never NULL. */
const char *sl_strerror(int status);

/* Stable symbolic name of a status ("SL_E_INVALID"); never NULL. */
const char *sl_status_name(int status);

/* Resets *err to SL_OK with an empty message. err may be NULL. */
void sl_error_clear(sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
