/* test_harness.c - integration test of the test support itself: the process helpers, the
 * throwaway PostgreSQL (obx-pgtmp via obxtest_pg) and the Kafka broker (via obxtest_kafka), and
 * that none of them leaves a process or a directory behind, however it is ended. */
#include "obxtest.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- obxtest_proc ---------------------------------------------------------------------------- */

START_TEST(proc_command__reply_and_exit_code)
{
    const char *argv[] = {"/bin/sh", "-c", "read line; echo \"got $line $OBXT_X\"; exit 3", NULL};
    const char *env[] = {"OBXT_X=extra", NULL};
    struct obxt_proc *proc = obxt_proc_spawn(argv, env, NULL, 0);
    char *reply;
    int status = -1;

    ck_assert_ptr_nonnull(proc);
    reply = obxt_proc_command(proc, "hello", 10000);
    ck_assert_str_eq(reply, "got hello extra");
    ck_assert_int_eq(obxt_proc_wait(proc, 10000, &status), 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(obxt_proc_exit_code(proc), 3);
    ck_assert(!obxt_proc_running(proc));
    ck_assert_ptr_null(obxt_proc_read_line(proc, 1000)); /* EOF */
    free(reply);
    obxt_proc_free(proc);
}
END_TEST

START_TEST(proc_read_line__times_out)
{
    const char *argv[] = {"/bin/cat", NULL};
    struct obxt_proc *proc = obxt_proc_spawn(argv, NULL, NULL, 0);
    long long start = obxt_proc_now_ms();

    ck_assert_ptr_nonnull(proc);
    ck_assert_ptr_null(obxt_proc_read_line(proc, 200));
    ck_assert_int_ge(obxt_proc_now_ms() - start, 150);
    ck_assert(obxt_proc_running(proc));
    /* EOF on stdin ends cat by itself. */
    ck_assert_int_eq(obxt_proc_finish(proc, 10000, NULL), 0);
    ck_assert_int_eq(obxt_proc_exit_code(proc), 0);
    obxt_proc_free(proc);
}
END_TEST

START_TEST(proc_kill__signal_shows_in_exit_code)
{
    const char *argv[] = {"/bin/sleep", "60", NULL};
    struct obxt_proc *proc = obxt_proc_spawn(argv, NULL, NULL, OBXT_PROC_STDIN_NULL);
    pid_t pid;

    ck_assert_ptr_nonnull(proc);
    pid = obxt_proc_pid(proc);
    ck_assert(obxt_proc_pid_alive(pid));
    ck_assert_int_eq(obxt_proc_wait(proc, 100, NULL), -1);
    ck_assert_int_eq(obxt_proc_kill(proc, SIGTERM), 0);
    ck_assert_int_eq(obxt_proc_wait(proc, 10000, NULL), 0);
    ck_assert_int_eq(obxt_proc_exit_code(proc), 128 + SIGTERM);
    ck_assert(!obxt_proc_pid_alive(pid));
    obxt_proc_free(proc);
}
END_TEST

START_TEST(proc_spawn__missing_program_exits_127)
{
    const char *argv[] = {"/nonexistent/obxt-program", NULL};
    struct obxt_proc *proc = obxt_proc_spawn(argv, NULL, NULL, 0);

    ck_assert_ptr_nonnull(proc);
    ck_assert_int_eq(obxt_proc_wait(proc, 10000, NULL), 0);
    ck_assert_int_eq(obxt_proc_exit_code(proc), 127);
    obxt_proc_free(proc);
}
END_TEST

START_TEST(proc_log_contains__stderr_and_stdout_to_log)
{
    char *dir = obxt_proc_tmpdir("harness");
    char *log, *sub;
    const char *argv[] = {"/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2", NULL};
    struct obxt_proc *proc;

    ck_assert_ptr_nonnull(dir);
    log = obxt_proc_path_join(dir, "child.log");
    proc = obxt_proc_spawn(argv, NULL, log, OBXT_PROC_STDOUT_TO_LOG);
    ck_assert_ptr_nonnull(proc);
    ck_assert_int_eq(obxt_proc_wait(proc, 10000, NULL), 0);
    ck_assert(obxt_proc_log_contains(log, "to-stdout"));
    ck_assert(obxt_proc_log_contains(log, "to-stderr"));
    ck_assert(!obxt_proc_log_contains(log, "never-written"));
    ck_assert_int_eq(obxt_proc_log_wait(log, "never-written", 100), -1);
    /* rmtree removes nested content and reports success only when the path is gone. */
    sub = obxt_proc_path_join(dir, "sub");
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert_int_eq(obxt_proc_rmtree(dir), 0);
    ck_assert(!obxt_proc_path_exists(dir));
    obxt_proc_free(proc);
    free(sub);
    free(log);
    free(dir);
}
END_TEST

/* ---- obx-pgtmp via obxtest_pg ------------------------------------------------------------------
 */

/* Everything obxt_pg_stop checks, asserted here again from the saved pid and paths. */
static void
stop_and_check_gone(struct obxt_pg *pg)
{
    pid_t postmaster = obxt_pg_postmaster_pid(pg);
    char *datadir = strdup(obxt_pg_datadir(pg));

    ck_assert_int_gt(postmaster, 0);
    ck_assert(obxt_proc_pid_alive(postmaster));
    ck_assert(obxt_proc_path_exists(datadir));
    ck_assert_int_eq(obxt_pg_stop(pg), 0);
    ck_assert_msg(!obxt_proc_pid_alive(postmaster), "postmaster %d survived", (int)postmaster);
    ck_assert_msg(!obxt_proc_path_exists(datadir), "%s survived", datadir);
    free(datadir);
}

START_TEST(pg_start__logical_slot_and_publication)
{
    struct obxt_pg *pg = obxt_pg_start(NULL);
    char *value;

    ck_assert_ptr_nonnull(strstr(obxt_pg_conninfo(pg), "host=127.0.0.1 port="));
    ck_assert_int_ne(obxt_pg_port(pg), 5432);
    value = obxt_pg_query_value(pg, "SHOW wal_level");
    ck_assert_str_eq(value, "logical");
    free(value);
    obxt_pg_exec(pg, "CREATE TABLE outbox (id uuid PRIMARY KEY, payload jsonb);"
                     "CREATE PUBLICATION obx_pub FOR TABLE outbox");
    obxt_pg_exec(pg, "SELECT pg_create_logical_replication_slot('t', 'pgoutput')");
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT count(*) FROM pg_replication_slots "
                                           "WHERE slot_name = 't' AND plugin = 'pgoutput'"),
                     1);
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT count(*) FROM pg_publication_tables "
                                           "WHERE pubname = 'obx_pub' AND tablename = 'outbox'"),
                     1);
    stop_and_check_gone(pg);
}
END_TEST

START_TEST(pg_start__extra_settings_apply)
{
    struct obxt_pg *pg = obxt_pg_start("max_slot_wal_keep_size=1MB", "cluster_name=it's", NULL);
    char *value;

    value = obxt_pg_query_value(pg, "SELECT setting FROM pg_settings "
                                    "WHERE name = 'max_slot_wal_keep_size'");
    ck_assert_str_eq(value, "1");
    free(value);
    value = obxt_pg_query_value(pg, "SHOW cluster_name");
    ck_assert_str_eq(value, "it's");
    free(value);
    value = obxt_pg_query_value(pg, "SHOW fsync");
    ck_assert_str_eq(value, "off");
    free(value);
    stop_and_check_gone(pg);
}
END_TEST

START_TEST(pg_exec__errors_and_nulls)
{
    struct obxt_pg *pg = obxt_pg_start(NULL);
    char *err = obxt_pg_try_exec(pg, "SELECT * FROM no_such_table");

    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strncmp(err, "42P01 ", 6) == 0 && strstr(err, "no_such_table"), "got '%s'", err);
    free(err);
    ck_assert_ptr_null(obxt_pg_try_exec(pg, "SELECT 1"));
    ck_assert_ptr_null(obxt_pg_query_value(pg, "SELECT NULL::text"));
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT %d + 1", 41), 42);
    stop_and_check_gone(pg);
}
END_TEST

START_TEST(pg_cmd__restart_and_stop_keep_data)
{
    struct obxt_pg *pg = obxt_pg_start(NULL);
    pid_t first = obxt_pg_postmaster_pid(pg), second;
    char *reply = NULL, *err;

    obxt_pg_exec(pg, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)");
    free(obxt_pg_cmd(pg, "restart fast"));
    second = obxt_pg_postmaster_pid(pg);
    ck_assert_int_gt(second, 0);
    ck_assert_int_ne(second, first);
    ck_assert(!obxt_proc_pid_alive(first));
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT n FROM kept"), 7);

    free(obxt_pg_cmd(pg, "restart immediate"));
    ck_assert(!obxt_proc_pid_alive(second));
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT n FROM kept"), 7);

    free(obxt_pg_cmd(pg, "stop fast"));
    ck_assert_int_eq(obxt_pg_postmaster_pid(pg), 0);
    ck_assert_int_eq(obxt_pg_try_cmd(pg, "stop fast", &reply), -1);
    ck_assert_str_eq(reply, "error not running");
    free(reply);
    err = obxt_pg_try_exec(pg, "SELECT 1");
    ck_assert_msg(err && strncmp(err, "08006 ", 6) == 0, "got '%s'", err ? err : "success");
    free(err);
    free(obxt_pg_cmd(pg, "start"));
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT n FROM kept"), 7);
    ck_assert_int_eq(obxt_pg_try_cmd(pg, "no such command", NULL), -1);
    ck_assert(obxt_proc_log_contains(obxt_pg_logfile(pg), "database system is ready"));
    stop_and_check_gone(pg);
}
END_TEST

START_TEST(pg_stop__while_server_stopped)
{
    struct obxt_pg *pg = obxt_pg_start(NULL);
    pid_t postmaster = obxt_pg_postmaster_pid(pg);
    char *datadir = strdup(obxt_pg_datadir(pg));

    free(obxt_pg_cmd(pg, "stop immediate"));
    ck_assert(!obxt_proc_pid_alive(postmaster));
    ck_assert_int_eq(obxt_pg_stop(pg), 0);
    ck_assert(!obxt_proc_path_exists(datadir));
    free(datadir);
}
END_TEST

START_TEST(pg_sigterm__cleans_up)
{
    struct obxt_pg *pg = obxt_pg_start(NULL);
    struct obxt_proc *proc = obxt_pg_proc(pg);
    pid_t postmaster = obxt_pg_postmaster_pid(pg);
    char *datadir = strdup(obxt_pg_datadir(pg));

    obxt_pg_exec(pg, "SELECT pg_create_logical_replication_slot('t', 'pgoutput')");
    ck_assert_int_eq(obxt_proc_kill(proc, SIGTERM), 0);
    ck_assert_int_eq(obxt_proc_wait(proc, 60000, NULL), 0);
    ck_assert_int_eq(obxt_proc_exit_code(proc), 0);
    ck_assert_msg(!obxt_proc_pid_alive(postmaster), "postmaster %d survived SIGTERM of obx-pgtmp",
                  (int)postmaster);
    ck_assert_msg(!obxt_proc_path_exists(datadir), "%s survived SIGTERM of obx-pgtmp", datadir);
    ck_assert_int_eq(obxt_pg_stop(pg), 0);
    free(datadir);
}
END_TEST

START_TEST(pg_sigkill_postmaster__orphans_reaped)
{
    struct obxt_pg *pg = obxt_pg_start(NULL);
    pid_t postmaster = obxt_pg_postmaster_pid(pg);

    /* A crash of the server itself: obx-pgtmp notices, can start it again, and still cleans up
     * the orphaned backends. */
    ck_assert_int_eq(kill(postmaster, SIGKILL), 0);
    ck_assert_int_eq(obxt_proc_pid_wait_gone(postmaster, 10000), 0);
    free(obxt_pg_cmd(pg, "start"));
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT 1"), 1);
    stop_and_check_gone(pg);
}
END_TEST

/* The process that owns obx-pgtmp dies without a word (a crashed test): obx-pgtmp gets EOF and
 * its parent-death signal, and must remove the cluster. */
START_TEST(pg_owner_killed__cleans_up)
{
    int fds[2];
    pid_t owner;
    char info[4096] = "";
    char datadir[4096];
    long postmaster = 0;
    ssize_t n;

    ck_assert_int_eq(pipe(fds), 0);
    owner = fork();
    ck_assert_int_ge(owner, 0);
    if (owner == 0) {
        const char *argv[] = {obxt_env("OBX_PGTMP"), NULL};
        struct obxt_proc *proc = obxt_proc_spawn(argv, NULL, NULL, 0);
        char *line = proc ? obxt_proc_read_line(proc, 60000) : NULL;
        char *dir = line ? obxt_proc_command(proc, "datadir", 10000) : NULL;
        char *pid = dir ? obxt_proc_command(proc, "pid", 10000) : NULL;

        dprintf(fds[1], "%s %s\n", dir ? dir + 3 : "-", pid ? pid + 3 : "0");
        pause(); /* until SIGKILL */
        _exit(1);
    }
    close(fds[1]);
    n = read(fds[0], info, sizeof(info) - 1);
    close(fds[0]);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(sscanf(info, "%4095s %ld", datadir, &postmaster), 2);
    ck_assert_int_gt(postmaster, 0);
    ck_assert(obxt_proc_path_exists(datadir));
    ck_assert_int_eq(kill(owner, SIGKILL), 0);
    ck_assert_int_eq(waitpid(owner, NULL, 0), owner);
    ck_assert_msg(obxt_proc_pid_wait_gone((pid_t)postmaster, 60000) == 0,
                  "postmaster %ld survived its owner", postmaster);
    for (int i = 0; i < 600 && obxt_proc_path_exists(datadir); i++)
        usleep(100000);
    ck_assert_msg(!obxt_proc_path_exists(datadir), "%s survived its owner", datadir);
}
END_TEST

/* ---- PostgreSQL and Kafka together ------------------------------------------------------------
 */

START_TEST(harness__pg_and_kafka_round_trip)
{
    struct obxt_pg *pg = obxt_pg_start(NULL);
    struct obxt_broker *broker = obxt_broker_start(1);
    pid_t broker_pid = obxt_broker_pid(broker);
    const char *topics[] = {"harness.topic", NULL};
    struct obxt_records *recs;

    obxt_pg_exec(pg, "CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text, "
                     "aggregateid text, payload jsonb);"
                     "CREATE PUBLICATION obx_pub FOR TABLE outbox");
    obxt_pg_exec(pg, "SELECT pg_create_logical_replication_slot('t', 'pgoutput')");
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT count(*) FROM pg_replication_slots "
                                           "WHERE slot_name = 't'"),
                     1);
    ck_assert_int_eq(obxt_pg_query_int(pg, "SELECT count(*) FROM pg_publication_tables "
                                           "WHERE pubname = 'obx_pub'"),
                     1);

    ck_assert(obxt_proc_pid_alive(broker_pid));
    obxt_produce(obxt_broker_bootstrap(broker), "harness.topic", "k1", "{\"v\":1}");
    recs = obxt_consume(obxt_broker_bootstrap(broker), topics, 1, 30000);
    ck_assert_uint_eq(recs->count, 1);
    ck_assert_str_eq(recs->recs[0].topic, "harness.topic");
    ck_assert_str_eq(recs->recs[0].key, "k1");
    ck_assert_str_eq(recs->recs[0].value, "{\"v\":1}");
    obxt_records_free(recs);

    obxt_broker_stop(broker);
    ck_assert_msg(!obxt_proc_pid_alive(broker_pid), "kafka-broker %d survived", (int)broker_pid);
    stop_and_check_gone(pg);
}
END_TEST

static Suite *
harness_suite(void)
{
    Suite *s = suite_create("harness");
    TCase *proc = tcase_create("proc");
    TCase *pg = tcase_create("pg");
    TCase *both = tcase_create("pg_and_kafka");

    tcase_add_test(proc, proc_command__reply_and_exit_code);
    tcase_add_test(proc, proc_read_line__times_out);
    tcase_add_test(proc, proc_kill__signal_shows_in_exit_code);
    tcase_add_test(proc, proc_spawn__missing_program_exits_127);
    tcase_add_test(proc, proc_log_contains__stderr_and_stdout_to_log);
    suite_add_tcase(s, proc);

    tcase_add_test(pg, pg_start__logical_slot_and_publication);
    tcase_add_test(pg, pg_start__extra_settings_apply);
    tcase_add_test(pg, pg_exec__errors_and_nulls);
    tcase_add_test(pg, pg_cmd__restart_and_stop_keep_data);
    tcase_add_test(pg, pg_stop__while_server_stopped);
    tcase_add_test(pg, pg_sigterm__cleans_up);
    tcase_add_test(pg, pg_sigkill_postmaster__orphans_reaped);
    tcase_add_test(pg, pg_owner_killed__cleans_up);
    suite_add_tcase(s, pg);

    tcase_add_test(both, harness__pg_and_kafka_round_trip);
    suite_add_tcase(s, both);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(harness_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
