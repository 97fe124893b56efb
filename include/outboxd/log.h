/* log.h - leveled log lines to stderr, as text or JSON, and the librdkafka log callback.
 *
 * The macros check the level before any formatting happens. Never pass a secret. */
#ifndef OUTBOXD_LOG_H
#define OUTBOXD_LOG_H

#include <stdbool.h>

enum obx_log_level {
    OBX_LOG_DEBUG = 0,
    OBX_LOG_INFO = 1,
    OBX_LOG_WARN = 2,
    OBX_LOG_ERROR = 3,
};

/* The current minimum level; read by the macros, set with obx_log_set_level(). */
extern enum obx_log_level obx_log_min_level;

void obx_log_set_level(enum obx_log_level level);

/* true: one JSON object per line; false: text lines. */
void obx_log_set_json(bool json);

/* Sends lines to fd instead of stderr (tests; STDERR_FILENO restores). Each line is one write(). */
void obx_log_set_fd(int fd);

/* Parses "debug", "info", "warn", "error". Returns 0 or OBX_ERR_CONFIG. */
int obx_log_parse_level(const char *name, enum obx_log_level *out);

/* Writes one line (prefer the macros). module is a short static name ("repl"). */
void obx_log_write(enum obx_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define OBX_LOG(level, module, ...)                                                                \
    do {                                                                                           \
        if ((level) >= obx_log_min_level)                                                          \
            obx_log_write((level), (module), __VA_ARGS__);                                         \
    } while (0)

#define obx_log_debug(module, ...) OBX_LOG(OBX_LOG_DEBUG, module, __VA_ARGS__)
#define obx_log_info(module, ...) OBX_LOG(OBX_LOG_INFO, module, __VA_ARGS__)
#define obx_log_warn(module, ...) OBX_LOG(OBX_LOG_WARN, module, __VA_ARGS__)
#define obx_log_error(module, ...) OBX_LOG(OBX_LOG_ERROR, module, __VA_ARGS__)

/* librdkafka log callback (set with rd_kafka_conf_set_log_cb); maps syslog levels. */
struct rd_kafka_s;
void obx_log_rdkafka(const struct rd_kafka_s *rk, int level, const char *fac, const char *buf);

#endif
