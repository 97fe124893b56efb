/* obxtest_outboxd.h - the whole stack for end-to-end tests: a throwaway PostgreSQL with the outbox
 * table (sql/outbox.sql), a Kafka-protocol broker, and outboxd ($OBX_OUTBOXD) runs against them
 * with their stderr in log files; plus the slot positions tests assert on.
 *
 * Like obxtest_pg.h, functions that cannot go on when something breaks fail the running libcheck
 * test with a message that says what broke (and print the outboxd log concerned on stderr);
 * the others return a value for the test to assert on.
 *
 * Cleaning up after a failed test: a libcheck test that fails ends its forked process at once
 * (no checked teardown runs). Every child gets PR_SET_PDEATHSIG, so the server, the broker and
 * outboxd go away with it; the log files go away with the unchecked fixture
 * obxt_stack_fixture_setup / obxt_stack_fixture_teardown, which runs in the parent process.
 * Set OBX_KEEP_LOGS=1 to keep them (their directory is printed). */
#ifndef OBXTEST_OUTBOXD_H
#define OBXTEST_OUTBOXD_H

#include <check.h>
#include <stdbool.h>
#include <stdio.h>

/* The slot and publication outboxd uses by default (postgres.slot, postgres.publication). */
#define OBXT_SLOT "outboxd"

/* ---- the stack: server, broker, log directory --------------------------------------------- */

struct obxt_stack {
    struct obxt_pg *pg;
    struct obxt_broker *broker;
    char *dir; /* log files of this stack's outboxd runs */
    int runs;  /* outboxd runs started so far (numbers the log files) */
};

struct obxt_stack_opts {
    int nbrokers;                   /* 0: 3 */
    const char *const *pg_settings; /* postgresql.conf "name=value" list (NULL-terminated) */
    const char *const *broker_args; /* extra kafka-broker arguments (NULL-terminated) */
    bool no_outbox_table;           /* do not run sql/outbox.sql */
};

/* Unchecked fixture (tcase_add_unchecked_fixture): a directory for the logs of every stack the
 * TCase's tests start, removed by the teardown with whatever failed tests left in it. Without
 * it, each stack makes its own directory in $TMPDIR and obxt_stack_stop removes it. */
void obxt_stack_fixture_setup(void);
void obxt_stack_fixture_teardown(void);

/* Adds a TCase called name that holds only test, with the fixture above and a 300 s timeout
 * (one TCase per test, so CK_RUN_CASE=<name> runs one alone). */
void obxt_stack_add_case(Suite *s, const char *name, const TTest *test);

/* Runs every test of s (CK_NORMAL) and frees it: EXIT_SUCCESS when none failed, else
 * EXIT_FAILURE. For a test program's main. */
int obxt_stack_run_suite(Suite *s);

/* Starts PostgreSQL (wal_level = logical) and the broker, and creates the outbox table
 * (sql/outbox.sql) unless opts says not to. opts NULL: the defaults. Stop with obxt_stack_stop. */
struct obxt_stack *obxt_stack_start(const struct obxt_stack_opts *opts);

/* Stops the broker and the server (fails the test unless both end cleanly), removes the log
 * directory unless the fixture owns it, and frees s. Stop every outboxd run first. */
void obxt_stack_stop(struct obxt_stack *s);

/* Bootstrap servers of the broker (lives as long as s). */
const char *obxt_stack_bootstrap(const struct obxt_stack *s);

/* Runs $OBX_SOURCE_ROOT/sql/<name> on the server; fails the test on an error. */
void obxt_stack_sql_file(struct obxt_stack *s, const char *name);

/* ---- records read back -------------------------------------------------------------------- */

/* Reads topics (NULL-terminated) from the stack's broker until expect records came (30 s at
 * most, then 500 ms more for extra records); fails the test, printing what came, unless exactly
 * expect did. Free with obxt_records_free. */
struct obxt_records *obxt_stack_consume_exactly(struct obxt_stack *s, const char *const topics[],
                                                size_t expect);

/* The first record (in obxt_records order) on topic with key key (a C string); fails the test,
 * printing recs, when there is none. Points into recs. */
const struct obxt_record *obxt_records_require(const struct obxt_records *recs, const char *topic,
                                               const char *key);

/* Fails the test unless rec has a header name whose value is value (a C string, compared with
 * its length), or, for value NULL, a header name with a null value. */
void obxt_record_assert_header(const struct obxt_record *rec, const char *name, const char *value);

/* Wall-clock time in ms since the Unix epoch (record timestamps are on this clock). */
long long obxt_wall_ms(void);

/* ---- positions ------------------------------------------------------------------------------ */

/* pg_current_wal_lsn() as text ("0/16B3748"), malloc'd. */
char *obxt_stack_wal_lsn(struct obxt_stack *s);

/* confirmed_flush_lsn of slot as text (malloc'd), NULL when the slot does not exist or has
 * none. */
char *obxt_stack_confirmed(struct obxt_stack *s, const char *slot);

/* a - b in bytes (pg_wal_lsn_diff). */
long long obxt_stack_lsn_diff(struct obxt_stack *s, const char *a, const char *b);

/* pg_current_wal_lsn() - confirmed_flush_lsn of slot in bytes: the WAL the slot holds back
 * from being acknowledged. Fails the test when the slot has no confirmed position. */
long long obxt_stack_slot_lag(struct obxt_stack *s, const char *slot);

/* Polls every 100 ms until slot's confirmed_flush_lsn >= lsn. Returns true, or false after
 * timeout_ms. */
bool obxt_stack_wait_confirmed(struct obxt_stack *s, const char *slot, const char *lsn,
                               int timeout_ms);

/* A probe: a test_decoding slot called name, created now, that is only ever peeked. It tells the
 * exact end LSN of every transaction committed after it (what a pgoutput Commit carries as
 * end_lsn), which pg_current_wal_lsn() cannot when other WAL is written at the same time. */
void obxt_stack_probe_create(struct obxt_stack *s, const char *name);

/* End LSN of the last transaction the probe name has seen commit (malloc'd), NULL when none. */
char *obxt_stack_probe_last_commit(struct obxt_stack *s, const char *name);

/* Drops the probe slot (it holds back WAL as long as it exists). */
void obxt_stack_probe_drop(struct obxt_stack *s, const char *name);

/* ---- outboxd runs --------------------------------------------------------------------------- */

struct obxt_outboxd;

/* Starts outboxd against s with -X postgres.conninfo, kafka.bootstrap.servers, quick reconnects
 * (postgres.reconnect.backoff.ms=100, postgres.reconnect.backoff.max.ms=1000,
 * kafka.reconnect.backoff.max.ms=1000) and shutdown.timeout.ms=10000, then one -X per "key=value"
 * in settings (NULL-terminated; later settings win). Its stderr goes to a fresh log file in the
 * stack's directory. Does not wait for anything. Free with obxt_outboxd_free. */
struct obxt_outboxd *obxt_outboxd_startv(struct obxt_stack *s, const char *const settings[]);

/* Same with the settings as arguments, the list ending with NULL. */
struct obxt_outboxd *obxt_outboxd_start(struct obxt_stack *s, ...);

/* obxt_outboxd_start, then waits (30 s at most) for "streaming from" in its log; fails the test
 * (printing the log) when it exits or does not get there. */
struct obxt_outboxd *obxt_outboxd_start_streaming(struct obxt_stack *s, ...);

/* Waits up to timeout_ms for "streaming from" in o's log. Returns 0, or -1 when outboxd exited
 * or the time ran out. */
int obxt_outboxd_wait_streaming(struct obxt_outboxd *o, int timeout_ms);

/* Path of o's log file (lives as long as o). */
const char *obxt_outboxd_log(const struct obxt_outboxd *o);

/* The outboxd process, e.g. to signal it or to check that it still runs. */
struct obxt_proc *obxt_outboxd_proc(struct obxt_outboxd *o);

/* Waits up to timeout_ms for outboxd to exit. Returns its exit code (obxt_proc_exit_code), or -1
 * when it still runs. */
int obxt_outboxd_wait_exit(struct obxt_outboxd *o, int timeout_ms);

/* The orderly stop: SIGTERM, and fails the test (printing the log) unless outboxd exits with
 * status 0 within 30 s. Frees o. */
void obxt_outboxd_stop(struct obxt_outboxd *o);

/* Prints o's log file to out, framed by its path. */
void obxt_outboxd_print_log(const struct obxt_outboxd *o, FILE *out);

/* Releases o: a process still running gets SIGKILL. NULL is a no-op. */
void obxt_outboxd_free(struct obxt_outboxd *o);

#endif
