/* test_repl.c - integration tests of the repl module through obx-repl-probe ($OBX_REPL_PROBE)
 * against a throwaway PostgreSQL (obx-pgtmp): slot and publication creation and reuse, the
 * server states that must stop outboxd with a clear message, streaming of inserts and logical
 * messages, keepalive replies under a short wal_sender_timeout, reconnecting after a server
 * restart with a rebuilt relation cache, a slot held by another instance, the confirmed position
 * in pg_replication_slots, and the orderly stop on SIGTERM.
 *
 * One server (wal_sender_timeout = 2s) serves the "repl" TCase; every test uses its own tables,
 * slot and publication. The wal_level test starts its own server. */
#include "obxtest.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINE_TIMEOUT_MS 15000
#define EXIT_TIMEOUT_MS 20000
#define PROBE_MAX_ARGS 32
/* exit status of obx-repl-probe for OBX_ERR_SERVER */
#define EXIT_SERVER 5

static struct obxt_pg *server;

static void
server_up(void)
{
    server = obxt_pg_start("wal_sender_timeout=2s", NULL);
}

static void
server_down(void)
{
    if (obxt_pg_stop(server) != 0)
        fprintf(stderr, "test_repl: obx-pgtmp did not end cleanly\n");
    server = NULL;
}

/* A probe run: the process and the file its stderr (the log) goes to. */
struct run {
    struct obxt_proc *proc;
    char *dir;
    char *log;
};

/* Starts obx-repl-probe on pg with postgres.slot, postgres.publication and postgres.tables and
 * further -X settings (NULL-terminated); fast reconnects. */
static struct run
probe_start(struct obxt_pg *pg, const char *slot, const char *pub, const char *tables, ...)
{
    const char *argv[PROBE_MAX_ARGS + 1];
    char *owned[PROBE_MAX_ARGS];
    size_t n = 0, nowned = 0;
    struct run run = {0};
    va_list ap;

    run.dir = obxt_proc_tmpdir("repl");
    ck_assert_ptr_nonnull(run.dir);
    run.log = obxt_proc_path_join(run.dir, "probe.log");
    argv[n++] = obxt_env("OBX_REPL_PROBE");
    ck_assert_int_gt(asprintf(&owned[nowned++], "postgres.conninfo=%s", obxt_pg_conninfo(pg)), 0);
    ck_assert_int_gt(asprintf(&owned[nowned++], "postgres.slot=%s", slot), 0);
    ck_assert_int_gt(asprintf(&owned[nowned++], "postgres.publication=%s", pub), 0);
    ck_assert_int_gt(asprintf(&owned[nowned++], "postgres.tables=%s", tables), 0);
    owned[nowned++] = strdup("postgres.reconnect.backoff.ms=100");
    owned[nowned++] = strdup("postgres.reconnect.backoff.max.ms=1000");
    va_start(ap, tables);
    for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
        ck_assert_int_lt(nowned, PROBE_MAX_ARGS / 2);
        owned[nowned++] = strdup(s);
    }
    va_end(ap);
    for (size_t i = 0; i < nowned; i++) {
        argv[n++] = "-X";
        argv[n++] = owned[i];
    }
    argv[n] = NULL;
    run.proc = obxt_proc_spawn(argv, NULL, run.log, 0);
    ck_assert_ptr_nonnull(run.proc);
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    return run;
}

static void
run_free(struct run *run)
{
    obxt_proc_free(run->proc);
    obxt_proc_rmtree(run->dir);
    free(run->log);
    free(run->dir);
}

/* The next stdout line of the probe that is not a keepalive; fails the test after timeout_ms. */
static char *
next_line(struct run *run, int timeout_ms)
{
    long long deadline = obxt_proc_now_ms() + timeout_ms;

    for (;;) {
        long long left = deadline - obxt_proc_now_ms();
        char *line = obxt_proc_read_line(run->proc, left > 0 ? (int)left : 0);

        ck_assert_msg(line != NULL, "obx-repl-probe printed nothing more (%s); its log: %s",
                      errno == ETIMEDOUT ? "timeout" : "it exited", run->log);
        if (strncmp(line, "keepalive ", 10) != 0)
            return line;
        free(line);
    }
}

/* Reads the probe's lines for ms milliseconds: all must be keepalives (no disconnect, no exit).
 * Returns how many came. */
static int
idle_for(struct run *run, int ms)
{
    long long deadline = obxt_proc_now_ms() + ms;
    int keepalives = 0;

    for (;;) {
        long long left = deadline - obxt_proc_now_ms();
        char *line = left > 0 ? obxt_proc_read_line(run->proc, (int)left) : NULL;

        if (line == NULL) {
            ck_assert_msg(left <= 0 || errno == ETIMEDOUT, "obx-repl-probe exited; its log: %s",
                          run->log);
            return keepalives;
        }
        ck_assert_msg(strncmp(line, "keepalive ", 10) == 0, "unexpected line while idle: %s", line);
        keepalives++;
        free(line);
    }
}

/* Skips lines until one that starts with prefix. */
static char *
expect_line(struct run *run, const char *prefix)
{
    for (;;) {
        char *line = next_line(run, LINE_TIMEOUT_MS);

        if (strncmp(line, prefix, strlen(prefix)) == 0)
            return line;
        free(line);
    }
}

static void
wait_streaming(struct run *run)
{
    ck_assert_msg(obxt_proc_log_wait(run->log, "streaming from", LINE_TIMEOUT_MS) == 0,
                  "obx-repl-probe did not start streaming; its log: %s", run->log);
}

/* The probe exits with status code and its stderr contains message. */
static void
expect_exit(struct run *run, int code, const char *message)
{
    ck_assert_msg(obxt_proc_wait(run->proc, EXIT_TIMEOUT_MS, NULL) == 0,
                  "obx-repl-probe still runs; expected it to fail with: %s", message);
    ck_assert_int_eq(obxt_proc_exit_code(run->proc), code);
    ck_assert_msg(obxt_proc_log_contains(run->log, message), "its stderr (%s) lacks: %s", run->log,
                  message);
}

/* SIGTERM: exit 0 after the final status update; returns the "stopped ..." line. */
static char *
stop_probe(struct run *run)
{
    char *line;

    ck_assert_int_eq(obxt_proc_kill(run->proc, SIGTERM), 0);
    line = expect_line(run, "stopped ");
    ck_assert_int_eq(obxt_proc_wait(run->proc, EXIT_TIMEOUT_MS, NULL), 0);
    ck_assert_int_eq(obxt_proc_exit_code(run->proc), 0);
    return line;
}

/* The value of "key=" in a probe line, as a malloc'd string. */
static char *
field(const char *line, const char *key)
{
    size_t klen = strlen(key);

    for (const char *p = strstr(line, key); p != NULL; p = strstr(p + 1, key)) {
        if ((p == line || p[-1] == ' ') && p[klen] == '=') {
            p += klen + 1;
            return strndup(p, strcspn(p, " "));
        }
    }
    ck_abort_msg("no %s= in \"%s\"", key, line);
    return NULL;
}

/* Polls until the slot's confirmed_flush_lsn is at least lsn. */
static bool
wait_confirmed(const char *slot, const char *lsn, int timeout_ms)
{
    long long deadline = obxt_proc_now_ms() + timeout_ms;

    do {
        if (obxt_pg_query_int(server,
                              "SELECT (confirmed_flush_lsn >= '%s'::pg_lsn)::int "
                              "FROM pg_replication_slots WHERE slot_name = '%s'",
                              lsn, slot) == 1)
            return true;
        usleep(100 * 1000);
    } while (obxt_proc_now_ms() < deadline);
    return false;
}

/* ---- creation, reuse, streaming, confirming, stopping ------------------------------------- */

START_TEST(run__creates_slot_and_publication_then_reuses_them)
{
    struct run run;
    char *line, *end_lsn, *confirmed, *value, *expected;

    obxt_pg_exec(server, "CREATE TABLE public.t_reuse (id int PRIMARY KEY, payload text)");
    run = probe_start(server, "s_reuse", "p_reuse", "public.t_reuse", NULL);
    wait_streaming(&run);
    ck_assert(obxt_proc_log_contains(run.log, "created publication \"p_reuse\""));
    ck_assert(obxt_proc_log_contains(run.log, "created replication slot \"s_reuse\""));
    ck_assert_int_eq(obxt_pg_query_int(server, "SELECT count(*) FROM pg_replication_slots "
                                               "WHERE slot_name = 's_reuse' AND plugin = "
                                               "'pgoutput'"),
                     1);
    ck_assert_int_eq(obxt_pg_query_int(server, "SELECT count(*) FROM pg_publication_tables "
                                               "WHERE pubname = 'p_reuse' AND tablename = "
                                               "'t_reuse'"),
                     1);

    /* The catalog's view of the table reaches on_table before streaming. */
    line = expect_line(&run, "table ");
    value = obxt_pg_query_value(server, "SELECT 'public.t_reuse'::regclass::oid");
    ck_assert_int_gt(asprintf(&expected,
                              "table rel=public.t_reuse relid=%s ncols=2 "
                              "cols=id:23:key,payload:25",
                              value),
                     0);
    ck_assert_str_eq(line, expected);
    free(expected);
    free(value);
    free(line);
    obxt_pg_exec(server, "INSERT INTO t_reuse VALUES (1, 'one')");
    line = expect_line(&run, "relation ");
    ck_assert_ptr_nonnull(strstr(line, "rel=public.t_reuse "));
    free(line);
    line = expect_line(&run, "insert ");
    ck_assert_str_eq(line, "insert rel=public.t_reuse ncols=2 id=1 payload=one");
    free(line);
    line = expect_line(&run, "commit ");
    end_lsn = field(line, "end_lsn");
    free(line);
    /* The status updates confirm the commit. */
    ck_assert_msg(wait_confirmed("s_reuse", end_lsn, 10000), "confirmed_flush_lsn did not reach %s",
                  end_lsn);

    /* SIGTERM: exit 0, and the final status update's position is the slot's. */
    line = stop_probe(&run);
    confirmed = field(line, "confirmed");
    value = obxt_pg_query_value(server, "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                                        "WHERE slot_name = 's_reuse'");
    ck_assert_str_eq(value, confirmed);
    free(value);
    free(line);
    free(confirmed);
    free(end_lsn);
    run_free(&run);

    /* Second run: nothing created, nothing replayed, logical messages on request. */
    run = probe_start(server, "s_reuse", "p_reuse", "public.t_reuse", "postgres.messages=true",
                      "outbox.message.prefix=obx", "postgres.wal.warn.bytes=1", NULL);
    wait_streaming(&run);
    ck_assert(!obxt_proc_log_contains(run.log, "created"));
    /* The slot retains some WAL: more than the 1 byte allowed here. */
    ck_assert_int_eq(obxt_proc_log_wait(run.log, "replication slot \"s_reuse\" retains ", 5000), 0);
    obxt_pg_exec(server, "BEGIN; INSERT INTO t_reuse VALUES (2, NULL); "
                         "SELECT pg_logical_emit_message(true, 'obx', 'hello'); COMMIT");
    line = expect_line(&run, "insert ");
    ck_assert_str_eq(line, "insert rel=public.t_reuse ncols=2 id=2 payload=<null>");
    free(line);
    line = expect_line(&run, "message ");
    ck_assert_ptr_nonnull(strstr(line, "prefix=obx transactional=1 "));
    ck_assert_ptr_nonnull(strstr(line, " content=hello"));
    free(line);
    free(stop_probe(&run));
    run_free(&run);
}
END_TEST

/* ---- server states that need an operator -------------------------------------------------- */

START_TEST(run__missing_table_is_fatal)
{
    struct run run = probe_start(server, "s_notable", "p_notable", "public.nope", NULL);

    expect_exit(&run, EXIT_SERVER,
                "table public.nope does not exist; create it (see sql/outbox.sql) or fix "
                "postgres.tables");
    /* Nothing was created for a configuration that cannot work. */
    ck_assert_int_eq(obxt_pg_query_int(server, "SELECT count(*) FROM pg_publication "
                                               "WHERE pubname = 'p_notable'"),
                     0);
    run_free(&run);
}
END_TEST

START_TEST(run__publication_without_table_is_fatal)
{
    struct run run;

    obxt_pg_exec(server, "CREATE TABLE public.t_lack (id int PRIMARY KEY);"
                         "CREATE TABLE public.t_other (id int PRIMARY KEY);"
                         "CREATE PUBLICATION p_lack FOR TABLE public.t_other");
    run = probe_start(server, "s_lack", "p_lack", "public.t_lack", NULL);
    expect_exit(&run, EXIT_SERVER,
                "publication \"p_lack\" does not include table public.t_lack; fix it with ALTER "
                "PUBLICATION p_lack ADD TABLE public.t_lack");
    ck_assert_int_eq(obxt_pg_query_int(server, "SELECT count(*) FROM pg_replication_slots "
                                               "WHERE slot_name = 's_lack'"),
                     0);
    run_free(&run);
}
END_TEST

START_TEST(run__slot_with_other_plugin_is_fatal)
{
    struct run run;

    obxt_pg_exec(server, "CREATE TABLE public.t_td (id int PRIMARY KEY)");
    obxt_pg_exec(server, "SELECT pg_create_logical_replication_slot('s_td', 'test_decoding')");
    run = probe_start(server, "s_td", "p_td", "public.t_td", NULL);
    expect_exit(&run, EXIT_SERVER,
                "replication slot \"s_td\" uses plugin test_decoding, not pgoutput; set another "
                "postgres.slot, or drop that slot if nothing else uses it");
    /* Never recreated. */
    ck_assert_int_eq(obxt_pg_query_int(server, "SELECT count(*) FROM pg_replication_slots "
                                               "WHERE slot_name = 's_td' AND plugin = "
                                               "'test_decoding'"),
                     1);
    run_free(&run);
}
END_TEST

START_TEST(run__missing_without_create_is_fatal)
{
    struct run run;

    obxt_pg_exec(server, "CREATE TABLE public.t_nocreate (id int PRIMARY KEY)");
    run = probe_start(server, "s_nocreate", "p_nocreate", "public.t_nocreate",
                      "postgres.publication.create=false", NULL);
    expect_exit(&run, EXIT_SERVER,
                "publication \"p_nocreate\" does not exist; create it with CREATE PUBLICATION "
                "p_nocreate FOR TABLE public.t_nocreate WITH (publish = 'insert'), or set "
                "postgres.publication.create = true");
    run_free(&run);

    obxt_pg_exec(server, "CREATE PUBLICATION p_nocreate FOR TABLE public.t_nocreate");
    run = probe_start(server, "s_nocreate", "p_nocreate", "public.t_nocreate",
                      "postgres.slot.create=false", NULL);
    expect_exit(&run, EXIT_SERVER,
                "replication slot \"s_nocreate\" does not exist; create it with SELECT "
                "pg_create_logical_replication_slot('s_nocreate', 'pgoutput'), or set "
                "postgres.slot.create = true");
    run_free(&run);
}
END_TEST

/* ---- keepalives, reconnecting, a second instance ------------------------------------------ */

START_TEST(run__answers_keepalives_while_idle)
{
    struct run run;
    char *line, *pid_before, *pid_after;
    long long reply_before, reply_after;

    obxt_pg_exec(server, "CREATE TABLE public.t_ka (id int PRIMARY KEY)");
    /* No status update of its own for an hour: only replies to the server's keepalives keep
     * the 2 s wal_sender_timeout from firing. */
    run = probe_start(server, "s_ka", "p_ka", "public.t_ka", "postgres.status.interval.ms=3600000",
                      NULL);
    wait_streaming(&run);
    line = expect_line(&run, "table ");
    free(line);
    pid_before = obxt_pg_query_value(server, "SELECT active_pid::text FROM pg_replication_slots "
                                             "WHERE slot_name = 's_ka'");
    ck_assert_ptr_nonnull(pid_before);
    sleep(1);
    reply_before = obxt_pg_query_int(server,
                                     "SELECT coalesce(extract(epoch FROM reply_time) * 1000, 0)"
                                     "::bigint FROM pg_stat_replication WHERE pid = %s",
                                     pid_before);
    /* Ten idle seconds, five timeouts' worth: keepalives come and nothing else. */
    ck_assert_int_gt(idle_for(&run, 10000), 0);
    pid_after = obxt_pg_query_value(server, "SELECT active_pid::text FROM pg_replication_slots "
                                            "WHERE slot_name = 's_ka'");
    ck_assert_ptr_nonnull(pid_after);
    ck_assert_str_eq(pid_after, pid_before);
    reply_after = obxt_pg_query_int(server,
                                    "SELECT (extract(epoch FROM reply_time) * 1000)::bigint "
                                    "FROM pg_stat_replication WHERE pid = %s",
                                    pid_after);
    ck_assert_int_gt(reply_after, reply_before);
    ck_assert(!obxt_proc_log_contains(run.log, "reconnecting"));
    free(stop_probe(&run));
    free(pid_before);
    free(pid_after);
    run_free(&run);
}
END_TEST

START_TEST(run__reconnects_after_restart_and_rebuilds_relations)
{
    struct run run;
    char *line;
    bool seen_relation = false;

    obxt_pg_exec(server, "CREATE TABLE public.t_rs (id int PRIMARY KEY)");
    run = probe_start(server, "s_rs", "p_rs", "public.t_rs", NULL);
    wait_streaming(&run);
    obxt_pg_exec(server, "INSERT INTO t_rs VALUES (1)");
    free(expect_line(&run, "relation rel=public.t_rs "));
    line = expect_line(&run, "insert ");
    ck_assert_str_eq(line, "insert rel=public.t_rs ncols=1 id=1");
    free(line);
    free(expect_line(&run, "commit "));

    free(obxt_pg_cmd(server, "restart fast"));
    free(expect_line(&run, "disconnect"));
    obxt_pg_exec(server, "INSERT INTO t_rs VALUES (2)");
    /* Row 1 may come again (at-least-once), row 2 must; either only after a Relation. */
    for (;;) {
        line = next_line(&run, LINE_TIMEOUT_MS);
        if (strncmp(line, "relation rel=public.t_rs ", 25) == 0)
            seen_relation = true;
        ck_assert_msg(seen_relation || strncmp(line, "insert ", 7) != 0,
                      "insert before its Relation after the restart: %s", line);
        if (strcmp(line, "insert rel=public.t_rs ncols=1 id=2") == 0)
            break;
        free(line);
    }
    free(line);
    ck_assert(obxt_proc_log_contains(run.log, "reconnecting in"));
    free(stop_probe(&run));
    run_free(&run);
}
END_TEST

START_TEST(run__slot_in_use_waits_then_takes_over)
{
    struct run first, second;
    char *line;

    obxt_pg_exec(server, "CREATE TABLE public.t_ha (id int PRIMARY KEY)");
    first = probe_start(server, "s_ha", "p_ha", "public.t_ha", NULL);
    wait_streaming(&first);
    second = probe_start(server, "s_ha", "p_ha", "public.t_ha", NULL);
    ck_assert_int_eq(obxt_proc_log_wait(second.log, "replication slot \"s_ha\" is active for PID",
                                        LINE_TIMEOUT_MS),
                     0);
    ck_assert(obxt_proc_running(second.proc));
    free(stop_probe(&first));
    run_free(&first);

    /* The standby takes the slot over and streams what comes next. */
    wait_streaming(&second);
    obxt_pg_exec(server, "INSERT INTO t_ha VALUES (7)");
    line = expect_line(&second, "insert ");
    ck_assert_str_eq(line, "insert rel=public.t_ha ncols=1 id=7");
    free(line);
    free(stop_probe(&second));
    run_free(&second);
}
END_TEST

/* ---- wal_level ------------------------------------------------------------------------------ */

START_TEST(run__wal_level_replica_is_fatal)
{
    struct obxt_pg *pg = obxt_pg_start("wal_level=replica", NULL);
    struct run run;

    obxt_pg_exec(pg, "CREATE TABLE public.t_wl (id int PRIMARY KEY)");
    run = probe_start(pg, "s_wl", "p_wl", "public.t_wl", NULL);
    expect_exit(&run, EXIT_SERVER,
                "wal_level is replica; set wal_level = logical in postgresql.conf and restart "
                "PostgreSQL");
    run_free(&run);
    ck_assert_int_eq(obxt_pg_stop(pg), 0);
}
END_TEST

static Suite *
repl_suite(void)
{
    Suite *s = suite_create("repl");
    TCase *tc = tcase_create("repl");
    TCase *wal = tcase_create("wal_level");

    tcase_add_unchecked_fixture(tc, server_up, server_down);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, run__creates_slot_and_publication_then_reuses_them);
    tcase_add_test(tc, run__missing_table_is_fatal);
    tcase_add_test(tc, run__publication_without_table_is_fatal);
    tcase_add_test(tc, run__slot_with_other_plugin_is_fatal);
    tcase_add_test(tc, run__missing_without_create_is_fatal);
    tcase_add_test(tc, run__answers_keepalives_while_idle);
    tcase_add_test(tc, run__reconnects_after_restart_and_rebuilds_relations);
    tcase_add_test(tc, run__slot_in_use_waits_then_takes_over);
    suite_add_tcase(s, tc);
    tcase_set_timeout(wal, 120);
    tcase_add_test(wal, run__wal_level_replica_is_fatal);
    suite_add_tcase(s, wal);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(repl_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
