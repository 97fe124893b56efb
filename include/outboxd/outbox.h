/* outbox.h - the router: a decoded outbox row or logical message becomes an event (topic, key,
 * value, headers), shaped like Debezium's outbox event router output.
 *
 * Pure: no libpq, no Kafka. Events point into the row and the router's scratch buffers, valid
 * until the next obx_outbox_route_* call on the same router. */
#ifndef OUTBOXD_OUTBOX_H
#define OUTBOXD_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/event.h"
#include "outboxd/pgoutput.h"
#include "outboxd/relcache.h"

/* What to do with a row that cannot be routed (outbox.invalid.behavior). */
enum obx_invalid_behavior {
    OBX_INVALID_DLQ = 0,
    OBX_INVALID_SKIP = 1,
    OBX_INVALID_FAIL = 2,
};

/* Transaction context of a routed row. */
struct obx_txn_info {
    uint32_t xid;
    uint64_t commit_lsn; /* Begin's final_lsn: the commit LSN of the transaction */
    int64_t commit_ts;   /* PostgreSQL epoch microseconds; 0: none (the producer stamps it) */
    uint32_t seq;        /* ordinal of the event in its transaction, from 0 */
};

/* Results of a routing call besides errors. */
enum obx_route_result {
    OBX_ROUTE_EVENT = 0, /* *ev holds the record to send */
    OBX_ROUTE_DLQ = 1,   /* *ev holds a dead-letter record (invalid row, behavior dlq) */
    OBX_ROUTE_SKIP = 2,  /* nothing to send (ignored row/message, or invalid with behavior skip) */
};

struct obx_outbox;

/* Builds a router from the outbox.* and postgres.tables/postgres.messages settings.
 * Returns NULL on a bad setting (OBX_ERR_CONFIG naming the key) or out of memory.
 * Free with obx_outbox_free(). */
struct obx_outbox *obx_outbox_new(const struct obx_config *cfg, struct obx_error *err);

/* Frees ob; NULL is a no-op. */
void obx_outbox_free(struct obx_outbox *ob);

/* true if rel is one of the configured outbox tables (postgres.tables). */
bool obx_outbox_is_table(const struct obx_outbox *ob, const struct obx_relation *rel);

/* Checks that every configured column exists in rel with a usable type. Returns 0, or
 * OBX_ERR_SERVER naming the table, the missing column and the key that names it. */
int obx_outbox_check_relation(const struct obx_outbox *ob, const struct obx_relation *rel,
                              struct obx_error *err);

/* Routes one inserted row of an outbox table (txn must not be NULL). Returns an enum
 * obx_route_result (>= 0) or, for an invalid row with behavior fail, OBX_ERR_INVALID (err says
 * why), or OBX_ERR_PROTOCOL when the tuple disagrees with rel. */
int obx_outbox_route_row(struct obx_outbox *ob, const struct obx_relation *rel,
                         const struct obx_pgo_tuple *tup, const struct obx_txn_info *txn,
                         struct obx_event *ev, struct obx_error *err);

/* Routes one logical message (prefix outbox.message.prefix, content a JSON object with the table's
 * field names). Other prefixes return OBX_ROUTE_SKIP. Same results as obx_outbox_route_row.
 * txn may be NULL for a non-transactional message: the timestamp is then left to the producer
 * (as with commit_ts 0) and the source headers use the message's lsn and xid with seq 0. */
int obx_outbox_route_message(struct obx_outbox *ob, const struct obx_pgo_message *msg,
                             const struct obx_txn_info *txn, struct obx_event *ev,
                             struct obx_error *err);

/* Turns an event Kafka refused permanently (reason: the broker's error) into a dead-letter event
 * for outbox.dlq.topic in *dlq (same key, value and headers, plus an `error` header; dlq may be
 * ev). *dlq points into ev's buffers and the router: send it before ev's buffers go away. Does not
 * touch the scratch space of the routing calls. Returns 0, OBX_ERR_CONFIG when no dead-letter topic
 * is set, or OBX_ERR_KAFKA when ev was already headed for the dead-letter topic (no loop). */
int obx_outbox_dead_letter(struct obx_outbox *ob, const struct obx_event *ev, const char *reason,
                           struct obx_event *dlq, struct obx_error *err);

/* Bytes held by the router's scratch buffer. It grows to the largest event routed and is then
 * reused: routing more rows of the same shape never allocates (tests check this). */
size_t obx_outbox_scratch_capacity(const struct obx_outbox *ob);

/* The configured outbox.invalid.behavior. */
enum obx_invalid_behavior obx_outbox_invalid_behavior(const struct obx_outbox *ob);

#endif
