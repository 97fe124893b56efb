/* log.c - leveled log lines on stderr, as text or JSON, and the librdkafka log callback.
 *
 * Each line is formatted into one buffer and written with one write() call, so lines from
 * librdkafka's threads never interleave with ours. Text lines:
 *   2026-11-22T21:40:00.123Z INFO  repl: message
 * JSON lines:
 *   {"ts":"2026-11-22T21:40:00.123Z","level":"info","module":"repl","msg":"message"}
 * Control characters are escaped in both forms so that one call is always one line; in JSON,
 * bytes that are not valid UTF-8 become U+FFFD. */
#include "outboxd/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "outboxd/error.h"

enum obx_log_level obx_log_min_level = OBX_LOG_INFO;

static bool log_json;
static int log_fd = STDERR_FILENO;

/* A message longer than this is cut, with "..." appended. */
#define LOG_MSG_MAX 8192
/* Escaping grows a byte to at most 6 ("\u00XX"); plus time stamp, level, module, framing. */
#define LOG_LINE_MAX (LOG_MSG_MAX * 6 + 256)

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_text[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

/* Line under construction; overflow is impossible by LOG_LINE_MAX but still checked. */
struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

void
obx_log_set_level(enum obx_log_level level)
{
    obx_log_min_level = level;
}

void
obx_log_set_json(bool json)
{
    log_json = json;
}

void
obx_log_set_fd(int fd)
{
    log_fd = fd;
}

int
obx_log_parse_level(const char *name, enum obx_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (name != NULL && strcmp(name, level_names[i]) == 0) {
            *out = (enum obx_log_level)i;
            return 0;
        }
    }
    return OBX_ERR_CONFIG;
}

static void
add(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - l->len)
        n = sizeof(l->buf) - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void
add_str(struct line *l, const char *s)
{
    add(l, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not valid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp, min;

    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xE0) == 0xC0)
        len = 2, cp = s[0] & 0x1F, min = 0x80;
    else if ((s[0] & 0xF0) == 0xE0)
        len = 3, cp = s[0] & 0x0F, min = 0x800;
    else if ((s[0] & 0xF8) == 0xF0)
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* Appends s escaped: as a JSON string body when json, else with control characters as \n, \t,
 * \xNN (and backslashes left alone). */
static void
add_escaped(struct line *l, const char *s, bool json)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    char esc[8];

    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = json ? utf8_len(p + i, n - i) : 1;

        if (c == '\n' || c == '\t' || c == '\r') {
            add_str(l, c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r");
        } else if (c < 0x20 || c == 0x7F) {
            snprintf(esc, sizeof(esc), json ? "\\u%04x" : "\\x%02x", c);
            add_str(l, esc);
        } else if (json && (c == '"' || c == '\\')) {
            add_str(l, c == '"' ? "\\\"" : "\\\\");
        } else if (len == 0) {
            add_str(l, "\\ufffd");
            len = 1;
        } else {
            add(l, s + i, len);
        }
        i += len == 0 ? 1 : len;
    }
}

/* Appends the current UTC time as 2026-11-22T21:40:00.123Z. */
static void
add_timestamp(struct line *l)
{
    struct timespec ts;
    struct tm tm;
    char buf[64];
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    add_str(l, buf);
}

/* Writes all of l, retrying on EINTR and short writes. */
static void
write_line(const struct line *l)
{
    size_t off = 0;

    while (off < l->len) {
        ssize_t w = write(log_fd, l->buf + off, l->len - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

static void
emit(enum obx_log_level level, const char *module, const char *msg)
{
    struct line *l = malloc(sizeof(*l));
    unsigned lv = (unsigned)level < 4 ? (unsigned)level : OBX_LOG_ERROR;

    if (l == NULL)
        return;
    l->len = 0;
    if (log_json) {
        add_str(l, "{\"ts\":\"");
        add_timestamp(l);
        add_str(l, "\",\"level\":\"");
        add_str(l, level_names[lv]);
        add_str(l, "\",\"module\":\"");
        add_escaped(l, module, true);
        add_str(l, "\",\"msg\":\"");
        add_escaped(l, msg, true);
        add_str(l, "\"}");
    } else {
        add_timestamp(l);
        add_str(l, " ");
        add_str(l, level_text[lv]);
        add_str(l, " ");
        add_escaped(l, module, false);
        add_str(l, ": ");
        add_escaped(l, msg, false);
    }
    /* keep the newline even if the line was cut */
    if (l->len == sizeof(l->buf))
        l->len--;
    add_str(l, "\n");
    write_line(l);
    free(l);
}

void
obx_log_write(enum obx_log_level level, const char *module, const char *fmt, ...)
{
    char msg[LOG_MSG_MAX];
    int saved_errno = errno;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(msg, sizeof(msg), "(unformattable log message: %s)", fmt);
    else if ((size_t)n >= sizeof(msg))
        memcpy(msg + sizeof(msg) - 4, "...", 4);
    emit(level, module != NULL ? module : "-", msg);
    errno = saved_errno;
}

void
obx_log_rdkafka(const struct rd_kafka_s *rk, int level, const char *fac, const char *buf)
{
    enum obx_log_level lv;

    if (level <= 3)
        lv = OBX_LOG_ERROR;
    else if (level == 4)
        lv = OBX_LOG_WARN;
    else if (level <= 6)
        lv = OBX_LOG_INFO;
    else
        lv = OBX_LOG_DEBUG;
    OBX_LOG(lv, "kafka", "%s: %s", fac != NULL ? fac : "-", buf != NULL ? buf : "");
}
