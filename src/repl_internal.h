/* repl_internal.h - state and functions shared by the files of the repl module:
 *   repl.c          settings, the outer loop (sessions, backoff), helpers used by all
 *   repl_conn.c     the two connections, server checks, IDENTIFY_SYSTEM, START_REPLICATION
 *   repl_catalog.c  tables, publication, slot, columns for on_table, the WAL budget check
 *   repl_stream.c   the CopyBoth loop of one session, status updates, the orderly stop
 * Not a public interface: only those files include it. */
#ifndef OUTBOXD_REPL_INTERNAL_H
#define OUTBOXD_REPL_INTERNAL_H

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outboxd/error.h"
#include "outboxd/pgoutput.h"
#include "outboxd/relcache.h"
#include "outboxd/repl.h"

/* An LSN printed the way PostgreSQL prints it. */
#define REPL_LSN_FMT "%X/%X"
#define REPL_LSN_ARGS(lsn) (unsigned)((uint64_t)(lsn) >> 32), (unsigned)(lsn)

/* One configured table (postgres.tables). relid is filled by the checks of each session. */
struct obx_repl_table {
    char nspname[OBX_NAME_MAX];
    char relname[OBX_NAME_MAX];
    uint32_t relid;
};

struct obx_repl {
    /* Settings (postgres.*), copied at obx_repl_new. */
    char *conninfo;
    char *slot;
    bool slot_create;
    char *publication;
    bool publication_create;
    struct obx_repl_table *tables;
    size_t ntables;
    bool messages;
    int64_t status_interval_us;
    long long backoff_ms;
    long long backoff_max_ms;
    long long wal_warn_bytes;
    int64_t stop_wait_us; /* how long a stop waits for the open transaction (shutdown.timeout.ms) */

    /* Connections of the current session (NULL between sessions). */
    PGconn *conn; /* replication=database; CopyBoth while streaming */
    PGconn *cat;  /* ordinary connection for catalog queries */

    struct obx_pgoutput *dec;
    struct obx_relcache *cache;

    /* The slot (publication) existed at some point of this run: never create it again. */
    bool slot_seen;
    bool publication_seen;
    uint64_t start_lsn;        /* the slot's confirmed_flush_lsn when streaming started */
    uint64_t received_lsn;     /* highest position received (XLogData start, keepalive walEnd) */
    uint64_t flushed_lsn;      /* highest flush position sent; never goes back */
    bool in_txn;               /* between a Begin and its Commit in this session */
    int64_t stopping_since_us; /* when a stop request inside a transaction was first seen */
    int rcvlowat; /* SO_RCVLOWAT of conn's socket, -1 when not TCP (see wait_io, repl_stream.c) */
    int64_t next_status_us;
    int64_t next_wal_check_us;
    uint64_t rng;
    char last_problem[OBX_ERROR_MSG_MAX]; /* to log a repeated failure only once */
    struct obx_repl_stats stats;
};

/* Monotonic clock in microseconds. */
int64_t obx_repl_now_us(void);

/* Copies a libpq message into dst (capacity cap, NUL-terminated) on one line: newlines and tabs
 * become spaces, trailing blanks go. src may be NULL. */
void obx_repl_pq_msg(const char *src, char *dst, size_t cap);

/* Milliseconds left until deadline_us (rounded up), 0 when it passed. */
int obx_repl_ms_until(int64_t deadline_us);

/* Calls h->service / h->drain (when set) with err cleared. Return 0 or the callback's error. */
int obx_repl_serve(const struct obx_repl_handler *h, struct obx_error *err);
int obx_repl_drain(const struct obx_repl_handler *h, struct obx_error *err);

/* Completes the error of a handler callback that returned rc < 0 (code and a message naming
 * what when the callback left them empty). Returns the error code. */
int obx_repl_callback_failed(int rc, const char *what, struct obx_error *err);

/* Statements (repl_conn.c). obx_repl_query runs sql with text parameters and returns the result
 * (caller PQclears it) when its status is want, else NULL with err set by
 * obx_repl_query_failed, which records "what: server message" as OBX_ERR_CONN when retrying can
 * help (broken connection, server shutting down, ...) and as a fatal OBX_ERR_SERVER otherwise. */
PGresult *obx_repl_query(PGconn *conn, const char *sql, int nparams, const char *const *params,
                         ExecStatusType want, const char *what, struct obx_error *err);
int obx_repl_query_failed(PGconn *conn, const PGresult *res, const char *what,
                          struct obx_error *err);
/* Whether res failed with SQLSTATE state. res may be NULL. */
bool obx_repl_sqlstate_is(const PGresult *res, const char *state);

/* The fatal error for a slot that does not exist (repl_catalog.c): how to create it, or, when it
 * was seen earlier in this run, that it was dropped and will not be recreated. */
int obx_repl_slot_missing(struct obx_repl *r, struct obx_error *err);

/* Opens r->cat and r->conn, checks the server (version, wal_level) and runs IDENTIFY_SYSTEM.
 * Returns 0, OBX_ERR_STOPPED (stop became non-zero while connecting), OBX_ERR_CONN (retriable)
 * or OBX_ERR_SERVER (fatal). */
int obx_repl_connect(struct obx_repl *r, volatile sig_atomic_t *stop, struct obx_error *err);

/* Checks (and creates when allowed) the tables, the publication and the slot, then hands each
 * table as found in the catalog to h->on_table. Returns 0, OBX_ERR_CONN, OBX_ERR_SERVER or the
 * error on_table returned. */
int obx_repl_prepare(struct obx_repl *r, const struct obx_repl_handler *h, struct obx_error *err);

/* Sends START_REPLICATION and leaves r->conn in non-blocking CopyBoth mode. Returns 0,
 * OBX_ERR_CONN (retriable: the slot is in use, the connection broke) or OBX_ERR_SERVER. */
int obx_repl_start(struct obx_repl *r, struct obx_error *err);

/* At most once a minute (r->next_wal_check_us), on the catalog connection: fatal when the slot
 * is gone or lost; warns when it retains more than postgres.wal.warn.bytes of WAL, or when
 * max_slot_wal_keep_size leaves it less than that (safe_wal_size). Returns 0 or OBX_ERR_SERVER;
 * a failing query only logs. */
int obx_repl_check_wal(struct obx_repl *r, struct obx_error *err);

/* Closes both connections (no status update). */
void obx_repl_close(struct obx_repl *r);

/* Streams until *stop (then drains, sends the final status update, closes and returns 0 or a
 * fatal drain error) or an error (returned; the caller closes). */
int obx_repl_stream(struct obx_repl *r, const struct obx_repl_handler *h,
                    volatile sig_atomic_t *stop, struct obx_error *err);

#endif
