/* test_fault_outboxd.c - the fault suite, outboxd's own faults: kill -9 with produces in flight
 * (twice, during a stream), kill -9 inside the delivery of one big transaction, SIGTERM and
 * restart without a duplicate, a hot standby on the same slot taking over after kill -9, and a
 * huge transaction delivered whole with bounded memory and confirmed only at its end; first, the
 * checker itself on made-up records.
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
#include <stdint.h>
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
/* rows of the big transaction killed mid-delivery (fault 2: the full 100,000) */
#define BIG_TXN_ROWS 100000
/* rows of the huge transaction (fault 14): the full 1,000,000 (about 30 s on 2 cores) */
#define HUGE_TXN_ROWS 1000000
#define HUGE_TIMEOUT_MS 240000
#define HUGE_SAMPLES 4096
/* records not yet in Kafka when the brokers go down for HUGE_FREEZE_MS (fewer than the producer
 * queue holds, 100,000: the commit is read by then) */
#define HUGE_TAIL_ROWS 50000
#define HUGE_FREEZE_MS 2000
/* outboxd's peak RSS must stay below the producer queue bound (queue.buffering.max.kbytes,
 * 32 MiB by default, and max.messages, 50,000) plus a wide margin for everything else */
#define HUGE_RSS_LIMIT_KB (128L * 1024)
/* a producer queue that fills at once: backpressure inside transactions */
#define SMALL_QUEUE "kafka.queue.buffering.max.messages=100"

/* Kills o with SIGKILL and waits for it to be gone. */
static void
kill9(struct obxt_outboxd *o)
{
    ck_assert_int_eq(obxt_proc_kill(obxt_outboxd_proc(o), SIGKILL), 0);
    ck_assert_int_eq(obxt_outboxd_wait_exit(o, EXIT_TIMEOUT_MS), 128 + SIGKILL);
}

static struct obxt_stack *
stack_up(void)
{
    return obxt_workload_stack(NULL, NKEYS);
}

static struct obxt_writer *
writer_start(struct obxt_stack *s, long long events, int per_txn, int rate)
{
    struct obxt_writer_opts wo = {
        .events = events, .per_txn = per_txn, .nkeys = NKEYS, .pad = 32, .rate = rate};

    return obxt_writer_start(obxt_pg_conninfo(s->pg), &wo);
}

/* A record of OBXT_FAULT_TOPIC partition 0 with an id header, appended to recs. */
static void
add_record(struct obxt_records *recs, const char *id, const char *key)
{
    struct obxt_record *rec;

    recs->recs = realloc(recs->recs, (recs->count + 1) * sizeof(*recs->recs));
    ck_assert(recs->recs != NULL);
    rec = &recs->recs[recs->count];
    memset(rec, 0, sizeof(*rec));
    rec->topic = strdup(OBXT_FAULT_TOPIC);
    rec->offset = (int64_t)recs->count++;
    rec->key = strdup(key);
    rec->key_len = strlen(key);
    rec->headers = calloc(1, sizeof(*rec->headers));
    ck_assert(rec->topic != NULL && rec->key != NULL && rec->headers != NULL);
    rec->headers[0].name = strdup("id");
    rec->headers[0].value = strdup(id);
    rec->headers[0].value_len = strlen(id);
    rec->header_count = 1;
}

/* The checker itself, on made-up records: it must see a lost event, a duplicate, an event that
 * came after a later one of its key, and a record that is no committed event. */
START_TEST(checker__finds_loss_duplicates_reordering)
{
    struct obxt_check *c = obxt_check_new("checker_self_test");
    struct obxt_records *recs = calloc(1, sizeof(*recs));
    const struct obxt_check_figures *f;

    ck_assert(recs != NULL);
    obxt_check_expect(c, "a1", "a", 1);
    obxt_check_expect(c, "a2", "a", 2);
    obxt_check_expect(c, "a3", "a", 3);
    obxt_check_expect(c, "a4", "a", 4);
    obxt_check_expect(c, "b1", "b", 1);
    add_record(recs, "a1", "a");
    add_record(recs, "a2", "a");
    add_record(recs, "a4", "a");
    add_record(recs, "a2", "a"); /* a duplicate, not a reordering */
    add_record(recs, "a3", "a"); /* after a4 */
    add_record(recs, "zz", "a"); /* unknown; b1 is missing */
    f = obxt_check_run(c, recs, OBXT_FAULT_TOPIC);
    ck_assert_uint_eq(f->events, 5);
    ck_assert_uint_eq(f->records, 6);
    ck_assert_uint_eq(f->delivered, 4);
    ck_assert_uint_eq(f->missing, 1);
    ck_assert_uint_eq(f->duplicates, 1);
    ck_assert_uint_eq(f->reordered, 1);
    ck_assert_uint_eq(f->unknown, 1);
    ck_assert_int_eq(f->dup_bound, 0); /* no fault recorded: none allowed */
    obxt_records_free(recs);
    obxt_check_free(c);
}
END_TEST

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

/* 2. kill -9 inside the delivery of one transaction of 100,000 rows: outboxd is killed once part
 * of it is in Kafka (brokers answer after 100 ms, so delivery takes a while), restarted, and
 * delivers the whole transaction again; every event arrives, each at most twice, in order. */
START_TEST(kill9__inside_big_transaction)
{
    struct obxt_stack *s = stack_up();
    struct obxt_check *c = obxt_check_new("kill9_big_txn");
    struct obxt_outboxd *o;
    struct obxt_hw *hw;
    long long deadline;
    int64_t at_kill;
    int f;

    ck_assert_int_eq(obxt_broker_cmd(s->broker, "rtt all 100"), 0);
    o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, "kafka.queue.buffering.max.messages=10000",
                                     NULL);
    hw = obxt_hw_new(obxt_stack_bootstrap(s), OBXT_FAULT_TOPIC);
    obxt_pg_exec(s->pg, "SELECT obxt_write_bulk(%d, %d)", BIG_TXN_ROWS, NKEYS);
    deadline = obxt_proc_now_ms() + RECOVER_TIMEOUT_MS;
    while (obxt_hw_total(hw, NULL) < BIG_TXN_ROWS / 10)
        ck_assert_msg(obxt_proc_now_ms() < deadline, "the big transaction is not being delivered");
    kill9(o);
    obxt_outboxd_free(o);
    at_kill = obxt_hw_total(hw, NULL);
    ck_assert_msg(at_kill < BIG_TXN_ROWS, "delivery finished before the kill (%lld records)",
                  (long long)at_kill);
    obxt_check_figure(c, "delivered_at_kill", "%lld", (long long)at_kill);
    f = obxt_check_fault(c, s, "kill9", true);
    o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, NULL);
    obxt_check_recovered(c, f, s, RECOVER_TIMEOUT_MS);
    obxt_check_stack(c, s, CHECK_TIMEOUT_MS);
    obxt_check_assert(c, 0);
    obxt_outboxd_stop(o);
    obxt_hw_free(hw);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

/* 10. Two instances on one slot: the second waits while the slot is active for the first (the
 * slot is the leader lock), and takes over when the first is killed with kill -9; nothing is
 * lost. Prints the seconds from the kill to the standby streaming. */
START_TEST(standby__takes_over_after_kill9)
{
    struct obxt_stack *s = stack_up();
    struct obxt_check *c = obxt_check_new("standby_takeover");
    struct obxt_outboxd *active, *standby;
    struct obxt_writer *w;
    long long t0;
    int f;

    active = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, NULL);
    standby = obxt_outboxd_start(s, SOURCE_HEADERS, NULL);
    ck_assert_msg(obxt_proc_log_wait(obxt_outboxd_log(standby), "is active for", 30000) == 0,
                  "the standby does not say it waits for the slot");
    ck_assert(!obxt_proc_log_contains(obxt_outboxd_log(standby), "streaming from"));
    w = writer_start(s, 10000, 10, 2500);
    ck_assert(obxt_writer_wait_for(w, 4000, 60000));
    ck_assert(obxt_proc_running(obxt_outboxd_proc(standby)));
    ck_assert(!obxt_proc_log_contains(obxt_outboxd_log(standby), "streaming from"));
    kill9(active);
    obxt_outboxd_free(active);
    t0 = obxt_proc_now_ms();
    f = obxt_check_fault(c, s, "kill9_active", true);
    ck_assert_msg(obxt_outboxd_wait_streaming(standby, 30000) == 0,
                  "the standby did not take over within 30 s");
    obxt_check_figure(c, "takeover_s", "%.2f", (double)(obxt_proc_now_ms() - t0) / 1000.0);
    obxt_check_recovered(c, f, s, RECOVER_TIMEOUT_MS);
    obxt_writer_finish(w);
    obxt_check_stack(c, s, CHECK_TIMEOUT_MS);
    obxt_check_assert(c, 0);
    obxt_outboxd_stop(standby);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

/* One sample of the huge-transaction test: the slot's confirmed position, then how many records
 * Kafka holds (read after it, so it covers every acknowledgement the position reflects; while
 * the brokers are down, the first count read after they are up again: no fewer than then). */
struct sample {
    uint64_t confirmed;
    int64_t in_kafka;
};

/* One sample (in_kafka -1 while the brokers are down) and outboxd's peak RSS. */
static struct sample
take_sample(struct obxt_stack *s, struct obxt_hw *hw, struct obxt_check *c, pid_t pid, bool down)
{
    char *confirmed = obxt_stack_confirmed(s, OBXT_SLOT);
    struct sample smp = {confirmed != NULL ? obxt_check_lsn(confirmed) : 0, -1};

    free(confirmed);
    if (!down)
        smp.in_kafka = obxt_hw_total(hw, NULL);
    obxt_check_rss(c, pid);
    return smp;
}

/* Samples until the slot confirmed wal (or timeout). When all but HUGE_TAIL_ROWS records are in
 * Kafka the commit has been read (the producer queue holds 100,000): the brokers go down for
 * HUGE_FREEZE_MS then, so that the tail stays unacknowledged long enough for a confirmation
 * that came too early to show. Returns the number of samples. */
static size_t
sample_until_confirmed(struct obxt_stack *s, struct obxt_hw *hw, struct obxt_check *c, pid_t pid,
                       const char *wal, struct sample *samples, size_t max)
{
    long long deadline = obxt_proc_now_ms() + HUGE_TIMEOUT_MS, up_at = 0;
    uint64_t target = obxt_check_lsn(wal);
    size_t n = 0, fill_from = SIZE_MAX;
    int phase = 0; /* 0: before the freeze, 1: brokers down, 2: after */

    for (;;) {
        struct sample smp = take_sample(s, hw, c, pid, phase == 1);

        ck_assert_int_lt(n, max);
        samples[n++] = smp;
        for (; phase == 2 && fill_from < n - 1; fill_from++)
            samples[fill_from].in_kafka = smp.in_kafka;
        if (phase != 1 && smp.confirmed >= target)
            return n;
        if (phase == 0 && smp.in_kafka >= HUGE_TXN_ROWS - HUGE_TAIL_ROWS) {
            ck_assert_int_eq(obxt_broker_cmd(s->broker, "down all"), 0);
            up_at = obxt_proc_now_ms() + HUGE_FREEZE_MS;
            fill_from = n;
            phase = 1;
        } else if (phase == 1 && obxt_proc_now_ms() >= up_at) {
            ck_assert_int_eq(obxt_broker_cmd(s->broker, "up all"), 0);
            phase = 2;
            continue;
        }
        ck_assert_msg(obxt_proc_now_ms() < deadline, "%lld of %d records delivered after %d ms",
                      (long long)smp.in_kafka, HUGE_TXN_ROWS, HUGE_TIMEOUT_MS);
        usleep(100 * 1000);
    }
}

/* 14. One transaction of 1,000,000 outbox rows (tiny rows: null payloads, 64 keys) is delivered
 * whole with outboxd's memory bounded by the producer queue (peak RSS from VmHWM, default queue
 * bound), and the slot confirms it only once its last record is in Kafka: the confirmed position
 * is sampled (status updates every 100 ms) with the records in Kafka, and no sample may show it
 * past the commit with a record missing. To give a premature confirmation time to show, the
 * brokers go down for 2 s once the commit has been read, with the last records unacknowledged.
 * The mock broker keeps 5 MB per partition, so delivery is counted by the topic's end offsets
 * and outboxd's "N acknowledged" rather than by reading every record back; one record is read
 * for the transaction's commit LSN (outbox.lsn header). */
START_TEST(huge_transaction__bounded_memory_confirmed_at_end)
{
    static const char *const broker_args[] = {"--topic", "outbox.event.big:8", NULL};
    struct obxt_stack_opts opts = {.broker_args = broker_args};
    struct obxt_stack *s = obxt_stack_start(&opts);
    struct obxt_check *c = obxt_check_new("huge_txn");
    struct sample *samples = calloc(HUGE_SAMPLES, sizeof(*samples));
    struct obxt_outboxd *o;
    struct obxt_hw *hw;
    char *wal, *commit, *stopped, *log;
    size_t n, partial = 0;
    long long t0;
    uint64_t commit_lsn;

    ck_assert(samples != NULL);
    o = obxt_outboxd_start_streaming(s, SOURCE_HEADERS, "postgres.status.interval.ms=100", NULL);
    hw = obxt_hw_new(obxt_stack_bootstrap(s), "outbox.event.big");
    t0 = obxt_proc_now_ms();
    obxt_pg_exec(s->pg,
                 "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                 "SELECT 'big', 'k' || (g %% 64), 'e', NULL FROM generate_series(1, %d) g",
                 HUGE_TXN_ROWS);
    obxt_check_figure(c, "insert_s", "%.1f", (double)(obxt_proc_now_ms() - t0) / 1000.0);
    wal = obxt_stack_wal_lsn(s);
    t0 = obxt_proc_now_ms();
    n = sample_until_confirmed(s, hw, c, obxt_proc_pid(obxt_outboxd_proc(o)), wal, samples,
                               HUGE_SAMPLES);
    obxt_check_figure(c, "deliver_s", "%.1f", (double)(obxt_proc_now_ms() - t0) / 1000.0);
    ck_assert_msg(obxt_hw_total(hw, NULL) == HUGE_TXN_ROWS,
                  "the slot confirmed the transaction with %lld of %d records in Kafka",
                  (long long)obxt_hw_total(hw, NULL), HUGE_TXN_ROWS);
    commit = obxt_hw_last_header(hw, 0, "outbox.lsn");
    ck_assert_msg(commit != NULL, "no outbox.lsn header on the big topic");
    commit_lsn = obxt_check_lsn(commit);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(samples[i].confirmed <= commit_lsn || samples[i].in_kafka == HUGE_TXN_ROWS,
                      "the slot confirmed past the transaction (commit %s) with %lld of %d "
                      "records in Kafka",
                      commit, (long long)samples[i].in_kafka, HUGE_TXN_ROWS);
        partial += samples[i].in_kafka > 0 && samples[i].in_kafka < HUGE_TXN_ROWS;
    }
    obxt_check_rss(c, obxt_proc_pid(obxt_outboxd_proc(o)));
    log = strdup(obxt_outboxd_log(o));
    obxt_outboxd_stop(o);
    ck_assert_int_gt(asprintf(&stopped, "sent, %d acknowledged", HUGE_TXN_ROWS), 0);
    ck_assert_msg(obxt_proc_log_contains(log, stopped), "outboxd did not log \"%s\"", stopped);
    obxt_check_figure(c, "rows", "%d", HUGE_TXN_ROWS);
    obxt_check_figure(c, "samples_mid_delivery", "%zu", partial);
    obxt_check_print(c);
    ck_assert_msg(partial > 0, "no sample caught the transaction in the middle of its delivery");
    ck_assert_msg(obxt_check_peak_rss(c) < HUGE_RSS_LIMIT_KB, "outboxd peaked at %ld kB",
                  obxt_check_peak_rss(c));
    free(stopped);
    free(log);
    free(commit);
    free(wal);
    free(samples);
    obxt_hw_free(hw);
    obxt_check_free(c);
    obxt_stack_stop(s);
}
END_TEST

static Suite *
fault_outboxd_suite(void)
{
    Suite *s = suite_create("fault_outboxd");

    obxt_stack_add_case(s, "checker", checker__finds_loss_duplicates_reordering);
    obxt_stack_add_case(s, "kill9_twice", kill9__twice_during_stream);
    obxt_stack_add_case(s, "kill9_big_txn", kill9__inside_big_transaction);
    obxt_stack_add_case(s, "sigterm", sigterm__restart_without_duplicates);
    obxt_stack_add_case(s, "standby", standby__takes_over_after_kill9);
    obxt_stack_add_case(s, "huge_txn", huge_transaction__bounded_memory_confirmed_at_end);
    return s;
}

int
main(void)
{
    return obxt_stack_run_suite(fault_outboxd_suite());
}
