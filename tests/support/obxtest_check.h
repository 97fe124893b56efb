/* obxtest_check.h - the delivery checker of the fault suite, and the workload it checks.
 *
 * The workload: a table written(id, key, seq) that the writer fills in the same transaction as
 * each outbox insert, so it holds exactly the committed events whatever a fault did to the
 * writer's connection. seq counts per key in commit order (a per-key counter row is updated,
 * and so locked, by every transaction that writes to the key).
 *
 * The check: given the committed events and the records consumed back, it verifies the three
 * guarantees (DESIGN.md): every committed event delivered (no loss); duplicates counted and,
 * when the test recorded its faults, bounded by what was unconfirmed at each fault; per key,
 * once duplicates are removed (first copy wins, as a consumer's dedupe does), events arrive in
 * commit order. It prints one line of figures: events, records, duplicates (and their bound),
 * seconds to recover from each fault, peak RSS of outboxd when it was sampled.
 *
 * Like obxtest_pg.h, functions that cannot go on fail the running libcheck test. */
#ifndef OBXTEST_CHECK_H
#define OBXTEST_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct obxt_pg;
struct obxt_records;
struct obxt_stack;

/* The topic the workload's events go to (aggregatetype 'fault'). */
#define OBXT_FAULT_TOPIC "outbox.event.fault"

/* ---- the workload --------------------------------------------------------------------------- */

/* Creates in pg's database: written(id uuid, key text, seq bigint), key_seq(key, seq) with keys
 * k0..k<nkeys-1>, and the functions
 *   obxt_write(first bigint, n int, nkeys int, pad int): one transaction's worth of n events,
 *     event i with key k<(first + i) % nkeys>, a payload {"seq": s, "pad": "xxx..."} of pad
 *     characters, recorded in written;
 *   obxt_write_bulk(n int, nkeys int): n events in one statement (for big transactions), keys
 *     round-robin, recorded in written.
 * Every event goes to public.outbox with aggregatetype 'fault' (topic OBXT_FAULT_TOPIC). */
void obxt_workload_setup(struct obxt_pg *pg, int nkeys);

/* A stack for fault tests: obxt_stack_start (3 brokers) with OBXT_FAULT_TOPIC created up front
 * with 8 partitions (the mock broker keeps 5 MB per partition), pg_settings (NULL-terminated, or
 * NULL) for the server, and the workload set up with nkeys keys. Stop with obxt_stack_stop. */
struct obxt_stack *obxt_workload_stack(const char *const pg_settings[], int nkeys);

struct obxt_writer_opts {
    long long events; /* how many events to commit */
    int per_txn;      /* events per transaction (0: 10) */
    int nkeys;        /* keys to spread over (must match obxt_workload_setup) */
    int pad;          /* payload padding in bytes */
    int rate;         /* events per second, 0: as fast as it goes */
};

/* A writer thread with its own connection (conninfo), committing obxt_write transactions until
 * opts->events were committed. It survives a lost connection or a server restart: it reconnects
 * every 100 ms for up to 120 s and retries the transaction (one whose commit was lost in
 * transit may then exist twice, with other ids: written stays the truth). */
struct obxt_writer;

struct obxt_writer *obxt_writer_start(const char *conninfo, const struct obxt_writer_opts *opts);

/* Events the writer has seen commit so far (its own count; written is authoritative). */
long long obxt_writer_committed(struct obxt_writer *w);

/* Waits until the writer has committed at least n events (or finished). Returns true, or false
 * after timeout_ms. */
bool obxt_writer_wait_for(struct obxt_writer *w, long long n, int timeout_ms);

/* Waits for the writer to finish, fails the test if it gave up (its reason is printed), and frees
 * it. Returns the events it saw commit. */
long long obxt_writer_finish(struct obxt_writer *w);

/* ---- Kafka positions ------------------------------------------------------------------------ */

/* A watch on a topic's high watermarks: the number of records ever appended to each partition,
 * also when the broker dropped old ones. Free with obxt_hw_free. */
struct obxt_hw;

/* Fails the test when the topic's metadata cannot be read (it must exist). */
struct obxt_hw *obxt_hw_new(const char *bootstrap, const char *topic);

/* Sum of the high watermarks now; per[] (NULL, or room for every partition) gets each one. */
int64_t obxt_hw_total(struct obxt_hw *hw, int64_t per[]);

/* Partitions of the topic. */
int obxt_hw_partitions(const struct obxt_hw *hw);

/* Value of header name of the last record of partition (malloc'd), NULL when the partition is
 * empty or the record lacks it. Fails the test when the record cannot be read. */
char *obxt_hw_last_header(struct obxt_hw *hw, int partition, const char *name);

void obxt_hw_free(struct obxt_hw *hw);

/* "X/Y" to a number; fails the test on anything else. */
uint64_t obxt_check_lsn(const char *text);

/* ---- the check ------------------------------------------------------------------------------ */

#define OBXT_CHECK_MAX_FAULTS 16

struct obxt_check_figures {
    size_t events;       /* committed events */
    size_t records;      /* records of the checked topic read back */
    size_t delivered;    /* committed events read back at least once */
    size_t missing;      /* committed events never read back */
    size_t duplicates;   /* records beyond the first of each event */
    long long dup_bound; /* most duplicates the recorded faults allow; -1: not known */
    size_t reordered;    /* events that came (first) after a later event of their key */
    size_t unknown;      /* records whose id is no committed event */
};

struct obxt_check;

/* A new check, called name in its figures line. Free with obxt_check_free. */
struct obxt_check *obxt_check_new(const char *name);

void obxt_check_free(struct obxt_check *c);

/* Adds one committed event. */
void obxt_check_expect(struct obxt_check *c, const char *id, const char *key, long long seq);

/* Adds every row of written. Returns the number of events added. */
size_t obxt_check_expect_written(struct obxt_check *c, struct obxt_pg *pg);

/* Records a fault now: the time, the slot's confirmed_flush_lsn and pg_current_wal_lsn(). Call it
 * when the slot no longer moves and before anything can be replayed (outboxd killed, not yet
 * restarted): then the events committed in between are the most that can come twice, and
 * bound_known adds them to the duplicate bound. With bound_known false (the slot may move back,
 * as after a server restart on PostgreSQL < 17, which saves confirmed_flush_lsn only when the
 * slot is dirty) the fault only times the recovery and the bound becomes unknown. Returns the
 * fault's index. */
int obxt_check_fault(struct obxt_check *c, struct obxt_stack *s, const char *what,
                     bool bound_known);

/* Samples pg_current_wal_lsn() again for fault: for faults whose confirmed position must be read
 * before the fault (the old session may still confirm) and whose WAL position after it. */
void obxt_check_fault_wal(struct obxt_check *c, int fault, struct obxt_stack *s);

/* Waits until the slot confirmed everything written before fault (its pg_current_wal_lsn), and
 * keeps the seconds since the fault as its recovery time. Fails the test after timeout_ms.
 * Returns the seconds. */
double obxt_check_recovered(struct obxt_check *c, int fault, struct obxt_stack *s, int timeout_ms);

/* Samples VmHWM (peak resident set) of pid from /proc and keeps the highest value seen. Returns
 * the sample in kB (0 when pid is gone). */
long obxt_check_rss(struct obxt_check *c, pid_t pid);

/* The highest VmHWM obxt_check_rss saw, in kB (0: none). */
long obxt_check_peak_rss(const struct obxt_check *c);

/* Adds "name value" to the figures line (e.g. "lag_bytes 12345"). */
void obxt_check_figure(struct obxt_check *c, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks the records of topic (NULL: every record) in recs against the committed events. The
 * records' "id" header names the event; an "outbox.lsn" header (outbox.headers.source = true)
 * gives the commit LSN the duplicate bound needs. Returns the figures (valid until c is freed).
 * Asserts and prints nothing: obxt_check_assert does. */
const struct obxt_check_figures *obxt_check_run(struct obxt_check *c,
                                                const struct obxt_records *recs, const char *topic);

/* The usual end of a fault test: waits (timeout_ms at most) until the slot confirmed
 * pg_current_wal_lsn() as of now, so everything committed is in Kafka; adds the rows of written;
 * reads OBXT_FAULT_TOPIC back and runs the check on it. */
const struct obxt_check_figures *obxt_check_stack(struct obxt_check *c, struct obxt_stack *s,
                                                  int timeout_ms);

/* Prints the figures line on stdout (and stderr): "FIGURES <name>:", the record figures of the
 * last obxt_check_run (if any), recovery seconds per fault, peak RSS, added figures. */
void obxt_check_print(const struct obxt_check *c);

/* obxt_check_assert flags */
enum {
    OBXT_CHECK_NO_DUPLICATES = 1 << 0, /* an orderly stop: not one duplicate */
};

/* Prints the figures line (obxt_check_print), then fails the test unless the last
 * obxt_check_run found no loss, no reordering, no unknown record, and duplicates within the
 * bound (none with OBXT_CHECK_NO_DUPLICATES). The message names the first missing / reordered
 * events. Add figures (obxt_check_figure) before. */
void obxt_check_assert(struct obxt_check *c, unsigned flags);

#endif
