/* error.h - the one error convention of outboxd.
 *
 * Fallible functions return int: 0 on success, a negative OBX_ERR_* on failure. Details go in an
 * optional caller-owned struct obx_error (NULL allowed everywhere). */
#ifndef OUTBOXD_ERROR_H
#define OUTBOXD_ERROR_H

#include <stdbool.h>

enum obx_err_code {
    OBX_OK = 0,
    OBX_ERR_NOMEM = -1,    /* allocation failed */
    OBX_ERR_CONFIG = -2,   /* bad configuration: exit status 2 */
    OBX_ERR_PROTOCOL = -3, /* malformed or unexpected bytes from the server */
    OBX_ERR_CONN = -4,     /* connection lost or refused: retriable */
    OBX_ERR_SERVER = -5,   /* server state forbids running (wal_level, slot, table) */
    OBX_ERR_KAFKA = -6,    /* producer error */
    OBX_ERR_INVALID = -7,  /* a row or message that cannot be routed */
    OBX_ERR_BUSY = -8,     /* try again later (queue full); not a failure */
    OBX_ERR_IO = -9,       /* file or system call failed */
    OBX_ERR_STOPPED = -10, /* stopped on request (signal) */
};

#define OBX_ERROR_MSG_MAX 512

/* Filled by a failing function. code is the same negative value the function returned;
 * fatal = true means retrying cannot help (restart from the slot will not fix it). */
struct obx_error {
    int code;
    bool fatal;
    char msg[OBX_ERROR_MSG_MAX];
};

/* Records code, fatality and a printf-style message in err (which may be NULL).
 * Returns code, so callers can write `return obx_error_set(err, ...)`. */
int obx_error_set(struct obx_error *err, int code, bool fatal, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prepends "prefix: " to err's message (printf-style). err may be NULL. Returns err->code
 * (or OBX_ERR_IO when err is NULL). */
int obx_error_prefix(struct obx_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Resets err to "no error". err may be NULL. */
void obx_error_clear(struct obx_error *err);

/* Static, human-readable name of an OBX_ERR_* code ("protocol error", ...). */
const char *obx_error_name(int code);

#endif
