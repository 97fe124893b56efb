/* obxtest_kafka.c - the Kafka side of integration tests: kafka-broker child process, in-process
 * consumer reading records back, idempotent producer. See obxtest_kafka.h. */
#include "obxtest_kafka.h"

#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "obxtest.h"
#include "obxtest_proc.h"

#define BROKER_START_MS 15000
#define BROKER_REPLY_MS 10000
#define BROKER_STOP_MS 15000
#define CONSUME_LINGER_MS 500
#define CONSUME_POLL_MS 100
#define METADATA_EVERY_MS 250

struct obxt_broker {
    struct obxt_proc *proc;
    char *bootstrap;
};

struct obxt_producer {
    rd_kafka_t *rk;
    size_t sent; /* accepted by rd_kafka_producev */
    size_t delivered;
    size_t failed;
    char first_error[512]; /* why the first failed delivery failed */
};

/* ---- the broker ---------------------------------------------------------------------------- */

struct obxt_broker *
obxt_broker_start_args(int nbrokers, const char *const extra_args[])
{
    const char *argv[64] = {obxt_env("OBX_KAFKA_BROKER"), "--brokers"};
    char nbuf[16];
    struct obxt_broker *b = calloc(1, sizeof(*b));
    size_t argc = 3;

    ck_assert_msg(b != NULL, "out of memory");
    snprintf(nbuf, sizeof(nbuf), "%d", nbrokers);
    argv[2] = nbuf;
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
        ck_assert_msg(argc < 63, "too many kafka-broker arguments");
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;
    b->proc = obxt_proc_spawn(argv, NULL, NULL, 0);
    ck_assert_msg(b->proc != NULL, "cannot start %s (see stderr)", argv[0]);
    b->bootstrap = obxt_proc_read_line(b->proc, BROKER_START_MS);
    ck_assert_msg(b->bootstrap != NULL && strncmp(b->bootstrap, "127.0.0.1:", 10) == 0,
                  "%s --brokers %d did not print its bootstrap list within %d ms (got '%s', "
                  "exit code %d; its stderr is above)",
                  argv[0], nbrokers, BROKER_START_MS, b->bootstrap ? b->bootstrap : "(nothing)",
                  obxt_proc_running(b->proc) ? -1 : obxt_proc_exit_code(b->proc));
    return b;
}

struct obxt_broker *
obxt_broker_start(int nbrokers)
{
    return obxt_broker_start_args(nbrokers, NULL);
}

const char *
obxt_broker_bootstrap(const struct obxt_broker *b)
{
    return b->bootstrap;
}

pid_t
obxt_broker_pid(const struct obxt_broker *b)
{
    return obxt_proc_pid(b->proc);
}

char *
obxt_broker_cmd_reply(struct obxt_broker *b, const char *line)
{
    char *reply = obxt_proc_command(b->proc, line, BROKER_REPLY_MS);

    if (reply == NULL)
        fprintf(stderr, "kafka-broker (pid %ld) did not answer '%s' within %d ms\n",
                (long)obxt_proc_pid(b->proc), line, BROKER_REPLY_MS);
    return reply;
}

int
obxt_broker_cmd(struct obxt_broker *b, const char *fmt, ...)
{
    char line[1024];
    char *reply;
    va_list ap;
    int ret = -1;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    reply = obxt_broker_cmd_reply(b, line);
    if (reply != NULL && strcmp(reply, "ok") == 0)
        ret = 0;
    else if (reply != NULL)
        fprintf(stderr, "kafka-broker: '%s' answered '%s'\n", line, reply);
    free(reply);
    return ret;
}

void
obxt_broker_stop(struct obxt_broker *b)
{
    pid_t pid;
    int status = 0;
    int rc;

    if (b == NULL)
        return;
    pid = obxt_proc_pid(b->proc);
    obxt_proc_close_stdin(b->proc);
    rc = obxt_proc_wait(b->proc, BROKER_STOP_MS, &status);
    ck_assert_msg(rc == 0, "kafka-broker (pid %ld) still running %d ms after its stdin closed",
                  (long)pid, BROKER_STOP_MS);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "kafka-broker (pid %ld) ended with exit code %d, expected 0", (long)pid,
                  obxt_proc_exit_code(b->proc));
    ck_assert_msg(!obxt_proc_pid_alive(pid), "kafka-broker (pid %ld) is still alive", (long)pid);
    obxt_proc_free(b->proc);
    free(b->bootstrap);
    free(b);
}

/* ---- the consumer -------------------------------------------------------------------------- */

static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 3)
        fprintf(stderr, "%s: librdkafka %s: %s\n", rd_kafka_name(rk), fac, buf);
}

/* Sets key=value on conf or fails the test. */
static void
conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
    char errstr[512];

    ck_assert_msg(rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK,
                  "librdkafka refused %s=%s: %s", key, value, errstr);
}

/* A consumer for bootstrap. librdkafka's assign() needs a group.id, but no group is joined and
 * nothing is committed. */
static rd_kafka_t *
consumer_new(const char *bootstrap)
{
    static unsigned serial;
    char errstr[512], group[64];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    snprintf(group, sizeof(group), "obxt-consume-%ld-%u", (long)getpid(), serial++);
    conf_set(conf, "bootstrap.servers", bootstrap);
    conf_set(conf, "group.id", group);
    conf_set(conf, "enable.auto.commit", "false");
    conf_set(conf, "enable.auto.offset.store", "false");
    conf_set(conf, "fetch.wait.max.ms", "100");
    conf_set(conf, "reconnect.backoff.max.ms", "1000");
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "cannot create a consumer for %s: %s", bootstrap, errstr);
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Adds every partition of mt to the assignment, from the beginning; fails the test if refused. */
static void
consumer_assign_topic(rd_kafka_t *rk, const rd_kafka_metadata_topic_t *mt)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(mt->partition_cnt);
    rd_kafka_error_t *error;
    char why[512] = "";

    for (int i = 0; i < mt->partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, mt->topic, mt->partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    error = rd_kafka_incremental_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (error != NULL) {
        snprintf(why, sizeof(why), "%s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    ck_assert_msg(error == NULL, "cannot assign the partitions of %s: %s", mt->topic, why);
}

/* Assigns every topic in topics[] that exists now and is not assigned yet (assigned[] marks
 * them). Lists all topics: asking for one by name could create it. Returns how many are still
 * missing. */
static size_t
consumer_assign_missing(rd_kafka_t *rk, const char *const topics[], bool *assigned)
{
    const struct rd_kafka_metadata *md;
    size_t missing = 0;

    if (rd_kafka_metadata(rk, 1, NULL, &md, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 1; /* broker unreachable for now: try again later */
    for (size_t i = 0; topics[i] != NULL; i++) {
        for (int t = 0; !assigned[i] && t < md->topic_cnt; t++) {
            const rd_kafka_metadata_topic_t *mt = &md->topics[t];

            if (strcmp(mt->topic, topics[i]) != 0 || mt->err != 0 || mt->partition_cnt == 0)
                continue;
            for (size_t j = 0; j < i; j++)
                assigned[i] = assigned[i] || strcmp(topics[j], topics[i]) == 0;
            if (!assigned[i])
                consumer_assign_topic(rk, mt);
            assigned[i] = true;
        }
        missing += !assigned[i];
    }
    rd_kafka_metadata_destroy(md);
    return missing;
}

/* A NUL-terminated copy of len bytes, or NULL for NULL. */
static char *
bytes_dup(const void *p, size_t len)
{
    char *copy;

    if (p == NULL)
        return NULL;
    copy = malloc(len + 1);
    ck_assert_msg(copy != NULL, "out of memory");
    memcpy(copy, p, len);
    copy[len] = '\0';
    return copy;
}

/* Copies the headers of msg into rec. */
static void
record_copy_headers(struct obxt_record *rec, const rd_kafka_message_t *msg)
{
    rd_kafka_headers_t *hdrs;
    const char *name;
    const void *val;
    size_t size;

    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    rec->headers = calloc(rd_kafka_header_cnt(hdrs) + 1, sizeof(*rec->headers));
    ck_assert_msg(rec->headers != NULL, "out of memory");
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++) {
        rec->headers[i].name = bytes_dup(name, strlen(name));
        rec->headers[i].value = bytes_dup(val, size);
        rec->headers[i].value_len = val != NULL ? size : 0;
        rec->header_count = i + 1;
    }
}

/* Appends a copy of msg to recs. */
static void
records_append(struct obxt_records *recs, const rd_kafka_message_t *msg)
{
    struct obxt_record *rec;

    if ((recs->count & (recs->count - 1)) == 0) { /* 0, 1, 2, 4, ...: grow */
        size_t cap = recs->count ? recs->count * 2 : 16;
        struct obxt_record *grown = realloc(recs->recs, cap * sizeof(*grown));

        ck_assert_msg(grown != NULL, "out of memory");
        recs->recs = grown;
    }
    rec = &recs->recs[recs->count++];
    memset(rec, 0, sizeof(*rec));
    rec->topic = bytes_dup(rd_kafka_topic_name(msg->rkt), strlen(rd_kafka_topic_name(msg->rkt)));
    rec->partition = msg->partition;
    rec->offset = msg->offset;
    rec->timestamp = rd_kafka_message_timestamp(msg, NULL);
    rec->key = bytes_dup(msg->key, msg->key_len);
    rec->key_len = msg->key != NULL ? msg->key_len : 0;
    rec->value = bytes_dup(msg->payload, msg->len);
    rec->value_len = msg->payload != NULL ? msg->len : 0;
    record_copy_headers(rec, msg);
}

static int
record_cmp(const void *a, const void *b)
{
    const struct obxt_record *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);

    if (c != 0)
        return c;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

struct obxt_records *
obxt_consume(const char *bootstrap, const char *const topics[], size_t expect_count, int timeout_ms)
{
    struct obxt_records *recs = calloc(1, sizeof(*recs));
    size_t ntopics = 0, missing = 1;
    long long start = obxt_proc_now_ms(), last = start, next_md = start;
    rd_kafka_t *rk;
    bool *assigned;

    while (topics[ntopics] != NULL)
        ntopics++;
    assigned = calloc(ntopics + 1, sizeof(*assigned));
    ck_assert_msg(recs != NULL && assigned != NULL && ntopics > 0, "no topic given, or no memory");
    rk = consumer_new(bootstrap);
    while (obxt_proc_now_ms() - start < timeout_ms) {
        rd_kafka_message_t *msg;

        if (expect_count > 0 && recs->count >= expect_count &&
            obxt_proc_now_ms() - last >= CONSUME_LINGER_MS)
            break;
        if (missing > 0 && obxt_proc_now_ms() >= next_md) {
            missing = consumer_assign_missing(rk, topics, assigned);
            next_md = obxt_proc_now_ms() + METADATA_EVERY_MS;
        }
        msg = rd_kafka_consumer_poll(rk, CONSUME_POLL_MS);
        if (msg != NULL && msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            records_append(recs, msg);
            last = obxt_proc_now_ms();
        } else if (msg != NULL && msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, "obxt_consume: %s\n", rd_kafka_message_errstr(msg));
        }
        if (msg != NULL)
            rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(assigned);
    if (recs->count > 1)
        qsort(recs->recs, recs->count, sizeof(*recs->recs), record_cmp);
    return recs;
}

void
obxt_records_free(struct obxt_records *recs)
{
    if (recs == NULL)
        return;
    for (size_t i = 0; i < recs->count; i++) {
        struct obxt_record *rec = &recs->recs[i];

        for (size_t h = 0; h < rec->header_count; h++) {
            free(rec->headers[h].name);
            free(rec->headers[h].value);
        }
        free(rec->headers);
        free(rec->topic);
        free(rec->key);
        free(rec->value);
    }
    free(recs->recs);
    free(recs);
}

const char *
obxt_records_header(const struct obxt_record *rec, const char *name, size_t *len)
{
    for (size_t h = 0; h < rec->header_count; h++) {
        if (strcmp(rec->headers[h].name, name) != 0)
            continue;
        if (len != NULL)
            *len = rec->headers[h].value_len;
        return rec->headers[h].value;
    }
    if (len != NULL)
        *len = 0;
    return NULL;
}

const struct obxt_record *
obxt_records_find_key(const struct obxt_records *recs, const char *key)
{
    for (size_t i = 0; i < recs->count; i++) {
        const struct obxt_record *rec = &recs->recs[i];

        if (rec->key != NULL && rec->key_len == strlen(key) && strcmp(rec->key, key) == 0)
            return rec;
    }
    return NULL;
}

size_t
obxt_records_count_header(const struct obxt_records *recs, const char *name, const char *value)
{
    size_t n = 0;

    for (size_t i = 0; i < recs->count; i++) {
        size_t len;
        const char *v = obxt_records_header(&recs->recs[i], name, &len);

        n += v != NULL && len == strlen(value) && memcmp(v, value, len) == 0;
    }
    return n;
}

void
obxt_records_print(const struct obxt_records *recs, FILE *out)
{
    for (size_t i = 0; i < recs->count; i++) {
        const struct obxt_record *rec = &recs->recs[i];

        fprintf(out, "  %s/%d@%lld key=%s value=%.200s", rec->topic, (int)rec->partition,
                (long long)rec->offset, rec->key ? rec->key : "(null)",
                rec->value ? rec->value : "(null)");
        for (size_t h = 0; h < rec->header_count; h++)
            fprintf(out, " %s=%s", rec->headers[h].name,
                    rec->headers[h].value ? rec->headers[h].value : "(null)");
        fprintf(out, "\n");
    }
}

/* ---- the producer -------------------------------------------------------------------------- */

static void
dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct obxt_producer *p = opaque;

    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->delivered++;
        return;
    }
    if (p->failed++ == 0)
        snprintf(p->first_error, sizeof(p->first_error), "%s [%d]: %s",
                 rd_kafka_topic_name(msg->rkt), (int)msg->partition, rd_kafka_err2str(msg->err));
}

struct obxt_producer *
obxt_producer_new(const char *bootstrap)
{
    struct obxt_producer *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];

    ck_assert_msg(p != NULL, "out of memory");
    conf_set(conf, "bootstrap.servers", bootstrap);
    conf_set(conf, "enable.idempotence", "true");
    conf_set(conf, "acks", "all");
    conf_set(conf, "partitioner", "murmur2_random");
    conf_set(conf, "linger.ms", "5");
    conf_set(conf, "reconnect.backoff.max.ms", "1000");
    conf_set(conf, "retry.backoff.ms", "50");
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(p->rk != NULL, "cannot create a producer for %s: %s", bootstrap, errstr);
    return p;
}

/* Builds the headers of a record from name, value, ... NULL (NULL when there are none). */
static rd_kafka_headers_t *
headers_new(const char *const headers[])
{
    rd_kafka_headers_t *hdrs;
    size_t n = 0;

    if (headers == NULL || headers[0] == NULL)
        return NULL;
    while (headers[n] != NULL)
        n++;
    ck_assert_msg(n % 2 == 0, "headers must come as name, value pairs (got %zu strings)", n);
    hdrs = rd_kafka_headers_new(n / 2);
    for (size_t i = 0; i < n; i += 2)
        rd_kafka_header_add(hdrs, headers[i], -1, headers[i + 1], -1);
    return hdrs;
}

void
obxt_producer_send(struct obxt_producer *p, const char *topic, int32_t partition, const char *key,
                   const char *value, const char *const headers[])
{
    rd_kafka_headers_t *hdrs = headers_new(headers);
    rd_kafka_resp_err_t err;

    err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                            RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                            RD_KAFKA_V_VALUE((void *)value, value ? strlen(value) : 0),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
                            RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL)
        rd_kafka_headers_destroy(hdrs);
    p->sent += err == RD_KAFKA_RESP_ERR_NO_ERROR;
    ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR, "cannot produce to %s [%d]: %s", topic,
                  (int)partition, rd_kafka_err2str(err));
}

int
obxt_producer_poll(struct obxt_producer *p, int timeout_ms)
{
    rd_kafka_poll(p->rk, timeout_ms);
    ck_assert_msg(p->failed == 0, "%zu record(s) not delivered; first: %s", p->failed,
                  p->first_error);
    return (int)(p->sent - p->delivered - p->failed);
}

int
obxt_producer_flush(struct obxt_producer *p, int timeout_ms)
{
    rd_kafka_flush(p->rk, timeout_ms);
    return obxt_producer_poll(p, 0);
}

size_t
obxt_producer_delivered(const struct obxt_producer *p)
{
    return p->delivered;
}

void
obxt_producer_free(struct obxt_producer *p)
{
    if (p == NULL)
        return;
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(p->rk);
    free(p);
}

void
obxt_produce(const char *bootstrap, const char *topic, const char *key, const char *value)
{
    struct obxt_producer *p = obxt_producer_new(bootstrap);
    int left;

    obxt_producer_send(p, topic, -1, key, value, NULL);
    left = obxt_producer_flush(p, 30000);

    ck_assert_msg(left == 0 && p->delivered == 1, "record for %s not delivered within 30 s", topic);
    obxt_producer_free(p);
}
