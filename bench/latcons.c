/* latcons.c - bench-latcons: a Kafka consumer for the benchmark's latency runs. It reads every
 * partition of one topic from the beginning and writes, for each record whose value starts with
 * {"n": <integer>, one line "n t_us": the CLOCK_REALTIME microsecond at which the record reached
 * the application (returned by rd_kafka_consumer_poll).
 *
 *   bench-latcons -b BOOTSTRAP -t TOPIC -o FILE [-X key=value]...
 *
 * Prints "ready" once the partitions are assigned. Runs until SIGTERM, SIGINT or stdin EOF,
 * then prints "read N" and exits 0 (1 on an error, 2 on a usage error). Consumer defaults for
 * low latency: fetch.wait.max.ms=5, fetch.min.bytes=1; -X overrides. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "bench_util.h"

#define PROG "bench-latcons"
#define MAX_XOPTS 32

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static rd_kafka_t *
consumer_new(const char *bootstrap, const char *const *xopts, int nxopts)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512], group[64];
    rd_kafka_t *rk;
    bool ok;

    snprintf(group, sizeof(group), PROG "-%ld", (long)getpid());
    ok = bench_conf_set(conf, PROG, "bootstrap.servers", bootstrap) &&
         bench_conf_set(conf, PROG, "group.id", group) &&
         bench_conf_set(conf, PROG, "enable.auto.commit", "false") &&
         bench_conf_set(conf, PROG, "enable.auto.offset.store", "false") &&
         bench_conf_set(conf, PROG, "fetch.wait.max.ms", "5") &&
         bench_conf_set(conf, PROG, "fetch.min.bytes", "1");
    for (int i = 0; ok && i < nxopts; i++) {
        char kv[512], *eq;

        snprintf(kv, sizeof(kv), "%s", xopts[i]);
        eq = strchr(kv, '=');
        *eq = '\0';
        ok = bench_conf_set(conf, PROG, kv, eq + 1);
    }
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, PROG ": %s\n", errstr);
    }
    return rk;
}

/* Assigns every partition of topic from the beginning, waiting (30 s at most) for the topic. */
static bool
assign_topic(rd_kafka_t *rk, const char *topic)
{
    for (int tries = 0; tries < 120 && !stop_requested; tries++) {
        const struct rd_kafka_metadata *md;

        if (rd_kafka_metadata(rk, 1, NULL, &md, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        for (int t = 0; t < md->topic_cnt; t++) {
            const rd_kafka_metadata_topic_t *mt = &md->topics[t];
            rd_kafka_topic_partition_list_t *parts;
            rd_kafka_resp_err_t err;

            if (strcmp(mt->topic, topic) != 0 || mt->err != 0 || mt->partition_cnt == 0)
                continue;
            parts = rd_kafka_topic_partition_list_new(mt->partition_cnt);
            for (int i = 0; i < mt->partition_cnt; i++)
                rd_kafka_topic_partition_list_add(parts, topic, mt->partitions[i].id)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
            err = rd_kafka_assign(rk, parts);
            rd_kafka_topic_partition_list_destroy(parts);
            rd_kafka_metadata_destroy(md);
            return err == RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        rd_kafka_metadata_destroy(md);
        usleep(250000);
    }
    fprintf(stderr, PROG ": topic %s not found\n", topic);
    return false;
}

static bool
stdin_closed(void)
{
    struct pollfd pfd = {0, POLLIN, 0};
    char buf[64];

    return poll(&pfd, 1, 0) > 0 && read(0, buf, sizeof(buf)) <= 0;
}

static long
consume(rd_kafka_t *rk, FILE *out)
{
    long nread = 0;

    while (!stop_requested) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        long long t = bench_now_us();

        if (m == NULL) {
            if (stdin_closed())
                break;
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            long long n = bench_payload_n(m);

            nread++;
            if (n >= 0)
                fprintf(out, "%lld %lld\n", n, t);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, PROG ": %s\n", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    return nread;
}

int
main(int argc, char **argv)
{
    const char *bootstrap = NULL, *topic = NULL, *path = NULL, *xopts[MAX_XOPTS];
    int nxopts = 0, c, rc = 1;
    rd_kafka_t *rk;
    FILE *out;

    while ((c = getopt(argc, argv, "b:t:o:X:")) != -1) {
        if (c == 'b')
            bootstrap = optarg;
        else if (c == 't')
            topic = optarg;
        else if (c == 'o')
            path = optarg;
        else if (c == 'X' && nxopts < MAX_XOPTS && strchr(optarg, '=') != NULL)
            xopts[nxopts++] = optarg;
        else
            break;
    }
    if (bootstrap == NULL || topic == NULL || path == NULL || optind != argc) {
        fprintf(stderr, "usage: " PROG " -b BOOTSTRAP -t TOPIC -o FILE [-X key=value]...\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if ((out = fopen(path, "we")) == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        return 1;
    }
    if ((rk = consumer_new(bootstrap, xopts, nxopts)) != NULL) {
        rd_kafka_poll_set_consumer(rk);
        if (assign_topic(rk, topic)) {
            printf("ready\n");
            fflush(stdout);
            printf("read %ld\n", consume(rk, out));
            rc = 0;
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (fclose(out) != 0)
        rc = 1;
    return rc;
}
