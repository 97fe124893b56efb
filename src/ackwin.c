/* ackwin.c - the ack window: in-flight transactions and the confirmable LSN (DESIGN.md, the LSN
 * rule).
 *
 * A ring buffer (growable, no allocation per event) of units in stream order. A unit is a
 * transaction (open, committed or aborted) or a single non-transactional event; each has the
 * sequence number its events are tagged with, its end_lsn and its count of outstanding events.
 * Sequence numbers grow with stream order, so the ring is sorted by seq and an acknowledgement
 * finds its unit by binary search.
 *
 * The confirmable LSN is raised only by popping complete units off the front of the ring:
 * - a committed unit pops when it and every older unit have no outstanding events (rule 2);
 * - a transaction that completes at commit (no events, or every event acknowledged while it was
 *   open) is not queued (rule 1): its end_lsn is "carried" by the newest queued unit and becomes
 *   confirmable when that unit pops, or at once when the ring is empty. Rule 2 taken literally:
 *   it and every older transaction have nothing outstanding;
 * - an aborted transaction (connection lost between Begin and Commit) holds no position of its
 *   own: it only waits for the late reports of its events, then pops (it still blocks everything
 *   behind it, which is conservative: the server sends it again whole after the reconnect);
 * - a keepalive's walEnd is remembered (the newest one) and applied when the ring is empty and no
 *   transaction is open (rule 3). Applying it only when everything is drained is what the
 *   keepalive's "seq boundary" amounts to: every unit received before it must be acknowledged
 *   (it is safe then) and no unit received after it may be pending (not before then, by rule 4);
 *   both hold exactly when the ring is empty. Once that happens the walEnd is either above
 *   everything confirmed so far (and is applied) or below it (and is moot). */
#include "outboxd/ackwin.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define AW_INITIAL_CAP 64

#define LSN_FMT "%X/%X"
#define LSN_ARGS(lsn) (unsigned)((lsn) >> 32), (unsigned)(lsn)

enum aw_state {
    AW_OPEN = 0,      /* between Begin and Commit: never confirmable */
    AW_COMMITTED = 1, /* a committed transaction or a single event: confirmable at end_lsn */
    AW_ABORTED = 2,   /* dropped when the connection was lost: no position, late reports only */
};

struct aw_unit {
    uint64_t seq;
    uint64_t end_lsn;     /* 0 for open and aborted units */
    uint64_t carry_lsn;   /* end_lsn of complete transactions committed after this one, or 0 */
    uint64_t outstanding; /* events handed out and not acknowledged */
    uint8_t state;        /* enum aw_state */
};

struct obx_ackwin {
    struct aw_unit *ring; /* cap entries, cap a power of two */
    size_t cap;
    size_t head; /* index of the oldest unit */
    size_t len;
    uint64_t next_seq;    /* tag of the next unit; starts at 1 so 0 never is a tag */
    uint64_t open_events; /* events added to the open transaction */
    uint64_t outstanding; /* over all units */
    uint64_t confirmable;
    uint64_t last_lsn;      /* newest end_lsn queued, for the order check */
    uint64_t keepalive_lsn; /* newest keepalive walEnd not yet applied, or 0 */
    bool open;
};

struct obx_ackwin *
obx_ackwin_new(uint64_t start_lsn)
{
    struct obx_ackwin *aw = calloc(1, sizeof(*aw));

    if (aw == NULL)
        return NULL;
    aw->ring = calloc(AW_INITIAL_CAP, sizeof(*aw->ring));
    if (aw->ring == NULL) {
        free(aw);
        return NULL;
    }
    aw->cap = AW_INITIAL_CAP;
    aw->next_seq = 1;
    aw->confirmable = start_lsn;
    aw->last_lsn = start_lsn;
    return aw;
}

void
obx_ackwin_free(struct obx_ackwin *aw)
{
    if (aw == NULL)
        return;
    free(aw->ring);
    free(aw);
}

/* The i-th unit from the oldest (i < len). */
static struct aw_unit *
unit_at(const struct obx_ackwin *aw, size_t i)
{
    assert(i < aw->len);
    return &aw->ring[(aw->head + i) & (aw->cap - 1)];
}

static struct aw_unit *
unit_newest(const struct obx_ackwin *aw)
{
    return unit_at(aw, aw->len - 1);
}

/* Makes room for one more unit: doubles the ring and unwraps it. Returns 0 or OBX_ERR_NOMEM. */
static int
ring_reserve(struct obx_ackwin *aw, struct obx_error *err)
{
    struct aw_unit *ring;

    if (aw->len < aw->cap)
        return 0;
    if (aw->cap > SIZE_MAX / 2 / sizeof(*ring))
        return obx_error_set(err, OBX_ERR_NOMEM, true, "ack window: too many transactions");
    ring = realloc(aw->ring, aw->cap * 2 * sizeof(*ring));
    if (ring == NULL)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "ack window: out of memory");
    /* the ring was full: units [head, cap) then [0, head); move the second run after the first */
    memcpy(ring + aw->cap, ring, aw->head * sizeof(*ring));
    aw->ring = ring;
    aw->cap *= 2;
    return 0;
}

/* Appends a unit (room must have been reserved) and returns it. */
static struct aw_unit *
ring_push(struct obx_ackwin *aw, uint8_t state, uint64_t end_lsn, uint64_t outstanding)
{
    struct aw_unit *u;

    assert(aw->len < aw->cap);
    aw->len++;
    u = unit_newest(aw);
    u->seq = aw->next_seq++;
    u->end_lsn = end_lsn;
    u->carry_lsn = 0;
    u->outstanding = outstanding;
    u->state = state;
    return u;
}

static void
raise_confirmable(struct obx_ackwin *aw, uint64_t lsn)
{
    if (lsn > aw->confirmable)
        aw->confirmable = lsn;
}

/* Pops complete units off the front (rule 2); on an empty ring with no open transaction, applies
 * the remembered keepalive (rule 3). */
static void
advance(struct obx_ackwin *aw)
{
    while (aw->len > 0) {
        struct aw_unit *u = unit_at(aw, 0);

        if (u->state == AW_OPEN || u->outstanding > 0)
            break;
        raise_confirmable(aw, u->end_lsn);
        raise_confirmable(aw, u->carry_lsn);
        aw->head = (aw->head + 1) & (aw->cap - 1);
        aw->len--;
    }
    if (aw->len == 0 && !aw->open && aw->keepalive_lsn != 0) {
        raise_confirmable(aw, aw->keepalive_lsn);
        aw->keepalive_lsn = 0;
    }
}

/* Removes the newest unit (the open transaction, which completed or was dropped at once) and
 * lets lsn ride on the unit before it, or become confirmable when there is none. */
static void
drop_newest(struct obx_ackwin *aw, uint64_t lsn)
{
    assert(aw->len > 0);
    aw->len--;
    if (aw->len > 0) {
        struct aw_unit *prev = unit_newest(aw);

        if (lsn > prev->carry_lsn)
            prev->carry_lsn = lsn;
    } else {
        raise_confirmable(aw, lsn);
    }
}

int
obx_ackwin_begin(struct obx_ackwin *aw, struct obx_error *err)
{
    int rc;

    if (aw->open)
        return obx_error_set(err, OBX_ERR_PROTOCOL, true,
                             "ack window: begin while transaction %" PRIu64 " is open",
                             unit_newest(aw)->seq);
    /* reserving here means commit and abort never allocate */
    rc = ring_reserve(aw, err);
    if (rc < 0)
        return rc;
    ring_push(aw, AW_OPEN, 0, 0);
    aw->open = true;
    aw->open_events = 0;
    return 0;
}

int
obx_ackwin_add(struct obx_ackwin *aw, uint64_t *seq, struct obx_error *err)
{
    struct aw_unit *u;

    if (!aw->open)
        return obx_error_set(err, OBX_ERR_PROTOCOL, true,
                             "ack window: event outside a transaction");
    u = unit_newest(aw);
    u->outstanding++;
    aw->open_events++;
    aw->outstanding++;
    *seq = u->seq;
    return 0;
}

int
obx_ackwin_commit(struct obx_ackwin *aw, uint64_t end_lsn, struct obx_error *err)
{
    struct aw_unit *u;

    if (!aw->open)
        return obx_error_set(err, OBX_ERR_PROTOCOL, true,
                             "ack window: commit without begin (end_lsn " LSN_FMT ")",
                             LSN_ARGS(end_lsn));
    if (end_lsn < aw->last_lsn)
        return obx_error_set(err, OBX_ERR_PROTOCOL, true,
                             "ack window: end_lsn " LSN_FMT " goes backwards (last " LSN_FMT ")",
                             LSN_ARGS(end_lsn), LSN_ARGS(aw->last_lsn));
    u = unit_newest(aw);
    aw->open = false;
    aw->last_lsn = end_lsn;
    if (u->outstanding == 0) {
        /* no events, or all acknowledged already: complete, not queued (rule 1) */
        drop_newest(aw, end_lsn);
    } else {
        u->state = AW_COMMITTED;
        u->end_lsn = end_lsn;
    }
    advance(aw);
    return 0;
}

int
obx_ackwin_single(struct obx_ackwin *aw, uint64_t lsn, uint64_t *seq, struct obx_error *err)
{
    int rc;

    if (aw->open)
        return obx_error_set(err, OBX_ERR_PROTOCOL, true,
                             "ack window: single event at " LSN_FMT " inside a transaction",
                             LSN_ARGS(lsn));
    if (lsn < aw->last_lsn)
        return obx_error_set(err, OBX_ERR_PROTOCOL, true,
                             "ack window: lsn " LSN_FMT " goes backwards (last " LSN_FMT ")",
                             LSN_ARGS(lsn), LSN_ARGS(aw->last_lsn));
    rc = ring_reserve(aw, err);
    if (rc < 0)
        return rc;
    *seq = ring_push(aw, AW_COMMITTED, lsn, 1)->seq;
    aw->last_lsn = lsn;
    aw->outstanding++;
    return 0;
}

/* The unit tagged seq, or NULL. Acknowledgements mostly hit the oldest unit: try it first. */
static struct aw_unit *
find_unit(const struct obx_ackwin *aw, uint64_t seq)
{
    size_t lo = 0, hi = aw->len;

    if (aw->len == 0)
        return NULL;
    if (unit_at(aw, 0)->seq == seq)
        return unit_at(aw, 0);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct aw_unit *u = unit_at(aw, mid);

        if (u->seq == seq)
            return u;
        if (u->seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int
obx_ackwin_ack(struct obx_ackwin *aw, uint64_t seq, struct obx_error *err)
{
    struct aw_unit *u = find_unit(aw, seq);

    if (u == NULL || u->outstanding == 0)
        return obx_error_set(
            err, OBX_ERR_PROTOCOL, true,
            "ack window: acknowledgement for tag %" PRIu64 " that has no outstanding event", seq);
    u->outstanding--;
    aw->outstanding--;
    if (u->outstanding == 0 && u == unit_at(aw, 0))
        advance(aw);
    return 0;
}

void
obx_ackwin_keepalive(struct obx_ackwin *aw, uint64_t wal_end)
{
    if (wal_end > aw->keepalive_lsn)
        aw->keepalive_lsn = wal_end;
    advance(aw);
}

void
obx_ackwin_abort_open(struct obx_ackwin *aw)
{
    /* the server resends from the slot's confirmed_flush_lsn: transactions already in the window
     * come again, so the order check starts over */
    aw->last_lsn = 0;
    if (!aw->open)
        return;
    aw->open = false;
    if (unit_newest(aw)->outstanding == 0)
        drop_newest(aw, 0);
    else
        unit_newest(aw)->state = AW_ABORTED;
    advance(aw);
}

uint64_t
obx_ackwin_confirmable(const struct obx_ackwin *aw)
{
    return aw->confirmable;
}

uint64_t
obx_ackwin_outstanding(const struct obx_ackwin *aw)
{
    return aw->outstanding;
}

size_t
obx_ackwin_pending(const struct obx_ackwin *aw)
{
    return aw->len - (aw->open ? 1 : 0);
}

bool
obx_ackwin_in_txn(const struct obx_ackwin *aw)
{
    return aw->open;
}
