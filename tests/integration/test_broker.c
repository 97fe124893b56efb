/* test_broker.c - the Kafka test support on its own (no PostgreSQL): kafka-broker's command
 * language and shutdown, records round-tripping through it with keys, headers and partitions,
 * broker outages, injected produce errors against an idempotent producer, and obx-consume's
 * output. */
#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "obxtest.h"

/* Number of comma-separated entries in s. */
static int
count_entries(const char *s)
{
    int n = 1;

    for (; *s != '\0'; s++)
        n += *s == ',';
    return n;
}

/* Fails unless rec is topic/partition with key, value and exactly the headers name, value, ...
 * NULL (value NULL: a null header value). */
static void
check_record(const struct obxt_record *rec, const char *topic, int32_t partition, const char *key,
             const char *value, const char *const headers[])
{
    size_t nh = 0;

    ck_assert_str_eq(rec->topic, topic);
    ck_assert_int_eq(rec->partition, partition);
    ck_assert_pstr_eq(rec->key, key);
    ck_assert_uint_eq(rec->key_len, key ? strlen(key) : 0);
    ck_assert_pstr_eq(rec->value, value);
    ck_assert_uint_eq(rec->value_len, value ? strlen(value) : 0);
    ck_assert_int_gt(rec->timestamp, 0);
    while (headers != NULL && headers[nh] != NULL)
        nh++;
    ck_assert_uint_eq(rec->header_count, nh / 2);
    for (size_t h = 0; h < nh / 2; h++) {
        ck_assert_str_eq(rec->headers[h].name, headers[2 * h]);
        ck_assert_pstr_eq(rec->headers[h].value, headers[2 * h + 1]);
    }
}

/* Partition count of topic as the cluster's metadata says (-1: no such topic). */
static int
partition_count(const char *bootstrap, const char *topic)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md;
    char errstr[256];
    rd_kafka_t *rk;
    int n = -1;

    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_ptr_nonnull(rk);
    ck_assert_int_eq(rd_kafka_metadata(rk, 1, NULL, &md, 10000), 0);
    for (int t = 0; t < md->topic_cnt; t++)
        if (strcmp(md->topics[t].topic, topic) == 0)
            n = md->topics[t].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return n;
}

/* ---- the broker process and its commands ---------------------------------------------------- */

START_TEST(broker__bootstrap_and_commands)
{
    struct obxt_broker *b = obxt_broker_start(3);
    char *reply;

    ck_assert_int_eq(count_entries(obxt_broker_bootstrap(b)), 3);
    reply = obxt_broker_cmd_reply(b, "brokers");
    ck_assert_pstr_eq(reply, "ok 1,2,3");
    free(reply);
    ck_assert_int_eq(obxt_broker_cmd(b, "topic t1 3"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "topic t1 3"), -1); /* exists already */
    ck_assert_int_eq(obxt_broker_cmd(b, "rtt all 5"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "rtt 2 0"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "down 3"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "up all"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "errors 0"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "errors 2 REQUEST_TIMED_OUT"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "errors 2 7"), 0); /* 7: REQUEST_TIMED_OUT by number */
    ck_assert_int_eq(obxt_broker_cmd(b, "down 4"), -1);
    ck_assert_int_eq(obxt_broker_cmd(b, "rtt all"), -1);
    ck_assert_int_eq(obxt_broker_cmd(b, "errors 1 NO_SUCH_ERROR"), -1);
    ck_assert_int_eq(obxt_broker_cmd(b, "topic"), -1);
    reply = obxt_broker_cmd_reply(b, "frobnicate now");
    ck_assert_ptr_nonnull(reply);
    ck_assert_msg(strncmp(reply, "error ", 6) == 0, "unknown command answered '%s'", reply);
    free(reply);
    obxt_broker_stop(b);
}
END_TEST

START_TEST(broker__sigterm_exits_zero)
{
    struct obxt_broker *b = obxt_broker_start(1);

    ck_assert_int_eq(kill(obxt_broker_pid(b), SIGTERM), 0);
    ck_assert_int_eq(obxt_proc_pid_wait_gone(obxt_broker_pid(b), 10000), 0);
    obxt_broker_stop(b); /* checks exit status 0 */
}
END_TEST

START_TEST(broker__topic_option_sets_partitions)
{
    const char *args[] = {"--topic", "pre:2", "--partitions", "5", "--topic", "five", NULL};
    struct obxt_broker *b = obxt_broker_start_args(1, args);
    const char *topics[] = {"pre", "five", NULL};
    struct obxt_producer *p = obxt_producer_new(obxt_broker_bootstrap(b));
    struct obxt_records *recs;

    obxt_producer_send(p, "pre", 1, "k", "v", NULL);
    obxt_producer_send(p, "five", 4, "k", "v", NULL);
    ck_assert_int_eq(obxt_producer_flush(p, 30000), 0);
    obxt_producer_free(p);
    ck_assert_int_eq(partition_count(obxt_broker_bootstrap(b), "pre"), 2);
    ck_assert_int_eq(partition_count(obxt_broker_bootstrap(b), "five"), 5);
    recs = obxt_consume(obxt_broker_bootstrap(b), topics, 2, 30000);
    ck_assert_uint_eq(recs->count, 2);
    check_record(&recs->recs[0], "five", 4, "k", "v", NULL);
    check_record(&recs->recs[1], "pre", 1, "k", "v", NULL);
    obxt_records_free(recs);
    obxt_broker_stop(b);
}
END_TEST

/* ---- round trip ------------------------------------------------------------------------------ */

START_TEST(roundtrip__keys_values_headers_partitions)
{
    struct obxt_broker *b = obxt_broker_start(3);
    const char *bs = obxt_broker_bootstrap(b);
    const char *topics[] = {"rt", "rt.other", "rt.same", NULL};
    const char *h1[] = {"id", "e-1", "type", "OrderCreated", NULL};
    const char *h2[] = {"id", "e-2", "empty", "", "id", "dup", NULL};
    struct obxt_producer *p;
    struct obxt_records *recs;
    const struct obxt_record *r;
    size_t len;

    ck_assert_int_eq(obxt_broker_cmd(b, "topic rt 3"), 0);
    p = obxt_producer_new(bs);
    obxt_producer_send(p, "rt", 0, "order-1", "{\"total\": 10}", h1);
    obxt_producer_send(p, "rt", 2, "order-2", NULL, h2); /* tombstone */
    obxt_producer_send(p, "rt", 2, NULL, "no key", NULL);
    obxt_producer_send(p, "rt.same", -1, "same", "first", NULL);
    obxt_producer_send(p, "rt.same", -1, "same", "second", NULL);
    ck_assert_int_eq(obxt_producer_flush(p, 30000), 0);
    ck_assert_uint_eq(obxt_producer_delivered(p), 5);
    obxt_producer_free(p);
    obxt_produce(bs, "rt.other", "k", "v");

    recs = obxt_consume(bs, topics, 6, 30000);
    obxt_records_print(recs, stderr);
    ck_assert_uint_eq(recs->count, 6);
    r = recs->recs; /* sorted by topic, partition, offset */
    check_record(&r[0], "rt", 0, "order-1", "{\"total\": 10}", h1);
    ck_assert_int_eq(r[0].offset, 0);
    check_record(&r[1], "rt", 2, "order-2", NULL, h2);
    ck_assert_int_eq(r[1].offset, 0);
    check_record(&r[2], "rt", 2, NULL, "no key", NULL);
    ck_assert_int_eq(r[2].offset, 1);
    check_record(&r[3], "rt.other", r[3].partition, "k", "v", NULL);
    /* the partitioner puts both "same" records on one partition, in order */
    check_record(&r[4], "rt.same", r[4].partition, "same", "first", NULL);
    check_record(&r[5], "rt.same", r[4].partition, "same", "second", NULL);
    ck_assert_int_eq(r[5].offset, r[4].offset + 1);

    ck_assert_ptr_eq(obxt_records_find_key(recs, "same"), &r[4]);
    ck_assert_ptr_null(obxt_records_find_key(recs, "nobody"));
    ck_assert_uint_eq(obxt_records_count_header(recs, "id", "e-2"), 1);
    ck_assert_uint_eq(obxt_records_count_header(recs, "id", "dup"), 0); /* first "id" wins */
    ck_assert_str_eq(obxt_records_header(&r[0], "type", &len), "OrderCreated");
    ck_assert_uint_eq(len, strlen("OrderCreated"));
    ck_assert_str_eq(obxt_records_header(&r[1], "empty", &len), "");
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(obxt_records_header(&r[0], "missing", &len));
    obxt_records_free(recs);
    obxt_broker_stop(b);
}
END_TEST

START_TEST(consume__waits_for_missing_topic_until_timeout)
{
    struct obxt_broker *b = obxt_broker_start(1);
    const char *topics[] = {"never", NULL};
    long long t0 = obxt_proc_now_ms();
    struct obxt_records *recs = obxt_consume(obxt_broker_bootstrap(b), topics, 1, 1500);

    ck_assert_uint_eq(recs->count, 0);
    ck_assert_int_ge(obxt_proc_now_ms() - t0, 1500);
    obxt_records_free(recs);
    ck_assert_int_eq(obxt_broker_cmd(b, "topic never 2"), 0); /* reading did not create it */
    obxt_broker_stop(b);
}
END_TEST

/* ---- outages and injected errors ------------------------------------------------------------- */

START_TEST(down__produce_waits_until_up)
{
    struct obxt_broker *b = obxt_broker_start(3);
    const char *bs = obxt_broker_bootstrap(b);
    const char *topics[] = {"outage", NULL};
    struct obxt_producer *p = obxt_producer_new(bs);
    struct obxt_records *recs;

    obxt_producer_send(p, "outage", -1, "k1", "before", NULL);
    ck_assert_int_eq(obxt_producer_flush(p, 30000), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "down all"), 0);
    obxt_producer_send(p, "outage", -1, "k1", "during", NULL);
    ck_assert_int_eq(obxt_producer_poll(p, 3000), 1);
    ck_assert_uint_eq(obxt_producer_delivered(p), 1);
    ck_assert_int_eq(obxt_broker_cmd(b, "up all"), 0);
    ck_assert_int_eq(obxt_producer_flush(p, 60000), 0);
    ck_assert_uint_eq(obxt_producer_delivered(p), 2);
    obxt_producer_free(p);

    recs = obxt_consume(bs, topics, 2, 30000);
    ck_assert_uint_eq(recs->count, 2);
    ck_assert_str_eq(recs->recs[0].value, "before");
    ck_assert_str_eq(recs->recs[1].value, "during");
    ck_assert_int_eq(recs->recs[1].partition, recs->recs[0].partition);
    obxt_records_free(recs);
    obxt_broker_stop(b);
}
END_TEST

START_TEST(rtt__delays_responses)
{
    struct obxt_broker *b = obxt_broker_start(1);
    struct obxt_producer *p = obxt_producer_new(obxt_broker_bootstrap(b));

    obxt_producer_send(p, "slow", -1, "k", "warm", NULL);
    ck_assert_int_eq(obxt_producer_flush(p, 30000), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "rtt all 1500"), 0);
    obxt_producer_send(p, "slow", -1, "k", "slow", NULL);
    ck_assert_int_eq(obxt_producer_poll(p, 700), 1); /* no answer can come before 1500 ms */
    ck_assert_int_eq(obxt_producer_flush(p, 30000), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "rtt all 0"), 0);
    obxt_producer_free(p);
    obxt_broker_stop(b);
}
END_TEST

/* The injected error reaches a producer that does not retry: proof that "errors" bites. */
START_TEST(errors__fail_the_next_produce_requests)
{
    struct obxt_broker *b = obxt_broker_start(1);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const rd_kafka_message_t *msgs[2] = {NULL, NULL};
    char payload[] = "x";
    char errstr[256];
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    rd_kafka_resp_err_t errs[2];

    rd_kafka_conf_set(conf, "bootstrap.servers", obxt_broker_bootstrap(b), errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "message.send.max.retries", "0", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "enable.idempotence", "false", errstr, sizeof(errstr));
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_ptr_nonnull(rk);
    q = rd_kafka_queue_get_main(rk);
    ck_assert_int_eq(obxt_broker_cmd(b, "topic inj 1"), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "errors 1 INVALID_REQUIRED_ACKS"), 0);
    for (int i = 0; i < 2; i++) {
        rd_kafka_event_t *ev;

        ck_assert_int_eq(
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("inj"), RD_KAFKA_V_VALUE(payload, 1),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            0);
        ev = rd_kafka_queue_poll(q, 30000);
        ck_assert_ptr_nonnull(ev);
        ck_assert_int_eq(rd_kafka_event_type(ev), RD_KAFKA_EVENT_DR);
        ck_assert_uint_eq(rd_kafka_event_message_array(ev, &msgs[i], 1), 1);
        errs[i] = msgs[i]->err;
        rd_kafka_event_destroy(ev);
    }
    ck_assert_msg(errs[0] == RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS,
                  "first delivery: expected the injected error, got %s",
                  rd_kafka_err2name(errs[0]));
    ck_assert_msg(errs[1] == RD_KAFKA_RESP_ERR_NO_ERROR, "second delivery: %s",
                  rd_kafka_err2name(errs[1]));
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    obxt_broker_stop(b);
}
END_TEST

START_TEST(errors__idempotent_producer_delivers_exactly_once_in_order)
{
    enum { N = 200 };
    struct obxt_broker *b = obxt_broker_start(3);
    const char *bs = obxt_broker_bootstrap(b);
    const char *topics[] = {"eo", NULL};
    struct obxt_producer *p = obxt_producer_new(bs);
    struct obxt_records *recs;
    char key[32], value[32];

    obxt_producer_send(p, "eo", -1, "warmup", "-1", NULL);
    ck_assert_int_eq(obxt_producer_flush(p, 30000), 0);
    ck_assert_int_eq(obxt_broker_cmd(b, "errors 5"), 0);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i % 16);
        snprintf(value, sizeof(value), "%d", i);
        obxt_producer_send(p, "eo", -1, key, value, NULL);
        if (i == N / 2)
            ck_assert_int_eq(obxt_broker_cmd(b, "errors 5 REQUEST_TIMED_OUT"), 0);
    }
    ck_assert_int_eq(obxt_producer_flush(p, 60000), 0);
    obxt_producer_free(p);

    recs = obxt_consume(bs, topics, N + 1, 30000);
    ck_assert_uint_eq(recs->count, N + 1);
    ck_assert_msg(obxt_records_find_key(recs, "warmup") != NULL, "warmup record missing");
    for (int i = 0; i < N; i++) {
        size_t seen = 0;

        snprintf(value, sizeof(value), "%d", i);
        for (size_t r = 0; r < recs->count; r++)
            seen += recs->recs[r].value && strcmp(recs->recs[r].value, value) == 0;
        ck_assert_msg(seen == 1, "record %d arrived %zu times", i, seen);
    }
    for (size_t r = 1; r < recs->count; r++) {
        const struct obxt_record *a = &recs->recs[r - 1], *c = &recs->recs[r];

        if (a->partition != c->partition)
            continue;
        ck_assert_int_eq(c->offset, a->offset + 1);
        ck_assert_msg(atoi(c->value) > atoi(a->value), "partition %d: %s before %s",
                      (int)c->partition, a->value, c->value);
    }
    obxt_records_free(recs);
    obxt_broker_stop(b);
}
END_TEST

/* ---- obx-consume ------------------------------------------------------------------------------
 */

/* Runs obx-consume with argv (after the program name); returns its stdout lines parsed as JSON
 * in a new array and its exit code in *code. */
static json_t *
run_consume(const char *const args[], int *code)
{
    const char *argv[32] = {obxt_env("OBX_CONSUME")};
    struct obxt_proc *proc;
    json_t *lines = json_array();
    char *line;
    size_t n = 1;

    for (; args[n - 1] != NULL; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    proc = obxt_proc_spawn(argv, NULL, NULL, OBXT_PROC_STDIN_NULL);
    ck_assert_ptr_nonnull(proc);
    while ((line = obxt_proc_read_line(proc, 30000)) != NULL) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);

        ck_assert_msg(j != NULL, "obx-consume printed no JSON: '%s' (%s)", line, jerr.text);
        json_array_append_new(lines, j);
        free(line);
    }
    ck_assert_int_eq(obxt_proc_wait(proc, 30000, NULL), 0);
    *code = obxt_proc_exit_code(proc);
    obxt_proc_free(proc);
    return lines;
}

START_TEST(obx_consume__prints_records_as_json)
{
    struct obxt_broker *b = obxt_broker_start(1);
    const char *bs = obxt_broker_bootstrap(b);
    const char *hdrs[] = {"id", "7", "bin", "\xff\x01", NULL};
    const char *args[] = {"-b", bs, "-t", "js", "-n", "2", "-T", "30000", "-i", "300", NULL};
    const char *short_args[] = {"-b", bs, "-t", "js", "-n", "3", "-T", "1500", NULL};
    const char *bad_args[] = {"-b", bs, NULL};
    struct obxt_producer *p = obxt_producer_new(bs);
    json_t *lines, *rec;
    int code;

    ck_assert_int_eq(obxt_broker_cmd(b, "topic js 1"), 0);
    obxt_producer_send(p, "js", 0, "caf\xc3\xa9", "{\"a\": 1}", hdrs);
    obxt_producer_send(p, "js", 0, "\xfe", NULL, NULL);
    ck_assert_int_eq(obxt_producer_flush(p, 30000), 0);
    obxt_producer_free(p);

    lines = run_consume(args, &code);
    ck_assert_int_eq(code, 0);
    ck_assert_uint_eq(json_array_size(lines), 2);
    rec = json_array_get(lines, 0);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "topic")), "js");
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "partition")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "offset")), 0);
    ck_assert_int_gt(json_integer_value(json_object_get(rec, "timestamp")), 0);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "key")), "caf\xc3\xa9");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "value")), "{\"a\": 1}");
    ck_assert_str_eq(
        json_string_value(json_array_get(json_array_get(json_object_get(rec, "headers"), 0), 1)),
        "7");
    ck_assert_str_eq(
        json_string_value(json_object_get(
            json_array_get(json_array_get(json_object_get(rec, "headers"), 1), 1), "base64")),
        "/wE=");
    rec = json_array_get(lines, 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(rec, "key"), "base64")),
                     "/g==");
    ck_assert(json_is_null(json_object_get(rec, "value")));
    ck_assert_uint_eq(json_array_size(json_object_get(rec, "headers")), 0);
    json_decref(lines);

    lines = run_consume(short_args, &code);
    ck_assert_int_eq(code, 1); /* only 2 of 3 */
    ck_assert_uint_eq(json_array_size(lines), 2);
    json_decref(lines);
    lines = run_consume(bad_args, &code);
    ck_assert_int_eq(code, 2);
    json_decref(lines);
    obxt_broker_stop(b);
}
END_TEST

static Suite *
broker_suite(void)
{
    Suite *s = suite_create("broker");
    TCase *tc;

    tc = tcase_create("broker");
    tcase_add_test(tc, broker__bootstrap_and_commands);
    tcase_add_test(tc, broker__sigterm_exits_zero);
    tcase_add_test(tc, broker__topic_option_sets_partitions);
    suite_add_tcase(s, tc);
    tc = tcase_create("roundtrip");
    tcase_add_test(tc, roundtrip__keys_values_headers_partitions);
    tcase_add_test(tc, consume__waits_for_missing_topic_until_timeout);
    suite_add_tcase(s, tc);
    tc = tcase_create("faults");
    tcase_add_test(tc, down__produce_waits_until_up);
    tcase_add_test(tc, rtt__delays_responses);
    tcase_add_test(tc, errors__fail_the_next_produce_requests);
    tcase_add_test(tc, errors__idempotent_producer_delivers_exactly_once_in_order);
    suite_add_tcase(s, tc);
    tc = tcase_create("obx_consume");
    tcase_add_test(tc, obx_consume__prints_records_as_json);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(broker_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
