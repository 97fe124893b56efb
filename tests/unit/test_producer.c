/* test_producer.c - the producer against librdkafka's in-process mock cluster (three brokers,
 * created by the test so it can take brokers down and inject errors), with every record read
 * back by a real librdkafka consumer. */
#include <check.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "mock_cluster.h"
#include "outboxd/config.h"
#include "outboxd/producer.h"

#define PRODUCE_API_KEY 0 /* Kafka protocol ApiKey of ProduceRequest */
#define MAX_REPORTS 512
#define MAX_RECORDS 512
#define MAX_HDRS 8

/* ---- mock cluster ------------------------------------------------------------------------ */

static void
cluster_brokers(struct cluster *c, bool up)
{
    for (int32_t id = 1; id <= 3; id++) {
        if (up)
            ck_assert_int_eq(rd_kafka_mock_broker_set_up(c->mc, id), 0);
        else
            ck_assert_int_eq(rd_kafka_mock_broker_set_down(c->mc, id), 0);
    }
}

/* ---- config ------------------------------------------------------------------------------ */

/* A config pointing at c, with fast reconnects, plus the NULL-terminated key, value pairs. */
static struct obx_config *
config_for(const struct cluster *c, ...)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;
    const char *key;
    va_list ap;

    ck_assert_ptr_nonnull(cfg);
    ck_assert_int_eq(obx_config_set(cfg, "kafka.bootstrap.servers", c->bootstraps, "test", &err),
                     0);
    ck_assert_int_eq(obx_config_set(cfg, "kafka.reconnect.backoff.ms", "20", "test", &err), 0);
    ck_assert_int_eq(obx_config_set(cfg, "kafka.reconnect.backoff.max.ms", "200", "test", &err), 0);
    ck_assert_int_eq(obx_config_set(cfg, "kafka.retry.backoff.ms", "20", "test", &err), 0);
    va_start(ap, c);
    while ((key = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);

        ck_assert_msg(obx_config_set(cfg, key, value, "test", &err) == 0, "%s", err.msg);
    }
    va_end(ap);
    return cfg;
}

/* ---- delivery reports -------------------------------------------------------------------- */

struct report {
    uint64_t tag;
    int error;
    bool permanent, fatal;
    int kafka_code;
    char reason[256];
    int64_t offset;
    /* the event view */
    char topic[64];
    int32_t partition;
    int64_t timestamp_ms;
    bool key_null, value_null;
    char key[64], value[128];
    size_t key_len, value_len;
    size_t nheaders;
    char hname[MAX_HDRS][32];
    bool hnull[MAX_HDRS];
    unsigned char hval[MAX_HDRS][32];
    size_t hlen[MAX_HDRS];
};

struct collector {
    int n;
    struct report r[MAX_REPORTS];
};

static void
copy_bytes(void *dst, size_t cap, const void *src, size_t len, size_t *out_len, bool *is_null)
{
    *is_null = src == NULL;
    *out_len = len;
    if (src != NULL)
        memcpy(dst, src, len < cap ? len : cap);
}

static void
collect(void *ctx, const struct obx_delivery *dr)
{
    struct collector *col = ctx;
    struct report *r;
    const struct obx_event *ev = dr->ev;

    ck_assert_int_lt(col->n, MAX_REPORTS);
    r = &col->r[col->n++];
    memset(r, 0, sizeof(*r));
    r->tag = dr->tag;
    r->error = dr->error;
    r->permanent = dr->permanent;
    r->fatal = dr->fatal;
    r->kafka_code = dr->kafka_code;
    ck_assert_ptr_nonnull(dr->reason);
    snprintf(r->reason, sizeof(r->reason), "%s", dr->reason);
    r->offset = dr->offset;
    snprintf(r->topic, sizeof(r->topic), "%s", ev->topic);
    r->partition = ev->partition;
    r->timestamp_ms = ev->timestamp_ms;
    copy_bytes(r->key, sizeof(r->key), ev->key, ev->key_len, &r->key_len, &r->key_null);
    copy_bytes(r->value, sizeof(r->value), ev->value, ev->value_len, &r->value_len, &r->value_null);
    r->nheaders = ev->nheaders;
    for (size_t i = 0; i < ev->nheaders && i < MAX_HDRS; i++) {
        snprintf(r->hname[i], sizeof(r->hname[i]), "%s", ev->headers[i].name);
        copy_bytes(r->hval[i], sizeof(r->hval[i]), ev->headers[i].value, ev->headers[i].value_len,
                   &r->hlen[i], &r->hnull[i]);
    }
}

/* Serves reports until col holds n of them or timeout_ms passes. */
static void
wait_reports(struct obx_producer *p, struct collector *col, int n, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;

    while (col->n < n && mono_ms() < deadline)
        obx_producer_poll(p, 50);
}

/* Asserts that every tag in [first, first + n) was reported exactly once, successfully. */
static void
assert_tags_once_ok(const struct collector *col, uint64_t first, int n)
{
    static int seen[MAX_REPORTS];

    ck_assert_int_eq(col->n, n);
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < col->n; i++) {
        uint64_t t = col->r[i].tag;

        ck_assert_msg(t >= first && t < first + (uint64_t)n, "unexpected tag %llu",
                      (unsigned long long)t);
        ck_assert_msg(col->r[i].error == 0, "tag %llu failed: %s", (unsigned long long)t,
                      col->r[i].reason);
        ck_assert_int_ge(col->r[i].offset, 0);
        seen[t - first]++;
    }
    for (int i = 0; i < n; i++)
        ck_assert_msg(seen[i] == 1, "tag %llu reported %d times",
                      (unsigned long long)(first + (uint64_t)i), seen[i]);
}

/* ---- consumer ---------------------------------------------------------------------------- */

struct record {
    int32_t partition;
    int64_t offset, timestamp_ms;
    bool key_null, value_null;
    unsigned char key[64], value[128];
    size_t key_len, value_len;
    size_t nheaders;
    char hname[MAX_HDRS][32];
    bool hnull[MAX_HDRS];
    unsigned char hval[MAX_HDRS][32];
    size_t hlen[MAX_HDRS];
};

static struct record records[MAX_RECORDS];

static void
record_from(struct record *r, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs;
    rd_kafka_timestamp_type_t tstype;

    memset(r, 0, sizeof(*r));
    r->partition = m->partition;
    r->offset = m->offset;
    r->timestamp_ms = rd_kafka_message_timestamp(m, &tstype);
    copy_bytes(r->key, sizeof(r->key), m->key, m->key_len, &r->key_len, &r->key_null);
    copy_bytes(r->value, sizeof(r->value), m->payload, m->len, &r->value_len, &r->value_null);
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    r->nheaders = rd_kafka_header_cnt(hdrs);
    for (size_t i = 0; i < r->nheaders && i < MAX_HDRS; i++) {
        const char *name;
        const void *val;
        size_t size;

        ck_assert_int_eq(rd_kafka_header_get_all(hdrs, i, &name, &val, &size), 0);
        snprintf(r->hname[i], sizeof(r->hname[i]), "%s", name);
        copy_bytes(r->hval[i], sizeof(r->hval[i]), val, size, &r->hlen[i], &r->hnull[i]);
    }
}

/* Reads topic (partitions 0..partitions-1) from the beginning into records[] until expect
 * records arrived (then 300 ms more, to catch duplicates) or timeout_ms passed. Records of one
 * partition keep their order. Returns the number read. */
static int
consume(const struct cluster *c, const char *topic, int partitions, int expect, int timeout_ms)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    rd_kafka_t *rk;
    char errstr[512];
    int n = 0;
    int64_t deadline = mono_ms() + timeout_ms, extra = -1;

    ck_assert_int_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstraps, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", "test-reader", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "%s", errstr);
    for (int i = 0; i < partitions; i++)
        rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    while (mono_ms() < deadline && (extra < 0 || mono_ms() < extra)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            ck_assert_int_lt(n, MAX_RECORDS);
            record_from(&records[n++], m);
            if (n == expect)
                extra = mono_ms() + 300;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static struct obx_event
event(const char *topic, const char *key, const char *value)
{
    struct obx_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.topic = topic;
    ev.key = key;
    ev.key_len = key != NULL ? strlen(key) : 0;
    ev.value = value;
    ev.value_len = value != NULL ? strlen(value) : 0;
    ev.partition = OBX_PARTITION_ANY;
    return ev;
}

/* Sends ev, serving reports and retrying while the queue is full. */
static void
send_ok(struct obx_producer *p, const struct obx_event *ev, uint64_t tag)
{
    struct obx_error err;
    int rc;

    while ((rc = obx_producer_send(p, ev, tag, &err)) == OBX_ERR_BUSY)
        obx_producer_poll(p, 10);
    ck_assert_msg(rc == 0, "send: %s", err.msg);
}

/* Produces one record and waits for it: the producer then has metadata and a producer id. */
static void
warm_up(struct obx_producer *p, struct collector *col, const char *topic, uint64_t tag)
{
    struct obx_event ev = event(topic, "warm", "up");
    struct obx_error err;

    send_ok(p, &ev, tag);
    ck_assert_msg(obx_producer_flush(p, 5000, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(col->n, 1);
    ck_assert_int_eq(col->r[0].error, 0);
    col->n = 0;
}

/* Java's org.apache.kafka.common.utils.Utils.murmur2, as a reference. */
static int32_t
java_murmur2(const void *key, size_t len)
{
    const unsigned char *data = key;
    const uint32_t m = 0x5bd1e995;
    uint32_t h = 0x9747b28c ^ (uint32_t)len;
    size_t len4 = len / 4;

    for (size_t i = 0; i < len4; i++) {
        uint32_t k = (uint32_t)data[i * 4] | (uint32_t)data[i * 4 + 1] << 8 |
                     (uint32_t)data[i * 4 + 2] << 16 | (uint32_t)data[i * 4 + 3] << 24;

        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len % 4) {
    case 3:
        h ^= (uint32_t)data[(len & ~(size_t)3) + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[(len & ~(size_t)3) + 1] << 8;
        /* fall through */
    case 1:
        h ^= data[len & ~(size_t)3];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

/* The partition Java's default partitioner picks for a keyed record. */
static int32_t
java_partition(const char *key, int partitions)
{
    return (int32_t)(((uint32_t)java_murmur2(key, strlen(key)) & 0x7fffffff) %
                     (uint32_t)partitions);
}

/* ---- obx_producer_new -------------------------------------------------------------------- */

START_TEST(new__defaults_accepted)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct obx_error ferr;

    cluster_start(&c, 3);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, NULL, NULL, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    ck_assert_int_ge(obx_producer_fd(p), 0);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    ck_assert(!obx_producer_fatal(p, &ferr));
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

START_TEST(new__unknown_key_names_key)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_error err;

    cluster_start(&c, 3);
    cfg = config_for(&c, "kafka.no.such.property", "1", NULL);
    ck_assert_ptr_null(obx_producer_new(cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, OBX_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "kafka.no.such.property") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "No such configuration property") != NULL, "%s", err.msg);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

START_TEST(new__bad_value_names_key)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_error err;

    cluster_start(&c, 3);
    cfg = config_for(&c, "kafka.linger.ms", "soon", NULL);
    ck_assert_ptr_null(obx_producer_new(cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, OBX_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "kafka.linger.ms") != NULL, "%s", err.msg);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

/* User keys are applied after the defaults: acks=1 alone conflicts with the default
 * enable.idempotence=true, together with enable.idempotence=false it is accepted (and the
 * gap-less default of outbox.invalid.behavior = fail, which needs idempotence, is left out). */
START_TEST(new__user_keys_override_defaults)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;

    cluster_start(&c, 3);
    cfg = config_for(&c, "kafka.acks", "1", NULL);
    ck_assert_ptr_null(obx_producer_new(cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, OBX_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "acks") != NULL, "%s", err.msg);
    obx_config_free(cfg);

    cfg = config_for(&c, "kafka.acks", "1", "kafka.enable.idempotence", "false",
                     "outbox.invalid.behavior", "fail", NULL);
    p = obx_producer_new(cfg, NULL, NULL, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

START_TEST(new__transactional_id_refused)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_error err;

    cluster_start(&c, 3);
    cfg = config_for(&c, "kafka.transactional.id", "x", NULL);
    ck_assert_ptr_null(obx_producer_new(cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, OBX_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "kafka.transactional.id") != NULL, "%s", err.msg);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

/* ---- obx_producer_free ------------------------------------------------------------------- */

START_TEST(free__null_is_noop)
{
    obx_producer_free(NULL);
}
END_TEST

/* Freeing with undeliverable messages queued returns promptly and reports nothing. */
START_TEST(free__with_messages_queued)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("freeq", "k", "v");
    int64_t start;

    cluster_start(&c, 3);
    cluster_topic(&c, "freeq", 1);
    cluster_brokers(&c, false);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    for (uint64_t t = 0; t < 5; t++)
        send_ok(p, &ev, t);
    obx_producer_poll(p, 100);
    ck_assert_int_eq(obx_producer_in_flight(p), 5);
    start = mono_ms();
    obx_producer_free(p);
    ck_assert_int_lt(mono_ms() - start, 5000);
    ck_assert_int_eq(col->n, 0);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* ---- obx_producer_send ------------------------------------------------------------------- */

static const unsigned char binary_header[] = {0x00, 0xff, 0x01, 0x00, 0x7f};

/* Finds the one consumed record for which pred holds. */
static const struct record *
find_record(int n, bool (*pred)(const struct record *))
{
    const struct record *found = NULL;

    for (int i = 0; i < n; i++) {
        if (pred(&records[i])) {
            ck_assert_msg(found == NULL, "two records match");
            found = &records[i];
        }
    }
    ck_assert_msg(found != NULL, "no record matches");
    return found;
}

static bool
is_full(const struct record *r)
{
    return !r->key_null && r->key_len == 2 && memcmp(r->key, "k1", 2) == 0;
}

static bool
is_keyless(const struct record *r)
{
    return r->key_null;
}

static bool
is_tombstone(const struct record *r)
{
    return r->value_null;
}

static bool
is_empty(const struct record *r)
{
    return !r->key_null && r->key_len == 0 && !r->value_null;
}

static void
send_field_events(struct obx_producer *p, int64_t ts)
{
    struct obx_event ev = event("fields", "k1", "{\"a\":1}");

    /* keyed, partitioner-chosen, three headers (text, binary with NULs, null), timestamp */
    ev.timestamp_ms = ts;
    ev.nheaders = 3;
    ev.headers[0] = (struct obx_header){"id", "evt-1", 5};
    ev.headers[1] = (struct obx_header){"bin", binary_header, sizeof(binary_header)};
    ev.headers[2] = (struct obx_header){"nothing", NULL, 0};
    send_ok(p, &ev, 1);
    /* no key, explicit partition, producer-stamped timestamp */
    ev = event("fields", NULL, "no key");
    ev.partition = 3;
    send_ok(p, &ev, 2);
    /* tombstone */
    ev = event("fields", "k3", NULL);
    ev.partition = 2;
    send_ok(p, &ev, 3);
    /* empty (not null) key and value */
    ev = event("fields", "", "");
    ev.partition = 1;
    send_ok(p, &ev, 4);
}

static void
assert_full_record(const struct record *r, int64_t ts)
{
    ck_assert_int_eq(r->partition, java_partition("k1", 4));
    ck_assert_int_eq(r->value_len, 7);
    ck_assert(memcmp(r->value, "{\"a\":1}", 7) == 0);
    ck_assert_int_eq(r->timestamp_ms, ts);
    ck_assert_uint_eq(r->nheaders, 3);
    ck_assert_str_eq(r->hname[0], "id");
    ck_assert_uint_eq(r->hlen[0], 5);
    ck_assert(memcmp(r->hval[0], "evt-1", 5) == 0);
    ck_assert_str_eq(r->hname[1], "bin");
    ck_assert_uint_eq(r->hlen[1], sizeof(binary_header));
    ck_assert(memcmp(r->hval[1], binary_header, sizeof(binary_header)) == 0);
    ck_assert_str_eq(r->hname[2], "nothing");
    ck_assert(r->hnull[2]);
}

START_TEST(send__every_field_arrives)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    const int64_t ts = 1700000000123;
    int64_t before = (int64_t)time(NULL) * 1000, after;
    const struct record *r;

    cluster_start(&c, 3);
    cluster_topic(&c, "fields", 4);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    send_field_events(p, ts);
    ck_assert_msg(obx_producer_flush(p, 5000, &err) == 0, "%s", err.msg);
    after = (int64_t)time(NULL) * 1000 + 1000;
    assert_tags_once_ok(col, 1, 4);
    ck_assert_int_eq(consume(&c, "fields", 4, 4, 5000), 4);

    assert_full_record(find_record(4, is_full), ts);
    r = find_record(4, is_keyless);
    ck_assert_int_eq(r->partition, 3);
    ck_assert_uint_eq(r->value_len, 6);
    ck_assert(memcmp(r->value, "no key", 6) == 0);
    ck_assert_uint_eq(r->nheaders, 0);
    ck_assert_int_ge(r->timestamp_ms, before);
    ck_assert_int_le(r->timestamp_ms, after);
    r = find_record(4, is_tombstone);
    ck_assert_int_eq(r->partition, 2);
    ck_assert_uint_eq(r->key_len, 2);
    ck_assert(memcmp(r->key, "k3", 2) == 0);
    r = find_record(4, is_empty);
    ck_assert_int_eq(r->partition, 1);
    ck_assert_uint_eq(r->value_len, 0);

    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* The delivery report's event view is rebuilt from the delivered message. */
START_TEST(send__report_view_matches_event)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    const struct report *r;

    cluster_start(&c, 3);
    cluster_topic(&c, "fields", 4);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    send_field_events(p, 1700000000123);
    ck_assert_msg(obx_producer_flush(p, 5000, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(col->n, 4);
    for (int i = 0; i < col->n; i++) {
        r = &col->r[i];
        ck_assert_str_eq(r->topic, "fields");
        if (r->tag == 1) {
            ck_assert_int_eq(r->partition, java_partition("k1", 4));
            /* the mock broker answers every produce with LogAppendTime 1234, which librdkafka
             * then reports; a real broker returns -1 for CreateTime topics */
            ck_assert(r->timestamp_ms == 1700000000123 || r->timestamp_ms == 1234);
            ck_assert_str_eq(r->value, "{\"a\":1}");
            ck_assert_uint_eq(r->nheaders, 3);
            ck_assert_str_eq(r->hname[1], "bin");
            ck_assert(memcmp(r->hval[1], binary_header, sizeof(binary_header)) == 0);
            ck_assert(r->hnull[2]);
        } else if (r->tag == 2) {
            ck_assert(r->key_null);
            ck_assert_int_eq(r->partition, 3);
            ck_assert_uint_eq(r->nheaders, 0);
        } else if (r->tag == 3) {
            ck_assert(r->value_null);
            ck_assert_int_eq(r->partition, 2);
        }
    }
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* murmur2_random: the same key always lands on the partition Java's partitioner picks. */
START_TEST(send__murmur2_matches_java)
{
    static const struct {
        const char *key;
        int32_t hash;
    } vectors[] = {
        /* Kafka's UtilsTest.testMurmur2 */
        {"21", -973932308},
        {"foobar", -790332482},
        {"a-little-bit-long-string", -985981536},
        {"a-little-bit-longer-string", -1486304829},
        {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
        {"abc", 479470107},
    };
    const int nv = (int)(sizeof(vectors) / sizeof(vectors[0]));
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    int32_t expected[2][6];

    for (int i = 0; i < nv; i++)
        ck_assert_int_eq(java_murmur2(vectors[i].key, strlen(vectors[i].key)), vectors[i].hash);
    cluster_start(&c, 3);
    cluster_topic(&c, "m6", 6);
    cluster_topic(&c, "m7", 7);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    /* each key twice to each topic: tag = round * 100 + topic * 10 + key */
    for (uint64_t round = 0; round < 2; round++) {
        for (int t = 0; t < 2; t++) {
            for (int i = 0; i < nv; i++) {
                struct obx_event ev = event(t == 0 ? "m6" : "m7", vectors[i].key, "v");

                send_ok(p, &ev, round * 100 + (uint64_t)t * 10 + (uint64_t)i);
                expected[t][i] = java_partition(vectors[i].key, t == 0 ? 6 : 7);
            }
        }
    }
    ck_assert_msg(obx_producer_flush(p, 5000, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(col->n, 4 * nv);
    for (int i = 0; i < col->n; i++) {
        const struct report *r = &col->r[i];
        int t = (int)(r->tag % 100 / 10), k = (int)(r->tag % 10);

        ck_assert_int_eq(r->error, 0);
        ck_assert_msg(r->partition == expected[t][k], "key %s topic %s: partition %d, Java %d",
                      vectors[k].key, r->topic, r->partition, expected[t][k]);
    }
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* Backpressure: with the brokers down a 10-message queue fills, sends return OBX_ERR_BUSY, and
 * once the brokers are back every message is delivered exactly once, in order. */
START_TEST(send__queue_full_is_busy_and_loses_nothing)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    char value[32];
    uint64_t tag = 0;
    const int total = 60;
    int rc;

    cluster_start(&c, 3);
    cluster_topic(&c, "bp", 1);
    cfg = config_for(&c, "kafka.queue.buffering.max.messages", "10", NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "bp", 1000);
    cluster_brokers(&c, false);
    for (;;) {
        struct obx_event ev;

        snprintf(value, sizeof(value), "%llu", (unsigned long long)tag);
        ev = event("bp", "k", value);
        rc = obx_producer_send(p, &ev, tag, &err);
        if (rc != 0)
            break;
        tag++;
    }
    ck_assert_int_eq(rc, OBX_ERR_BUSY);
    ck_assert_int_eq(err.code, OBX_ERR_BUSY);
    ck_assert_int_eq(tag, 10);
    ck_assert_int_eq(obx_producer_in_flight(p), 10);
    /* serving reports does not help while the brokers are down: still full, nothing lost */
    obx_producer_poll(p, 300);
    ck_assert_int_eq(col->n, 0);
    {
        struct obx_event ev = event("bp", "k", "x");

        ck_assert_int_eq(obx_producer_send(p, &ev, 999, &err), OBX_ERR_BUSY);
    }
    cluster_brokers(&c, true);
    for (; tag < (uint64_t)total; tag++) {
        struct obx_event ev;

        snprintf(value, sizeof(value), "%llu", (unsigned long long)tag);
        ev = event("bp", "k", value);
        send_ok(p, &ev, tag);
    }
    ck_assert_msg(obx_producer_flush(p, 8000, &err) == 0, "%s", err.msg);
    assert_tags_once_ok(col, 0, total);
    ck_assert_int_eq(consume(&c, "bp", 1, total + 1, 5000), total + 1);
    for (int i = 1; i <= total; i++) {
        snprintf(value, sizeof(value), "%d", i - 1);
        ck_assert_uint_eq(records[i].value_len, strlen(value));
        ck_assert_msg(memcmp(records[i].value, value, strlen(value)) == 0, "offset %d", i);
    }
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* A record larger than the producer's message.max.bytes is refused at enqueue time. */
START_TEST(send__too_large_is_refused)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    static char big[5000];
    struct obx_event ev = event("big", "k", NULL);

    memset(big, 'x', sizeof(big));
    cluster_start(&c, 3);
    cluster_topic(&c, "big", 1);
    cfg = config_for(&c, "kafka.message.max.bytes", "1000", NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    ev.value = big;
    ev.value_len = sizeof(big);
    ck_assert_int_eq(obx_producer_send(p, &ev, 1, &err), OBX_ERR_KAFKA);
    ck_assert(!err.fatal);
    ck_assert_msg(strstr(err.msg, "big") != NULL && strstr(err.msg, "too large") != NULL, "%s",
                  err.msg);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    /* the producer is still usable */
    ev.value_len = 10;
    send_ok(p, &ev, 2);
    ck_assert_msg(obx_producer_flush(p, 5000, &err) == 0, "%s", err.msg);
    assert_tags_once_ok(col, 2, 1);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* An explicit partition the topic does not have is refused (once metadata is known). */
START_TEST(send__unknown_partition_is_refused)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("twop", "k", "v");

    cluster_start(&c, 3);
    cluster_topic(&c, "twop", 2);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "twop", 100);
    ev.partition = 5;
    ck_assert_int_eq(obx_producer_send(p, &ev, 1, &err), OBX_ERR_KAFKA);
    ck_assert(!err.fatal);
    ck_assert_msg(strstr(err.msg, "twop") != NULL, "%s", err.msg);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

START_TEST(send__too_many_headers_is_invalid)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct obx_event ev = event("t", "k", "v");

    cluster_start(&c, 3);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, NULL, NULL, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    ev.nheaders = OBX_EVENT_MAX_HEADERS + 1;
    ck_assert_int_eq(obx_producer_send(p, &ev, 1, &err), OBX_ERR_INVALID);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

/* ---- obx_producer_poll ------------------------------------------------------------------- */

START_TEST(poll__each_tag_reported_once)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    const int total = 300;
    char key[16];
    int served = 0, got;

    cluster_start(&c, 3);
    cluster_topic(&c, "many-a", 3);
    cluster_topic(&c, "many-b", 2);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    for (int i = 0; i < total; i++) {
        struct obx_event ev;

        snprintf(key, sizeof(key), "agg-%d", i % 17);
        ev = event(i % 2 ? "many-a" : "many-b", key, "v");
        send_ok(p, &ev, 5000 + (uint64_t)i);
    }
    for (int64_t deadline = mono_ms() + 8000; col->n < total && mono_ms() < deadline;)
        served += obx_producer_poll(p, 50);
    ck_assert_int_eq(served, col->n);
    /* nothing more arrives */
    got = obx_producer_poll(p, 300);
    ck_assert_int_eq(got, 0);
    assert_tags_once_ok(col, 5000, total);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    ck_assert_int_eq(consume(&c, "many-a", 3, total / 2, 5000), total / 2);
    ck_assert_int_eq(consume(&c, "many-b", 2, total / 2, 5000), total / 2);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* Retriable produce errors are retried by the idempotent producer without loss, duplicates or
 * reordering. */
START_TEST(poll__retriable_errors_keep_order)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    const int total = 200;
    char value[16];
    size_t left;

    cluster_start(&c, 3);
    cluster_topic(&c, "retry", 1);
    cfg = config_for(&c, "kafka.batch.num.messages", "20", NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    ck_assert_int_eq(rd_kafka_mock_partition_set_leader(c.mc, "retry", 0, 1), 0);
    warm_up(p, col, "retry", 9999);
    /* the next six produce requests to the leader fail, with a delay for some */
    ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                         c.mc, 1, PRODUCE_API_KEY, 6, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0,
                         RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, 0,
                         RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 50, RD_KAFKA_RESP_ERR__TRANSPORT, 0,
                         RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, 20,
                         RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, 0),
                     0);
    for (int i = 0; i < total; i++) {
        struct obx_event ev;

        snprintf(value, sizeof(value), "%d", i);
        ev = event("retry", "same-key", value);
        send_ok(p, &ev, (uint64_t)i);
        if (i % 25 == 0)
            obx_producer_poll(p, 20);
    }
    ck_assert_msg(obx_producer_flush(p, 8000, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(rd_kafka_mock_broker_error_stack_cnt(c.mc, 1, PRODUCE_API_KEY, &left), 0);
    ck_assert_uint_eq(left, 0); /* every injected error was hit */
    assert_tags_once_ok(col, 0, total);
    ck_assert_int_eq(consume(&c, "retry", 1, total + 1, 5000), total + 1);
    for (int i = 0; i < total; i++) {
        snprintf(value, sizeof(value), "%d", i);
        ck_assert_uint_eq(records[i + 1].value_len, strlen(value));
        ck_assert_msg(memcmp(records[i + 1].value, value, strlen(value)) == 0,
                      "offset %d holds the wrong record", i + 1);
    }
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* A permanent broker error fails the record with permanent = true and librdkafka's reason. */
START_TEST(poll__permanent_error_reported)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("perm", "k", "v");

    cluster_start(&c, 3);
    cluster_topic(&c, "perm", 1);
    cluster_topic(&c, "perm.dlq", 1);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "perm", 100);
    rd_kafka_mock_push_request_errors(c.mc, PRODUCE_API_KEY, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    send_ok(p, &ev, 7);
    wait_reports(p, col, 1, 5000);
    ck_assert_int_eq(col->n, 1);
    ck_assert_uint_eq(col->r[0].tag, 7);
    ck_assert_int_eq(col->r[0].error, OBX_ERR_KAFKA);
    ck_assert(col->r[0].permanent);
    ck_assert_int_eq(col->r[0].kafka_code, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    ck_assert_msg(strstr(col->r[0].reason, "authorization") != NULL, "%s", col->r[0].reason);
    ck_assert_int_eq(col->r[0].offset, -1);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    /* with outbox.invalid.behavior = dlq (the default) the producer stays usable, so the
     * pipeline can send the dead letter */
    ck_assert(!col->r[0].fatal);
    ck_assert(!obx_producer_fatal(p, &err));
    ev.topic = "perm.dlq";
    send_ok(p, &ev, 8);
    wait_reports(p, col, 2, 5000);
    ck_assert_int_eq(col->n, 2);
    ck_assert_uint_eq(col->r[1].tag, 8);
    ck_assert_int_eq(col->r[1].error, 0);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* With outbox.invalid.behavior = fail the gap-less guarantee is on: when one batch fails
 * permanently, the records queued after it are not written (without it librdkafka would write
 * them, ahead of the failed one that only comes back on a replay): every report fails, the
 * producer turns fatal, the log holds no later record. */
START_TEST(poll__permanent_error_leaves_no_gap)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    char value[16];
    const int total = 20;
    int sent;

    cluster_start(&c, 3);
    cluster_topic(&c, "gap", 1);
    cfg = config_for(&c, "outbox.invalid.behavior", "fail", "kafka.batch.num.messages", "5",
                     "kafka.linger.ms", "50", NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "gap", 100);
    rd_kafka_mock_push_request_errors(c.mc, PRODUCE_API_KEY, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    for (sent = 0; sent < total; sent++) {
        struct obx_event ev;
        int rc;

        snprintf(value, sizeof(value), "%d", sent);
        ev = event("gap", "k", value);
        while ((rc = obx_producer_send(p, &ev, (uint64_t)sent, &err)) == OBX_ERR_BUSY)
            obx_producer_poll(p, 10);
        if (rc != 0) {
            /* the failure may already have stopped the producer */
            ck_assert_int_eq(rc, OBX_ERR_KAFKA);
            ck_assert(err.fatal);
            break;
        }
    }
    ck_assert_int_gt(sent, 0);
    wait_reports(p, col, sent, 8000);
    ck_assert_int_eq(col->n, sent);
    for (int i = 0; i < col->n; i++) {
        ck_assert_msg(col->r[i].error == OBX_ERR_KAFKA, "tag %llu was written after a failure",
                      (unsigned long long)col->r[i].tag);
        ck_assert(col->r[i].fatal);
    }
    ck_assert(obx_producer_fatal(p, &err));
    ck_assert_msg(strstr(err.msg, "GAPLESS") != NULL, "%s", err.msg);
    ck_assert_int_eq(consume(&c, "gap", 1, 1, 3000), 1); /* only the warm-up record */
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* A user-set message.timeout.ms expiring fails the record (never a silent drop), as a failure
 * that is neither permanent nor fatal: Kafka was unreachable, a resend may succeed. */
START_TEST(poll__user_timeout_is_reported)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("tmo", "k", "v");

    cluster_start(&c, 3);
    cluster_topic(&c, "tmo", 1);
    cluster_brokers(&c, false);
    cfg = config_for(&c, "kafka.message.timeout.ms", "300", NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    send_ok(p, &ev, 42);
    wait_reports(p, col, 1, 5000);
    ck_assert_int_eq(col->n, 1);
    ck_assert_uint_eq(col->r[0].tag, 42);
    ck_assert_int_eq(col->r[0].error, OBX_ERR_KAFKA);
    ck_assert(!col->r[0].permanent);
    ck_assert(!col->r[0].fatal);
    ck_assert_int_eq(col->r[0].kafka_code, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* ---- obx_producer_fd --------------------------------------------------------------------- */

START_TEST(fd__readable_when_reports_ready)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("fd", "k", "v");
    struct pollfd pfd;

    cluster_start(&c, 3);
    cluster_topic(&c, "fd", 1);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "fd", 1);
    pfd = (struct pollfd){.fd = obx_producer_fd(p), .events = POLLIN};
    obx_producer_poll(p, 0);
    ck_assert_int_eq(poll(&pfd, 1, 0), 0); /* nothing pending: not readable */
    send_ok(p, &ev, 2);
    ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
    ck_assert(pfd.revents & POLLIN);
    /* readable means a report is ready: a non-blocking poll serves it */
    for (int i = 0; i < 20 && col->n == 0; i++)
        obx_producer_poll(p, 0);
    ck_assert_int_eq(col->n, 1);
    ck_assert_uint_eq(col->r[0].tag, 2);
    /* drained: not readable any more */
    ck_assert_int_eq(poll(&pfd, 1, 100), 0);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* ---- obx_producer_flush ------------------------------------------------------------------ */

START_TEST(flush__delivers_everything)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("fl", "k", "v");

    cluster_start(&c, 3);
    cluster_topic(&c, "fl", 2);
    /* a long linger: flush must not wait for it */
    cfg = config_for(&c, "kafka.linger.ms", "4000", NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    for (uint64_t t = 0; t < 50; t++)
        send_ok(p, &ev, t);
    ck_assert_msg(obx_producer_flush(p, 3000, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    assert_tags_once_ok(col, 0, 50);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

START_TEST(flush__timeout_reports_remaining)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("fl", "k", "v");
    int64_t start;

    cluster_start(&c, 3);
    cluster_topic(&c, "fl", 1);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "fl", 100);
    cluster_brokers(&c, false);
    for (uint64_t t = 0; t < 3; t++)
        send_ok(p, &ev, t);
    start = mono_ms();
    ck_assert_int_eq(obx_producer_flush(p, 300, &err), OBX_ERR_KAFKA);
    ck_assert_int_ge(mono_ms() - start, 300);
    ck_assert(!err.fatal);
    ck_assert_msg(strstr(err.msg, "3 messages") != NULL, "%s", err.msg);
    ck_assert_int_eq(obx_producer_in_flight(p), 3);
    ck_assert_int_eq(col->n, 0);
    /* nothing was lost: once the brokers are back the same flush completes */
    cluster_brokers(&c, true);
    ck_assert_msg(obx_producer_flush(p, 8000, &err) == 0, "%s", err.msg);
    assert_tags_once_ok(col, 0, 3);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* ---- obx_producer_in_flight -------------------------------------------------------------- */

START_TEST(in_flight__sent_minus_reported)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("inf", "k", "v");

    cluster_start(&c, 3);
    cluster_topic(&c, "inf", 1);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "inf", 100);
    cluster_brokers(&c, false);
    for (uint64_t t = 0; t < 7; t++) {
        send_ok(p, &ev, t);
        ck_assert_int_eq(obx_producer_in_flight(p), (int)t + 1);
    }
    cluster_brokers(&c, true);
    wait_reports(p, col, 7, 8000);
    ck_assert_int_eq(col->n, 7);
    ck_assert_int_eq(obx_producer_in_flight(p), 0);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

/* ---- obx_producer_fatal ------------------------------------------------------------------ */

/* The broker losing the producer's sequence (OUT_OF_ORDER_SEQUENCE_NUMBER on the head-of-line
 * request) is fatal for an idempotent producer: the report says so and obx_producer_fatal
 * returns true with the reason. */
START_TEST(fatal__after_sequence_error)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_producer *p;
    struct obx_error err;
    struct collector *col = calloc(1, sizeof(*col));
    struct obx_event ev = event("fat", "k", "v");

    cluster_start(&c, 3);
    cluster_topic(&c, "fat", 1);
    cfg = config_for(&c, NULL);
    p = obx_producer_new(cfg, collect, col, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    warm_up(p, col, "fat", 100);
    ck_assert(!obx_producer_fatal(p, &err));
    rd_kafka_mock_push_request_errors(c.mc, PRODUCE_API_KEY, 1,
                                      RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    send_ok(p, &ev, 1);
    wait_reports(p, col, 1, 5000);
    ck_assert_int_eq(col->n, 1);
    ck_assert_int_eq(col->r[0].error, OBX_ERR_KAFKA);
    ck_assert(col->r[0].fatal);
    ck_assert(obx_producer_fatal(p, &err));
    ck_assert_int_eq(err.code, OBX_ERR_KAFKA);
    ck_assert(err.fatal);
    ck_assert_msg(strstr(err.msg, "OUT_OF_ORDER_SEQUENCE_NUMBER") != NULL, "%s", err.msg);
    /* and sending is refused as fatal from now on */
    ck_assert_int_eq(obx_producer_send(p, &ev, 2, &err), OBX_ERR_KAFKA);
    ck_assert(err.fatal);
    obx_producer_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(col);
}
END_TEST

static TCase *
tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *
producer_suite(void)
{
    Suite *s = suite_create("producer");
    TCase *tc;

    tc = tcase(s, "obx_producer_new");
    tcase_add_test(tc, new__defaults_accepted);
    tcase_add_test(tc, new__unknown_key_names_key);
    tcase_add_test(tc, new__bad_value_names_key);
    tcase_add_test(tc, new__user_keys_override_defaults);
    tcase_add_test(tc, new__transactional_id_refused);
    tc = tcase(s, "obx_producer_free");
    tcase_add_test(tc, free__null_is_noop);
    tcase_add_test(tc, free__with_messages_queued);
    tc = tcase(s, "obx_producer_send");
    tcase_add_test(tc, send__every_field_arrives);
    tcase_add_test(tc, send__report_view_matches_event);
    tcase_add_test(tc, send__murmur2_matches_java);
    tcase_add_test(tc, send__queue_full_is_busy_and_loses_nothing);
    tcase_add_test(tc, send__too_large_is_refused);
    tcase_add_test(tc, send__unknown_partition_is_refused);
    tcase_add_test(tc, send__too_many_headers_is_invalid);
    tc = tcase(s, "obx_producer_poll");
    tcase_add_test(tc, poll__each_tag_reported_once);
    tcase_add_test(tc, poll__retriable_errors_keep_order);
    tcase_add_test(tc, poll__permanent_error_reported);
    tcase_add_test(tc, poll__permanent_error_leaves_no_gap);
    tcase_add_test(tc, poll__user_timeout_is_reported);
    tc = tcase(s, "obx_producer_fd");
    tcase_add_test(tc, fd__readable_when_reports_ready);
    tc = tcase(s, "obx_producer_flush");
    tcase_add_test(tc, flush__delivers_everything);
    tcase_add_test(tc, flush__timeout_reports_remaining);
    tc = tcase(s, "obx_producer_in_flight");
    tcase_add_test(tc, in_flight__sent_minus_reported);
    tc = tcase(s, "obx_producer_fatal");
    tcase_add_test(tc, fatal__after_sequence_error);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(producer_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
