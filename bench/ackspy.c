/* ackspy.c - LD_PRELOAD shim for the benchmarks: sees when outboxd is told that Kafka
 * acknowledged a record, without changing outboxd.
 *
 * It interposes rd_kafka_conf_set_dr_msg_cb(): outboxd's delivery-report callback is kept and a
 * wrapper is registered in its place. The wrapper takes CLOCK_REALTIME when librdkafka serves
 * the report on outboxd's thread (that is when outboxd learns of the acknowledgement and may
 * advance the slot), records it, and calls outboxd's callback.
 *
 * Environment:
 *   ACKSPY_SUMMARY=FILE  at exit: "count N", "errors N", "first_us T", "last_us T" (one a line)
 *   ACKSPY_ACKS=FILE     one line "n t_us" per acknowledged record whose value starts with
 *                        {"n": <integer> (the benchmark's payloads); buffered, written as it goes
 * Without either variable it only forwards. Nothing here allocates per record, so peak RSS
 * measurements of outboxd are not disturbed. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "bench_util.h"

typedef void dr_msg_cb_fn(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
typedef void set_dr_msg_cb_fn(rd_kafka_conf_t *conf, dr_msg_cb_fn *cb);

static dr_msg_cb_fn *outboxd_cb;
static FILE *acks;
static long long count, errors, first_us, last_us;

static void
spy_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    long long t = bench_now_us();

    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (count++ == 0)
            first_us = t;
        last_us = t;
        if (acks != NULL) {
            long long n = bench_payload_n(m);

            if (n >= 0)
                fprintf(acks, "%lld %lld\n", n, t);
        }
    } else {
        errors++;
    }
    outboxd_cb(rk, m, opaque);
}

void
rd_kafka_conf_set_dr_msg_cb(rd_kafka_conf_t *conf, dr_msg_cb_fn *cb)
{
    set_dr_msg_cb_fn *real;
    const char *path = getenv("ACKSPY_ACKS");

    /* POSIX's way to turn dlsym's object pointer into a function pointer */
    *(void **)&real = dlsym(RTLD_NEXT, "rd_kafka_conf_set_dr_msg_cb");

    if (real == NULL)
        abort();
    if (cb == NULL) {
        real(conf, cb);
        return;
    }
    if (acks == NULL && path != NULL && path[0] != '\0') {
        acks = fopen(path, "we");
        if (acks != NULL)
            setvbuf(acks, NULL, _IOFBF, 1 << 16);
    }
    outboxd_cb = cb; /* the same callback for every producer outboxd builds */
    real(conf, spy_cb);
}

__attribute__((destructor)) static void
ackspy_fini(void)
{
    const char *path = getenv("ACKSPY_SUMMARY");
    FILE *f;

    if (acks != NULL)
        fclose(acks);
    if (path == NULL || path[0] == '\0' || (f = fopen(path, "we")) == NULL)
        return;
    fprintf(f, "count %lld\nerrors %lld\nfirst_us %lld\nlast_us %lld\n", count, errors, first_us,
            last_us);
    fclose(f);
}
