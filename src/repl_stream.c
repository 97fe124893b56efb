/* repl_stream.c - one session's CopyBoth loop.
 *
 * Non-blocking: poll() on the server socket and the handler's wakeup fd with a deadline from the
 * next status update; XLogData and keepalives parsed with the bounds-checked reader; each
 * pgoutput message decoded, checked against the relation cache and dispatched to the handler.
 * The received LSN is kept apart from the confirmable one, which only ever comes from the
 * handler. While the handler cannot take more, WAL is not read but status updates still go out
 * (they are what keeps wal_sender_timeout from firing). */
#include "repl_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "outboxd/log.h"
#include "outboxd/reader.h"

/* Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC). */
#define PG_EPOCH_OFFSET_US 946684800000000LL
/* Messages handled per loop turn before the handler is served and the clock looked at again. */
#define READ_BATCH 512
/* Longest poll() wait, so a stop request or lifted backpressure is seen promptly even without a
 * signal or a wakeup. */
#define POLL_MAX_MS 1000
#define POLL_BUSY_MS 100
/* After a turn that handled messages, wait up to COALESCE_US for COALESCE_BYTES to arrive
 * (see wait_io). */
#define COALESCE_US 500
#define COALESCE_BYTES 8192
/* How long the server may take to end the stream after the final status update. */
#define FINISH_TIMEOUT_US (5LL * 1000000)

static bool
can_take(const struct obx_repl_handler *h)
{
    return h->can_take == NULL || h->can_take(h->ctx);
}

/* Whether a stop request takes effect now. It waits for a transaction boundary: the rest of an
 * open transaction is read first (the server sends committed transactions whole), so its events
 * are confirmed with it at the final status update and a restart sends none of them twice. After
 * shutdown.timeout.ms it takes effect anyway: the transaction is then replayed whole after the
 * restart (duplicates, never a loss). */
static bool
stopping(struct obx_repl *r, volatile sig_atomic_t *stop)
{
    int64_t now;

    if (!*stop)
        return false;
    if (!r->in_txn)
        return true;
    now = obx_repl_now_us();
    if (r->stopping_since_us == 0) {
        r->stopping_since_us = now;
        obx_log_info("repl", "stop requested inside a transaction: reading on to its commit");
    }
    return now - r->stopping_since_us >= r->stop_wait_us;
}

/* Status updates */

static void
put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static int
conn_error(struct obx_repl *r, const char *what, struct obx_error *err)
{
    char msg[OBX_ERROR_MSG_MAX];

    obx_repl_pq_msg(PQerrorMessage(r->conn), msg, sizeof(msg));
    return obx_error_set(err, OBX_ERR_CONN, false, "%s: %s", what,
                         msg[0] != '\0' ? msg : "the server closed the connection");
}

/* Standby status update, queued and flushed as far as the socket takes it:
 *   Byte1('r'), Int64 write (last received), Int64 flush, Int64 apply (both the handler's
 *   confirmable LSN), Int64 clock (microseconds since 2000-01-01), Byte1 replyRequested (0).
 * The flush position never goes back, and never comes from anywhere but the handler. */
static int
send_status(struct obx_repl *r, const struct obx_repl_handler *h, struct obx_error *err)
{
    uint8_t buf[34];
    uint64_t flush = h->confirmable != NULL ? h->confirmable(h->ctx) : 0;
    struct timespec ts;
    int rc;

    if (flush < r->flushed_lsn)
        flush = r->flushed_lsn;
    clock_gettime(CLOCK_REALTIME, &ts);
    buf[0] = 'r';
    put_u64(buf + 1, r->received_lsn > flush ? r->received_lsn : flush);
    put_u64(buf + 9, flush);
    put_u64(buf + 17, flush);
    put_u64(buf + 25,
            (uint64_t)((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - PG_EPOCH_OFFSET_US));
    buf[33] = 0;
    rc = PQputCopyData(r->conn, (const char *)buf, (int)sizeof(buf));
    if (rc < 0 || PQflush(r->conn) < 0)
        return conn_error(r, "could not send a status update", err);
    if (rc == 0) /* libpq's buffer is full: try again on the next turn */
        return 0;
    if (flush != r->flushed_lsn)
        obx_log_debug("repl", "confirmed " REPL_LSN_FMT, REPL_LSN_ARGS(flush));
    r->flushed_lsn = flush;
    r->stats.confirmed_lsn = flush;
    r->stats.status_updates++;
    r->next_status_us = obx_repl_now_us() + r->status_interval_us;
    return 0;
}

/* Dispatch of decoded pgoutput messages */

__attribute__((format(printf, 3, 4))) static int
protocol_error(struct obx_error *err, uint64_t lsn, const char *fmt, ...)
{
    char detail[OBX_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    return obx_error_set(err, OBX_ERR_PROTOCOL, false, "pgoutput message at " REPL_LSN_FMT ": %s",
                         REPL_LSN_ARGS(lsn), detail);
}

/* The relation an Insert, Update, Delete or Truncate names must have been announced. */
static int
known_relation(struct obx_repl *r, uint8_t tag, uint32_t relid, uint64_t lsn,
               const struct obx_relation **out, struct obx_error *err)
{
    *out = obx_relcache_get(r->cache, relid);
    if (*out != NULL)
        return 0;
    return protocol_error(err, lsn, "%s for relation %u that was never announced (offset 1)",
                          obx_pgoutput_tag_name(tag), relid);
}

static int
check_tuple(const struct obx_relation *rel, const struct obx_pgo_tuple *tup, uint8_t tag,
            uint64_t lsn, struct obx_error *err)
{
    if (obx_relation_check_tuple(rel, tup, err) == 0)
        return 0;
    err->fatal = false;
    return obx_error_prefix(err, "pgoutput message at " REPL_LSN_FMT ": %s", REPL_LSN_ARGS(lsn),
                            obx_pgoutput_tag_name(tag));
}

/* Update, Delete, Truncate: checked, then on_change. */
static int
handle_change(struct obx_repl *r, const struct obx_repl_handler *h, const struct obx_pgo_msg *m,
              uint64_t lsn, struct obx_error *err)
{
    const struct obx_relation *rel = NULL;
    int rc = 0;

    if (m->tag == OBX_PGO_UPDATE) {
        const struct obx_pgo_update *u = &m->u.update;

        rc = known_relation(r, m->tag, u->relid, lsn, &rel, err);
        if (rc == 0 && u->old_kind != 0)
            rc = check_tuple(rel, &u->oldtup, m->tag, lsn, err);
        if (rc == 0)
            rc = check_tuple(rel, &u->newtup, m->tag, lsn, err);
    } else if (m->tag == OBX_PGO_DELETE) {
        rc = known_relation(r, m->tag, m->u.del.relid, lsn, &rel, err);
        if (rc == 0)
            rc = check_tuple(rel, &m->u.del.oldtup, m->tag, lsn, err);
    } else {
        for (uint32_t i = 0; i < m->u.truncate.nrelids && rc == 0; i++)
            rc = known_relation(r, m->tag, obx_pgoutput_truncate_relid(&m->u.truncate, i), lsn,
                                &rel, err);
        rel = NULL;
    }
    if (rc < 0 || h->on_change == NULL)
        return rc;
    rc = h->on_change(h->ctx, m->tag, rel, err);
    return rc < 0 ? obx_repl_callback_failed(rc, "on_change", err) : 0;
}

static int
handle_insert(struct obx_repl *r, const struct obx_repl_handler *h, const struct obx_pgo_msg *m,
              uint64_t lsn, struct obx_error *err)
{
    const struct obx_relation *rel;
    int rc = known_relation(r, m->tag, m->u.insert.relid, lsn, &rel, err);

    if (rc == 0)
        rc = check_tuple(rel, &m->u.insert.newtup, m->tag, lsn, err);
    if (rc < 0 || h->on_insert == NULL)
        return rc;
    rc = h->on_insert(h->ctx, rel, &m->u.insert.newtup, err);
    return rc < 0 ? obx_repl_callback_failed(rc, "on_insert", err) : 0;
}

static int
handle_relation(struct obx_repl *r, const struct obx_repl_handler *h, const struct obx_pgo_msg *m,
                struct obx_error *err)
{
    const struct obx_relation *rel;
    int rc = obx_relcache_put(r->cache, &m->u.relation, &rel, err);

    if (rc < 0 || h->on_relation == NULL)
        return rc;
    rc = h->on_relation(h->ctx, rel, err);
    return rc < 0 ? obx_repl_callback_failed(rc, "on_relation", err) : 0;
}

/* Decodes one XLogData payload (start = its dataStart, end = its walEnd) and hands it on. */
static int
dispatch(struct obx_repl *r, const struct obx_repl_handler *h, const uint8_t *p, size_t n,
         uint64_t start, uint64_t end, struct obx_error *err)
{
    struct obx_pgo_msg m;
    int rc = obx_pgoutput_decode(r->dec, p, n, &m, err);

    if (rc == OBX_ERR_NOMEM) {
        err->fatal = true;
        return rc;
    }
    if (rc < 0) {
        err->fatal = false;
        return obx_error_prefix(err, "malformed pgoutput message at " REPL_LSN_FMT,
                                REPL_LSN_ARGS(start));
    }
    r->stats.messages++;
    obx_error_clear(err);
    switch (m.tag) {
    case OBX_PGO_BEGIN:
        r->in_txn = true;
        rc = h->on_begin != NULL ? h->on_begin(h->ctx, &m.u.begin, err) : 0;
        break;
    case OBX_PGO_COMMIT:
        r->in_txn = false;
        rc = h->on_commit != NULL ? h->on_commit(h->ctx, &m.u.commit, err) : 0;
        break;
    case OBX_PGO_MESSAGE:
        rc = h->on_message != NULL ? h->on_message(h->ctx, &m.u.message, end, err) : 0;
        break;
    case OBX_PGO_RELATION:
        return handle_relation(r, h, &m, err);
    case OBX_PGO_INSERT:
        return handle_insert(r, h, &m, start, err);
    case OBX_PGO_UPDATE:
    case OBX_PGO_DELETE:
    case OBX_PGO_TRUNCATE:
        return handle_change(r, h, &m, start, err);
    case OBX_PGO_ORIGIN:
    case OBX_PGO_TYPE:
        return 0;
    default:
        return protocol_error(err, start,
                              "unexpected %s message (tag 0x%02x; streaming and "
                              "two-phase were not requested)",
                              obx_pgoutput_tag_name(m.tag), m.tag);
    }
    return rc < 0 ? obx_repl_callback_failed(rc, obx_pgoutput_tag_name(m.tag), err) : 0;
}

/* CopyData from the server */

static void
note_received(struct obx_repl *r, uint64_t lsn)
{
    if (lsn > r->received_lsn)
        r->received_lsn = r->stats.received_lsn = lsn;
}

/* XLogData: Byte1('w'), Int64 dataStart, Int64 walEnd, Int64 sendTime, Byte(n) payload. */
static int
handle_xlogdata(struct obx_repl *r, const struct obx_repl_handler *h, struct obx_reader *rd,
                struct obx_error *err)
{
    uint64_t start, end;
    int64_t send_time;
    const uint8_t *payload;
    size_t n;

    if (obx_reader_u64(rd, &start) < 0 || obx_reader_u64(rd, &end) < 0 ||
        obx_reader_i64(rd, &send_time) < 0)
        return obx_error_set(err, OBX_ERR_PROTOCOL, false,
                             "truncated XLogData header (%zu bytes, need 25) after " REPL_LSN_FMT,
                             rd->len, REPL_LSN_ARGS(r->received_lsn));
    note_received(r, start);
    n = obx_reader_remaining(rd);
    if (obx_reader_bytes(rd, n, &payload) < 0)
        return obx_error_set(err, OBX_ERR_PROTOCOL, false, "unreadable XLogData payload");
    r->stats.bytes += n;
    return dispatch(r, h, payload, n, start, end, err);
}

/* Primary keepalive: Byte1('k'), Int64 walEnd, Int64 sendTime, Byte1 replyRequested.
 * The handler sees walEnd before the reply goes out, so the reply can confirm it. */
static int
handle_keepalive(struct obx_repl *r, const struct obx_repl_handler *h, struct obx_reader *rd,
                 struct obx_error *err)
{
    uint64_t wal_end;
    int64_t send_time;
    uint8_t reply;

    if (obx_reader_u64(rd, &wal_end) < 0 || obx_reader_i64(rd, &send_time) < 0 ||
        obx_reader_u8(rd, &reply) < 0 || obx_reader_end(rd) < 0)
        return obx_error_set(
            err, OBX_ERR_PROTOCOL, false,
            "malformed keepalive message (%zu bytes, expected 18) after " REPL_LSN_FMT, rd->len,
            REPL_LSN_ARGS(r->received_lsn));
    r->stats.keepalives++;
    note_received(r, wal_end);
    if (h->on_keepalive != NULL)
        h->on_keepalive(h->ctx, wal_end);
    return reply != 0 ? send_status(r, h, err) : 0;
}

static int
handle_copy_data(struct obx_repl *r, const struct obx_repl_handler *h, const uint8_t *buf,
                 size_t len, struct obx_error *err)
{
    struct obx_reader rd;
    uint8_t kind;

    obx_reader_init(&rd, buf, len);
    if (obx_reader_u8(&rd, &kind) < 0)
        return obx_error_set(err, OBX_ERR_PROTOCOL, false,
                             "empty CopyData message after " REPL_LSN_FMT,
                             REPL_LSN_ARGS(r->received_lsn));
    if (kind == 'w')
        return handle_xlogdata(r, h, &rd, err);
    if (kind == 'k')
        return handle_keepalive(r, h, &rd, err);
    return obx_error_set(err, OBX_ERR_PROTOCOL, false,
                         "unknown replication message type 0x%02x (offset 0) after " REPL_LSN_FMT,
                         kind, REPL_LSN_ARGS(r->received_lsn));
}

/* The server ended the COPY (it failed, or is shutting down): its error is the next result. */
static int
stream_ended(struct obx_repl *r, struct obx_error *err)
{
    PGresult *res = PQgetResult(r->conn);
    char msg[OBX_ERROR_MSG_MAX];
    int rc;

    obx_repl_pq_msg(res != NULL ? PQresultErrorMessage(res) : NULL, msg, sizeof(msg));
    rc = obx_error_set(err, OBX_ERR_CONN, false, "the server ended the replication stream%s%s",
                       msg[0] != '\0' ? ": " : "", msg);
    PQclear(res);
    return rc;
}

/* Handles what libpq has buffered and what the socket holds, at most READ_BATCH messages
 * (*handled says how many), and nothing while the handler cannot take more. The socket is read
 * once per turn, when the turn starts with libpq's buffer empty: reading again whenever the
 * buffer runs dry would fetch the few messages the walsender wrote meanwhile, one recv() (and
 * one TCP window update for the walsender to process) per handful of messages. Draining a
 * backlog of 200,000 one-row transactions took ~26,000 recv() calls that way, ~5,800 now, with
 * less CPU per event on both sides. */
static int
read_stream(struct obx_repl *r, const struct obx_repl_handler *h, volatile sig_atomic_t *stop,
            int *handled, struct obx_error *err)
{
    *handled = 0;
    for (int i = 0; i < READ_BATCH; i++, (*handled)++) {
        char *buf = NULL;
        int n, rc;

        if (stopping(r, stop) || !can_take(h))
            return 0;
        n = PQgetCopyData(r->conn, &buf, 1);
        if (n == 0 && i == 0) {
            /* libpq's buffer is empty: read what the socket holds before deciding to wait */
            if (!PQconsumeInput(r->conn))
                return conn_error(r, "connection lost", err);
            n = PQgetCopyData(r->conn, &buf, 1);
        }
        if (n == 0)
            return 0;
        if (n == -1)
            return stream_ended(r, err);
        if (n < 0)
            return conn_error(r, "connection lost", err);
        rc = handle_copy_data(r, h, (const uint8_t *)buf, (size_t)n, err);
        PQfreemem(buf);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Sets SO_RCVLOWAT: poll() reports the socket readable once that many bytes are queued. Only
 * TCP honours it in poll(); elsewhere (a Unix socket) coalescing falls back to a plain pause.
 * Returns whether the socket now has that low-water mark. */
static bool
set_rcvlowat(struct obx_repl *r, int bytes)
{
    if (r->rcvlowat == bytes)
        return true;
    if (r->rcvlowat < 0 ||
        setsockopt(PQsocket(r->conn), SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes)) != 0)
        return false;
    r->rcvlowat = bytes;
    return true;
}

/* Whether conn's socket is TCP, where SO_RCVLOWAT works; rcvlowat starts at 1 there, else -1. */
static int
initial_rcvlowat(PGconn *conn)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);

    if (getsockname(PQsocket(conn), (struct sockaddr *)&addr, &len) != 0)
        return -1;
    return addr.ss_family == AF_INET || addr.ss_family == AF_INET6 ? 1 : -1;
}

/* Waits for the server socket (readable when the handler can take more, writable while output
 * is pending), the handler's wakeup fd, the next status update or a short slice, then reads
 * what arrived into libpq's buffer.
 *
 * Coalescing: after a turn that handled messages, the walsender is usually still writing, one
 * small send() per message. Waking for each of them costs outboxd a wake-up and a recv() per
 * transaction (200,000 one-row transactions: ~180,000 context switches), but pausing blindly
 * stalls the walsender: its socket buffer (16 KiB here) fills while we sleep, and a 0.5 ms pause
 * capped a one-row drain at ~46,000 events/s and a 100-row drain at half the walsender's pace.
 * So after such a turn the socket's SO_RCVLOWAT is raised to COALESCE_BYTES and the wait is
 * COALESCE_US at most: poll() wakes once 8 KiB are queued (about 17 one-row transactions) or
 * the time is up, whichever comes first, and Linux acknowledges data at once while less than
 * the low-water mark is queued, so the walsender is never held up by a sleeping reader. An idle
 * stream (a turn that handled nothing) waits with the mark at 1 byte, so the next transaction
 * is read the moment it arrives; a busy one adds at most COALESCE_US to an event's latency. */
static int
wait_io(struct obx_repl *r, const struct obx_repl_handler *h, int handled, struct obx_error *err)
{
    struct pollfd fds[2];
    nfds_t nfds = 1;
    bool take = can_take(h);
    bool coalesce = take && handled > 0 && handled < READ_BATCH;
    int flushing = PQflush(r->conn);
    int timeout = obx_repl_ms_until(r->next_status_us);
    struct timespec ts;

    if (flushing < 0)
        return conn_error(r, "connection lost", err);
    if (timeout > (take ? POLL_MAX_MS : POLL_BUSY_MS))
        timeout = take ? POLL_MAX_MS : POLL_BUSY_MS;
    ts.tv_sec = timeout / 1000;
    ts.tv_nsec = (long)(timeout % 1000) * 1000000L;
    if (handled == READ_BATCH)
        ts.tv_sec = ts.tv_nsec = 0;
    else if (coalesce && timeout * 1000L > COALESCE_US) {
        ts.tv_sec = 0;
        ts.tv_nsec = COALESCE_US * 1000L;
    }
    if (!set_rcvlowat(r, coalesce ? COALESCE_BYTES : 1) && coalesce) {
        /* no low-water mark on this socket: pause, then poll as for an idle stream */
        struct timespec pause = {0, COALESCE_US * 1000L};

        nanosleep(&pause, NULL);
        coalesce = false;
        ts.tv_sec = ts.tv_nsec = 0;
    }
    fds[0] = (struct pollfd){PQsocket(r->conn),
                             (short)((take ? POLLIN : 0) | (flushing ? POLLOUT : 0)), 0};
    if (h->wakeup_fd >= 0)
        fds[nfds++] = (struct pollfd){h->wakeup_fd, POLLIN, 0};
    if (ppoll(fds, nfds, &ts, NULL) < 0) {
        if (errno == EINTR)
            return 0;
        return obx_error_set(err, OBX_ERR_IO, true, "poll failed: %s", strerror(errno));
    }
    if ((fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0 || coalesce ||
        (take && (fds[0].revents & POLLIN) != 0)) {
        if (!PQconsumeInput(r->conn))
            return conn_error(r, "connection lost", err);
    }
    return 0;
}

/* Stopping */

/* Waits until the socket is readable (or writable when want_write) or the deadline passed,
 * then reads what arrived. Returns false on timeout or a broken connection. */
static bool
wait_finish(struct obx_repl *r, bool want_write, int64_t deadline)
{
    struct pollfd pfd = {PQsocket(r->conn), (short)(POLLIN | (want_write ? POLLOUT : 0)), 0};
    int timeout = obx_repl_ms_until(deadline);

    if (timeout == 0 || (poll(&pfd, 1, timeout) < 0 && errno != EINTR))
        return false;
    return PQconsumeInput(r->conn) != 0;
}

/* After the final status update and CopyDone: waits (at most FINISH_TIMEOUT_US) for the server
 * to end the stream, which proves it processed the status update. XLogData still arriving is
 * dropped: nothing of it was confirmed. */
static bool
finish_copy(struct obx_repl *r)
{
    int64_t deadline = obx_repl_now_us() + FINISH_TIMEOUT_US;
    PGresult *res;

    for (;;) {
        char *buf = NULL;
        int flushing = PQflush(r->conn);
        int n = flushing < 0 ? -2 : PQgetCopyData(r->conn, &buf, 1);

        if (n > 0)
            PQfreemem(buf);
        else if (n == -1)
            break;
        else if (n < -1 || !wait_finish(r, flushing == 1, deadline))
            return false;
    }
    for (;;) {
        while (PQisBusy(r->conn))
            if (!wait_finish(r, false, deadline))
                return false;
        if ((res = PQgetResult(r->conn)) == NULL)
            return true;
        PQclear(res);
    }
}

/* Stop requested while streaming: drain the handler, send the final status update with what it
 * confirms now, end the COPY and close. Returns 0, or drain's error made fatal (we are stopping
 * anyway). */
static int
stop_stream(struct obx_repl *r, const struct obx_repl_handler *h, struct obx_error *err)
{
    struct obx_error e;
    int rc;

    obx_log_info("repl", "stopping: draining before the final status update");
    set_rcvlowat(r, 1); /* finish_copy waits for the server's last bytes, however few */
    rc = obx_repl_drain(h, err);
    if (rc < 0) {
        err->fatal = true;
        obx_log_error("repl", "drain failed: %s", err->msg);
    }
    obx_error_clear(&e);
    if (send_status(r, h, &e) < 0 || PQputCopyEnd(r->conn, NULL) < 0 || !finish_copy(r))
        obx_log_warn("repl", "the final status update may not have reached the server%s%s",
                     e.msg[0] != '\0' ? ": " : "", e.msg);
    obx_log_info("repl", "stopped; confirmed " REPL_LSN_FMT ", received " REPL_LSN_FMT,
                 REPL_LSN_ARGS(r->flushed_lsn), REPL_LSN_ARGS(r->received_lsn));
    obx_repl_close(r);
    return rc;
}

/* The loop */

int
obx_repl_stream(struct obx_repl *r, const struct obx_repl_handler *h, volatile sig_atomic_t *stop,
                struct obx_error *err)
{
    int handled = 0;
    int rc;

    r->next_status_us = obx_repl_now_us() + r->status_interval_us;
    r->next_wal_check_us = obx_repl_now_us();
    r->last_problem[0] = '\0';
    r->in_txn = false;
    r->stopping_since_us = 0;
    r->rcvlowat = initial_rcvlowat(r->conn);
    for (;;) {
        if (stopping(r, stop))
            return stop_stream(r, h, err);
        if ((rc = obx_repl_serve(h, err)) < 0)
            return rc;
        if ((rc = obx_repl_check_wal(r, err)) < 0)
            return rc;
        if ((rc = read_stream(r, h, stop, &handled, err)) < 0)
            return rc;
        if (obx_repl_now_us() >= r->next_status_us && (rc = send_status(r, h, err)) < 0)
            return rc;
        if ((rc = wait_io(r, h, handled, err)) < 0)
            return rc;
    }
}
