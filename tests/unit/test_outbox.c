/* test_outbox.c - unit tests of the outbox router: relations and tuples built by hand, with column
 * values as PostgreSQL's text output sends them, and configs from obx_config_set. */
#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outboxd/config.h"
#include "outboxd/outbox.h"
#include "outboxd/relcache.h"

#define OID_BOOL 16u
#define OID_INT2 21u
#define MAXC 16

/* A column value that stands for an unchanged TOASTed column ('u'). */
static const char unchanged[] = "<unchanged>";

/* A relation and one tuple of it. */
struct row {
    struct obx_relation rel;
    struct obx_relcol cols[MAXC];
    struct obx_pgo_col tcols[MAXC];
    struct obx_pgo_tuple tup;
};

/* 2026-11-22 21:40:00.123456 UTC in PostgreSQL epoch microseconds, and in Unix ms. */
#define COMMIT_TS_PG INT64_C(848698800123456)
#define COMMIT_TS_MS INT64_C(1795383600123)

static const struct obx_txn_info txn = {
    .xid = 777,
    .commit_lsn = 0x16B3748,
    .commit_ts = COMMIT_TS_PG,
    .seq = 3,
};

static void
row_init(struct row *r, const char *nspname, const char *relname)
{
    memset(r, 0, sizeof(*r));
    r->rel.relid = 16384;
    r->rel.nspname = (char *)nspname;
    r->rel.relname = (char *)relname;
    r->rel.cols = r->cols;
    r->tup.cols = r->tcols;
}

/* Appends a column; text NULL is SQL NULL, text == unchanged is an unchanged TOAST value. */
static void
row_col(struct row *r, const char *name, uint32_t oid, const char *text)
{
    uint16_t i = r->rel.ncols;

    ck_assert_int_lt(i, MAXC);
    r->cols[i].name = (char *)name;
    r->cols[i].type_oid = oid;
    r->cols[i].typmod = -1;
    if (text == NULL) {
        r->tcols[i].kind = OBX_PGO_COL_NULL;
    } else if (text == unchanged) {
        r->tcols[i].kind = OBX_PGO_COL_UNCHANGED;
    } else {
        r->tcols[i].kind = OBX_PGO_COL_TEXT;
        r->tcols[i].data = (const uint8_t *)text;
        r->tcols[i].len = (uint32_t)strlen(text);
    }
    r->rel.ncols++;
    r->tup.ncols++;
}

/* Sets the value of the column called name. */
static void
row_set(struct row *r, const char *name, const char *text)
{
    for (uint16_t i = 0; i < r->rel.ncols; i++) {
        if (strcmp(r->cols[i].name, name) != 0)
            continue;
        r->tcols[i].kind = text == NULL ? OBX_PGO_COL_NULL : OBX_PGO_COL_TEXT;
        if (text == unchanged)
            r->tcols[i].kind = OBX_PGO_COL_UNCHANGED;
        r->tcols[i].data = (const uint8_t *)text;
        r->tcols[i].len = text != NULL ? (uint32_t)strlen(text) : 0;
        return;
    }
    ck_abort_msg("no column %s", name);
}

/* The usual Debezium outbox table: id, aggregatetype, aggregateid, type, payload jsonb. */
static void
row_default(struct row *r)
{
    row_init(r, "public", "outbox");
    row_col(r, "id", OBX_OID_UUID, "8f8e4b5c-0d3a-4d6e-9a41-3c1f1b0e7a11");
    row_col(r, "aggregatetype", OBX_OID_VARCHAR, "order");
    row_col(r, "aggregateid", OBX_OID_VARCHAR, "42");
    row_col(r, "type", OBX_OID_VARCHAR, "OrderCreated");
    row_col(r, "payload", OBX_OID_JSONB, "{\"a\": 1, \"b\": [1, 2]}");
}

/* A config with the defaults and then each "key=value" given, NULL-terminated. */
static struct obx_config *
cfg_vmake(const char *first, va_list ap)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;

    ck_assert_ptr_nonnull(cfg);
    for (const char *kv = first; kv != NULL; kv = va_arg(ap, const char *)) {
        char key[128];
        const char *eq = strchr(kv, '=');

        ck_assert_ptr_nonnull(eq);
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        if (obx_config_set(cfg, key, eq + 1, "test", &err) != 0)
            ck_abort_msg("config %s: %s", kv, err.msg);
    }
    return cfg;
}

static struct obx_config *
cfg_make(const char *first, ...)
{
    struct obx_config *cfg;
    va_list ap;

    va_start(ap, first);
    cfg = cfg_vmake(first, ap);
    va_end(ap);
    return cfg;
}

/* A router from cfg_make's settings; the config is freed at once (the router keeps copies). */
static struct obx_outbox *
router(const char *first, ...)
{
    struct obx_config *cfg;
    struct obx_outbox *ob;
    struct obx_error err;
    va_list ap;

    va_start(ap, first);
    cfg = cfg_vmake(first, ap);
    va_end(ap);
    ob = obx_outbox_new(cfg, &err);
    if (ob == NULL)
        ck_abort_msg("obx_outbox_new: %s", err.msg);
    obx_config_free(cfg);
    return ob;
}

/* true if the n bytes at p contain needle. */
static bool
contains(const void *p, size_t n, const char *needle)
{
    return p != NULL && memmem(p, n, needle, strlen(needle)) != NULL;
}

/* The value of header name (the first of that name), or NULL; its length in *len. */
static const struct obx_header *
header(const struct obx_event *ev, const char *name)
{
    for (size_t i = 0; i < ev->nheaders; i++)
        if (strcmp(ev->headers[i].name, name) == 0)
            return &ev->headers[i];
    return NULL;
}

static void
assert_header(const struct obx_event *ev, const char *name, const char *value)
{
    const struct obx_header *h = header(ev, name);

    if (h == NULL)
        ck_abort_msg("no header %s", name);
    if (value == NULL) {
        ck_assert_ptr_null(h->value);
        ck_assert_uint_eq(h->value_len, 0);
        return;
    }
    ck_assert_ptr_nonnull(h->value);
    if (h->value_len != strlen(value) || memcmp(h->value, value, h->value_len) != 0)
        ck_abort_msg("header %s is \"%.*s\", expected \"%s\"", name, (int)h->value_len,
                     (const char *)h->value, value);
}

static void
assert_bytes(const void *p, size_t n, const char *expected)
{
    ck_assert_ptr_nonnull(p);
    if (n != strlen(expected) || memcmp(p, expected, n) != 0)
        ck_abort_msg("got \"%.*s\" (%zu bytes), expected \"%s\"", (int)n, (const char *)p, n,
                     expected);
}

/* The dead letter's error header mentions needle. */
static void
assert_error_has(const struct obx_event *ev, const char *needle)
{
    const struct obx_header *h = header(ev, "error");

    if (h == NULL)
        ck_abort_msg("no error header");
    if (!contains(h->value, h->value_len, needle))
        ck_abort_msg("error \"%.*s\" lacks \"%s\"", (int)h->value_len, (const char *)h->value,
                     needle);
}

#define assert_key(ev, s) assert_bytes((ev)->key, (ev)->key_len, s)
#define assert_value(ev, s) assert_bytes((ev)->value, (ev)->value_len, s)

/* Routes r with ob and checks the result code. */
static void
route(struct obx_outbox *ob, const struct row *r, struct obx_event *ev, int expected)
{
    struct obx_error err = {0};
    int rc = obx_outbox_route_row(ob, &r->rel, &r->tup, &txn, ev, &err);
    const struct obx_header *h = rc == OBX_ROUTE_DLQ ? header(ev, "error") : NULL;

    if (rc != expected)
        ck_abort_msg("route_row returned %d, expected %d (%s%.*s)", rc, expected, err.msg,
                     h != NULL ? (int)h->value_len : 0, h != NULL ? (const char *)h->value : "");
}

/* A logical message with content s (prefix "outbox" unless given). */
static struct obx_pgo_message
message(const char *prefix, const char *content)
{
    struct obx_pgo_message m = {
        .xid = 778,
        .transactional = true,
        .lsn = 0x2000010,
        .prefix = prefix,
        .content = (const uint8_t *)content,
        .content_len = (uint32_t)strlen(content),
    };

    return m;
}

static void
route_msg(struct obx_outbox *ob, const char *content, struct obx_event *ev, int expected)
{
    struct obx_pgo_message m = message("outbox", content);
    struct obx_error err = {0};
    int rc = obx_outbox_route_message(ob, &m, &txn, ev, &err);
    const struct obx_header *h = rc == OBX_ROUTE_DLQ ? header(ev, "error") : NULL;

    if (rc != expected)
        ck_abort_msg("route_message returned %d, expected %d (%s%.*s)", rc, expected, err.msg,
                     h != NULL ? (int)h->value_len : 0, h != NULL ? (const char *)h->value : "");
}

/* --- obx_outbox_new / obx_outbox_free ------------------------------------------------------- */

START_TEST(new__defaults)
{
    struct obx_outbox *ob = router(NULL);

    ck_assert_int_eq(obx_outbox_invalid_behavior(ob), OBX_INVALID_DLQ);
    ck_assert_uint_gt(obx_outbox_scratch_capacity(ob), 0);
    obx_outbox_free(ob);
}
END_TEST

static void
assert_new_fails(const char *kv, const char *needle)
{
    struct obx_config *cfg = cfg_make(kv, NULL);
    struct obx_error err = {0};

    ck_assert_ptr_null(obx_outbox_new(cfg, &err));
    ck_assert_int_eq(err.code, OBX_ERR_CONFIG);
    if (strstr(err.msg, needle) == NULL)
        ck_abort_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
    obx_config_free(cfg);
}

START_TEST(new__bad_placement_names_key)
{
    assert_new_fails("outbox.table.fields.additional.placement=type", "additional.placement");
    assert_new_fails("outbox.table.fields.additional.placement=type:nowhere", "type:nowhere");
    assert_new_fails("outbox.table.fields.additional.placement=:header", "additional.placement");
    assert_new_fails("outbox.table.fields.additional.placement=a:header:", "additional.placement");
    assert_new_fails("outbox.table.fields.additional.placement=a:partition:x", "a:partition:x");
    assert_new_fails("outbox.table.fields.additional.placement=a:partition,b:partition",
                     "at most one");
    assert_new_fails("outbox.table.fields.additional.placement=type:envelope:payload",
                     "\"payload\"");
}
END_TEST

START_TEST(new__empty_payload_or_route_field)
{
    assert_new_fails("outbox.table.field.event.payload=", "outbox.table.field.event.payload");
    assert_new_fails("outbox.route.by.field=", "outbox.route.by.field");
    assert_new_fails("outbox.dlq.topic=", "outbox.dlq.topic");
}
END_TEST

START_TEST(new__bad_tables)
{
    assert_new_fails("postgres.tables=outbox", "postgres.tables");
}
END_TEST

START_TEST(free__null_is_noop)
{
    obx_outbox_free(NULL);
}
END_TEST

/* --- obx_outbox_is_table -------------------------------------------------------------------- */

START_TEST(is_table__default_public_outbox)
{
    struct obx_outbox *ob = router(NULL);
    struct row r;

    row_init(&r, "public", "outbox");
    ck_assert(obx_outbox_is_table(ob, &r.rel));
    row_init(&r, "public", "outbox2");
    ck_assert(!obx_outbox_is_table(ob, &r.rel));
    row_init(&r, "other", "outbox");
    ck_assert(!obx_outbox_is_table(ob, &r.rel));
    obx_outbox_free(ob);
}
END_TEST

START_TEST(is_table__list)
{
    struct obx_outbox *ob = router("postgres.tables=app.events , billing.outbox", NULL);
    struct row r;

    row_init(&r, "app", "events");
    ck_assert(obx_outbox_is_table(ob, &r.rel));
    row_init(&r, "billing", "outbox");
    ck_assert(obx_outbox_is_table(ob, &r.rel));
    row_init(&r, "public", "outbox");
    ck_assert(!obx_outbox_is_table(ob, &r.rel));
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_check_relation -------------------------------------------------------------- */

static void
assert_check_fails(struct obx_outbox *ob, const struct row *r, const char *n1, const char *n2,
                   const char *n3)
{
    struct obx_error err = {0};

    ck_assert_int_eq(obx_outbox_check_relation(ob, &r->rel, &err), OBX_ERR_SERVER);
    ck_assert_int_eq(err.code, OBX_ERR_SERVER);
    ck_assert(err.fatal);
    if (strstr(err.msg, n1) == NULL || strstr(err.msg, n2) == NULL || strstr(err.msg, n3) == NULL)
        ck_abort_msg("message \"%s\" lacks \"%s\", \"%s\" or \"%s\"", err.msg, n1, n2, n3);
}

START_TEST(check_relation__default_table_ok)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_error err;
    struct row r;

    row_default(&r);
    ck_assert_int_eq(obx_outbox_check_relation(ob, &r.rel, &err), 0);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(check_relation__missing_column_named)
{
    struct obx_outbox *ob = router(NULL);
    struct row r;

    row_init(&r, "public", "outbox");
    row_col(&r, "id", OBX_OID_UUID, "x");
    row_col(&r, "aggregatetype", OBX_OID_VARCHAR, "x");
    row_col(&r, "payload", OBX_OID_JSONB, "{}");
    assert_check_fails(ob, &r, "\"aggregateid\"", "public.outbox", "outbox.table.field.event.key");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(check_relation__payload_type)
{
    struct obx_outbox *ob = router(NULL);
    struct row r;
    const uint32_t good[] = {OBX_OID_JSON, OBX_OID_JSONB, OBX_OID_TEXT, OBX_OID_VARCHAR,
                             OBX_OID_BYTEA};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        row_default(&r);
        r.cols[4].type_oid = good[i];
        ck_assert_int_eq(obx_outbox_check_relation(ob, &r.rel, NULL), 0);
    }
    row_default(&r);
    r.cols[4].type_oid = OBX_OID_INT4;
    assert_check_fails(ob, &r, "\"payload\"", "outbox.table.field.event.payload", "integer");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(check_relation__timestamp_headers_partition_types)
{
    struct obx_outbox *ob = router(
        "outbox.table.field.event.timestamp=created_at", "outbox.table.field.event.headers=hdrs",
        "outbox.table.fields.additional.placement=shard:partition", NULL);
    struct row r;

    row_default(&r);
    row_col(&r, "created_at", OBX_OID_TIMESTAMPTZ, NULL);
    row_col(&r, "hdrs", OBX_OID_JSONB, NULL);
    row_col(&r, "shard", OBX_OID_INT4, NULL);
    ck_assert_int_eq(obx_outbox_check_relation(ob, &r.rel, NULL), 0);
    r.cols[5].type_oid = OBX_OID_TIMESTAMP;
    r.cols[6].type_oid = OBX_OID_JSON;
    r.cols[7].type_oid = OBX_OID_INT8;
    ck_assert_int_eq(obx_outbox_check_relation(ob, &r.rel, NULL), 0);
    r.cols[5].type_oid = OBX_OID_TEXT;
    assert_check_fails(ob, &r, "\"created_at\"", "outbox.table.field.event.timestamp",
                       "timestamptz");
    r.cols[5].type_oid = OBX_OID_TIMESTAMPTZ;
    r.cols[6].type_oid = OBX_OID_TEXT;
    assert_check_fails(ob, &r, "\"hdrs\"", "outbox.table.field.event.headers", "json or jsonb");
    r.cols[6].type_oid = OBX_OID_JSONB;
    r.cols[7].type_oid = OBX_OID_VARCHAR;
    assert_check_fails(ob, &r, "\"shard\"", "outbox.table.fields.additional.placement", "smallint");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(check_relation__placement_column_missing)
{
    struct obx_outbox *ob =
        router("outbox.table.fields.additional.placement=type:header,tenant:envelope", NULL);
    struct row r;

    row_default(&r);
    assert_check_fails(ob, &r, "\"tenant\"", "outbox.table.fields.additional.placement",
                       "public.outbox");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(check_relation__route_column_unused_without_placeholder)
{
    struct obx_outbox *ob = router("outbox.route.topic.replacement=fixed.topic", NULL);
    struct row r;

    row_init(&r, "public", "outbox");
    row_col(&r, "id", OBX_OID_UUID, "x");
    row_col(&r, "aggregateid", OBX_OID_VARCHAR, "x");
    row_col(&r, "payload", OBX_OID_TEXT, "x");
    ck_assert_int_eq(obx_outbox_check_relation(ob, &r.rel, NULL), 0);
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_route_row: the record ------------------------------------------------------- */

START_TEST(route_row__defaults)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_str_eq(ev.topic, "outbox.event.order");
    assert_key(&ev, "42");
    assert_value(&ev, "{\"a\": 1, \"b\": [1, 2]}");
    /* the value is passed through: it points into the tuple, no copy */
    ck_assert_ptr_eq(ev.value, r.tcols[4].data);
    ck_assert_uint_eq(ev.nheaders, 1);
    assert_header(&ev, "id", "8f8e4b5c-0d3a-4d6e-9a41-3c1f1b0e7a11");
    ck_assert_int_eq(ev.partition, OBX_PARTITION_ANY);
    ck_assert_int_eq(ev.timestamp_ms, COMMIT_TS_MS);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__overridden_columns)
{
    struct obx_outbox *ob =
        router("outbox.table.field.event.id=event_id", "outbox.table.field.event.key=agg_id",
               "outbox.table.field.event.payload=body", "outbox.route.by.field=agg_type", NULL);
    struct obx_event ev;
    struct row r;

    row_init(&r, "public", "outbox");
    row_col(&r, "event_id", OBX_OID_INT8, "1001");
    row_col(&r, "agg_type", OBX_OID_TEXT, "customer");
    row_col(&r, "agg_id", OBX_OID_TEXT, "c-7");
    row_col(&r, "body", OBX_OID_TEXT, "plain text body");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_str_eq(ev.topic, "outbox.event.customer");
    assert_key(&ev, "c-7");
    assert_value(&ev, "plain text body");
    assert_header(&ev, "id", "1001");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__template_two_placeholders)
{
    struct obx_outbox *ob =
        router("outbox.route.topic.replacement=${routedByValue}.events.${routedByValue}", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_str_eq(ev.topic, "order.events.order");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__template_no_placeholder)
{
    struct obx_outbox *ob = router("outbox.route.topic.replacement=all-events", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    /* the routing column is not even read: NULL there is fine */
    row_set(&r, "aggregatetype", NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_str_eq(ev.topic, "all-events");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__tombstone)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "payload", NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_ptr_null(ev.value);
    ck_assert_uint_eq(ev.value_len, 0);
    assert_key(&ev, "42");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__bytea_payload)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    r.cols[4].type_oid = OBX_OID_BYTEA;
    row_set(&r, "payload", "\\x00ff41");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_eq(ev.value_len, 3);
    ck_assert_int_eq(memcmp(ev.value, "\x00\xff\x41", 3), 0);
    row_set(&r, "payload", "\\x");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_ptr_nonnull(ev.value);
    ck_assert_uint_eq(ev.value_len, 0);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__bytea_undecodable_is_invalid)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    r.cols[4].type_oid = OBX_OID_BYTEA;
    row_set(&r, "payload", "\\001\\002"); /* escape format, not hex */
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    ck_assert_str_eq(ev.topic, "outbox.dlq");
    assert_error_has(&ev, "\"payload\"");
    assert_error_has(&ev, "hex");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__unicode_passthrough)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "aggregatetype", "Bestellung");
    row_set(&r, "aggregateid", "Grüße-✓");
    row_set(&r, "payload", "{\"name\": \"Zoë 😀\", \"esc\": \"a\\\"b\\u0001\"}");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_str_eq(ev.topic, "outbox.event.Bestellung");
    assert_key(&ev, "Grüße-✓");
    assert_value(&ev, "{\"name\": \"Zoë 😀\", \"esc\": \"a\\\"b\\u0001\"}");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__routing_value_not_a_topic_is_invalid)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "aggregatetype", "Order Placed");
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    assert_error_has(&ev, "outbox.event.Order Placed");
    assert_error_has(&ev, "aggregatetype");
    row_set(&r, "aggregatetype", "");
    obx_outbox_free(ob);
    ob = router("outbox.route.topic.replacement=${routedByValue}", NULL);
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__large_payload)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;
    size_t n = 1 << 20;
    char *big = malloc(n + 1);

    ck_assert_ptr_nonnull(big);
    big[0] = '"';
    memset(big + 1, 'x', n - 2);
    big[n - 1] = '"';
    big[n] = '\0';
    row_default(&r);
    row_set(&r, "payload", big);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_eq(ev.value_len, n);
    ck_assert_ptr_eq(ev.value, big);
    obx_outbox_free(ob);

    ob = router("outbox.table.fields.additional.placement=type:envelope", NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_eq(ev.value_len, n + strlen("{\"payload\": , \"type\": \"OrderCreated\"}"));
    ck_assert_int_eq(memcmp(ev.value, "{\"payload\": \"xxx", 16), 0);
    ck_assert_int_eq(
        memcmp((const char *)ev.value + ev.value_len - 28, "xx\", \"type\": \"OrderCreated\"}", 28),
        0);
    obx_outbox_free(ob);
    free(big);
}
END_TEST

START_TEST(route_row__tuple_column_count_mismatch)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct obx_error err;
    struct row r;

    row_default(&r);
    r.tup.ncols = 4;
    ck_assert_int_eq(obx_outbox_route_row(ob, &r.rel, &r.tup, &txn, &ev, &err), OBX_ERR_PROTOCOL);
    ck_assert_int_eq(err.code, OBX_ERR_PROTOCOL);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__scratch_reused_100000_rows)
{
    struct obx_outbox *ob =
        router("outbox.table.fields.additional.placement=type:envelope:eventType,type:header",
               "outbox.table.field.event.headers=hdrs", "outbox.headers.source=true", NULL);
    struct obx_event ev;
    struct row r;
    size_t cap;
    char id[32];

    row_default(&r);
    row_col(&r, "hdrs", OBX_OID_JSONB, "{\"trace\": \"t\\u00e9\", \"n\": {\"x\": [1, 2]}}");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    cap = obx_outbox_scratch_capacity(ob);
    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof(id), "%d", i);
        row_set(&r, "aggregateid", id);
        if (obx_outbox_route_row(ob, &r.rel, &r.tup, &txn, &ev, NULL) != OBX_ROUTE_EVENT)
            ck_abort_msg("row %d not routed", i);
        if (ev.key_len != strlen(id) || memcmp(ev.key, id, ev.key_len) != 0)
            ck_abort_msg("row %d: wrong key", i);
    }
    ck_assert_uint_eq(obx_outbox_scratch_capacity(ob), cap);
    assert_header(&ev, "trace", "té");
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_route_row: envelope --------------------------------------------------------- */

START_TEST(route_row__envelope_jsonb_payload_exact)
{
    struct obx_outbox *ob = router(
        "outbox.table.fields.additional.placement=type:envelope:eventType,aggregateid:envelope",
        NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "{\"payload\": {\"a\": 1, \"b\": [1, 2]}, \"eventType\": \"OrderCreated\", "
                      "\"aggregateid\": \"42\"}");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__envelope_text_payload_escaped)
{
    struct obx_outbox *ob = router("outbox.table.fields.additional.placement=type:envelope", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    r.cols[4].type_oid = OBX_OID_TEXT;
    row_set(&r, "payload", "say \"hi\"\\\n\ttab\x01é");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "{\"payload\": \"say \\\"hi\\\"\\\\\\n\\ttab\\u0001é\", "
                      "\"type\": \"OrderCreated\"}");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__envelope_bytea_base64)
{
    struct obx_outbox *ob = router("outbox.table.fields.additional.placement=type:envelope", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    r.cols[4].type_oid = OBX_OID_BYTEA;
    row_set(&r, "payload", "\\x00ff41");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "{\"payload\": \"AP9B\", \"type\": \"OrderCreated\"}");
    row_set(&r, "payload", "\\x666f6f62");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "{\"payload\": \"Zm9vYg==\", \"type\": \"OrderCreated\"}");
    row_set(&r, "payload", "\\x666f6f6261");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "{\"payload\": \"Zm9vYmE=\", \"type\": \"OrderCreated\"}");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__envelope_value_types)
{
    struct obx_outbox *ob = router("outbox.table.fields.additional.placement="
                                   "n:envelope,big:envelope,ok:envelope,no:envelope,"
                                   "meta:envelope,missing:envelope,ts:envelope",
                                   NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_col(&r, "n", OID_INT2, "-5");
    row_col(&r, "big", OBX_OID_INT8, "9007199254740993");
    row_col(&r, "ok", OID_BOOL, "t");
    row_col(&r, "no", OID_BOOL, "f");
    row_col(&r, "meta", OBX_OID_JSON, "{\"k\":[true,null]}");
    row_col(&r, "missing", OBX_OID_TEXT, NULL);
    row_col(&r, "ts", OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40:00+00");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "{\"payload\": {\"a\": 1, \"b\": [1, 2]}, \"n\": -5, "
                      "\"big\": 9007199254740993, \"ok\": true, \"no\": false, "
                      "\"meta\": {\"k\":[true,null]}, \"missing\": null, "
                      "\"ts\": \"2026-11-22 21:40:00+00\"}");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__envelope_null_payload_stays_tombstone)
{
    struct obx_outbox *ob = router("outbox.table.fields.additional.placement=type:envelope", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "payload", NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_ptr_null(ev.value);
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_route_row: headers, timestamp, partition ------------------------------------ */

START_TEST(route_row__header_placements)
{
    struct obx_outbox *ob = router("outbox.table.fields.additional.placement="
                                   "type:header:eventType, aggregatetype:header,note:header",
                                   NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_col(&r, "note", OBX_OID_TEXT, NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_eq(ev.nheaders, 4);
    ck_assert_str_eq(ev.headers[0].name, "id");
    ck_assert_str_eq(ev.headers[1].name, "eventType");
    assert_header(&ev, "eventType", "OrderCreated");
    assert_header(&ev, "aggregatetype", "order");
    assert_header(&ev, "note", NULL);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__headers_column)
{
    struct obx_outbox *ob = router("outbox.table.field.event.headers=hdrs", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_col(&r, "hdrs", OBX_OID_JSONB,
            "{\"n\": 5, \"o\": {\"x\": [1, 2]}, \"t\": true, \"z\": null, "
            "\"esc\": \"a\\\"b\\u00e9\\ud83d\\ude00\", \"tr\\u0061ce\": \"00-abc\"}");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_eq(ev.nheaders, 7);
    assert_header(&ev, "n", "5");
    assert_header(&ev, "o", "{\"x\": [1, 2]}");
    assert_header(&ev, "t", "true");
    assert_header(&ev, "z", NULL);
    assert_header(&ev, "esc", "a\"bé😀");
    assert_header(&ev, "trace", "00-abc");
    /* json (not jsonb) keeps the writer's spacing: re-spaced like jsonb for composites */
    r.cols[5].type_oid = OBX_OID_JSON;
    row_set(&r, "hdrs", " {\"o\":{\"x\":[1,\n2]},\"s\":\"v\"} ");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    assert_header(&ev, "o", "{\"x\": [1, 2]}");
    assert_header(&ev, "s", "v");
    row_set(&r, "hdrs", NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_eq(ev.nheaders, 1);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__headers_column_bad_json_is_invalid)
{
    struct obx_outbox *ob = router("outbox.table.field.event.headers=hdrs", NULL);
    const char *bad[] = {"[1, 2]", "\"s\"", "{\"a\": }", "{\"a\": 1", "{\"a\": 1} x", ""};
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_col(&r, "hdrs", OBX_OID_JSON, "");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        row_set(&r, "hdrs", bad[i]);
        route(ob, &r, &ev, OBX_ROUTE_DLQ);
        assert_error_has(&ev, "\"hdrs\"");
        assert_error_has(&ev, "not a JSON object");
    }
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__too_many_headers_is_invalid)
{
    struct obx_outbox *ob = router("outbox.table.field.event.headers=hdrs", NULL);
    struct obx_event ev;
    struct row r;
    char json[2048];
    size_t n = 0;

    n += (size_t)snprintf(json + n, sizeof(json) - n, "{");
    for (int i = 0; i < OBX_EVENT_MAX_HEADERS; i++)
        n += (size_t)snprintf(json + n, sizeof(json) - n, "%s\"h%d\": \"v\"", i ? ", " : "", i);
    snprintf(json + n, sizeof(json) - n, "}");
    row_default(&r);
    row_col(&r, "hdrs", OBX_OID_JSONB, json);
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    assert_error_has(&ev, "more than 64 headers");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__source_headers)
{
    struct obx_outbox *ob = router("outbox.headers.source=true", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_eq(ev.nheaders, 4);
    assert_header(&ev, "outbox.lsn", "0/16B3748");
    assert_header(&ev, "outbox.xid", "777");
    assert_header(&ev, "outbox.seq", "3");
    obx_outbox_free(ob);
    ob = router(NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_ptr_null(header(&ev, "outbox.lsn"));
    obx_outbox_free(ob);
}
END_TEST

struct ts_case {
    uint32_t oid;
    const char *text;
    int64_t ms; /* -1: invalid */
};

START_TEST(route_row__timestamp_column)
{
    static const struct ts_case cases[] = {
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40:00.123456+00", INT64_C(1795383600123)},
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40:00+05:30", INT64_C(1795363800000)},
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40:00.5-03", INT64_C(1795394400500)},
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40:00+05:53:28", INT64_C(1795362392000)},
        {OBX_OID_TIMESTAMPTZ, "1999-12-31 23:59:59.999+00", INT64_C(946684799999)},
        {OBX_OID_TIMESTAMPTZ, "2024-02-29 12:00:00+00", INT64_C(1709208000000)},
        {OBX_OID_TIMESTAMPTZ, "1970-01-01 00:00:00.001+00", 1},
        {OBX_OID_TIMESTAMPTZ, "12345-01-01 00:00:00+00", INT64_C(327403382400000)},
        {OBX_OID_TIMESTAMP, "2026-11-22 21:40:00.123456", INT64_C(1795383600123)},
        {OBX_OID_TIMESTAMPTZ, "2023-02-29 12:00:00+00", -1},
        {OBX_OID_TIMESTAMPTZ, "2026-13-01 00:00:00+00", -1},
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 24:00:00+00", -1},
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40+00", -1},
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40:00.+00", -1},
        {OBX_OID_TIMESTAMPTZ, "2026-11-22 21:40:00+00 BC", -1},
        {OBX_OID_TIMESTAMPTZ, "1969-12-31 23:59:59+00", -1},
        {OBX_OID_TIMESTAMPTZ, "infinity", -1},
        {OBX_OID_TIMESTAMPTZ, "Sun Nov 22 21:40:00 2026 UTC", -1},
    };
    struct obx_outbox *ob = router("outbox.table.field.event.timestamp=created_at", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_col(&r, "created_at", OBX_OID_TIMESTAMPTZ, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        r.cols[5].type_oid = cases[i].oid;
        row_set(&r, "created_at", cases[i].text);
        route(ob, &r, &ev, cases[i].ms < 0 ? OBX_ROUTE_DLQ : OBX_ROUTE_EVENT);
        if (cases[i].ms >= 0 && ev.timestamp_ms != cases[i].ms)
            ck_abort_msg("%s: got %lld, expected %lld", cases[i].text, (long long)ev.timestamp_ms,
                         (long long)cases[i].ms);
        if (cases[i].ms < 0)
            assert_error_has(&ev, "\"created_at\"");
    }
    /* SQL NULL falls back to the commit time */
    row_set(&r, "created_at", NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.timestamp_ms, COMMIT_TS_MS);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__commit_timestamp_conversion)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_txn_info t = txn;
    struct obx_event ev;
    struct row r;

    row_default(&r);
    t.commit_ts = 1;
    ck_assert_int_eq(obx_outbox_route_row(ob, &r.rel, &r.tup, &t, &ev, NULL), OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.timestamp_ms, INT64_C(946684800000));
    /* no commit time: left to the producer */
    t.commit_ts = 0;
    ck_assert_int_eq(obx_outbox_route_row(ob, &r.rel, &r.tup, &t, &ev, NULL), OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.timestamp_ms, 0);
    t.commit_ts = -1; /* one microsecond before 2000: floor, not truncation */
    ck_assert_int_eq(obx_outbox_route_row(ob, &r.rel, &r.tup, &t, &ev, NULL), OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.timestamp_ms, INT64_C(946684799999));
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__partition_placement)
{
    struct obx_outbox *ob =
        router("outbox.table.fields.additional.placement=shard:partition", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_col(&r, "shard", OBX_OID_INT4, "7");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.partition, 7);
    row_set(&r, "shard", NULL);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.partition, OBX_PARTITION_ANY);
    row_set(&r, "shard", "-1");
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    assert_error_has(&ev, "partition");
    row_set(&r, "shard", "2147483648");
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_route_row: invalid rows ----------------------------------------------------- */

START_TEST(route_row__null_key_dlq)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "aggregateid", NULL);
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    ck_assert_str_eq(ev.topic, "outbox.dlq");
    ck_assert_ptr_null(ev.key);
    ck_assert_uint_eq(ev.nheaders, 1);
    assert_header(&ev, "error",
                  "column \"aggregateid\" (outbox.table.field.event.key) of table public.outbox "
                  "is NULL");
    assert_value(&ev, "{\"id\": \"8f8e4b5c-0d3a-4d6e-9a41-3c1f1b0e7a11\", \"aggregatetype\": "
                      "\"order\", \"aggregateid\": null, \"type\": \"OrderCreated\", "
                      "\"payload\": \"{\\\"a\\\": 1, \\\"b\\\": [1, 2]}\"}");
    ck_assert_int_eq(ev.partition, OBX_PARTITION_ANY);
    ck_assert_int_eq(ev.timestamp_ms, COMMIT_TS_MS);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__null_key_skip)
{
    struct obx_outbox *ob = router("outbox.invalid.behavior=skip", NULL);
    struct obx_event ev;
    struct row r;

    ck_assert_int_eq(obx_outbox_invalid_behavior(ob), OBX_INVALID_SKIP);
    row_default(&r);
    row_set(&r, "aggregateid", NULL);
    route(ob, &r, &ev, OBX_ROUTE_SKIP);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__null_key_fail)
{
    struct obx_outbox *ob = router("outbox.invalid.behavior=fail", NULL);
    struct obx_event ev;
    struct obx_error err;
    struct row r;

    row_default(&r);
    row_set(&r, "aggregateid", NULL);
    ck_assert_int_eq(obx_outbox_route_row(ob, &r.rel, &r.tup, &txn, &ev, &err), OBX_ERR_INVALID);
    ck_assert_int_eq(err.code, OBX_ERR_INVALID);
    ck_assert_str_eq(err.msg, "column \"aggregateid\" (outbox.table.field.event.key) of table "
                              "public.outbox is NULL");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__null_route_each_behavior)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct obx_error err;
    struct row r;

    row_default(&r);
    row_set(&r, "aggregatetype", NULL);
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    /* the key could be read: the dead letter keeps it */
    assert_key(&ev, "42");
    assert_error_has(&ev, "\"aggregatetype\"");
    assert_error_has(&ev, "outbox.route.by.field");
    obx_outbox_free(ob);
    ob = router("outbox.invalid.behavior=skip", NULL);
    route(ob, &r, &ev, OBX_ROUTE_SKIP);
    obx_outbox_free(ob);
    ob = router("outbox.invalid.behavior=fail", NULL);
    ck_assert_int_eq(obx_outbox_route_row(ob, &r.rel, &r.tup, &txn, &ev, &err), OBX_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "outbox.route.by.field"));
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__null_id_is_invalid)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "id", NULL);
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    assert_error_has(&ev, "outbox.table.field.event.id");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__unchanged_toast_is_invalid)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "payload", unchanged);
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    assert_error_has(&ev, "unchanged TOAST");
    /* the dump shows it as null */
    ck_assert(contains(ev.value, ev.value_len, "\"payload\": null}"));
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__missing_column_is_invalid)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;

    row_init(&r, "public", "outbox");
    row_col(&r, "id", OBX_OID_UUID, "e1");
    row_col(&r, "aggregatetype", OBX_OID_VARCHAR, "order");
    row_col(&r, "payload", OBX_OID_JSONB, "{}");
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    assert_header(&ev, "error",
                  "column \"aggregateid\" (outbox.table.field.event.key) of table public.outbox "
                  "is missing");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_row__custom_dlq_topic)
{
    struct obx_outbox *ob = router("outbox.dlq.topic=my.dead.letters", NULL);
    struct obx_event ev;
    struct row r;

    row_default(&r);
    row_set(&r, "aggregateid", NULL);
    route(ob, &r, &ev, OBX_ROUTE_DLQ);
    ck_assert_str_eq(ev.topic, "my.dead.letters");
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_route_message --------------------------------------------------------------- */

static const char msg_basic[] =
    "{\"id\": \"e1\", \"aggregatetype\": \"order\", \"aggregateid\": \"42\", \"type\": "
    "\"OrderCreated\", \"payload\": {\"a\":1,\n \"b\" : [1,2]}}";

START_TEST(route_message__other_prefix_skipped)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_pgo_message m = message("audit", msg_basic);
    struct obx_event ev;

    ck_assert_int_eq(obx_outbox_route_message(ob, &m, &txn, &ev, NULL), OBX_ROUTE_SKIP);
    m = message("outboxx", msg_basic);
    ck_assert_int_eq(obx_outbox_route_message(ob, &m, &txn, &ev, NULL), OBX_ROUTE_SKIP);
    obx_outbox_free(ob);
    ob = router("outbox.message.prefix=audit", NULL);
    m = message("audit", msg_basic);
    ck_assert_int_eq(obx_outbox_route_message(ob, &m, &txn, &ev, NULL), OBX_ROUTE_EVENT);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__basic)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;

    route_msg(ob, msg_basic, &ev, OBX_ROUTE_EVENT);
    ck_assert_str_eq(ev.topic, "outbox.event.order");
    assert_key(&ev, "42");
    assert_value(&ev, "{\"a\": 1, \"b\": [1, 2]}");
    ck_assert_uint_eq(ev.nheaders, 1);
    assert_header(&ev, "id", "e1");
    ck_assert_int_eq(ev.timestamp_ms, COMMIT_TS_MS);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__same_bytes_as_jsonb_row)
{
    /* what jsonb_build_object('id', ..., 'payload', payload_jsonb)::text sends */
    static const char content[] = "{\"id\": \"e1\", \"type\": \"OrderCreated\", \"payload\": "
                                  "{\"a\": 1, \"b\": [1, 2], \"s\": \"x, y: z\"}, "
                                  "\"aggregateid\": \"42\", \"aggregatetype\": \"order\"}";
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    struct row r;
    char row_value[128];

    row_default(&r);
    row_set(&r, "payload", "{\"a\": 1, \"b\": [1, 2], \"s\": \"x, y: z\"}");
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    snprintf(row_value, sizeof(row_value), "%.*s", (int)ev.value_len, (const char *)ev.value);
    route_msg(ob, content, &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, row_value);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__payload_kinds)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;

    route_msg(ob, "{\"id\":\"e\",\"aggregatetype\":\"t\",\"aggregateid\":\"k\",\"payload\":\"hi\"}",
              &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "\"hi\"");
    route_msg(ob, "{\"id\":\"e\",\"aggregatetype\":\"t\",\"aggregateid\":\"k\",\"payload\":-1.5e3}",
              &ev, OBX_ROUTE_EVENT);
    assert_value(&ev, "-1.5e3");
    route_msg(ob, "{\"id\":\"e\",\"aggregatetype\":\"t\",\"aggregateid\":\"k\",\"payload\":null}",
              &ev, OBX_ROUTE_EVENT);
    ck_assert_ptr_null(ev.value);
    route_msg(ob, "{\"id\":\"e\",\"aggregatetype\":\"t\",\"aggregateid\":\"k\"}", &ev,
              OBX_ROUTE_DLQ);
    assert_error_has(&ev, "\"payload\"");
    assert_error_has(&ev, "missing");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__text_fields)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;

    /* numbers as written, escapes decoded, the last of duplicate members wins */
    route_msg(ob,
              "{\"id\": 17, \"aggregatetype\": \"ord\\u0065r\", \"aggregateid\": \"a\\\"b\", "
              "\"aggregateid\": \"k\\u00e9\", \"payload\": {}}",
              &ev, OBX_ROUTE_EVENT);
    assert_header(&ev, "id", "17");
    ck_assert_str_eq(ev.topic, "outbox.event.order");
    assert_key(&ev, "k\xc3\xa9");
    route_msg(ob,
              "{\"id\": \"e\", \"aggregatetype\": \"t\", \"aggregateid\": {\"x\": 1}, "
              "\"payload\": {}}",
              &ev, OBX_ROUTE_DLQ);
    assert_error_has(&ev, "string or number");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__invalid_json_each_behavior)
{
    static const char *const bad[] = {
        "not json",          "{\"id\": \"e\",}",     "[1, 2]",
        "{\"a\": \"\x01\"}", "{\"a\": tru}",         "{\"a\": 01}",
        "{\"a\": \"\\x\"}",  "{\"a\": \"\\u12g4\"}", "",
        "{\"a\": 1} {}",
    };
    struct obx_outbox *ob = router(NULL);
    struct obx_pgo_message m;
    struct obx_event ev;
    struct obx_error err;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        route_msg(ob, bad[i], &ev, OBX_ROUTE_DLQ);
        ck_assert_str_eq(ev.topic, "outbox.dlq");
        /* the content as received */
        ck_assert_uint_eq(ev.value_len, strlen(bad[i]));
        assert_error_has(&ev, "not a JSON object");
    }
    obx_outbox_free(ob);
    ob = router("outbox.invalid.behavior=skip", NULL);
    route_msg(ob, "nope", &ev, OBX_ROUTE_SKIP);
    obx_outbox_free(ob);
    ob = router("outbox.invalid.behavior=fail", NULL);
    m = message("outbox", "nope");
    ck_assert_int_eq(obx_outbox_route_message(ob, &m, &txn, &ev, &err), OBX_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a JSON object"));
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__deep_nesting_refused)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;
    char *doc = malloc(20000);
    size_t n = 0;

    ck_assert_ptr_nonnull(doc);
    n += (size_t)sprintf(doc, "{\"id\":\"e\",\"aggregatetype\":\"t\",\"aggregateid\":\"k\","
                              "\"payload\":");
    for (int i = 0; i < 5000; i++)
        doc[n++] = '[';
    for (int i = 0; i < 5000; i++)
        doc[n++] = ']';
    doc[n++] = '}';
    doc[n] = '\0';
    route_msg(ob, doc, &ev, OBX_ROUTE_DLQ);
    free(doc);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__missing_route_field)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev;

    route_msg(ob, "{\"id\": \"e\", \"aggregateid\": \"k\", \"payload\": {}}", &ev, OBX_ROUTE_DLQ);
    assert_header(&ev, "error",
                  "field \"aggregatetype\" (outbox.route.by.field) of logical message \"outbox\" "
                  "is missing");
    assert_key(&ev, "k");
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__headers_placements_timestamp_partition)
{
    struct obx_outbox *ob =
        router("outbox.table.field.event.headers=headers", "outbox.table.field.event.timestamp=ts",
               "outbox.table.fields.additional.placement=type:header:eventType,type:envelope,"
               "p:partition,extra:envelope",
               NULL);
    struct obx_event ev;

    route_msg(ob,
              "{\"id\": \"e\", \"aggregatetype\": \"t\", \"aggregateid\": \"k\", \"type\": \"T\", "
              "\"payload\": {\"v\":1}, \"headers\": {\"h\": \"1\"}, \"p\": 3, "
              "\"ts\": \"2026-11-22 21:40:00+05:30\"}",
              &ev, OBX_ROUTE_EVENT);
    assert_header(&ev, "eventType", "T");
    assert_header(&ev, "h", "1");
    ck_assert_int_eq(ev.partition, 3);
    ck_assert_int_eq(ev.timestamp_ms, INT64_C(1795363800000));
    assert_value(&ev, "{\"payload\": {\"v\": 1}, \"type\": \"T\", \"extra\": null}");
    /* optional members absent: no headers, commit time, partitioner */
    route_msg(ob,
              "{\"id\": \"e\", \"aggregatetype\": \"t\", \"aggregateid\": \"k\", \"payload\": 1}",
              &ev, OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.partition, OBX_PARTITION_ANY);
    ck_assert_int_eq(ev.timestamp_ms, COMMIT_TS_MS);
    assert_header(&ev, "eventType", NULL);
    route_msg(ob,
              "{\"id\": \"e\", \"aggregatetype\": \"t\", \"aggregateid\": \"k\", \"payload\": 1, "
              "\"p\": 1.5}",
              &ev, OBX_ROUTE_DLQ);
    route_msg(ob,
              "{\"id\": \"e\", \"aggregatetype\": \"t\", \"aggregateid\": \"k\", \"payload\": 1, "
              "\"headers\": [1]}",
              &ev, OBX_ROUTE_DLQ);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(route_message__non_transactional)
{
    struct obx_outbox *ob = router("outbox.headers.source=true", NULL);
    struct obx_pgo_message m = message("outbox", msg_basic);
    struct obx_event ev;

    m.transactional = false;
    m.xid = 0;
    ck_assert_int_eq(obx_outbox_route_message(ob, &m, NULL, &ev, NULL), OBX_ROUTE_EVENT);
    ck_assert_int_eq(ev.timestamp_ms, 0);
    assert_header(&ev, "outbox.lsn", "0/2000010");
    assert_header(&ev, "outbox.xid", "0");
    assert_header(&ev, "outbox.seq", "0");
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_dead_letter ----------------------------------------------------------------- */

START_TEST(dead_letter__copies_and_adds_error)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev, dlq;
    struct row r;

    row_default(&r);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ev.partition = 5;
    ck_assert_int_eq(obx_outbox_dead_letter(ob, &ev, "Broker: Message size too large", &dlq, NULL),
                     0);
    ck_assert_str_eq(dlq.topic, "outbox.dlq");
    assert_key(&dlq, "42");
    assert_value(&dlq, "{\"a\": 1, \"b\": [1, 2]}");
    ck_assert_int_eq(dlq.partition, OBX_PARTITION_ANY);
    ck_assert_uint_eq(dlq.nheaders, 2);
    assert_header(&dlq, "id", "8f8e4b5c-0d3a-4d6e-9a41-3c1f1b0e7a11");
    assert_header(&dlq, "error", "Broker: Message size too large");
    /* the original event is untouched */
    ck_assert_str_eq(ev.topic, "outbox.event.order");
    ck_assert_uint_eq(ev.nheaders, 1);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(dead_letter__refused_dead_letter_is_error)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev = {.topic = "outbox.dlq"}, dlq;
    struct obx_error err;

    ck_assert_int_eq(obx_outbox_dead_letter(ob, &ev, "too large", &dlq, &err), OBX_ERR_KAFKA);
    ck_assert_ptr_nonnull(strstr(err.msg, "too large"));
    obx_outbox_free(ob);
}
END_TEST

START_TEST(dead_letter__no_dlq_topic_is_config_error)
{
    struct obx_outbox *ob = router("outbox.invalid.behavior=skip", "outbox.dlq.topic=", NULL);
    struct obx_event ev = {.topic = "t"}, dlq;
    struct obx_error err;

    ck_assert_int_eq(obx_outbox_dead_letter(ob, &ev, "why", &dlq, &err), OBX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "outbox.dlq.topic"));
    obx_outbox_free(ob);
}
END_TEST

START_TEST(dead_letter__full_headers)
{
    struct obx_outbox *ob = router(NULL);
    struct obx_event ev = {.topic = "t"}, dlq;

    for (size_t i = 0; i < OBX_EVENT_MAX_HEADERS; i++)
        ev.headers[i] = (struct obx_header){"h", "v", 1};
    ev.nheaders = OBX_EVENT_MAX_HEADERS;
    ck_assert_int_eq(obx_outbox_dead_letter(ob, &ev, "why", &dlq, NULL), 0);
    ck_assert_uint_eq(dlq.nheaders, OBX_EVENT_MAX_HEADERS);
    assert_header(&dlq, "error", "why");
    obx_outbox_free(ob);
}
END_TEST

/* --- obx_outbox_invalid_behavior / obx_outbox_scratch_capacity ------------------------------ */

START_TEST(invalid_behavior__each_value)
{
    struct obx_outbox *ob = router("outbox.invalid.behavior=fail", NULL);

    ck_assert_int_eq(obx_outbox_invalid_behavior(ob), OBX_INVALID_FAIL);
    obx_outbox_free(ob);
    ob = router("outbox.invalid.behavior=dlq", NULL);
    ck_assert_int_eq(obx_outbox_invalid_behavior(ob), OBX_INVALID_DLQ);
    obx_outbox_free(ob);
}
END_TEST

START_TEST(scratch_capacity__grows_for_large_event_only)
{
    struct obx_outbox *ob = router("outbox.table.fields.additional.placement=type:envelope", NULL);
    struct obx_event ev;
    struct row r;
    size_t small;
    char *big = malloc((1 << 20) + 1);

    ck_assert_ptr_nonnull(big);
    memset(big, 'x', 1 << 20);
    big[1 << 20] = '\0';
    row_default(&r);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    small = obx_outbox_scratch_capacity(ob);
    r.cols[4].type_oid = OBX_OID_TEXT;
    row_set(&r, "payload", big);
    route(ob, &r, &ev, OBX_ROUTE_EVENT);
    ck_assert_uint_gt(obx_outbox_scratch_capacity(ob), small);
    ck_assert_uint_eq(ev.value_len,
                      (1 << 20) + strlen("{\"payload\": \"\", \"type\": \"OrderCreated\"}"));
    obx_outbox_free(ob);
    free(big);
}
END_TEST

static Suite *
outbox_suite(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc;

    tc = tcase_create("new");
    tcase_add_test(tc, new__defaults);
    tcase_add_test(tc, new__bad_placement_names_key);
    tcase_add_test(tc, new__empty_payload_or_route_field);
    tcase_add_test(tc, new__bad_tables);
    suite_add_tcase(s, tc);

    tc = tcase_create("free");
    tcase_add_test(tc, free__null_is_noop);
    suite_add_tcase(s, tc);

    tc = tcase_create("is_table");
    tcase_add_test(tc, is_table__default_public_outbox);
    tcase_add_test(tc, is_table__list);
    suite_add_tcase(s, tc);

    tc = tcase_create("check_relation");
    tcase_add_test(tc, check_relation__default_table_ok);
    tcase_add_test(tc, check_relation__missing_column_named);
    tcase_add_test(tc, check_relation__payload_type);
    tcase_add_test(tc, check_relation__timestamp_headers_partition_types);
    tcase_add_test(tc, check_relation__placement_column_missing);
    tcase_add_test(tc, check_relation__route_column_unused_without_placeholder);
    suite_add_tcase(s, tc);

    tc = tcase_create("route_row");
    tcase_add_test(tc, route_row__defaults);
    tcase_add_test(tc, route_row__overridden_columns);
    tcase_add_test(tc, route_row__template_two_placeholders);
    tcase_add_test(tc, route_row__template_no_placeholder);
    tcase_add_test(tc, route_row__tombstone);
    tcase_add_test(tc, route_row__bytea_payload);
    tcase_add_test(tc, route_row__bytea_undecodable_is_invalid);
    tcase_add_test(tc, route_row__unicode_passthrough);
    tcase_add_test(tc, route_row__routing_value_not_a_topic_is_invalid);
    tcase_add_test(tc, route_row__large_payload);
    tcase_add_test(tc, route_row__tuple_column_count_mismatch);
    tcase_add_test(tc, route_row__scratch_reused_100000_rows);
    tcase_add_test(tc, route_row__envelope_jsonb_payload_exact);
    tcase_add_test(tc, route_row__envelope_text_payload_escaped);
    tcase_add_test(tc, route_row__envelope_bytea_base64);
    tcase_add_test(tc, route_row__envelope_value_types);
    tcase_add_test(tc, route_row__envelope_null_payload_stays_tombstone);
    tcase_add_test(tc, route_row__header_placements);
    tcase_add_test(tc, route_row__headers_column);
    tcase_add_test(tc, route_row__headers_column_bad_json_is_invalid);
    tcase_add_test(tc, route_row__too_many_headers_is_invalid);
    tcase_add_test(tc, route_row__source_headers);
    tcase_add_test(tc, route_row__timestamp_column);
    tcase_add_test(tc, route_row__commit_timestamp_conversion);
    tcase_add_test(tc, route_row__partition_placement);
    tcase_add_test(tc, route_row__null_key_dlq);
    tcase_add_test(tc, route_row__null_key_skip);
    tcase_add_test(tc, route_row__null_key_fail);
    tcase_add_test(tc, route_row__null_route_each_behavior);
    tcase_add_test(tc, route_row__null_id_is_invalid);
    tcase_add_test(tc, route_row__unchanged_toast_is_invalid);
    tcase_add_test(tc, route_row__missing_column_is_invalid);
    tcase_add_test(tc, route_row__custom_dlq_topic);
    suite_add_tcase(s, tc);

    tc = tcase_create("route_message");
    tcase_add_test(tc, route_message__other_prefix_skipped);
    tcase_add_test(tc, route_message__basic);
    tcase_add_test(tc, route_message__same_bytes_as_jsonb_row);
    tcase_add_test(tc, route_message__payload_kinds);
    tcase_add_test(tc, route_message__text_fields);
    tcase_add_test(tc, route_message__invalid_json_each_behavior);
    tcase_add_test(tc, route_message__deep_nesting_refused);
    tcase_add_test(tc, route_message__missing_route_field);
    tcase_add_test(tc, route_message__headers_placements_timestamp_partition);
    tcase_add_test(tc, route_message__non_transactional);
    suite_add_tcase(s, tc);

    tc = tcase_create("dead_letter");
    tcase_add_test(tc, dead_letter__copies_and_adds_error);
    tcase_add_test(tc, dead_letter__refused_dead_letter_is_error);
    tcase_add_test(tc, dead_letter__no_dlq_topic_is_config_error);
    tcase_add_test(tc, dead_letter__full_headers);
    suite_add_tcase(s, tc);

    tc = tcase_create("invalid_behavior");
    tcase_add_test(tc, invalid_behavior__each_value);
    suite_add_tcase(s, tc);

    tc = tcase_create("scratch_capacity");
    tcase_add_test(tc, scratch_capacity__grows_for_large_event_only);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(outbox_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
