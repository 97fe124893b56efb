/* test_deliver.c - end-to-end tests of the record outboxd makes of an outbox row (issue 4,
 * DESIGN.md "The record"): the defaults and every option of the router table, read back by a
 * real Kafka consumer from a real broker after real inserts into a real PostgreSQL; and the
 * outbox.invalid.behavior policies (dlq, skip, fail) with the slot position they leave.
 *
 * Each test starts its own server, broker and outboxd (tests/support/obxtest_outboxd.h). */
#include "obxtest.h"
#include "obxtest_outboxd.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONSUME_MS 30000
#define EXIT_MS 30000
#define AUTO_PARTITIONS 4 /* partitions of topics the broker creates on first use */

static const struct obxt_stack_opts commit_ts_opts = {
    .pg_settings = (const char *const[]){"track_commit_timestamp=on", NULL},
};

/* ---- helpers --------------------------------------------------------------------------------- */

/* Kafka's murmur2 (the Java client's Utils.murmur2), which librdkafka's murmur2_random
 * partitioner reproduces. */
static uint32_t
murmur2(const void *key, size_t len)
{
    const uint32_t m = 0x5bd1e995;
    const unsigned char *data = key;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;

    for (; len >= 4; len -= 4, data += 4) {
        uint32_t k = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                     (uint32_t)data[3] << 24;

        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len) {
    case 3:
        h ^= (uint32_t)data[2] << 16;
        /* fallthrough */
    case 2:
        h ^= (uint32_t)data[1] << 8;
        /* fallthrough */
    case 1:
        h ^= data[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

/* The partition the Java producer (and Debezium) picks for key. */
static int32_t
java_partition(const char *key, int32_t partitions)
{
    return (int32_t)((murmur2(key, strlen(key)) & 0x7fffffff) % (uint32_t)partitions);
}

/* ---- the defaults ---------------------------------------------------------------------------- */

START_TEST(record__defaults)
{
    struct obxt_stack *s = obxt_stack_start(&commit_ts_opts);
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, NULL);
    const char *topics[] = {"outbox.event.order", NULL};
    struct obxt_records *recs;
    long long before = obxt_wall_ms(), after;
    char *ids[8];

    for (int i = 0; i < 8; i++)
        ids[i] = obxt_pg_query_value(s->pg,
                                     "INSERT INTO outbox (aggregatetype, aggregateid, type, "
                                     "payload) VALUES ('order', 'order-%d', 'OrderPlaced', "
                                     "'{\"total\": 42.50, \"items\": [1, 2], \"n\": %d}') "
                                     "RETURNING id::text",
                                     i, i);
    recs = obxt_stack_consume_exactly(s, topics, 8);
    after = obxt_wall_ms();
    for (int i = 0; i < 8; i++) {
        char key[32];
        const struct obxt_record *rec;
        char *payload, *commit_ms;

        snprintf(key, sizeof(key), "order-%d", i);
        rec = obxt_records_require(recs, "outbox.event.order", key);
        payload =
            obxt_pg_query_value(s->pg, "SELECT payload::text FROM outbox WHERE id = '%s'", ids[i]);
        ck_assert_uint_eq(rec->value_len, strlen(payload));
        ck_assert_str_eq(rec->value, payload);
        /* header id = the uuid, and nothing else by default */
        ck_assert_uint_eq(rec->header_count, 1);
        obxt_record_assert_header(rec, "id", ids[i]);
        /* the partition a Java producer would pick for the key */
        ck_assert_int_eq(rec->partition, java_partition(key, AUTO_PARTITIONS));
        /* timestamp = the commit time, to the millisecond, and close to now */
        commit_ms = obxt_pg_query_value(s->pg,
                                        "SELECT floor(extract(epoch FROM "
                                        "pg_xact_commit_timestamp(xmin)) * 1000)::bigint::text "
                                        "FROM outbox WHERE id = '%s'",
                                        ids[i]);
        ck_assert_int_eq(rec->timestamp, atoll(commit_ms));
        ck_assert_int_ge(rec->timestamp, before - 3000);
        ck_assert_int_le(rec->timestamp, after + 3000);
        free(commit_ms);
        free(payload);
        free(ids[i]);
    }
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* ---- columns and topic from options ------------------------------------------------------------
 */

START_TEST(record__custom_table_fields_and_topic)
{
    struct obxt_stack_opts opts = {.no_outbox_table = true};
    struct obxt_stack *s = obxt_stack_start(&opts);
    struct obxt_outboxd *o;
    const char *topics[] = {"app.billing.events.billing", "app.shipping.events.shipping", NULL};
    const struct obxt_record *rec;
    struct obxt_records *recs;

    obxt_pg_exec(s->pg, "CREATE TABLE public.events (event_id text PRIMARY KEY, "
                        "stream text NOT NULL, entity text NOT NULL, kind text, body jsonb, "
                        "payload jsonb, aggregateid text, id text)");
    /* the default columns exist too, holding other values: the options must win */
    o = obxt_outboxd_start_streaming(
        s, "postgres.tables=public.events", "outbox.table.field.event.id=event_id",
        "outbox.table.field.event.key=entity", "outbox.table.field.event.payload=body",
        "outbox.route.by.field=stream",
        "outbox.route.topic.replacement=app.${routedByValue}.events.${routedByValue}", NULL);
    obxt_pg_exec(s->pg, "INSERT INTO events VALUES ('evt-1', 'billing', 'invoice-9', 'Issued', "
                        "'{\"amount\": 10}', '{\"wrong\": 1}', 'wrong-key', 'wrong-id'), "
                        "('evt-2', 'shipping', 'parcel-3', 'Sent', '[1, 2]', NULL, NULL, NULL)");
    recs = obxt_stack_consume_exactly(s, topics, 2);
    rec = obxt_records_require(recs, "app.billing.events.billing", "invoice-9");
    ck_assert_str_eq(rec->value, "{\"amount\": 10}");
    ck_assert_uint_eq(rec->header_count, 1);
    obxt_record_assert_header(rec, "id", "evt-1");
    rec = obxt_records_require(recs, "app.shipping.events.shipping", "parcel-3");
    ck_assert_str_eq(rec->value, "[1, 2]");
    obxt_record_assert_header(rec, "id", "evt-2");
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(record__timestamp_column)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o;
    const char *topics[] = {"outbox.event.ts", NULL};
    struct obxt_records *recs;
    const struct obxt_record *rec;
    long long before, after;
    char *expect;

    obxt_pg_exec(s->pg, "ALTER TABLE outbox ADD COLUMN created_at timestamptz, "
                        "ADD COLUMN local_at timestamp");
    o = obxt_outboxd_start_streaming(s, "outbox.table.field.event.timestamp=created_at", NULL);
    before = obxt_wall_ms();
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, "
                        "created_at) VALUES "
                        "('ts', 'explicit', 'T', '{}', '2021-03-04 05:06:07.891+02'), "
                        "('ts', 'null', 'T', '{}', NULL)");
    recs = obxt_stack_consume_exactly(s, topics, 2);
    after = obxt_wall_ms();
    expect = obxt_pg_query_value(s->pg, "SELECT floor(extract(epoch FROM created_at) * 1000)"
                                        "::bigint::text FROM outbox WHERE aggregateid = "
                                        "'explicit'");
    rec = obxt_records_require(recs, "outbox.event.ts", "explicit");
    ck_assert_int_eq(rec->timestamp, atoll(expect));
    ck_assert_int_eq(rec->timestamp, 1614827167891LL);
    /* SQL NULL falls back to the commit time */
    rec = obxt_records_require(recs, "outbox.event.ts", "null");
    ck_assert_int_ge(rec->timestamp, before - 3000);
    ck_assert_int_le(rec->timestamp, after + 3000);
    free(expect);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);

    /* timestamp without time zone: taken as UTC */
    o = obxt_outboxd_start_streaming(s, "outbox.table.field.event.timestamp=local_at", NULL);
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, "
                        "local_at) VALUES ('ts', 'local', 'T', '{}', '1999-12-31 23:59:59.5')");
    recs = obxt_stack_consume_exactly(s, topics, 3);
    rec = obxt_records_require(recs, "outbox.event.ts", "local");
    ck_assert_int_eq(rec->timestamp, 946684799500LL);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(record__additional_placements)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o;
    const char *topics[] = {"outbox.event.order", NULL};
    struct obxt_records *recs;
    const struct obxt_record *rec;
    char *payload, *expect;

    obxt_pg_exec(s->pg, "ALTER TABLE outbox ADD COLUMN tenant text, ADD COLUMN version int, "
                        "ADD COLUMN part int");
    o = obxt_outboxd_start_streaming(s,
                                     "outbox.table.fields.additional.placement=type:header:"
                                     "eventType,tenant:header,version:envelope,type:envelope:"
                                     "eventType,part:partition",
                                     NULL);
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, tenant, "
                        "version, part) VALUES "
                        "('order', 'o-1', 'OrderPlaced', '{\"n\": 1, \"s\": \"x\"}', 'acme', 3, 2),"
                        "('order', 'o-2', 'Order\"Paid', '{\"n\": 2}', NULL, NULL, 3),"
                        "('order', 'o-3', 'OrderShipped', NULL, 'acme', 4, 1),"
                        "('order', 'o-4', 'OrderPlaced', '{\"n\": 4}', 'beta', 5, NULL)");
    recs = obxt_stack_consume_exactly(s, topics, 4);

    rec = obxt_records_require(recs, "outbox.event.order", "o-1");
    payload = obxt_pg_query_value(s->pg, "SELECT payload::text FROM outbox WHERE aggregateid = "
                                         "'o-1'");
    ck_assert_int_gt(asprintf(&expect,
                              "{\"payload\": %s, \"version\": 3, \"eventType\": \"OrderPlaced\"}",
                              payload),
                     0);
    ck_assert_str_eq(rec->value, expect);
    ck_assert_uint_eq(rec->header_count, 3);
    obxt_record_assert_header(rec, "eventType", "OrderPlaced");
    obxt_record_assert_header(rec, "tenant", "acme");
    ck_assert_int_eq(rec->partition, 2);
    free(expect);
    free(payload);

    /* SQL NULL: null envelope member, null header value; a quote in a value is escaped */
    rec = obxt_records_require(recs, "outbox.event.order", "o-2");
    ck_assert_str_eq(
        rec->value,
        "{\"payload\": {\"n\": 2}, \"version\": null, \"eventType\": \"Order\\\"Paid\"}");
    obxt_record_assert_header(rec, "eventType", "Order\"Paid");
    obxt_record_assert_header(rec, "tenant", NULL);
    ck_assert_int_eq(rec->partition, 3);

    /* a NULL payload stays a tombstone even with envelope placements */
    rec = obxt_records_require(recs, "outbox.event.order", "o-3");
    ck_assert_ptr_null(rec->value);
    ck_assert_int_eq(rec->partition, 1);

    /* a NULL partition column leaves the choice to the partitioner */
    rec = obxt_records_require(recs, "outbox.event.order", "o-4");
    ck_assert_int_eq(rec->partition, java_partition("o-4", AUTO_PARTITIONS));
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(record__headers_column)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o;
    const char *topics[] = {"outbox.event.h", NULL};
    struct obxt_records *recs;
    const struct obxt_record *rec;

    o = obxt_outboxd_start_streaming(s, "outbox.table.field.event.headers=headers", NULL);
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, headers) "
                        "VALUES ('h', 'with', 'T', '{}', '{\"traceparent\": \"00-4bf9-01\", "
                        "\"retry\": 2, \"flag\": true, \"ctx\": {\"b\": [1,2]}, \"none\": null, "
                        "\"esc\": \"a\\\"b\\u00e9\"}'), "
                        "('h', 'without', 'T', '{}', NULL)");
    recs = obxt_stack_consume_exactly(s, topics, 2);
    rec = obxt_records_require(recs, "outbox.event.h", "with");
    ck_assert_uint_eq(rec->header_count, 7);
    ck_assert_str_eq(rec->headers[0].name, "id");
    obxt_record_assert_header(rec, "traceparent", "00-4bf9-01");
    obxt_record_assert_header(rec, "retry", "2");
    obxt_record_assert_header(rec, "flag", "true");
    obxt_record_assert_header(rec, "ctx", "{\"b\": [1, 2]}");
    obxt_record_assert_header(rec, "none", NULL);
    obxt_record_assert_header(rec, "esc", "a\"b\xc3\xa9");
    rec = obxt_records_require(recs, "outbox.event.h", "without");
    ck_assert_uint_eq(rec->header_count, 1);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* Checks the source headers of rec: outbox.xid = xid, outbox.seq = seq, outbox.lsn strictly
 * between lo and hi (the WAL its transaction wrote). Returns outbox.lsn (malloc'd). */
static char *
check_source_headers(struct obxt_stack *s, const struct obxt_record *rec, const char *xid, int seq,
                     const char *lo, const char *hi)
{
    const char *lsn = obxt_records_header(rec, "outbox.lsn", NULL);
    char seq_text[16];

    snprintf(seq_text, sizeof(seq_text), "%d", seq);
    obxt_record_assert_header(rec, "outbox.xid", xid);
    obxt_record_assert_header(rec, "outbox.seq", seq_text);
    ck_assert_ptr_nonnull(lsn);
    ck_assert_int_gt(obxt_stack_lsn_diff(s, lsn, lo), 0);
    ck_assert_int_lt(obxt_stack_lsn_diff(s, lsn, hi), 0);
    return strdup(lsn);
}

/* Runs an INSERT ... RETURNING 1 (one statement, one transaction) and returns its xid. */
static char *
insert_returning_xid(struct obxt_stack *s, const char *insert)
{
    return obxt_pg_query_value(
        s->pg, "WITH ins AS (%s RETURNING 1) SELECT pg_current_xact_id()::text FROM ins LIMIT 1",
        insert);
}

START_TEST(record__source_headers)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, "outbox.headers.source=true", NULL);
    const char *topics[] = {"outbox.event.src", NULL};
    struct obxt_records *recs;
    char *before, *between, *after, *xid1, *xid2, *lsn = NULL, *lsn2 = NULL;
    int seen = 0;

    before = obxt_stack_wal_lsn(s);
    /* three rows in order in one transaction, then one row in another */
    xid1 = insert_returning_xid(s, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                                   "SELECT 'src', 'k', 'T', jsonb_build_object('i', g) "
                                   "FROM generate_series(0, 2) g ORDER BY g");
    between = obxt_stack_wal_lsn(s);
    xid2 = insert_returning_xid(s, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                                   "VALUES ('src', 'k2', 'T', '{\"i\": 9}')");
    after = obxt_stack_wal_lsn(s);
    recs = obxt_stack_consume_exactly(s, topics, 4);
    for (size_t i = 0; i < recs->count; i++) {
        const struct obxt_record *rec = &recs->recs[i];
        char expect_value[32], *l;

        if (strcmp(rec->key, "k2") == 0) {
            lsn2 = check_source_headers(s, rec, xid2, 0, between, after);
            continue;
        }
        /* key k: one partition, so array order is delivery order: seq 0, 1, 2 = payload i,
         * and one commit LSN for the whole transaction */
        l = check_source_headers(s, rec, xid1, seen, before, between);
        snprintf(expect_value, sizeof(expect_value), "{\"i\": %d}", seen);
        ck_assert_str_eq(rec->value, expect_value);
        if (lsn == NULL)
            lsn = l;
        else
            ck_assert_str_eq(l, lsn);
        if (l != lsn)
            free(l);
        seen++;
    }
    ck_assert_int_eq(seen, 3);
    ck_assert_ptr_nonnull(lsn2);
    ck_assert_int_gt(obxt_stack_lsn_diff(s, lsn2, lsn), 0);
    free(lsn2);
    free(lsn);
    free(before);
    free(between);
    free(after);
    free(xid1);
    free(xid2);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* ---- outbox.invalid.behavior ------------------------------------------------------------------
 */

/* A table like the outbox without NOT NULL, so a row can lack its routing value. */
static struct obxt_stack *
loose_stack(void)
{
    struct obxt_stack_opts opts = {.no_outbox_table = true};
    struct obxt_stack *s = obxt_stack_start(&opts);

    obxt_pg_exec(s->pg, "CREATE TABLE public.loose (id uuid PRIMARY KEY DEFAULT "
                        "gen_random_uuid(), aggregatetype text, aggregateid text, type text, "
                        "payload jsonb)");
    return s;
}

/* good-1; (good-2, bad, good-3) in one transaction; good-4. */
static void
insert_good_bad_good(struct obxt_stack *s)
{
    obxt_pg_exec(s->pg, "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('ok', 'good-1', 'T', '{\"n\": 1}')");
    obxt_pg_exec(s->pg, "BEGIN;"
                        "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('ok', 'good-2', 'T', '{\"n\": 2}');"
                        "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES (NULL, 'bad-1', 'T', '{\"n\": 0}');"
                        "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('ok', 'good-3', 'T', '{\"n\": 3}');"
                        "COMMIT");
    obxt_pg_exec(s->pg, "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('ok', 'good-4', 'T', '{\"n\": 4}')");
}

static void
assert_good_rows(const struct obxt_records *recs)
{
    for (int i = 1; i <= 4; i++) {
        char key[16], value[16];
        const struct obxt_record *rec;

        snprintf(key, sizeof(key), "good-%d", i);
        snprintf(value, sizeof(value), "{\"n\": %d}", i);
        rec = obxt_records_require(recs, "outbox.event.ok", key);
        ck_assert_str_eq(rec->value, value);
    }
}

START_TEST(invalid__dlq_is_default)
{
    struct obxt_stack *s = loose_stack();
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, "postgres.tables=public.loose", NULL);
    const char *topics[] = {"outbox.event.ok", "outbox.dlq", NULL};
    struct obxt_records *recs;
    const struct obxt_record *rec;
    const char *error;

    insert_good_bad_good(s);
    recs = obxt_stack_consume_exactly(s, topics, 5);
    assert_good_rows(recs);
    rec = obxt_records_require(recs, "outbox.dlq", "bad-1");
    error = obxt_records_header(rec, "error", NULL);
    ck_assert_msg(error != NULL && strstr(error, "column \"aggregatetype\"") != NULL &&
                      strstr(error, "public.loose") != NULL && strstr(error, "NULL") != NULL,
                  "error header: %s", error ? error : "(none)");
    /* the value shows the row as it was */
    ck_assert_ptr_nonnull(strstr(rec->value, "\"aggregatetype\": null"));
    ck_assert_ptr_nonnull(strstr(rec->value, "\"aggregateid\": \"bad-1\""));
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(invalid__skip)
{
    struct obxt_stack *s = loose_stack();
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, "postgres.tables=public.loose",
                                                          "outbox.invalid.behavior=skip", NULL);
    const char *topics[] = {"outbox.event.ok", "outbox.dlq", NULL};
    const char *log = strdup(obxt_outboxd_log(o));
    struct obxt_records *recs;

    insert_good_bad_good(s);
    recs = obxt_stack_consume_exactly(s, topics, 4);
    assert_good_rows(recs);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    /* outboxd's own count agrees: nothing dead-lettered, one skipped */
    ck_assert_msg(obxt_proc_log_contains(log, "4 events sent, 4 acknowledged, 0 dead-lettered, 1 "
                                              "skipped"),
                  "no such stats line in %s", log);
    free((char *)log);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(invalid__fail_stops_without_confirming)
{
    struct obxt_stack *s = loose_stack();
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, "postgres.tables=public.loose",
                                                          "outbox.invalid.behavior=fail", NULL);
    const char *topics[] = {"outbox.event.ok", NULL};
    struct obxt_records *recs;
    char *good_end, *bad_end, *confirmed;
    int code;

    obxt_stack_probe_create(s, "probe");
    obxt_pg_exec(s->pg, "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('ok', 'good-1', 'T', '{\"n\": 1}')");
    good_end = obxt_stack_probe_last_commit(s, "probe");
    ck_assert_ptr_nonnull(good_end);
    /* the good transaction is delivered and confirmed before the bad one comes */
    ck_assert_msg(obxt_stack_wait_confirmed(s, OBXT_SLOT, good_end, 15000),
                  "the slot did not reach %s", good_end);
    obxt_pg_exec(s->pg, "BEGIN;"
                        "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('ok', 'good-2', 'T', '{\"n\": 2}');"
                        "INSERT INTO loose (aggregatetype, aggregateid, type, payload) "
                        "VALUES (NULL, 'bad-1', 'T', '{\"n\": 0}');"
                        "COMMIT");
    bad_end = obxt_stack_probe_last_commit(s, "probe");
    code = obxt_outboxd_wait_exit(o, EXIT_MS);
    if (code <= 0)
        obxt_outboxd_print_log(o, stderr);
    ck_assert_msg(code > 0, "outboxd: exit code %d (-1: still running), expected a failure", code);
    ck_assert_msg(obxt_proc_log_contains(obxt_outboxd_log(o), "column \"aggregatetype\" "
                                                              "(outbox.route.by.field) of table "
                                                              "public.loose is NULL"),
                  "the log %s does not name the problem", obxt_outboxd_log(o));
    /* not confirmed past the bad transaction: it will be decoded again */
    confirmed = obxt_stack_confirmed(s, OBXT_SLOT);
    ck_assert_ptr_nonnull(confirmed);
    ck_assert_msg(obxt_stack_lsn_diff(s, confirmed, bad_end) < 0,
                  "confirmed_flush_lsn %s is not before the bad transaction's end %s", confirmed,
                  bad_end);
    ck_assert_int_ge(obxt_stack_lsn_diff(s, confirmed, good_end), 0);
    obxt_outboxd_free(o);

    /* proof: with skip, the same transaction is replayed and its good row delivered */
    o = obxt_outboxd_start_streaming(s, "postgres.tables=public.loose",
                                     "outbox.invalid.behavior=skip", NULL);
    recs = obxt_consume(obxt_stack_bootstrap(s), topics, 2, CONSUME_MS);
    ck_assert_ptr_nonnull(obxt_records_find_key(recs, "good-1"));
    ck_assert_ptr_nonnull(obxt_records_find_key(recs, "good-2"));
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_probe_drop(s, "probe");
    free(confirmed);
    free(good_end);
    free(bad_end);
    obxt_stack_stop(s);
}
END_TEST

static Suite *
deliver_suite(void)
{
    Suite *s = suite_create("deliver");
    TCase *record = tcase_create("record");
    TCase *invalid = tcase_create("invalid");

    tcase_add_unchecked_fixture(record, obxt_stack_fixture_setup, obxt_stack_fixture_teardown);
    tcase_set_timeout(record, 90);
    tcase_add_test(record, record__defaults);
    tcase_add_test(record, record__custom_table_fields_and_topic);
    tcase_add_test(record, record__timestamp_column);
    tcase_add_test(record, record__additional_placements);
    tcase_add_test(record, record__headers_column);
    tcase_add_test(record, record__source_headers);
    suite_add_tcase(s, record);

    tcase_add_unchecked_fixture(invalid, obxt_stack_fixture_setup, obxt_stack_fixture_teardown);
    tcase_set_timeout(invalid, 90);
    tcase_add_test(invalid, invalid__dlq_is_default);
    tcase_add_test(invalid, invalid__skip);
    tcase_add_test(invalid, invalid__fail_stops_without_confirming);
    suite_add_tcase(s, invalid);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(deliver_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
