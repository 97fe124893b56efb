/* test_deliver_stream.c - end-to-end tests of what outboxd delivers from the stream of committed
 * transactions (issue 4): rolled-back, multi-row and insert-then-delete transactions, updates
 * and deletes that must be ignored; payloads that must arrive byte for byte (1 MiB, unicode,
 * bytea, NULL) and one too large for Kafka that must not be lost; per-key order across 10,000
 * events on several topics; logical messages on and off; an idle outbox next to a busy table, which
 * must not pin WAL; and the slot held behind Kafka's acknowledgement while the broker is down.
 *
 * Each test starts its own server, broker and outboxd (tests/support/obxtest_outboxd.h). */
#include "obxtest.h"
#include "obxtest_outboxd.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONSUME_MS 30000
#define MIB (1024LL * 1024)

/* ---- transactions ------------------------------------------------------------------------ */

START_TEST(txn__rollback_multi_row_and_insert_then_delete)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, NULL);
    const char *topics[] = {"outbox.event.txn", NULL};
    struct obxt_records *recs;
    int next[4] = {0, 1, 2, 3}, last = 0;

    /* rolled back: nothing */
    obxt_pg_exec(s->pg, "BEGIN; INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                        "SELECT 'txn', 'rolled-back', 'T', '{}' FROM generate_series(1, 5); "
                        "ROLLBACK");
    /* 200 rows in one transaction, four keys interleaved, numbered in insert order */
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                        "SELECT 'txn', 'k' || (g %% 4), 'T', jsonb_build_object('g', g) "
                        "FROM generate_series(0, 199) g ORDER BY g");
    /* insert then delete in one transaction: delivered, and the table is left empty */
    obxt_pg_exec(s->pg, "BEGIN; INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('txn', 'deleted', 'T', '{\"g\": 1000}'), "
                        "('txn', 'deleted', 'T', '{\"g\": 1001}'); "
                        "DELETE FROM outbox WHERE aggregateid = 'deleted'; COMMIT");
    ck_assert_int_eq(
        obxt_pg_query_int(s->pg, "SELECT count(*) FROM outbox WHERE aggregateid = 'deleted'"), 0);
    recs = obxt_stack_consume_exactly(s, topics, 202);
    ck_assert_ptr_null(obxt_records_find_key(recs, "rolled-back"));
    for (size_t i = 0; i < recs->count; i++) {
        const struct obxt_record *rec = &recs->recs[i];
        int g = -1;

        ck_assert_int_eq(sscanf(rec->value, "{\"g\": %d}", &g), 1);
        if (strcmp(rec->key, "deleted") == 0) {
            /* same key: same partition, in order */
            ck_assert_int_eq(g, last == 0 ? 1000 : 1001);
            last = g;
            continue;
        }
        ck_assert_int_eq(rec->key[0], 'k');
        ck_assert_int_eq(g % 4, rec->key[1] - '0');
        /* each key's rows in insert order, none missing */
        ck_assert_int_eq(g, next[g % 4]);
        next[g % 4] = g + 4;
    }
    ck_assert_int_eq(last, 1001);
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(next[k], 200 + k);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(txn__updates_deletes_truncate_ignored)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o;
    const char *topics[] = {"outbox.event.upd", NULL};
    struct obxt_records *recs;

    /* a publication that sends everything, with whole old rows: outboxd itself must ignore
     * what is not an insert */
    obxt_pg_exec(s->pg, "ALTER TABLE outbox REPLICA IDENTITY FULL; "
                        "CREATE PUBLICATION outboxd FOR TABLE public.outbox");
    o = obxt_outboxd_start_streaming(s, NULL);
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                        "SELECT 'upd', 'k' || g, 'T', jsonb_build_object('v', 1) "
                        "FROM generate_series(1, 3) g");
    recs = obxt_stack_consume_exactly(s, topics, 3);
    obxt_records_free(recs);
    obxt_pg_exec(s->pg, "UPDATE outbox SET payload = '{\"v\": 2}', aggregateid = 'updated'");
    obxt_pg_exec(s->pg, "DELETE FROM outbox WHERE aggregateid = 'updated'");
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('upd', 'k4', 'T', '{}'); TRUNCATE outbox");
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                        "VALUES ('upd', 'last', 'T', '{}')");
    /* the three inserts, k4 and last: nothing for the update, the delete or the truncate */
    recs = obxt_stack_consume_exactly(s, topics, 5);
    ck_assert_ptr_null(obxt_records_find_key(recs, "updated"));
    obxt_records_require(recs, "outbox.event.upd", "k4");
    obxt_records_require(recs, "outbox.event.upd", "last");
    for (size_t i = 0; i < recs->count; i++)
        ck_assert_str_ne(recs->recs[i].value, "{\"v\": 2}");
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* ---- payloads ---------------------------------------------------------------------------- */

/* The record for key equals SELECT payload::text of the row with that aggregateid, byte for
 * byte. */
static void
assert_payload_text(struct obxt_stack *s, const struct obxt_records *recs, const char *topic,
                    const char *key)
{
    const struct obxt_record *rec = obxt_records_require(recs, topic, key);
    char *text = obxt_pg_query_value(s->pg,
                                     "SELECT payload::text FROM outbox "
                                     "WHERE aggregateid = '%s'",
                                     key);

    ck_assert_ptr_nonnull(rec->value);
    ck_assert_uint_eq(rec->value_len, strlen(text));
    ck_assert_msg(memcmp(rec->value, text, rec->value_len) == 0, "payload of %s differs", key);
    free(text);
}

START_TEST(payload__large_unicode_null)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    /* librdkafka's message.max.bytes (1000000 by default) must make room for 1 MiB */
    struct obxt_outboxd *o =
        obxt_outboxd_start_streaming(s, "kafka.message.max.bytes=4000000", NULL);
    const char *topics[] = {"outbox.event.pl", NULL};
    struct obxt_records *recs;
    const struct obxt_record *rec;

    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
                        "('pl', 'big', 'T', jsonb_build_object('blob', "
                        "repeat('0123456789abcdef', 65536), 'n', 1))");
    obxt_pg_exec(
        s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
               "('pl', 'unicode', 'T', '{\"s\": \"h\u00e9llo w\u00f6rld \u2713 "
               "\u65e5\u672c\u8a9e \U0001F389\", \"esc\": \"tab\\there \\\"q\\\" \\\\ "
               "\\u00e9 \\ud83d\\ude00 \\u0001\", \"num\": 1.50, \"big\": 12345678901234567890}'),"
               "('pl', '\u043a\u043b\u044e\u0447-1', 'T', '[\"\u043a\"]'),"
               "('pl', 'null', 'T', NULL)");
    recs = obxt_stack_consume_exactly(s, topics, 4);
    assert_payload_text(s, recs, "outbox.event.pl", "big");
    rec = obxt_records_require(recs, "outbox.event.pl", "big");
    ck_assert_uint_gt(rec->value_len, MIB);
    assert_payload_text(s, recs, "outbox.event.pl", "unicode");
    /* a unicode key arrives as its UTF-8 bytes */
    rec = obxt_records_require(recs, "outbox.event.pl", "\u043a\u043b\u044e\u0447-1");
    ck_assert_str_eq(rec->value, "[\"\u043a\"]");
    /* NULL payload: a tombstone (null value), still with its key and id */
    rec = obxt_records_require(recs, "outbox.event.pl", "null");
    ck_assert_ptr_null(rec->value);
    ck_assert_ptr_nonnull(obxt_records_header(rec, "id", NULL));
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* A record over librdkafka's default message.max.bytes (1000000) cannot be sent, nor can its
 * dead letter (same value): it must not be lost silently. outboxd sends the dead letter once more
 * without its value, so it reaches the dead-letter topic with its key and reason, and outboxd
 * keeps running and delivers what follows. */
START_TEST(payload__oversized_record_not_lost)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, NULL);
    const char *dlq_topics[] = {"outbox.dlq", NULL};
    const char *pl_topics[] = {"outbox.event.pl", NULL};
    struct obxt_records *recs;
    const struct obxt_record *rec;
    const char *why;
    size_t why_len = 0;

    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
                        "('pl', 'big', 'T', jsonb_build_object('blob', "
                        "repeat('0123456789abcdef', 65536)))");
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
                        "('pl', 'small', 'T', '{}')");
    recs = obxt_stack_consume_exactly(s, dlq_topics, 1);
    rec = &recs->recs[0];
    ck_assert_str_eq(rec->key, "big");
    /* the dead letter is value-less, its error header says why */
    ck_assert_ptr_null(rec->value);
    why = obxt_records_header(rec, "error", &why_len);
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(memmem(why, why_len, "dropped", 7) != NULL, "error header: %.*s", (int)why_len,
                  why);
    obxt_records_free(recs);
    /* outboxd did not stop: the record after it is delivered */
    recs = obxt_stack_consume_exactly(s, pl_topics, 1);
    obxt_records_require(recs, "outbox.event.pl", "small");
    obxt_records_free(recs);
    ck_assert_int_lt(obxt_outboxd_wait_exit(o, 0), 0);
    ck_assert(obxt_proc_log_contains(obxt_outboxd_log(o), "Message size too large"));
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(payload__bytea_raw_bytes)
{
    struct obxt_stack_opts opts = {.no_outbox_table = true};
    struct obxt_stack *s = obxt_stack_start(&opts);
    struct obxt_outboxd *o;
    const char *topics[] = {"outbox.event.bin", NULL};
    static const unsigned char expect[] = {0x00, 0xff, 0x7f, 0x80, '\\', 'x', 0x00, 'A'};
    struct obxt_records *recs;
    const struct obxt_record *rec;
    unsigned char all[256];

    obxt_pg_exec(s->pg, "CREATE TABLE public.binbox (id uuid PRIMARY KEY DEFAULT "
                        "gen_random_uuid(), aggregatetype text NOT NULL, aggregateid text NOT "
                        "NULL, type text NOT NULL, payload bytea)");
    o = obxt_outboxd_start_streaming(s, "postgres.tables=public.binbox", NULL);
    obxt_pg_exec(s->pg, "INSERT INTO binbox (aggregatetype, aggregateid, type, payload) VALUES "
                        "('bin', 'some', 'T', '\\x00ff7f805c780041'::bytea), "
                        "('bin', 'all', 'T', (SELECT string_agg(set_byte('\\x00'::bytea, 0, b), "
                        "'' ORDER BY b) FROM generate_series(0, 255) b)), "
                        "('bin', 'null', 'T', NULL)");
    recs = obxt_stack_consume_exactly(s, topics, 3);
    rec = obxt_records_require(recs, "outbox.event.bin", "some");
    ck_assert_uint_eq(rec->value_len, sizeof(expect));
    ck_assert(memcmp(rec->value, expect, sizeof(expect)) == 0);
    rec = obxt_records_require(recs, "outbox.event.bin", "all");
    for (int b = 0; b < 256; b++)
        all[b] = (unsigned char)b;
    ck_assert_uint_eq(rec->value_len, sizeof(all));
    ck_assert(memcmp(rec->value, all, sizeof(all)) == 0);
    rec = obxt_records_require(recs, "outbox.event.bin", "null");
    ck_assert_ptr_null(rec->value);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* ---- per-key order at volume -------------------------------------------------------------- */

#define ORDER_TYPES 5
#define ORDER_KEYS 250 /* 50 per aggregatetype */
#define ORDER_EVENTS 10000
#define ORDER_TXNS 100

START_TEST(order__per_key_across_10000_events)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, NULL);
    const char *topics[ORDER_TYPES + 1];
    char names[ORDER_TYPES][32];
    int next_seq[ORDER_KEYS] = {0};
    struct obxt_records *recs;
    const int per_txn = ORDER_EVENTS / ORDER_TXNS;

    for (int t = 0; t < ORDER_TYPES; t++) {
        snprintf(names[t], sizeof(names[t]), "outbox.event.agg%d", t);
        topics[t] = names[t];
    }
    topics[ORDER_TYPES] = NULL;
    /* event i: key i % 250 (aggregatetype key % 5), that key's (i / 250)-th event */
    for (int t = 0; t < ORDER_TXNS; t++)
        obxt_pg_exec(s->pg,
                     "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                     "SELECT 'agg' || (i %% %d %% %d), 'key-' || (i %% %d), 'T', "
                     "jsonb_build_object('k', i %% %d, 'seq', i / %d) "
                     "FROM generate_series(%d, %d) i ORDER BY i",
                     ORDER_KEYS, ORDER_TYPES, ORDER_KEYS, ORDER_KEYS, ORDER_KEYS, t * per_txn,
                     (t + 1) * per_txn - 1);
    recs = obxt_stack_consume_exactly(s, topics, ORDER_EVENTS);
    /* records come sorted by topic, partition, offset: a key's records in partition order */
    for (size_t i = 0; i < recs->count; i++) {
        const struct obxt_record *rec = &recs->recs[i];
        char key[32], topic[32];
        int k = -1, seq = -1;

        ck_assert_int_eq(sscanf(rec->value, "{\"k\": %d, \"seq\": %d}", &k, &seq), 2);
        ck_assert(k >= 0 && k < ORDER_KEYS);
        snprintf(key, sizeof(key), "key-%d", k);
        snprintf(topic, sizeof(topic), "outbox.event.agg%d", k % ORDER_TYPES);
        ck_assert_str_eq(rec->key, key);
        ck_assert_str_eq(rec->topic, topic);
        ck_assert_msg(seq == next_seq[k], "key %s: event %d follows %d (%s/%d@%lld)", key, seq,
                      next_seq[k] - 1, rec->topic, (int)rec->partition, (long long)rec->offset);
        next_seq[k] = seq + 1;
    }
    /* complete: every key got all of its events, each exactly once */
    for (int k = 0; k < ORDER_KEYS; k++)
        ck_assert_int_eq(next_seq[k], ORDER_EVENTS / ORDER_KEYS);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* ---- logical messages --------------------------------------------------------------------- */

#define NT_ID "11111111-2222-3333-4444-555555555555"

START_TEST(messages__routed_like_rows)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o;
    const char *topics[] = {"outbox.event.customer", NULL};
    struct obxt_records *recs;
    const struct obxt_record *msg, *row;
    const char *id;
    size_t id_len;

    obxt_stack_sql_file(s, "emit.sql");
    o = obxt_outboxd_start_streaming(s, "postgres.messages=true", NULL);
    obxt_pg_exec(s->pg, "SELECT outbox_emit('customer', 'c-7', 'CustomerRegistered', "
                        "'{\"name\": \"Ada\", \"id\": 7, \"tags\": [\"a\", \"b\"]}')");
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
                        "('customer', 'c-8', 'CustomerRegistered', "
                        "'{\"name\": \"Ada\", \"id\": 7, \"tags\": [\"a\", \"b\"]}')");
    /* rolled back, another prefix: nothing; non-transactional: delivered */
    obxt_pg_exec(s->pg, "BEGIN; SELECT outbox_emit('customer', 'c-rb', 'T', '{}'); ROLLBACK");
    obxt_pg_exec(s->pg, "SELECT pg_logical_emit_message(true, 'other', '{\"id\": \"" NT_ID "\", "
                        "\"aggregatetype\": \"customer\", \"aggregateid\": \"c-other\", "
                        "\"type\": \"T\", \"payload\": {}}')");
    obxt_pg_exec(s->pg, "SELECT pg_logical_emit_message(false, 'outbox', '{\"id\": \"" NT_ID
                        "\", \"aggregatetype\": \"customer\", \"aggregateid\": \"c-9\", "
                        "\"type\": \"T\", \"payload\": {\"nt\": true}}')");
    recs = obxt_stack_consume_exactly(s, topics, 3);
    msg = obxt_records_require(recs, "outbox.event.customer", "c-7");
    row = obxt_records_require(recs, "outbox.event.customer", "c-8");
    /* the message's record is the row's: same value bytes, an id header (a fresh uuid) */
    ck_assert_uint_eq(msg->value_len, row->value_len);
    ck_assert_str_eq(msg->value, row->value);
    ck_assert_str_eq(row->value, "{\"id\": 7, \"name\": \"Ada\", \"tags\": [\"a\", \"b\"]}");
    ck_assert_uint_eq(msg->header_count, 1);
    id = obxt_records_header(msg, "id", &id_len);
    ck_assert_msg(id != NULL && id_len == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' &&
                      id[23] == '-',
                  "id header of the message: %s", id ? id : "(none)");
    msg = obxt_records_require(recs, "outbox.event.customer", "c-9");
    ck_assert_str_eq(msg->value, "{\"nt\": true}");
    obxt_record_assert_header(msg, "id", NT_ID);
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

START_TEST(messages__off_by_default)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o;
    const char *topics[] = {"outbox.event.customer", NULL};
    struct obxt_records *recs;

    obxt_stack_sql_file(s, "emit.sql");
    o = obxt_outboxd_start_streaming(s, NULL);
    obxt_pg_exec(s->pg, "SELECT outbox_emit('customer', 'c-msg', 'T', '{}')");
    obxt_pg_exec(s->pg, "SELECT pg_logical_emit_message(false, 'outbox', '{\"id\": \"" NT_ID
                        "\", \"aggregatetype\": \"customer\", \"aggregateid\": \"c-nt\", "
                        "\"type\": \"T\", \"payload\": {}}')");
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
                        "('customer', 'c-row', 'T', '{}')");
    recs = obxt_stack_consume_exactly(s, topics, 1);
    ck_assert_str_eq(recs->recs[0].key, "c-row");
    obxt_records_free(recs);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* ---- WAL and the slot --------------------------------------------------------------------- */

#define BUSY_BYTES (50 * MIB)
#define LAG_LIMIT MIB

START_TEST(idle__busy_other_table_does_not_pin_wal)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, NULL);
    char *start;
    long long written = 0, lag = -1, waited_ms, stopped_ms;
    int txns = 0;

    obxt_pg_exec(s->pg, "CREATE TABLE public.busy (id bigserial PRIMARY KEY, filler text) "
                        "WITH (autovacuum_enabled = false)");
    start = obxt_stack_wal_lsn(s);
    while (written < BUSY_BYTES) {
        obxt_pg_exec(s->pg, "INSERT INTO busy (filler) SELECT repeat(md5(g::text), 16) "
                            "FROM generate_series(1, 1000) g");
        txns++;
        written = obxt_pg_query_int(
            s->pg, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')::bigint", start);
    }
    stopped_ms = obxt_proc_now_ms();
    /* within a few seconds the slot follows the server's WAL, nothing pinned */
    do {
        lag = obxt_stack_slot_lag(s, OBXT_SLOT);
        if (lag < LAG_LIMIT)
            break;
        usleep(200 * 1000);
    } while (obxt_proc_now_ms() - stopped_ms < 10000);
    waited_ms = obxt_proc_now_ms() - stopped_ms;
    fprintf(stderr,
            "idle outbox, busy table: %lld bytes of WAL in %d transactions; slot lag %lld bytes "
            "%lld ms after the writes stopped\n",
            written, txns, lag, waited_ms);
    ck_assert_msg(lag < LAG_LIMIT, "the slot still holds back %lld bytes of WAL", lag);
    ck_assert(obxt_proc_running(obxt_outboxd_proc(o)));
    free(start);
    obxt_outboxd_stop(o);
    obxt_stack_stop(s);
}
END_TEST

/* Fails unless the slot's confirmed position stays before lsn for ms milliseconds. */
static void
assert_held_before(struct obxt_stack *s, const char *lsn, int ms)
{
    long long deadline = obxt_proc_now_ms() + ms;

    do {
        char *confirmed = obxt_stack_confirmed(s, OBXT_SLOT);

        ck_assert_ptr_nonnull(confirmed);
        ck_assert_msg(obxt_stack_lsn_diff(s, confirmed, lsn) < 0,
                      "confirmed_flush_lsn %s passed %s with the broker down", confirmed, lsn);
        free(confirmed);
        usleep(200 * 1000);
    } while (obxt_proc_now_ms() < deadline);
}

START_TEST(confirm__held_while_broker_down)
{
    struct obxt_stack *s = obxt_stack_start(NULL);
    struct obxt_outboxd *o =
        obxt_outboxd_start_streaming(s, "postgres.status.interval.ms=200", NULL);
    const char *topics[] = {"outbox.event.down", NULL};
    struct obxt_records *recs;
    char *warm_end, *first_end, *last_end, *reply_before;

    obxt_stack_probe_create(s, "probe");
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
                        "('down', 'warm', 'T', '{}')");
    warm_end = obxt_stack_probe_last_commit(s, "probe");
    recs = obxt_stack_consume_exactly(s, topics, 1);
    obxt_records_free(recs);
    ck_assert(obxt_stack_wait_confirmed(s, OBXT_SLOT, warm_end, 10000));

    ck_assert_int_eq(obxt_broker_cmd(s->broker, "down all"), 0);
    obxt_pg_exec(s->pg, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                        "SELECT 'down', 'k' || (g %% 7), 'T', jsonb_build_object('g', g) "
                        "FROM generate_series(1, 50) g");
    first_end = obxt_stack_probe_last_commit(s, "probe");
    for (int t = 0; t < 10; t++)
        obxt_pg_exec(s->pg,
                     "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                     "VALUES ('down', 'later', 'T', jsonb_build_object('t', %d))",
                     t);
    last_end = obxt_stack_probe_last_commit(s, "probe");
    /* status updates keep going out, but never past an unacknowledged transaction */
    reply_before = obxt_pg_query_value(s->pg, "SELECT reply_time::text FROM pg_stat_replication");
    assert_held_before(s, first_end, 3000);
    ck_assert(obxt_proc_running(obxt_outboxd_proc(o)));
    ck_assert_int_eq(obxt_pg_query_int(s->pg,
                                       "SELECT (reply_time > '%s')::int "
                                       "FROM pg_stat_replication",
                                       reply_before),
                     1);

    ck_assert_int_eq(obxt_broker_cmd(s->broker, "up all"), 0);
    recs = obxt_stack_consume_exactly(s, topics, 61);
    obxt_records_free(recs);
    ck_assert_msg(obxt_stack_wait_confirmed(s, OBXT_SLOT, last_end, 15000),
                  "the slot did not advance to %s after the broker came back", last_end);
    obxt_outboxd_stop(o);
    obxt_stack_probe_drop(s, "probe");
    free(reply_before);
    free(warm_end);
    free(first_end);
    free(last_end);
    obxt_stack_stop(s);
}
END_TEST

static Suite *
deliver_stream_suite(void)
{
    Suite *s = suite_create("deliver_stream");
    TCase *txn = tcase_create("txn");
    TCase *payload = tcase_create("payload");
    TCase *volume = tcase_create("volume");
    TCase *messages = tcase_create("messages");
    TCase *slot = tcase_create("slot");
    TCase *all[] = {txn, payload, volume, messages, slot};

    tcase_add_test(txn, txn__rollback_multi_row_and_insert_then_delete);
    tcase_add_test(txn, txn__updates_deletes_truncate_ignored);
    tcase_add_test(payload, payload__large_unicode_null);
    tcase_add_test(payload, payload__bytea_raw_bytes);
    tcase_add_test(payload, payload__oversized_record_not_lost);
    tcase_add_test(volume, order__per_key_across_10000_events);
    tcase_add_test(messages, messages__routed_like_rows);
    tcase_add_test(messages, messages__off_by_default);
    tcase_add_test(slot, idle__busy_other_table_does_not_pin_wal);
    tcase_add_test(slot, confirm__held_while_broker_down);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        tcase_add_unchecked_fixture(all[i], obxt_stack_fixture_setup, obxt_stack_fixture_teardown);
        tcase_set_timeout(all[i], 120);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(deliver_stream_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
