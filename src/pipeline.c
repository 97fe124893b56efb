/* pipeline.c - the relay between repl and Kafka: implements the repl callback table with the
 * outbox router, the producer and the ack window.
 *
 * Insert/Message -> route -> produce (tagged with its transaction's ack window seq) -> delivery
 * report -> ack window -> confirmable LSN -> repl's status updates. When the producer queue is
 * full, the one event that did not fit is kept (copied) and can_take() turns false until it was
 * handed over, so repl stops reading WAL but keeps sending status updates. */
#include "outboxd/pipeline.h"

#include <stdlib.h>
#include <string.h>

#include "outboxd/ackwin.h"
#include "outboxd/log.h"
#include "outboxd/outbox.h"
#include "outboxd/producer.h"

/* An event the producer could not take yet (queue full): an owned copy of it. */
struct obx_held_event {
    uint64_t tag;
    struct obx_event ev;
    char *blob; /* topic, key, value and header names/values, pointed into by ev */
    size_t cap;
};

struct obx_pipeline {
    const struct obx_config *cfg;
    struct obx_outbox *outbox;
    struct obx_producer *producer;
    struct obx_ackwin *ackwin;
    struct obx_txn_info txn; /* the open transaction */
    /* Events waiting for room in the producer queue, oldest first: held[head..count). Usually
     * empty; at most one routed event plus dead letters raised by delivery reports. */
    struct obx_held_event *held;
    size_t held_head, held_count, held_cap;
    uint64_t frozen_lsn; /* confirmable position when the failure happened */
    int failure;         /* 0, or the error that stops confirming (rule 6) */
    bool failure_fatal;  /* stop outboxd rather than restart from the slot */
    char failure_msg[OBX_ERROR_MSG_MAX];
    struct obx_pipeline_stats stats;
    struct obx_repl_handler *handler; /* the table filled by obx_pipeline_handler */
};

static void pipeline_on_delivery(void *ctx, const struct obx_delivery *dr);
static void pipeline_refused(struct obx_pipeline *p, const struct obx_event *ev, uint64_t tag,
                             const char *reason);

/* Records the first failure: from now on nothing more is confirmed until the pipeline restarts
 * from the slot (fatal = false) or outboxd stops (fatal = true). */
static void
pipeline_fail(struct obx_pipeline *p, int code, bool fatal, const char *msg)
{
    if (p->failure != 0) {
        p->failure_fatal = p->failure_fatal || fatal;
        return;
    }
    p->failure = code;
    p->failure_fatal = fatal;
    p->frozen_lsn = obx_ackwin_confirmable(p->ackwin);
    snprintf(p->failure_msg, sizeof(p->failure_msg), "%s", msg);
    obx_log_error("pipeline", "%s; confirmed position frozen at %X/%X", msg,
                  (unsigned)(obx_ackwin_confirmable(p->ackwin) >> 32),
                  (unsigned)obx_ackwin_confirmable(p->ackwin));
}

static int
pipeline_start_producer(struct obx_pipeline *p, uint64_t start_lsn, struct obx_error *err)
{
    p->ackwin = obx_ackwin_new(start_lsn);
    if (p->ackwin == NULL)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    p->producer = obx_producer_new(p->cfg, pipeline_on_delivery, p, err);
    if (p->producer == NULL)
        return err != NULL ? err->code : OBX_ERR_KAFKA;
    return 0;
}

struct obx_pipeline *
obx_pipeline_new(const struct obx_config *cfg, struct obx_error *err)
{
    struct obx_pipeline *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->outbox = obx_outbox_new(cfg, err);
    if (p->outbox == NULL)
        goto fail;
    if (pipeline_start_producer(p, 0, err) != 0)
        goto fail;
    return p;
fail:
    obx_pipeline_free(p);
    return NULL;
}

void
obx_pipeline_free(struct obx_pipeline *p)
{
    if (p == NULL)
        return;
    obx_producer_free(p->producer);
    obx_ackwin_free(p->ackwin);
    obx_outbox_free(p->outbox);
    for (size_t i = 0; i < p->held_cap; i++)
        free(p->held[i].blob);
    free(p->held);
    free(p);
}

/* Appends n bytes to the held blob at *off; returns the offset they were stored at. */
static size_t
held_put(struct obx_held_event *h, size_t *off, const void *data, size_t n, bool nul)
{
    size_t at = *off;

    if (n > 0)
        memcpy(h->blob + at, data, n);
    *off += n;
    if (nul)
        h->blob[(*off)++] = '\0';
    return at;
}

/* Keeps an owned copy of ev (the producer's queue was full). Returns 0 or OBX_ERR_NOMEM. */
static int
pipeline_hold(struct obx_pipeline *p, const struct obx_event *ev, uint64_t tag,
              struct obx_error *err)
{
    struct obx_held_event *h;
    size_t need = strlen(ev->topic) + 1 + ev->key_len + ev->value_len + 1;
    size_t off = 0, at[3 + 2 * OBX_EVENT_MAX_HEADERS];

    for (size_t i = 0; i < ev->nheaders; i++)
        need += strlen(ev->headers[i].name) + 1 + ev->headers[i].value_len;
    if (p->held_count == p->held_cap) {
        size_t cap = p->held_cap == 0 ? 4 : p->held_cap * 2;
        struct obx_held_event *held = realloc(p->held, cap * sizeof(*held));

        if (held == NULL)
            return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory holding an event");
        memset(held + p->held_cap, 0, (cap - p->held_cap) * sizeof(*held));
        p->held = held;
        p->held_cap = cap;
    }
    h = &p->held[p->held_count];
    if (need > h->cap) {
        char *blob = realloc(h->blob, need);

        if (blob == NULL)
            return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory holding an event");
        h->blob = blob;
        h->cap = need;
    }
    h->ev = *ev;
    at[0] = held_put(h, &off, ev->topic, strlen(ev->topic), true);
    at[1] = held_put(h, &off, ev->key, ev->key_len, false);
    at[2] = held_put(h, &off, ev->value, ev->value_len, false);
    for (size_t i = 0; i < ev->nheaders; i++) {
        const struct obx_header *hd = &ev->headers[i];

        at[3 + 2 * i] = held_put(h, &off, hd->name, strlen(hd->name), true);
        at[4 + 2 * i] = held_put(h, &off, hd->value, hd->value_len, false);
    }
    h->ev.topic = h->blob + at[0];
    h->ev.key = ev->key != NULL ? h->blob + at[1] : NULL;
    h->ev.value = ev->value != NULL ? h->blob + at[2] : NULL;
    for (size_t i = 0; i < ev->nheaders; i++) {
        h->ev.headers[i].name = h->blob + at[3 + 2 * i];
        h->ev.headers[i].value = ev->headers[i].value != NULL ? h->blob + at[4 + 2 * i] : NULL;
    }
    h->tag = tag;
    p->held_count++;
    return 0;
}

/* A send refused because the producer is in a fatal state: librdkafka raised the error (an
 * idempotence sequence lost, say) before its delivery reports were served. That is the same
 * failure the reports are about to announce, so it is handled as they would handle it: nothing
 * more is confirmed, the producer is rebuilt and the slot replays (the next service() returns
 * the failure; a report that makes it final, outbox.invalid.behavior = fail, is served there
 * first). Returning the send's error instead made outboxd exit whenever its loop happened to
 * send before serving the reports. Returns true when rc was such a refusal. */
static bool
pipeline_producer_fatal(struct obx_pipeline *p, int rc, struct obx_error *err)
{
    if (rc != OBX_ERR_KAFKA || err == NULL || !err->fatal)
        return false;
    pipeline_fail(p, OBX_ERR_KAFKA, false, err->msg);
    obx_error_clear(err);
    return true;
}

/* Hands ev (tagged) to the producer, or holds it when the queue is full. */
static int
pipeline_send(struct obx_pipeline *p, const struct obx_event *ev, uint64_t tag,
              struct obx_error *err)
{
    int rc;

    if (p->held_head < p->held_count) /* keep order: nothing overtakes a held event */
        return pipeline_hold(p, ev, tag, err);
    rc = obx_producer_send(p->producer, ev, tag, err);
    if (rc == OBX_ERR_BUSY)
        return pipeline_hold(p, ev, tag, err);
    if (pipeline_producer_fatal(p, rc, err))
        return 0;
    if (rc == OBX_ERR_KAFKA && err != NULL && !err->fatal) {
        /* refused at enqueue (too large, unknown partition): same policy as a permanent
         * delivery failure, or the replay would refuse it again forever */
        pipeline_refused(p, ev, tag, err->msg);
        obx_error_clear(err);
        return 0;
    }
    if (rc == 0)
        p->stats.events_sent++;
    return rc;
}

/* Retries the held events in order; returns 0 when they were handed over or are still held. */
static int
pipeline_retry_held(struct obx_pipeline *p, struct obx_error *err)
{
    while (p->held_head < p->held_count) {
        struct obx_held_event *h = &p->held[p->held_head];
        int rc = obx_producer_send(p->producer, &h->ev, h->tag, err);

        if (rc == OBX_ERR_BUSY || pipeline_producer_fatal(p, rc, err))
            return 0;
        p->held_head++;
        if (rc == OBX_ERR_KAFKA && err != NULL && !err->fatal) {
            pipeline_refused(p, &h->ev, h->tag, err->msg);
            obx_error_clear(err);
            continue;
        }
        if (rc != 0)
            return rc;
        p->stats.events_sent++;
    }
    p->held_head = p->held_count = 0;
    return 0;
}

/* Sends a routed event of the open transaction. */
static int
pipeline_emit(struct obx_pipeline *p, int route, const struct obx_event *ev, struct obx_error *err)
{
    uint64_t seq;
    int rc;

    if (route == OBX_ROUTE_SKIP) {
        p->stats.events_skipped++;
        return 0;
    }
    rc = obx_ackwin_add(p->ackwin, &seq, err);
    if (rc != 0)
        return rc;
    if (route == OBX_ROUTE_DLQ) {
        p->stats.events_dlq++;
        obx_log_warn("pipeline", "event of xid %u sent to the dead-letter topic %s", p->txn.xid,
                     ev->topic);
    }
    p->txn.seq++;
    return pipeline_send(p, ev, seq, err);
}

/* Kafka refused ev for good (permanent delivery error, or refused at enqueue): apply
 * outbox.invalid.behavior to it. The dead letter carries the same tag, so its transaction stays
 * unconfirmed until the dead letter itself is acknowledged. */
static void
pipeline_refused(struct obx_pipeline *p, const struct obx_event *ev, uint64_t tag,
                 const char *reason)
{
    struct obx_error e = {0};
    struct obx_event dlq;
    char msg[OBX_ERROR_MSG_MAX];
    bool failing = p->failure != 0;

    snprintf(msg, sizeof(msg), "kafka refused a record for topic %s: %s",
             ev != NULL ? ev->topic : "?", reason);
    switch (obx_outbox_invalid_behavior(p->outbox)) {
    case OBX_INVALID_DLQ:
        if (ev == NULL || obx_outbox_dead_letter(p->outbox, ev, reason, &dlq, &e) != 0 ||
            pipeline_send(p, &dlq, tag, &e) != 0) {
            pipeline_fail(p, OBX_ERR_KAFKA, true, msg);
            return;
        }
        if (!failing && p->failure != 0) {
            /* the dead letter was refused at enqueue in turn (too large as well, or the
             * producer is in a fatal state): the nested call stopped the pipeline (for a
             * restart from the slot, unless final); it was not sent */
            obx_log_error("pipeline", "%s; its dead letter was refused too", msg);
            return;
        }
        if (strcmp(ev->topic, dlq.topic) == 0) { /* a dead letter again, now without value */
            obx_log_warn("pipeline", "%s; sent again without its value", msg);
            return;
        }
        p->stats.events_dlq++;
        obx_log_warn("pipeline", "%s; sent to the dead-letter topic", msg);
        return;
    case OBX_INVALID_SKIP:
        obx_log_error("pipeline", "%s; skipped (outbox.invalid.behavior = skip)", msg);
        p->stats.events_skipped++;
        if (obx_ackwin_ack(p->ackwin, tag, &e) != 0)
            pipeline_fail(p, e.code, true, e.msg);
        return;
    case OBX_INVALID_FAIL:
    default:
        pipeline_fail(p, OBX_ERR_KAFKA, true, msg);
        return;
    }
}

/* Delivery report: acknowledge, or apply the failure policy (DESIGN.md rule 6). */
static void
pipeline_on_delivery(void *ctx, const struct obx_delivery *dr)
{
    struct obx_pipeline *p = ctx;
    struct obx_error e = {0};
    char msg[OBX_ERROR_MSG_MAX];

    if (dr->error == 0) {
        if (obx_ackwin_ack(p->ackwin, dr->tag, &e) != 0)
            pipeline_fail(p, e.code, true, e.msg);
        p->stats.events_acked++;
        return;
    }
    if (dr->permanent && !dr->fatal) {
        pipeline_refused(p, dr->ev, dr->tag, dr->reason);
        return;
    }
    snprintf(msg, sizeof(msg), "delivery to topic %s failed: %s",
             dr->ev != NULL ? dr->ev->topic : "?", dr->reason);
    /* fatal producer state or a transient error that outlived its retries: rebuild the producer
     * and replay from the slot, unless the user asked to stop on undeliverable records */
    pipeline_fail(p, OBX_ERR_KAFKA,
                  dr->permanent && obx_outbox_invalid_behavior(p->outbox) == OBX_INVALID_FAIL, msg);
}

static int
on_table(void *ctx, const struct obx_relation *rel, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;

    return obx_outbox_check_relation(p->outbox, rel, err);
}

static int
on_relation(void *ctx, const struct obx_relation *rel, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;
    int rc;

    if (!obx_outbox_is_table(p->outbox, rel))
        return 0;
    rc = obx_outbox_check_relation(p->outbox, rel, err);
    if (rc != 0 && err != NULL)
        err->fatal = true;
    return rc;
}

static int
on_begin(void *ctx, const struct obx_pgo_begin *m, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;
    int rc = obx_ackwin_begin(p->ackwin, err);

    if (rc != 0)
        return rc;
    p->txn.xid = m->xid;
    p->txn.commit_lsn = m->final_lsn;
    p->txn.commit_ts = m->commit_ts;
    p->txn.seq = 0;
    return 0;
}

static int
on_commit(void *ctx, const struct obx_pgo_commit *m, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;
    int rc = obx_ackwin_commit(p->ackwin, m->end_lsn, err);

    if (rc != 0)
        return rc;
    p->stats.transactions++;
    return 0;
}

static int
on_insert(void *ctx, const struct obx_relation *rel, const struct obx_pgo_tuple *tup,
          struct obx_error *err)
{
    struct obx_pipeline *p = ctx;
    struct obx_event ev;
    int route;

    if (!obx_outbox_is_table(p->outbox, rel)) {
        p->stats.changes_ignored++;
        return 0;
    }
    route = obx_outbox_route_row(p->outbox, rel, tup, &p->txn, &ev, err);
    if (route < 0) {
        if (err != NULL)
            err->fatal = true; /* outbox.invalid.behavior = fail, or a tuple that disagrees */
        return route;
    }
    return pipeline_emit(p, route, &ev, err);
}

static int
on_change(void *ctx, uint8_t tag, const struct obx_relation *rel, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;

    p->stats.changes_ignored++;
    obx_log_debug("pipeline", "ignored %s on %s.%s", obx_pgoutput_tag_name(tag),
                  rel != NULL ? rel->nspname : "-", rel != NULL ? rel->relname : "-");
    return 0;
}

/* A non-transactional logical message: its own one-event unit, confirmed at its LSN. */
static int
pipeline_single_message(struct obx_pipeline *p, const struct obx_pgo_message *m,
                        struct obx_error *err)
{
    struct obx_txn_info txn = {.xid = m->xid, .commit_lsn = m->lsn, .commit_ts = 0, .seq = 0};
    struct obx_event ev;
    uint64_t seq;
    int route = obx_outbox_route_message(p->outbox, m, &txn, &ev, err);

    if (route < 0) {
        if (err != NULL)
            err->fatal = true;
        return route;
    }
    if (route == OBX_ROUTE_SKIP) {
        p->stats.events_skipped++;
        return 0;
    }
    if (obx_ackwin_single(p->ackwin, m->lsn, &seq, err) != 0)
        return err != NULL ? err->code : OBX_ERR_PROTOCOL;
    if (route == OBX_ROUTE_DLQ)
        p->stats.events_dlq++;
    return pipeline_send(p, &ev, seq, err);
}

static int
on_message(void *ctx, const struct obx_pgo_message *m, uint64_t wal_end, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;
    struct obx_event ev;
    int route;

    if (!m->transactional)
        return pipeline_single_message(p, m, err);
    if (!obx_ackwin_in_txn(p->ackwin))
        return obx_error_set(err, OBX_ERR_PROTOCOL, false,
                             "transactional message outside a transaction");
    route = obx_outbox_route_message(p->outbox, m, &p->txn, &ev, err);
    if (route < 0) {
        if (err != NULL)
            err->fatal = true;
        return route;
    }
    return pipeline_emit(p, route, &ev, err);
}

static void
on_keepalive(void *ctx, uint64_t wal_end)
{
    struct obx_pipeline *p = ctx;

    obx_ackwin_keepalive(p->ackwin, wal_end);
}

static int
service(void *ctx, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;
    struct obx_error e = {0};
    int rc;

    obx_producer_poll(p->producer, 0);
    if (obx_producer_fatal(p->producer, &e))
        pipeline_fail(p, OBX_ERR_KAFKA, false, e.msg);
    if (p->failure == 0) {
        rc = pipeline_retry_held(p, &e);
        if (rc != 0)
            pipeline_fail(p, rc, e.fatal, e.msg);
    }
    if (p->failure != 0)
        return obx_error_set(err, p->failure, p->failure_fatal, "%s", p->failure_msg);
    return 0;
}

static bool
can_take(void *ctx)
{
    struct obx_pipeline *p = ctx;

    return p->failure == 0 && p->held_head == p->held_count;
}

static uint64_t
confirmable(void *ctx)
{
    struct obx_pipeline *p = ctx;
    uint64_t lsn = p->failure != 0 ? p->frozen_lsn : obx_ackwin_confirmable(p->ackwin);

    p->stats.confirmable_lsn = lsn;
    return lsn;
}

/* The connection is gone. A plain loss keeps the producer and its in-flight events (their
 * reports still count); after a pipeline failure, the producer is rebuilt and the ack window
 * restarts at the last confirmed position: the server replays everything after it. */
static void
on_disconnect(void *ctx)
{
    struct obx_pipeline *p = ctx;
    struct obx_error e = {0};
    uint64_t from = p->frozen_lsn;

    obx_ackwin_abort_open(p->ackwin);
    if (p->failure == 0 || p->failure_fatal)
        return;
    obx_log_warn("pipeline", "restarting the producer; replaying from %X/%X",
                 (unsigned)(from >> 32), (unsigned)from);
    obx_producer_free(p->producer);
    obx_ackwin_free(p->ackwin);
    p->producer = NULL;
    p->ackwin = NULL;
    p->held_head = p->held_count = 0;
    p->failure = 0;
    if (pipeline_start_producer(p, from, &e) != 0) {
        if (p->ackwin == NULL)
            p->ackwin = obx_ackwin_new(from);
        pipeline_fail(p, e.code, true, e.msg);
    }
    if (p->handler != NULL)
        p->handler->wakeup_fd = p->producer != NULL ? obx_producer_fd(p->producer) : -1;
}

static int
drain(void *ctx, struct obx_error *err)
{
    struct obx_pipeline *p = ctx;
    struct obx_error e = {0};
    int timeout = (int)obx_config_int(p->cfg, "shutdown.timeout.ms");

    if (p->producer == NULL)
        return 0;
    (void)pipeline_retry_held(p, &e);
    if (obx_producer_flush(p->producer, timeout, &e) != 0)
        obx_log_warn("pipeline", "stopping with events not acknowledged: %s", e.msg);
    return 0;
}

void
obx_pipeline_handler(struct obx_pipeline *p, struct obx_repl_handler *h)
{
    memset(h, 0, sizeof(*h));
    h->ctx = p;
    h->on_table = on_table;
    h->on_begin = on_begin;
    h->on_commit = on_commit;
    h->on_relation = on_relation;
    h->on_insert = on_insert;
    h->on_change = on_change;
    h->on_message = on_message;
    h->on_keepalive = on_keepalive;
    h->service = service;
    h->can_take = can_take;
    h->confirmable = confirmable;
    h->on_disconnect = on_disconnect;
    h->drain = drain;
    h->wakeup_fd = obx_producer_fd(p->producer);
    p->handler = h; /* on_disconnect updates wakeup_fd when it rebuilds the producer */
}

void
obx_pipeline_get_stats(const struct obx_pipeline *p, struct obx_pipeline_stats *out)
{
    *out = p->stats;
    out->confirmable_lsn = obx_ackwin_confirmable(p->ackwin);
}
