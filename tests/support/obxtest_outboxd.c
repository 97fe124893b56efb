/* obxtest_outboxd.c - the stack for end-to-end tests (PostgreSQL with the outbox table, a
 * broker, outboxd runs with log files) and the slot positions tests assert on. See
 * obxtest_outboxd.h. */
#include "obxtest_outboxd.h"

#include "obxtest.h"

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OUTBOXD_MAX_SETTINGS 48
#define STREAMING_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 30000
#define SQL_FILE_MAX (1024 * 1024)

struct obxt_outboxd {
    struct obxt_proc *proc;
    char *log;
};

/* The directory of the unchecked fixture (set in the parent, inherited by the forked tests). */
static char *fixture_root;

/* ---- fixture and stack ----------------------------------------------------------------------- */

void
obxt_stack_fixture_setup(void)
{
    fixture_root = obxt_proc_tmpdir("outboxd");
    if (fixture_root == NULL)
        fprintf(stderr, "obxt_stack_fixture_setup: cannot create a temp directory\n");
}

void
obxt_stack_fixture_teardown(void)
{
    const char *keep = getenv("OBX_KEEP_LOGS");

    if (fixture_root == NULL)
        return;
    if (keep != NULL && *keep != '\0' && strcmp(keep, "0") != 0)
        fprintf(stderr, "obxt_stack: logs kept in %s\n", fixture_root);
    else if (obxt_proc_rmtree(fixture_root) != 0)
        fprintf(stderr, "obxt_stack: could not remove %s\n", fixture_root);
    free(fixture_root);
    fixture_root = NULL;
}

void
obxt_stack_add_case(Suite *s, const char *name, const TTest *test)
{
    TCase *tc = tcase_create(name);

    tcase_add_unchecked_fixture(tc, obxt_stack_fixture_setup, obxt_stack_fixture_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

int
obxt_stack_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* A fresh directory for one stack: below the fixture's, or in $TMPDIR. */
static char *
stack_dir(void)
{
    char *path;

    if (fixture_root == NULL)
        return obxt_proc_tmpdir("stack");
    if (asprintf(&path, "%s/stack-XXXXXX", fixture_root) < 0)
        return NULL;
    if (mkdtemp(path) == NULL) {
        free(path);
        return NULL;
    }
    return path;
}

struct obxt_stack *
obxt_stack_start(const struct obxt_stack_opts *opts)
{
    static const struct obxt_stack_opts defaults = {0};
    struct obxt_stack *s = calloc(1, sizeof(*s));

    if (opts == NULL)
        opts = &defaults;
    ck_assert_msg(s != NULL, "out of memory");
    s->dir = stack_dir();
    ck_assert_msg(s->dir != NULL, "cannot create a log directory for outboxd");
    s->pg = obxt_pg_startv(opts->pg_settings);
    s->broker = obxt_broker_start_args(opts->nbrokers > 0 ? opts->nbrokers : 3, opts->broker_args);
    if (!opts->no_outbox_table)
        obxt_stack_sql_file(s, "outbox.sql");
    return s;
}

void
obxt_stack_stop(struct obxt_stack *s)
{
    int pg_rc;

    if (s == NULL)
        return;
    obxt_broker_stop(s->broker);
    pg_rc = obxt_pg_stop(s->pg);
    if (fixture_root == NULL)
        obxt_proc_rmtree(s->dir);
    free(s->dir);
    free(s);
    ck_assert_msg(pg_rc == 0, "obx-pgtmp did not end cleanly (see the test log)");
}

const char *
obxt_stack_bootstrap(const struct obxt_stack *s)
{
    return obxt_broker_bootstrap(s->broker);
}

/* The whole of file, NUL-terminated, malloc'd; NULL when it cannot be read. */
static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    size_t n = 0;

    if (f == NULL)
        return NULL;
    text = malloc(SQL_FILE_MAX + 1);
    if (text != NULL) {
        n = fread(text, 1, SQL_FILE_MAX, f);
        text[n] = '\0';
    }
    if (ferror(f) || n == SQL_FILE_MAX) {
        free(text);
        text = NULL;
    }
    fclose(f);
    return text;
}

void
obxt_stack_sql_file(struct obxt_stack *s, const char *name)
{
    char *path, *sql;

    ck_assert_int_gt(asprintf(&path, "%s/sql/%s", obxt_env("OBX_SOURCE_ROOT"), name), 0);
    sql = read_file(path);
    ck_assert_msg(sql != NULL, "cannot read %s", path);
    obxt_pg_exec(s->pg, "%s", sql);
    free(sql);
    free(path);
}

/* ---- records read back -------------------------------------------------------------------- */

#define CONSUME_TIMEOUT_MS 30000

struct obxt_records *
obxt_stack_consume_exactly(struct obxt_stack *s, const char *const topics[], size_t expect)
{
    struct obxt_records *recs =
        obxt_consume(obxt_stack_bootstrap(s), topics, expect, CONSUME_TIMEOUT_MS);

    if (recs->count != expect) {
        fprintf(stderr, "expected %zu records of %s%s, got %zu:\n", expect, topics[0],
                topics[1] != NULL ? " and more topics" : "", recs->count);
        obxt_records_print(recs, stderr);
    }
    ck_assert_uint_eq(recs->count, expect);
    return recs;
}

const struct obxt_record *
obxt_records_require(const struct obxt_records *recs, const char *topic, const char *key)
{
    for (size_t i = 0; i < recs->count; i++) {
        const struct obxt_record *rec = &recs->recs[i];

        if (strcmp(rec->topic, topic) == 0 && rec->key != NULL && strcmp(rec->key, key) == 0)
            return rec;
    }
    obxt_records_print(recs, stderr);
    ck_abort_msg("no record with key %s on %s (the records read are above)", key, topic);
    return NULL;
}

void
obxt_record_assert_header(const struct obxt_record *rec, const char *name, const char *value)
{
    for (size_t h = 0; h < rec->header_count; h++) {
        const struct obxt_header *hd = &rec->headers[h];

        if (strcmp(hd->name, name) != 0)
            continue;
        if (value == NULL) {
            ck_assert_msg(hd->value == NULL, "header %s: expected a null value, got \"%s\"", name,
                          hd->value);
            return;
        }
        ck_assert_msg(hd->value != NULL, "header %s: null, expected \"%s\"", name, value);
        ck_assert_msg(hd->value_len == strlen(value) &&
                          memcmp(hd->value, value, hd->value_len) == 0,
                      "header %s: \"%s\" (%zu bytes), expected \"%s\"", name, hd->value,
                      hd->value_len, value);
        return;
    }
    ck_abort_msg("record %s/%d@%lld has no header %s", rec->topic, (int)rec->partition,
                 (long long)rec->offset, name);
}

long long
obxt_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- positions ---------------------------------------------------------------------------- */

char *
obxt_stack_wal_lsn(struct obxt_stack *s)
{
    return obxt_pg_query_value(s->pg, "SELECT pg_current_wal_lsn()::text");
}

char *
obxt_stack_confirmed(struct obxt_stack *s, const char *slot)
{
    PGresult *res;
    char *value = NULL;
    const char *params[1] = {slot};

    res = PQexecParams(obxt_pg_conn(s->pg),
                       "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                       "WHERE slot_name = $1",
                       1, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "reading slot %s: %s", slot,
                  PQresultErrorMessage(res));
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        value = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return value;
}

long long
obxt_stack_lsn_diff(struct obxt_stack *s, const char *a, const char *b)
{
    return obxt_pg_query_int(s->pg, "SELECT pg_wal_lsn_diff('%s', '%s')::bigint", a, b);
}

long long
obxt_stack_slot_lag(struct obxt_stack *s, const char *slot)
{
    char *confirmed = obxt_stack_confirmed(s, slot);
    long long lag;

    ck_assert_msg(confirmed != NULL, "slot %s has no confirmed_flush_lsn", slot);
    lag = obxt_pg_query_int(s->pg, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')::bigint",
                            confirmed);
    free(confirmed);
    return lag;
}

bool
obxt_stack_wait_confirmed(struct obxt_stack *s, const char *slot, const char *lsn, int timeout_ms)
{
    long long deadline = obxt_proc_now_ms() + timeout_ms;

    for (;;) {
        char *confirmed = obxt_stack_confirmed(s, slot);
        bool reached = confirmed != NULL && obxt_stack_lsn_diff(s, confirmed, lsn) >= 0;

        free(confirmed);
        if (reached)
            return true;
        if (obxt_proc_now_ms() >= deadline)
            return false;
        usleep(100 * 1000);
    }
}

void
obxt_stack_probe_create(struct obxt_stack *s, const char *name)
{
    obxt_pg_exec(s->pg, "SELECT pg_create_logical_replication_slot('%s', 'test_decoding')", name);
}

char *
obxt_stack_probe_last_commit(struct obxt_stack *s, const char *name)
{
    /* test_decoding reports a COMMIT at the transaction's end_lsn (logical.c, commit_cb_wrapper) */
    return obxt_pg_query_value(s->pg,
                               "SELECT max(lsn)::text FROM pg_logical_slot_peek_changes('%s', "
                               "NULL, NULL) WHERE data LIKE 'COMMIT%%'",
                               name);
}

void
obxt_stack_probe_drop(struct obxt_stack *s, const char *name)
{
    obxt_pg_exec(s->pg, "SELECT pg_drop_replication_slot('%s')", name);
}

/* ---- outboxd runs ------------------------------------------------------------------------- */

/* argv for outboxd: the binary, then "-X" before each of the fixture's and the caller's
 * settings. Strings in owned[] are the caller's to free. */
static size_t
outboxd_argv(struct obxt_stack *s, const char *const settings[], const char **argv, char **owned)
{
    size_t n = 0, nowned = 0;

    argv[n++] = obxt_env("OBX_OUTBOXD");
    ck_assert_int_gt(asprintf(&owned[nowned++], "postgres.conninfo=%s", obxt_pg_conninfo(s->pg)),
                     0);
    ck_assert_int_gt(
        asprintf(&owned[nowned++], "kafka.bootstrap.servers=%s", obxt_stack_bootstrap(s)), 0);
    owned[nowned++] = strdup("postgres.reconnect.backoff.ms=100");
    owned[nowned++] = strdup("postgres.reconnect.backoff.max.ms=1000");
    owned[nowned++] = strdup("kafka.reconnect.backoff.max.ms=1000");
    owned[nowned++] = strdup("shutdown.timeout.ms=10000");
    for (size_t i = 0; i < nowned; i++) {
        ck_assert_msg(owned[i] != NULL, "out of memory");
        argv[n++] = "-X";
        argv[n++] = owned[i];
    }
    for (size_t i = 0; settings != NULL && settings[i] != NULL; i++) {
        ck_assert_msg(i < OUTBOXD_MAX_SETTINGS, "more than %d outboxd settings",
                      OUTBOXD_MAX_SETTINGS);
        argv[n++] = "-X";
        argv[n++] = settings[i];
    }
    argv[n] = NULL;
    return nowned;
}

struct obxt_outboxd *
obxt_outboxd_startv(struct obxt_stack *s, const char *const settings[])
{
    const char *argv[1 + 2 * (8 + OUTBOXD_MAX_SETTINGS) + 1];
    char *owned[8];
    struct obxt_outboxd *o = calloc(1, sizeof(*o));
    size_t nowned;

    ck_assert_msg(o != NULL, "out of memory");
    ck_assert_int_gt(asprintf(&o->log, "%s/outboxd-%d.log", s->dir, ++s->runs), 0);
    nowned = outboxd_argv(s, settings, argv, owned);
    o->proc = obxt_proc_spawn(argv, NULL, o->log, OBXT_PROC_STDIN_NULL | OBXT_PROC_STDOUT_TO_LOG);
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    ck_assert_msg(o->proc != NULL, "cannot start %s", argv[0]);
    return o;
}

/* Collects the NULL-terminated variadic settings and starts outboxd. */
static struct obxt_outboxd *
outboxd_start_va(struct obxt_stack *s, va_list ap)
{
    const char *settings[OUTBOXD_MAX_SETTINGS + 1];
    size_t n = 0;

    for (const char *v = va_arg(ap, const char *); v != NULL; v = va_arg(ap, const char *)) {
        ck_assert_msg(n < OUTBOXD_MAX_SETTINGS, "more than %d outboxd settings",
                      OUTBOXD_MAX_SETTINGS);
        settings[n++] = v;
    }
    settings[n] = NULL;
    return obxt_outboxd_startv(s, settings);
}

struct obxt_outboxd *
obxt_outboxd_start(struct obxt_stack *s, ...)
{
    struct obxt_outboxd *o;
    va_list ap;

    va_start(ap, s);
    o = outboxd_start_va(s, ap);
    va_end(ap);
    return o;
}

struct obxt_outboxd *
obxt_outboxd_start_streaming(struct obxt_stack *s, ...)
{
    struct obxt_outboxd *o;
    va_list ap;

    va_start(ap, s);
    o = outboxd_start_va(s, ap);
    va_end(ap);
    if (obxt_outboxd_wait_streaming(o, STREAMING_TIMEOUT_MS) != 0) {
        obxt_outboxd_print_log(o, stderr);
        ck_abort_msg("outboxd did not start streaming (exit code %d); its log is above",
                     obxt_outboxd_wait_exit(o, 0));
    }
    return o;
}

int
obxt_outboxd_wait_streaming(struct obxt_outboxd *o, int timeout_ms)
{
    long long deadline = obxt_proc_now_ms() + timeout_ms;

    for (;;) {
        if (obxt_proc_log_contains(o->log, "streaming from"))
            return 0;
        if (!obxt_proc_running(o->proc) || obxt_proc_now_ms() >= deadline)
            return -1;
        usleep(50 * 1000);
    }
}

const char *
obxt_outboxd_log(const struct obxt_outboxd *o)
{
    return o->log;
}

struct obxt_proc *
obxt_outboxd_proc(struct obxt_outboxd *o)
{
    return o->proc;
}

int
obxt_outboxd_wait_exit(struct obxt_outboxd *o, int timeout_ms)
{
    if (obxt_proc_wait(o->proc, timeout_ms, NULL) != 0)
        return -1;
    return obxt_proc_exit_code(o->proc);
}

void
obxt_outboxd_stop(struct obxt_outboxd *o)
{
    int code;

    if (obxt_proc_running(o->proc))
        ck_assert_int_eq(obxt_proc_kill(o->proc, SIGTERM), 0);
    code = obxt_outboxd_wait_exit(o, STOP_TIMEOUT_MS);
    if (code != 0) {
        obxt_outboxd_print_log(o, stderr);
        ck_abort_msg("outboxd did not stop cleanly on SIGTERM: exit code %d (-1: still running "
                     "after %d ms); its log is above",
                     code, STOP_TIMEOUT_MS);
    }
    obxt_outboxd_free(o);
}

void
obxt_outboxd_print_log(const struct obxt_outboxd *o, FILE *out)
{
    FILE *f = fopen(o->log, "r");
    char line[4096];

    fprintf(out, "---- %s ----\n", o->log);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        fputs(line, out);
    fprintf(out, "---- end of %s ----\n", o->log);
    if (f != NULL)
        fclose(f);
}

void
obxt_outboxd_free(struct obxt_outboxd *o)
{
    if (o == NULL)
        return;
    obxt_proc_free(o->proc);
    free(o->log);
    free(o);
}
