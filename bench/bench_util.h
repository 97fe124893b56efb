/* bench_util.h - helpers the benchmark's programs share (bench-latcons, bench-poller and the
 * ackspy shim): the wall clock both latency ends are read with, the payload's sequence number
 * both ends key their lines by, and setting a librdkafka property with a message. Header-only:
 * each program is built on its own. */
#ifndef OUTBOXD_BENCH_UTIL_H
#define OUTBOXD_BENCH_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

/* CLOCK_REALTIME in microseconds: comparable with PostgreSQL's commit timestamps. */
static inline long long
bench_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The benchmark's sequence number from a value {"n": 123, ...}, or -1. */
static inline long long
bench_payload_n(const rd_kafka_message_t *m)
{
    static const char prefix[] = "{\"n\": ";
    char digits[24];
    size_t len = sizeof(prefix) - 1, i = 0;
    const char *p = m->payload;

    if (p == NULL || m->len <= len || memcmp(p, prefix, len) != 0)
        return -1;
    while (len + i < m->len && i < sizeof(digits) - 1 && p[len + i] >= '0' && p[len + i] <= '9') {
        digits[i] = p[len + i];
        i++;
    }
    digits[i] = '\0';
    return i > 0 ? strtoll(digits, NULL, 10) : -1;
}

/* Sets key=value on conf; on failure prints "prog: key=value: why" and returns false. */
static inline bool
bench_conf_set(rd_kafka_conf_t *conf, const char *prog, const char *key, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK)
        return true;
    fprintf(stderr, "%s: %s=%s: %s\n", prog, key, value, errstr);
    return false;
}

#endif
