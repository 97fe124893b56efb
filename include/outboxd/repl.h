/* repl.h - the replication connection: from postgres.conninfo to a stream of decoded, validated
 * pgoutput messages handed to a consumer through a callback table.
 *
 * repl owns: the libpq connection (replication=database), IDENTIFY_SYSTEM and the server checks,
 * slot and publication checks and creation, START_REPLICATION, the non-blocking CopyBoth loop,
 * keepalive replies, standby status updates, the pgoutput decoder and the relation cache, and
 * reconnecting with capped exponential backoff. It never knows about Kafka: the consumer tells
 * it how far it may confirm and whether it can take more. */
#ifndef OUTBOXD_REPL_H
#define OUTBOXD_REPL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/pgoutput.h"
#include "outboxd/relcache.h"

/* The consumer. Callbacks returning int return 0 to go on, or a negative OBX_ERR_* with err
 * filled: err->fatal = false tears the connection down and restarts streaming from the slot
 * (after on_disconnect); err->fatal = true stops obx_repl_run with that error. Pointers passed in
 * live until the callback returns (copy what you keep). Any callback may be NULL. */
struct obx_repl_handler {
    void *ctx;

    /* After connecting and checking, before streaming: each configured table as found in the
     * catalog (relid, names, columns with type OIDs), so the consumer can check its columns. */
    int (*on_table)(void *ctx, const struct obx_relation *rel, struct obx_error *err);

    int (*on_begin)(void *ctx, const struct obx_pgo_begin *m, struct obx_error *err);
    int (*on_commit)(void *ctx, const struct obx_pgo_commit *m, struct obx_error *err);
    /* A Relation message, after the cache took it. */
    int (*on_relation)(void *ctx, const struct obx_relation *rel, struct obx_error *err);
    /* An Insert; tup has exactly rel->ncols columns. */
    int (*on_insert)(void *ctx, const struct obx_relation *rel, const struct obx_pgo_tuple *tup,
                     struct obx_error *err);
    /* Update, Delete or Truncate (tag says which); rel is NULL for Truncate. */
    int (*on_change)(void *ctx, uint8_t tag, const struct obx_relation *rel, struct obx_error *err);
    /* A logical message; wal_end is the walEnd of the XLogData that carried it. */
    int (*on_message)(void *ctx, const struct obx_pgo_message *m, uint64_t wal_end,
                      struct obx_error *err);
    /* A primary keepalive's walEnd (for the ack window's idle advance). */
    void (*on_keepalive)(void *ctx, uint64_t wal_end);

    /* Every loop turn, and while waiting to reconnect: serve delivery reports, check for
     * producer errors. */
    int (*service)(void *ctx, struct obx_error *err);
    /* false: backpressure; do not read WAL (status updates still go out). */
    bool (*can_take)(void *ctx);
    /* The LSN to report as flushed and applied. */
    uint64_t (*confirmable)(void *ctx);
    /* The connection is gone (lost, or torn down on a non-fatal error): forget the open
     * transaction; streaming restarts from the slot's confirmed_flush_lsn. */
    void (*on_disconnect)(void *ctx);
    /* Stop requested: flush what can be flushed before the final status update. */
    int (*drain)(void *ctx, struct obx_error *err);

    /* An extra file descriptor to wait on (the producer's), or -1. */
    int wakeup_fd;
};

struct obx_repl_stats {
    uint64_t received_lsn;  /* highest WAL position received */
    uint64_t confirmed_lsn; /* last flush position sent */
    uint64_t messages;      /* pgoutput messages decoded */
    uint64_t bytes;         /* XLogData payload bytes */
    uint64_t keepalives;
    uint64_t status_updates;
    uint64_t reconnects;
};

struct obx_repl;

/* Reads the postgres.* settings. Returns NULL with OBX_ERR_CONFIG for a bad setting or
 * OBX_ERR_NOMEM. Connects nothing yet. Free with obx_repl_free(). */
struct obx_repl *obx_repl_new(const struct obx_config *cfg, struct obx_error *err);

/* Closes the connection (without a final status update) and frees r; NULL is a no-op. */
void obx_repl_free(struct obx_repl *r);

/* Connects, checks, streams and reconnects until *stop becomes non-zero or a fatal error.
 * On stop: calls h->drain, sends a final status update, closes, returns 0. Returns OBX_ERR_SERVER
 * for server states that need an operator (wal_level, missing table, slot lost or dropped, slot
 * with another plugin), or the fatal error a callback returned. */
int obx_repl_run(struct obx_repl *r, const struct obx_repl_handler *h, volatile sig_atomic_t *stop,
                 struct obx_error *err);

/* Counters for logs and metrics. */
void obx_repl_get_stats(const struct obx_repl *r, struct obx_repl_stats *out);

#endif
