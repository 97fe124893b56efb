/* error.c - the one error convention: codes, fatality and a message in a caller-owned struct. */
#include "outboxd/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
obx_error_set(struct obx_error *err, int code, bool fatal, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return code;
    err->code = code;
    err->fatal = fatal;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

int
obx_error_prefix(struct obx_error *err, const char *fmt, ...)
{
    char buf[OBX_ERROR_MSG_MAX];
    size_t n;
    va_list ap;

    if (err == NULL)
        return OBX_ERR_IO;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    /* buf = prefix ": " old message, truncated to fit */
    n = strlen(buf);
    if (n + 2 < sizeof(buf)) {
        memcpy(buf + n, ": ", 3);
        n += 2;
        size_t old = strnlen(err->msg, sizeof(err->msg) - 1);
        size_t room = sizeof(buf) - n - 1;

        if (old > room)
            old = room;
        memcpy(buf + n, err->msg, old);
        buf[n + old] = '\0';
    }
    memcpy(err->msg, buf, sizeof(buf));
    return err->code;
}

void
obx_error_clear(struct obx_error *err)
{
    if (err == NULL)
        return;
    err->code = OBX_OK;
    err->fatal = false;
    err->msg[0] = '\0';
}

const char *
obx_error_name(int code)
{
    switch (code) {
    case OBX_OK:
        return "success";
    case OBX_ERR_NOMEM:
        return "out of memory";
    case OBX_ERR_CONFIG:
        return "configuration error";
    case OBX_ERR_PROTOCOL:
        return "protocol error";
    case OBX_ERR_CONN:
        return "connection error";
    case OBX_ERR_SERVER:
        return "server error";
    case OBX_ERR_KAFKA:
        return "kafka error";
    case OBX_ERR_INVALID:
        return "invalid event";
    case OBX_ERR_BUSY:
        return "busy";
    case OBX_ERR_IO:
        return "i/o error";
    case OBX_ERR_STOPPED:
        return "stopped";
    default:
        return "unknown error";
    }
}
