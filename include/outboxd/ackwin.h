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

/* Opens a transaction (on Begin). Returns 0, OBX_ERR_PROTOCOL if one is already open, or
 * OBX_ERR_NOMEM (room for the transaction is reserved here, so commit and abort never allocate). */
int obx_ackwin_begin(struct obx_ackwin *aw, struct obx_error *err);

/* Counts one more event of the open transaction and returns the sequence number to tag it with.
 * Returns 0 and stores the tag in *seq, or OBX_ERR_PROTOCOL if no transaction is open. */
int obx_ackwin_add(struct obx_ackwin *aw, uint64_t *seq, struct obx_error *err);

/* Closes the open transaction (on Commit) with its end_lsn. A transaction that produced no
 * events (or whose events were all acknowledged before Commit) is not queued: its end_lsn becomes
 * confirmable as soon as every older transaction is acknowledged. Returns 0, or OBX_ERR_PROTOCOL
 * if none is open or end_lsn goes backwards (since the last obx_ackwin_abort_open()). */
int obx_ackwin_commit(struct obx_ackwin *aw, uint64_t end_lsn, struct obx_error *err);

/* A one-event unit outside any transaction (non-transactional logical message) confirmed at lsn
 * once acknowledged. Stores its tag in *seq. Returns 0, OBX_ERR_PROTOCOL while a transaction is
 * open, or OBX_ERR_NOMEM. */
int obx_ackwin_single(struct obx_ackwin *aw, uint64_t lsn, uint64_t *seq, struct obx_error *err);

/* One event tagged seq was acknowledged by Kafka. Returns 0, or OBX_ERR_PROTOCOL for a tag that
 * has no outstanding event (a bug or a duplicate report). */
int obx_ackwin_ack(struct obx_ackwin *aw, uint64_t seq, struct obx_error *err);

/* The walEnd of a keepalive: becomes confirmable (if greater) at once when nothing is queued and
 * no transaction is open, else it is remembered and applied when that is next the case. */
void obx_ackwin_keepalive(struct obx_ackwin *aw, uint64_t wal_end);

/* The connection was lost: call on every disconnect. Drops the open transaction, if any (the
 * server will send it again whole). Its events already handed to Kafka stay counted under its
 * tag: their late reports are accepted and it blocks newer transactions until they are all in,
 * but it never makes an LSN confirmable itself. Also restarts the end_lsn order check, since the
 * server resends from the slot's confirmed_flush_lsn (transactions already in the window come
 * again and are simply queued again). */
void obx_ackwin_abort_open(struct obx_ackwin *aw);

/* The newest LSN that may be confirmed to PostgreSQL (never decreases). */
uint64_t obx_ackwin_confirmable(const struct obx_ackwin *aw);

/* Events handed out and not yet acknowledged, over all transactions. */
uint64_t obx_ackwin_outstanding(const struct obx_ackwin *aw);

/* Queued units still waiting for acknowledgements: committed transactions, single events and
 * aborted transactions with late reports (not the open transaction). */
size_t obx_ackwin_pending(const struct obx_ackwin *aw);

/* true between obx_ackwin_begin() and obx_ackwin_commit(). */
bool obx_ackwin_in_txn(const struct obx_ackwin *aw);

#endif
