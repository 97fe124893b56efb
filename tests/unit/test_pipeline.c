/* test_pipeline.c - the pipeline driven through its repl callback table (as repl_stream.c drives
 * it) against librdkafka's in-process mock cluster: routed rows are produced, acknowledged and
 * confirmed at their transaction's end_lsn; a record too large for Kafka is dead-lettered, and
 * when its dead letter is refused too (it carries the same value) it goes out without its value,
 * its error header saying why, instead of stopping outboxd. */
#include <check.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "mock_cluster.h"
#include "outboxd/config.h"
#include "outboxd/pipeline.h"
#include "outboxd/repl.h"

#define OID_UUID 2950
#define OID_VARCHAR 1043
#define OID_JSONB 3802
#define RELID 16384
#define BIG_PAYLOAD 200000
#define WAIT_MS 15000

/* ---- mock cluster ------------------------------------------------------------------------ */

/* One broker with the two topics the pipeline writes to. */
static void
pipeline_cluster_start(struct cluster *c)
{
    cluster_start(c, 1);
    cluster_topic(c, "outbox.event.order", 1);
    cluster_topic(c, "outbox.dlq", 1);
}

/* The only record of topic (one partition): its value (NULL for null) and error header, copied
 * into the caller's buffers. Returns the number of records read (waits for the first). */
static int
consume_one(const struct cluster *c, const char *topic, bool *value_null, char *error, size_t cap)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    int64_t deadline = mono_ms() + WAIT_MS, linger = -1;
    char errstr[512];
    rd_kafka_t *rk;
    int n = 0;

    ck_assert_int_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstraps, errstr, sizeof(errstr)), 0);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", "reader", errstr, sizeof(errstr)), 0);
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "%s", errstr);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    while (mono_ms() < deadline && (linger < 0 || mono_ms() < linger)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        rd_kafka_headers_t *hdrs;
        const void *v;
        size_t size;

        if (m != NULL && m->err == RD_KAFKA_RESP_ERR_NO_ERROR && n++ == 0) {
            *value_null = m->payload == NULL;
            error[0] = '\0';
            if (rd_kafka_message_headers(m, &hdrs) == 0 &&
                rd_kafka_header_get_last(hdrs, "error", &v, &size) == 0 && v != NULL)
                snprintf(error, cap, "%.*s", (int)size, (const char *)v);
            linger = mono_ms() + 300;
        }
        if (m != NULL)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

/* ---- the outbox table as repl announces it -------------------------------------------------- */

/* The relation's names are not const in struct obx_relation: writable copies. */
static char n_id[] = "id", n_type_[] = "aggregatetype", n_key[] = "aggregateid", n_type[] = "type",
            n_payload[] = "payload", n_headers[] = "headers", n_public[] = "public",
            n_outbox[] = "outbox";

static struct obx_relcol outbox_cols[] = {
    {n_id, OID_UUID, -1, true},        {n_type_, OID_VARCHAR, 259, false},
    {n_key, OID_VARCHAR, 259, false},  {n_type, OID_VARCHAR, 259, false},
    {n_payload, OID_JSONB, -1, false}, {n_headers, OID_JSONB, -1, false},
};

static struct obx_relation outbox_rel = {
    RELID, n_public, n_outbox, 'd', sizeof(outbox_cols) / sizeof(outbox_cols[0]), outbox_cols};

/* One column value of a row (text), or SQL NULL for NULL. */
static struct obx_pgo_col
text_col(const char *s)
{
    struct obx_pgo_col col = {OBX_PGO_COL_NULL, NULL, 0};

    if (s != NULL) {
        col.kind = OBX_PGO_COL_TEXT;
        col.data = (const uint8_t *)s;
        col.len = (uint32_t)strlen(s);
    }
    return col;
}

/* Hands one outbox row to on_insert. */
static int
insert_row(struct obx_repl_handler *h, const char *id, const char *key, const char *payload,
           struct obx_error *err)
{
    struct obx_pgo_col cols[6] = {text_col(id),        text_col("order"), text_col(key),
                                  text_col("created"), text_col(payload), text_col(NULL)};
    struct obx_pgo_tuple tup = {6, cols};

    return h->on_insert(h->ctx, &outbox_rel, &tup, err);
}

/* A pipeline for c with message.max.bytes = 100000 and its handler. */
static struct obx_pipeline *
pipeline_for(const struct cluster *c, struct obx_config **cfg, struct obx_repl_handler *h)
{
    struct obx_error err = {0};
    struct obx_pipeline *p;

    *cfg = obx_config_new();
    ck_assert_ptr_nonnull(*cfg);
    ck_assert_int_eq(obx_config_set(*cfg, "kafka.bootstrap.servers", c->bootstraps, "t", &err), 0);
    ck_assert_int_eq(obx_config_set(*cfg, "kafka.message.max.bytes", "100000", "t", &err), 0);
    p = obx_pipeline_new(*cfg, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    obx_pipeline_handler(p, h);
    ck_assert_int_eq(h->on_table(h->ctx, &outbox_rel, &err), 0);
    ck_assert_int_eq(h->on_relation(h->ctx, &outbox_rel, &err), 0);
    return p;
}

/* Serves the pipeline until it may confirm lsn; fails the test on a service error. */
static void
serve_until_confirmable(struct obx_repl_handler *h, uint64_t lsn)
{
    int64_t deadline = mono_ms() + WAIT_MS;
    struct obx_error err = {0};

    while (h->confirmable(h->ctx) < lsn) {
        ck_assert_msg(h->service(h->ctx, &err) == 0, "service: %s", err.msg);
        ck_assert_msg(mono_ms() < deadline, "not confirmable after %d ms", WAIT_MS);
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    }
}

/* ---- obx_pipeline_handler ---------------------------------------------------------------- */

START_TEST(handler__rows_confirmed_after_acknowledgement)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_repl_handler h;
    struct obx_pipeline *p;
    struct obx_pipeline_stats st;
    struct obx_error err = {0};
    struct obx_pgo_begin begin = {0x1000, 0, 7};
    struct obx_pgo_commit commit = {0, 0x1F00, 0x2000, 0};

    pipeline_cluster_start(&c);
    p = pipeline_for(&c, &cfg, &h);
    ck_assert_int_eq(h.on_begin(h.ctx, &begin, &err), 0);
    ck_assert_int_eq(insert_row(&h, "00000000-0000-4000-8000-000000000001", "a", "{}", &err), 0);
    ck_assert_int_eq(insert_row(&h, "00000000-0000-4000-8000-000000000002", "b", "{}", &err), 0);
    ck_assert_uint_lt(h.confirmable(h.ctx), 0x2000);
    ck_assert_int_eq(h.on_commit(h.ctx, &commit, &err), 0);
    serve_until_confirmable(&h, 0x2000);
    obx_pipeline_get_stats(p, &st);
    ck_assert_uint_eq(st.events_sent, 2);
    ck_assert_uint_eq(st.events_acked, 2);
    ck_assert_uint_eq(st.events_dlq, 0);
    obx_pipeline_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

START_TEST(handler__oversized_record_dead_lettered_without_value)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_repl_handler h;
    struct obx_pipeline *p;
    struct obx_pipeline_stats st;
    struct obx_error err = {0};
    struct obx_pgo_begin begin = {0x1000, 0, 7};
    struct obx_pgo_commit commit = {0, 0x1F00, 0x2000, 0};
    char *big = malloc(BIG_PAYLOAD + 16), error[512];
    bool value_null = false;

    ck_assert_ptr_nonnull(big);
    snprintf(big, BIG_PAYLOAD + 16, "{\"big\": \"%0*d\"}", BIG_PAYLOAD, 0);
    pipeline_cluster_start(&c);
    p = pipeline_for(&c, &cfg, &h);
    ck_assert_int_eq(h.on_begin(h.ctx, &begin, &err), 0);
    ck_assert_int_eq(insert_row(&h, "00000000-0000-4000-8000-000000000001", "a", "{}", &err), 0);
    ck_assert_int_eq(insert_row(&h, "00000000-0000-4000-8000-0000000000b9", "b", big, &err), 0);
    ck_assert_int_eq(insert_row(&h, "00000000-0000-4000-8000-000000000003", "c", "{}", &err), 0);
    ck_assert_int_eq(h.on_commit(h.ctx, &commit, &err), 0);
    serve_until_confirmable(&h, 0x2000);
    ck_assert(h.can_take(h.ctx));
    obx_pipeline_get_stats(p, &st);
    ck_assert_uint_eq(st.events_dlq, 1);
    ck_assert_uint_eq(st.events_acked, 3); /* two good records and the bare dead letter */
    ck_assert_int_eq(consume_one(&c, "outbox.dlq", &value_null, error, sizeof(error)), 1);
    ck_assert_msg(value_null, "the dead letter kept its value");
    ck_assert_msg(strstr(error, "too large") != NULL && strstr(error, "dropped") != NULL,
                  "error header: %s", error);
    obx_pipeline_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
    free(big);
}
END_TEST

/* A librdkafka fatal error that the producer reports on a send, before its delivery reports
 * are served (the loop may send first): outboxd must rebuild the producer and replay from the
 * slot, as it does when a report brings the error, not stop. The next Produce request is
 * answered with OUT_OF_ORDER_SEQUENCE_NUMBER (the idempotent producer's state is lost: fatal);
 * rows keep coming without any service() call until a send finds the producer fatal. */
START_TEST(handler__producer_fatal_on_send_restarts)
{
    struct cluster c;
    struct obx_config *cfg;
    struct obx_repl_handler h;
    struct obx_pipeline *p;
    struct obx_error err = {0};
    struct obx_pgo_begin begin = {0x1000, 0, 7};
    struct obx_pgo_commit commit = {0, 0x2F00, 0x3000, 0};
    int64_t deadline = mono_ms() + WAIT_MS;
    char id[64];
    int rows = 0;

    pipeline_cluster_start(&c);
    p = pipeline_for(&c, &cfg, &h);
    rd_kafka_mock_push_request_errors(c.mc, 0 /* Produce */, 1,
                                      RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    ck_assert_int_eq(h.on_begin(h.ctx, &begin, &err), 0);
    while (h.can_take(h.ctx)) {
        snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012d", ++rows);
        ck_assert_msg(insert_row(&h, id, "a", "{}", &err) == 0, "row %d: %s (fatal %d)", rows,
                      err.msg, err.fatal);
        ck_assert_msg(mono_ms() < deadline, "no send found the producer fatal in %d ms", WAIT_MS);
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    ck_assert_int_gt(rows, 1);
    /* the failure is not final: the session ends and the producer is rebuilt */
    ck_assert_int_ne(h.service(h.ctx, &err), 0);
    ck_assert_msg(!err.fatal, "a producer fatal error stopped outboxd: %s", err.msg);
    ck_assert_uint_lt(h.confirmable(h.ctx), 0x1000);
    h.on_disconnect(h.ctx);
    ck_assert(h.can_take(h.ctx));
    /* the replayed transaction is delivered and confirmed by the new producer */
    obx_error_clear(&err);
    ck_assert_int_eq(h.on_begin(h.ctx, &begin, &err), 0);
    ck_assert_int_eq(insert_row(&h, "00000000-0000-4000-8000-000000000001", "a", "{}", &err), 0);
    ck_assert_int_eq(h.on_commit(h.ctx, &commit, &err), 0);
    serve_until_confirmable(&h, 0x3000);
    obx_pipeline_free(p);
    obx_config_free(cfg);
    cluster_stop(&c);
}
END_TEST

/* ---- obx_pipeline_free ------------------------------------------------------------------- */

START_TEST(free__null_is_noop)
{
    obx_pipeline_free(NULL);
}
END_TEST

static Suite *
pipeline_suite(void)
{
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("obx_pipeline_handler");
    TCase *tf = tcase_create("obx_pipeline_free");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, handler__rows_confirmed_after_acknowledgement);
    tcase_add_test(tc, handler__oversized_record_dead_lettered_without_value);
    tcase_add_test(tc, handler__producer_fatal_on_send_restarts);
    suite_add_tcase(s, tc);
    tcase_add_test(tf, free__null_is_noop);
    suite_add_tcase(s, tf);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(pipeline_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
