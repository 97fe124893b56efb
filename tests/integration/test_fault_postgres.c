/* test_fault_postgres.c - the fault suite, PostgreSQL's faults: a fast restart, a crash
 * (immediate stop) and start, and pg_terminate_backend of the walsender, each in the middle of a
 * stream (outboxd reconnects with backoff and resumes from the slot: no loss, order kept); the
 * slot dropped while outboxd runs and the slot invalidated by max_slot_wal_keep_size (clear
 * fatal errors, non-zero exit, never recreated); and an idle outbox while another table writes
 * 50 MB (the slot's lag stays small: rule 3, keepalive positions).
 *
 * Each test starts its own stack and prints a FIGURES line (obxtest_check.h). */
#include "obxtest.h"
#include "obxtest_check.h"
#include "obxtest_outboxd.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NKEYS 64
#define RECOVER_TIMEOUT_MS 90000
#define CHECK_TIMEOUT_MS 120000
#define EXIT_TIMEOUT_MS 30000
#define SOURCE_HEADERS "outbox.headers.source=true"
#define MIB (1024LL * 1024)

static struct obxt_writer *
writer_start(struct obxt_stack *s, long long events, int rate)
{
    struct obxt_writer_opts wo = {
        .events = events, .per_txn = 10, .nkeys = NKEYS, .pad = 32, .rate = rate};

    return obxt_writer_start(obxt_pg_conninfo(s->pg), &wo);
}

/* The server command for a mid-stream fault, run once 6,000 of 20,000 events were committed. */
typedef void fault_fn(struct obxt_stack *s, struct obxt_check *c);

/* A stream of 20,000 events at 4,000/s with fault() in the middle; outboxd must stay up
 * (reconnecting) and everything must arrive once recovered. */
static void
stream_with_fault(const char *name, fault_fn *fault)
{
    struct obxt_stack *s = obxt_workload_stack(NULL, NKEYS);
    struct obxt_check *c = obxt_check_new(name);
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, NULL);
    struct obxt_writer *w = writer_start(s, 20000, 4000);

    ck_assert(obxt_writer_wait_for(w, 6000, 60000));
    fault(s, c);
    obxt_check_recovered(c, 0, s, RECOVER_TIMEOUT_MS);
    ck_assert_msg(obxt_proc_running(obxt_outboxd_proc(o)), "outboxd exited after the fault");
    obxt_writer_finish(w);
    obxt_check_stack(c, s, CHECK_TIMEOUT_MS);
    obxt_check_assert(c, 0);
    ck_assert_msg(obxt_proc_log_contains(obxt_outboxd_log(o), "reconnecting"),
                  "outboxd never lost its connection: the fault did not happen");
    obxt_outboxd_stop(o);
    obxt_check_free(c);
    obxt_stack_stop(s);
}

static void
restart_fast(struct obxt_stack *s, struct obxt_check *c)
{
    /* PostgreSQL 15 saves a slot's confirmed_flush_lsn at a shutdown checkpoint only when the
     * slot is dirty: it may come back older, so the duplicate bound is unknown */
    obxt_check_fault(c, s, "pg_restart_fast", false);
    free(obxt_pg_cmd(s->pg, "restart fast"));
}

static void
crash_and_start(struct obxt_stack *s, struct obxt_check *c)
{
    obxt_check_fault(c, s, "pg_crash", false);
    free(obxt_pg_cmd(s->pg, "stop immediate"));
    usleep(1000 * 1000);
    free(obxt_pg_cmd(s->pg, "start"));
}

static void
terminate_walsender(struct obxt_stack *s, struct obxt_check *c)
{
    /* confirmed before, WAL after: the new session starts at or after that position, and the
     * old one received nothing written later */
    int f = obxt_check_fault(c, s, "terminate_walsender", true);

    ck_assert_int_eq(obxt_pg_query_int(s->pg,
                                       "SELECT count(pg_terminate_backend(active_pid)) "
                                       "FROM pg_replication_slots WHERE slot_name = '%s' "
                                       "AND active_pid IS NOT NULL",
                                       OBXT_SLOT),
                     1);
    obxt_check_fault_wal(c, f, s);
}

/* 4. PostgreSQL fast restart in the middle of a stream. */
START_TEST(restart_fast__mid_stream)
{
    stream_with_fault("pg_restart_fast", restart_fast);
}
END_TEST

/* 5. PostgreSQL crash (immediate stop) and start in the middle of a stream. */
START_TEST(crash__mid_stream)
{
    stream_with_fault("pg_crash", crash_and_start);
}
END_TEST

/* 6. pg_terminate_backend on the walsender in the middle of a stream. */
START_TEST(terminate_walsender__mid_stream)
{
    stream_with_fault("terminate_walsender", terminate_walsender);
}
END_TEST

/* Waits for o to exit and checks it failed (non-zero) with a message that contains each of the
 * NULL-terminated strings. Returns the exit code. */
static int
expect_fatal(struct obxt_outboxd *o, const char *const needles[])
{
    int code = obxt_outboxd_wait_exit(o, EXIT_TIMEOUT_MS);

    if (code <= 0)
        obxt_outboxd_print_log(o, stderr);
    ck_assert_msg(code > 0, "outboxd should exit non-zero, exit code %d (-1: still running)", code);
    for (size_t i = 0; needles[i] != NULL; i++) {
        if (!obxt_proc_log_contains(obxt_outboxd_log(o), needles[i]))
            obxt_outboxd_print_log(o, stderr);
        ck_assert_msg(obxt_proc_log_contains(obxt_outboxd_log(o), needles[i]),
                      "the log does not say \"%s\"", needles[i]);
    }
    return code;
}

/* Terminates the slot's walsender and drops the slot before outboxd reconnects (it retries
 * after 50 to 100 ms): tries for 10 s. */
static void
drop_active_slot(struct obxt_stack *s)
{
    long long deadline = obxt_proc_now_ms() + 10000;

    for (;;) {
        char *err;

        obxt_pg_exec(s->pg,
                     "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                     "WHERE slot_name = '%s' AND active_pid IS NOT NULL",
                     OBXT_SLOT);
        err = obxt_pg_try_exec(s->pg, "SELECT pg_drop_replication_slot('%s')", OBXT_SLOT);
        if (err == NULL)
            return;
        ck_assert_msg(obxt_proc_now_ms() < deadline, "could not drop the slot: %s", err);
        free(err);
        usleep(5 * 1000);
    }
}

static long long
slot_count(struct obxt_stack *s)
{
    return obxt_pg_query_int(
        s->pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'", OBXT_SLOT);
}

/* 11a. The slot is dropped while outboxd runs: a fatal error that names the slot and says what
 * to do, a non-zero exit, and the slot is not recreated (events committed meanwhile would be
 * skipped silently). */
START_TEST(slot_dropped__fatal_not_recreated)
{
    static const char *const needles[] = {"replication slot \"" OBXT_SLOT "\" was dropped",
                                          "does not recreate it", "recreate the slot by hand",
                                          NULL};
    struct obxt_stack *s = obxt_workload_stack(NULL, NKEYS);
    struct obxt_check *c = obxt_check_new("slot_dropped");
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, NULL);
    long long t0;

    obxt_pg_exec(s->pg, "SELECT obxt_write(0, 100, %d, 0)", NKEYS);
    drop_active_slot(s);
    t0 = obxt_proc_now_ms();
    obxt_pg_exec(s->pg, "SELECT obxt_write(100, 100, %d, 0)", NKEYS);
    obxt_check_figure(c, "exit_code", "%d", expect_fatal(o, needles));
    obxt_check_figure(c, "seconds_to_exit", "%.2f", (double)(obxt_proc_now_ms() - t0) / 1000.0);
    obxt_check_figure(c, "slots_after", "%lld", slot_count(s));
    obxt_check_print(c);
    ck_assert_int_eq(slot_count(s), 0);
    obxt_outboxd_free(o);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

/* Writes mib MiB of WAL into table filler, in 1 MiB transactions. */
static void
write_filler(struct obxt_stack *s, int mib)
{
    for (int i = 0; i < mib; i++)
        obxt_pg_exec(s->pg, "INSERT INTO filler SELECT repeat('x', 1000) "
                            "FROM generate_series(1, 1000)");
}

/* 11b. The slot is invalidated by max_slot_wal_keep_size while outboxd cannot confirm (the
 * brokers are down, so its queue is full and the slot holds back): the server terminates the
 * walsender; outboxd fails with a message that names the slot and says what to do, exits
 * non-zero, and neither recreates the slot then nor when started again. */
START_TEST(slot_invalidated__fatal_not_recreated)
{
    static const char *const settings[] = {"max_slot_wal_keep_size=32MB", "max_wal_size=64MB",
                                           "min_wal_size=32MB", NULL};
    static const char *const needles[] = {"replication slot \"" OBXT_SLOT "\" is invalidated",
                                          "re-sync the outbox", "recreate the slot by hand", NULL};
    struct obxt_stack *s = obxt_workload_stack(settings, NKEYS);
    struct obxt_check *c = obxt_check_new("slot_invalidated");
    struct obxt_outboxd *o =
        obxt_outboxd_start_streaming(s, "kafka.queue.buffering.max.messages=100", NULL);
    char *status;

    obxt_pg_exec(s->pg, "CREATE TABLE filler (x text)");
    ck_assert_int_eq(obxt_broker_cmd(s->broker, "down all"), 0);
    obxt_pg_exec(s->pg, "SELECT obxt_write(0, 1000, %d, 0)", NKEYS);
    write_filler(s, 80);
    obxt_pg_exec(s->pg, "SELECT pg_switch_wal()");
    obxt_pg_exec(s->pg, "CHECKPOINT");
    status = obxt_pg_query_value(s->pg,
                                 "SELECT wal_status FROM pg_replication_slots "
                                 "WHERE slot_name = '%s'",
                                 OBXT_SLOT);
    ck_assert_msg(status != NULL && strcmp(status, "lost") == 0,
                  "the slot was not invalidated (wal_status %s)", status ? status : "NULL");
    free(status);
    obxt_check_figure(c, "exit_code", "%d", expect_fatal(o, needles));
    obxt_outboxd_free(o);
    ck_assert_int_eq(obxt_broker_cmd(s->broker, "up all"), 0);
    /* started again: the same refusal, and the slot is still the invalidated one */
    o = obxt_outboxd_start(s, NULL);
    obxt_check_figure(c, "exit_code_on_restart", "%d", expect_fatal(o, needles));
    obxt_outboxd_free(o);
    obxt_check_print(c);
    status = obxt_pg_query_value(s->pg,
                                 "SELECT wal_status FROM pg_replication_slots "
                                 "WHERE slot_name = '%s'",
                                 OBXT_SLOT);
    ck_assert_msg(status != NULL && strcmp(status, "lost") == 0, "the slot was recreated");
    free(status);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

/* 13. An idle outbox while another table writes 50 MB (1 MiB transactions, 10 MiB/s): the slot
 * keeps up from keepalive positions (rule 3) and does not pin the WAL. The lag
 * (pg_current_wal_lsn() minus the slot's confirmed_flush_lsn) is sampled after every 10 MiB: it
 * must stay well below what was written (under 16 MiB: a second of writes plus the status
 * interval), and under 1 MiB 3 s after the writes end. */
START_TEST(idle_outbox__busy_other_table_lag_small)
{
    struct obxt_stack *s = obxt_workload_stack(NULL, NKEYS);
    struct obxt_check *c = obxt_check_new("idle_outbox_lag");
    struct obxt_outboxd *o = obxt_outboxd_start_streaming(s, NULL);
    long long lag = 0, max_lag = 0, deadline;

    obxt_pg_exec(s->pg, "CREATE TABLE filler (x text)");
    for (int i = 0; i < 50; i++) {
        write_filler(s, 1);
        usleep(100 * 1000);
        if (i % 10 == 9) {
            lag = obxt_stack_slot_lag(s, OBXT_SLOT);
            max_lag = lag > max_lag ? lag : max_lag;
        }
    }
    deadline = obxt_proc_now_ms() + 3000;
    while ((lag = obxt_stack_slot_lag(s, OBXT_SLOT)) >= MIB && obxt_proc_now_ms() < deadline)
        usleep(100 * 1000);
    obxt_check_figure(c, "written_mib", "%d", 50);
    obxt_check_figure(c, "max_lag_while_writing_bytes", "%lld", max_lag);
    obxt_check_figure(c, "lag_after_bytes", "%lld", lag);
    obxt_check_print(c);
    ck_assert_msg(max_lag < 16 * MIB, "the slot lagged %lld bytes behind while writing", max_lag);
    ck_assert_msg(lag < MIB, "the slot lags %lld bytes behind 3 s after the writes", lag);
    obxt_outboxd_stop(o);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

static Suite *
fault_postgres_suite(void)
{
    Suite *s = suite_create("fault_postgres");

    obxt_stack_add_case(s, "restart_fast", restart_fast__mid_stream);
    obxt_stack_add_case(s, "crash", crash__mid_stream);
    obxt_stack_add_case(s, "terminate", terminate_walsender__mid_stream);
    obxt_stack_add_case(s, "slot_dropped", slot_dropped__fatal_not_recreated);
    obxt_stack_add_case(s, "slot_invalidated", slot_invalidated__fatal_not_recreated);
    obxt_stack_add_case(s, "idle_lag", idle_outbox__busy_other_table_lag_small);
    return s;
}

int
main(void)
{
    return obxt_stack_run_suite(fault_postgres_suite());
}
