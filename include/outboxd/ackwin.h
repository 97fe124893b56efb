/* ackwin.h - the ack window: in-flight transactions and the confirmable LSN (DESIGN.md, the LSN
 * rule).
 *
 * A FIFO of {end_lsn, outstanding} for committed transactions with events not yet acknowledged,
 * plus the one open transaction (between Begin and Commit). Events are tagged with the sequence
 * number of their transaction; delivery reports hand that number back. No I/O, no locks: used from
 * the main loop only. */
#ifndef OUTBOXD_ACKWIN_H
#define OUTBOXD_ACKWIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outboxd/error.h"

struct obx_ackwin;

/* Returns an empty window whose confirmable LSN is start_lsn (the slot's confirmed_flush_lsn, or
 * 0), or NULL when out of memory. Free with obx_ackwin_free(). */
struct obx_ackwin *obx_ackwin_new(uint64_t start_lsn);

/* Frees aw; NULL is a no-op. */
void obx_ackwin_free(struct obx_ackwin *aw);

/* Opens a transaction (on Begin). Returns 0, or OBX_ERR_PROTOCOL if one is already open. */
int obx_ackwin_begin(struct obx_ackwin *aw, struct obx_error *err);

/* Counts one more event of the open transaction and returns the sequence number to tag it with.
 * Returns 0 and stores the tag in *seq, or OBX_ERR_PROTOCOL if no transaction is open. */
int obx_ackwin_add(struct obx_ackwin *aw, uint64_t *seq, struct obx_error *err);

/* Closes the open transaction (on Commit) with its end_lsn. A transaction that produced no
 * events is not queued. Returns 0, OBX_ERR_PROTOCOL if none is open or end_lsn goes backwards,
 * or OBX_ERR_NOMEM. */
int obx_ackwin_commit(struct obx_ackwin *aw, uint64_t end_lsn, struct obx_error *err);

/* A one-event unit outside any transaction (non-transactional logical message) confirmed at lsn
 * once acknowledged. Stores its tag in *seq. Returns 0, OBX_ERR_PROTOCOL while a transaction is
 * open, or OBX_ERR_NOMEM. */
int obx_ackwin_single(struct obx_ackwin *aw, uint64_t lsn, uint64_t *seq, struct obx_error *err);

/* One event tagged seq was acknowledged by Kafka. Returns 0, or OBX_ERR_PROTOCOL for a tag that
 * has no outstanding event (a bug or a duplicate report). */
int obx_ackwin_ack(struct obx_ackwin *aw, uint64_t seq, struct obx_error *err);

/* The walEnd of a keepalive: may become confirmable when nothing is in flight and no
 * transaction is open. */
void obx_ackwin_keepalive(struct obx_ackwin *aw, uint64_t wal_end);

/* Drops the open transaction, if any (the connection was lost mid-transaction; the server will
 * send it again whole). Its events already handed to Kafka stay counted under its tag. */
void obx_ackwin_abort_open(struct obx_ackwin *aw);

/* The newest LSN that may be confirmed to PostgreSQL (never decreases). */
uint64_t obx_ackwin_confirmable(const struct obx_ackwin *aw);

/* Events handed out and not yet acknowledged, over all transactions. */
uint64_t obx_ackwin_outstanding(const struct obx_ackwin *aw);

/* Committed transactions still waiting for acknowledgements. */
size_t obx_ackwin_pending(const struct obx_ackwin *aw);

/* true between obx_ackwin_begin() and obx_ackwin_commit(). */
bool obx_ackwin_in_txn(const struct obx_ackwin *aw);

#endif
