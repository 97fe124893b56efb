/* test_repl.c - unit tests of the repl module against a fake server.
 *
 * The fake speaks just enough of the PostgreSQL protocol on 127.0.0.1 (startup without
 * authentication, simple and extended queries answered from a table of catalog rows,
 * IDENTIFY_SYSTEM, START_REPLICATION and CopyBoth) for obx_repl_run to connect, check and stream.
 * A per-test script plays the walsender: it sends XLogData and keepalives, including bytes no
 * real server sends (truncated messages, unknown relations), and records the client's standby
 * status updates. What only a fake can show: protocol errors reconnect without advancing the
 * confirmed position, replies to keepalives go out at once, status updates keep going under
 * backpressure, and fatal server states end the run. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/log.h"
#include "outboxd/repl.h"

#define RELID 16384u
#define WAIT_MS 5000

/* ---- wire helpers -----------------------------------------------------------------------------
 */

struct buf {
    uint8_t d[4096];
    size_t n;
};

static void
put(struct buf *b, const void *p, size_t n)
{
    ck_assert_uint_le(b->n + n, sizeof(b->d));
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void
put_be(struct buf *b, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        uint8_t c = (uint8_t)(v >> (8 * i));

        put(b, &c, 1);
    }
}

static void
put_str(struct buf *b, const char *s)
{
    put(b, s, strlen(s) + 1);
}

static uint64_t
get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;

    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

static int
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;

    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One backend message: type byte, length, body. */
static int
send_msg(int fd, char type, const struct buf *body)
{
    struct buf b = {.n = 0};

    put(&b, &type, 1);
    put_be(&b, body->n + 4, 4);
    put(&b, body->d, body->n);
    return write_all(fd, b.d, b.n);
}

static int
read_full(int fd, void *p, size_t n, int timeout_ms)
{
    uint8_t *c = p;

    while (n > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t r;

        if (poll(&pfd, 1, timeout_ms) <= 0)
            return -1;
        r = recv(fd, c, n, 0);
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One frontend message (type 0 for the startup packet, which has none). */
static int
read_msg(int fd, bool startup, uint8_t *type, struct buf *body, int timeout_ms)
{
    uint8_t len[4];
    size_t n;

    *type = 0;
    if (!startup && read_full(fd, type, 1, timeout_ms) < 0)
        return -1;
    if (read_full(fd, len, 4, timeout_ms) < 0)
        return -1;
    n = (size_t)get_be(len, 4) - 4;
    if (n > sizeof(body->d))
        return -1;
    body->n = n;
    return read_full(fd, body->d, n, timeout_ms);
}

static void
send_ready(int fd)
{
    struct buf b = {.n = 0};

    put(&b, "I", 1);
    send_msg(fd, 'Z', &b);
}

static void
send_error(int fd, const char *code, const char *message)
{
    struct buf b = {.n = 0};

    put(&b, "S", 1);
    put_str(&b, "ERROR");
    put(&b, "C", 1);
    put_str(&b, code);
    put(&b, "M", 1);
    put_str(&b, message);
    put(&b, "", 1);
    send_msg(fd, 'E', &b);
}

/* RowDescription (text columns c0..), the rows (NULL cells are SQL NULL), CommandComplete. */
static void
send_rows(int fd, int ncols, int nrows, const char *const *cells)
{
    struct buf b = {.n = 0};
    char name[8];

    put_be(&b, (uint64_t)ncols, 2);
    for (int i = 0; i < ncols; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        put_str(&b, name);
        put_be(&b, 0, 4);
        put_be(&b, 0, 2);
        put_be(&b, 25, 4);
        put_be(&b, 0xffff, 2);
        put_be(&b, 0xffffffff, 4);
        put_be(&b, 0, 2);
    }
    send_msg(fd, 'T', &b);
    for (int r = 0; r < nrows; r++) {
        b.n = 0;
        put_be(&b, (uint64_t)ncols, 2);
        for (int i = 0; i < ncols; i++) {
            const char *v = cells[r * ncols + i];

            put_be(&b, v != NULL ? strlen(v) : 0xffffffff, 4);
            if (v != NULL)
                put(&b, v, strlen(v));
        }
        send_msg(fd, 'D', &b);
    }
    b.n = 0;
    put_str(&b, "SELECT");
    send_msg(fd, 'C', &b);
}

/* ---- the fake server --------------------------------------------------------------------------
 */

struct fake;
typedef void (*script_fn)(struct fake *f, int fd, int session);

struct fake {
    int lfd;
    int port;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active; /* connection threads running */
    /* What the catalog says. */
    const char *wal_level;
    const char *wal_status;
    bool slot_gone_after_first; /* no slot row once a session streamed */
    bool slot_busy_first;       /* the first START_REPLICATION fails with 55006 */
    /* The walsender's behavior once streaming. */
    script_fn script;
    volatile sig_atomic_t *stop;
    void *user;
    /* What happened. */
    int starts;   /* START_REPLICATION commands received */
    int sessions; /* of which succeeded */
    int holder_queries;
    int status_updates;
    int blocked_updates; /* status updates while the consumer was blocked */
    bool awaited;        /* the status update the script waited for came */
    uint64_t last_write, last_flush, max_flush;
};

static struct fake fake;

static void
fake_note_status(struct fake *f, const struct buf *b)
{
    /* CopyData 'r': write, flush, apply, clock, replyRequested. */
    if (b->n != 34 || b->d[0] != 'r')
        return;
    pthread_mutex_lock(&f->mu);
    f->status_updates++;
    f->last_write = get_be(b->d + 1, 8);
    f->last_flush = get_be(b->d + 9, 8);
    if (f->last_flush > f->max_flush)
        f->max_flush = f->last_flush;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Reads the client's messages until EOF or timeout_ms of silence, recording status updates and
 * answering CopyDone. */
static void
serve_until_end(struct fake *f, int fd, int timeout_ms)
{
    uint8_t type;
    struct buf b;

    while (read_msg(fd, false, &type, &b, timeout_ms) == 0) {
        if (type == 'd') {
            fake_note_status(f, &b);
        } else if (type == 'c') {
            b.n = 0;
            send_msg(fd, 'c', &b);
            put_str(&b, "COPY 0");
            send_msg(fd, 'C', &b);
            send_ready(fd);
        } else if (type == 'X') {
            return;
        }
    }
}

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads status updates until one confirms at least lsn (any update when lsn is 0). Returns true
 * if one did within timeout_ms. */
static bool
await_flush(struct fake *f, int fd, uint64_t lsn, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    uint8_t type;
    struct buf b;

    while (now_ms() < deadline && read_msg(fd, false, &type, &b, (int)(deadline - now_ms())) == 0) {
        if (type != 'd')
            return false;
        fake_note_status(f, &b);
        if (b.n == 34 && get_be(b.d + 9, 8) >= lsn)
            return true;
    }
    return false;
}

static void
answer_sql(struct fake *f, int fd, const char *sql)
{
    static const char *const table[] = {"16384", "r"};
    static const char *const columns[] = {"id",      "23", "-1", "d", "t",
                                          "payload", "25", "-1", "d", "f"};
    const char *wal_level[] = {f->wal_level};
    const char *slot[] = {"logical",     "pgoutput",  "postgres",
                          f->wal_status, "0/1000000", "postgres"};
    const char *budget[] = {f->wal_status, NULL, "100"};
    const char *one[] = {"t"};
    const char *holder[] = {"4242"};

    if (strstr(sql, "current_setting('wal_level')") != NULL) {
        send_rows(fd, 1, 1, wal_level);
    } else if (strstr(sql, "pg_catalog.pg_class c ") != NULL && strstr(sql, "relkind") != NULL) {
        send_rows(fd, 2, 1, table);
    } else if (strstr(sql, "pubinsert") != NULL || strstr(sql, "pg_publication_tables") != NULL) {
        send_rows(fd, 1, 1, one);
    } else if (strstr(sql, "slot_type") != NULL) {
        pthread_mutex_lock(&f->mu);
        bool gone = f->slot_gone_after_first && f->sessions > 0;
        pthread_mutex_unlock(&f->mu);
        send_rows(fd, 6, gone ? 0 : 1, slot);
    } else if (strstr(sql, "a.attname") != NULL) {
        send_rows(fd, 5, 2, columns);
    } else if (strstr(sql, "safe_wal_size") != NULL) {
        send_rows(fd, 3, 1, budget);
    } else if (strstr(sql, "active_pid") != NULL) {
        pthread_mutex_lock(&f->mu);
        f->holder_queries++;
        pthread_mutex_unlock(&f->mu);
        send_rows(fd, 1, 1, holder);
    } else {
        send_error(fd, "42601", "the fake server does not know this statement");
    }
}

static void
start_replication(struct fake *f, int fd)
{
    struct buf b = {.n = 0};
    bool busy;
    int session;

    pthread_mutex_lock(&f->mu);
    busy = f->slot_busy_first && ++f->starts == 1;
    if (!f->slot_busy_first)
        f->starts++;
    session = busy ? 0 : ++f->sessions;
    pthread_mutex_unlock(&f->mu);
    if (busy) {
        send_error(fd, "55006", "replication slot \"s\" is active for PID 4242");
        send_ready(fd);
        return;
    }
    put_be(&b, 0, 1);
    put_be(&b, 0, 2);
    send_msg(fd, 'W', &b);
    f->script(f, fd, session);
}

static void
simple_query(struct fake *f, int fd, const char *sql)
{
    static const char *const ident[] = {"7000000000000000001", "1", "0/1000000", "postgres"};

    if (strcmp(sql, "IDENTIFY_SYSTEM") == 0) {
        send_rows(fd, 4, 1, ident);
    } else if (strncmp(sql, "START_REPLICATION", 17) == 0) {
        start_replication(f, fd);
        return;
    } else if (strncmp(sql, "SET ", 4) == 0) {
        /* one CommandComplete per statement of the session-settings batch */
        for (const char *p = sql; (p = strstr(p, "SET ")) != NULL; p += 4) {
            struct buf b = {.n = 0};

            put_str(&b, "SET");
            send_msg(fd, 'C', &b);
        }
    } else {
        answer_sql(f, fd, sql);
    }
    send_ready(fd);
}

/* One connection: startup, then queries until Terminate or EOF. */
static void *
fake_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct fake *f = &fake;
    char sql[2048] = "";
    uint8_t type;
    struct buf b;
    static const char *const params[][2] = {
        {"server_version", "15.0"},  {"server_encoding", "UTF8"},
        {"client_encoding", "UTF8"}, {"standard_conforming_strings", "on"},
        {"integer_datetimes", "on"}, {"DateStyle", "ISO, MDY"}};

    if (read_msg(fd, true, &type, &b, WAIT_MS) == 0) {
        b.n = 0;
        put_be(&b, 0, 4);
        send_msg(fd, 'R', &b);
        for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
            b.n = 0;
            put_str(&b, params[i][0]);
            put_str(&b, params[i][1]);
            send_msg(fd, 'S', &b);
        }
        b.n = 0;
        put_be(&b, 4242, 4);
        put_be(&b, 1, 4);
        send_msg(fd, 'K', &b);
        send_ready(fd);
        while (read_msg(fd, false, &type, &b, 30000) == 0 && type != 'X') {
            if (type == 'Q') {
                simple_query(f, fd, (const char *)b.d);
            } else if (type == 'P') {
                /* Parse: statement name, then the SQL text. */
                snprintf(sql, sizeof(sql), "%s", (const char *)b.d + strlen((char *)b.d) + 1);
            } else if (type == 'S') {
                b.n = 0;
                send_msg(fd, '1', &b);
                send_msg(fd, '2', &b);
                answer_sql(f, fd, sql);
                send_ready(fd);
            }
        }
    }
    close(fd);
    pthread_mutex_lock(&f->mu);
    f->active--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static void *
fake_accept(void *arg)
{
    struct fake *f = arg;

    for (;;) {
        int fd = accept(f->lfd, NULL, NULL);
        pthread_t t;

        if (fd < 0)
            return NULL;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
        pthread_mutex_lock(&f->mu);
        f->active++;
        pthread_mutex_unlock(&f->mu);
        pthread_create(&t, NULL, fake_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static void
fake_start(script_fn script)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof(addr);

    memset(&fake, 0, sizeof(fake));
    pthread_mutex_init(&fake.mu, NULL);
    pthread_cond_init(&fake.cv, NULL);
    fake.wal_level = "logical";
    fake.wal_status = "reserved";
    fake.script = script;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fake.lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fake.lfd, 0);
    ck_assert_int_eq(bind(fake.lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    ck_assert_int_eq(listen(fake.lfd, 8), 0);
    ck_assert_int_eq(getsockname(fake.lfd, (struct sockaddr *)&addr, &len), 0);
    fake.port = ntohs(addr.sin_port);
    ck_assert_int_eq(pthread_create(&fake.acceptor, NULL, fake_accept, &fake), 0);
}

/* Stops accepting and waits for every connection thread to end. */
static void
fake_stop(void)
{
    struct timespec until;

    shutdown(fake.lfd, SHUT_RDWR);
    close(fake.lfd);
    pthread_join(fake.acceptor, NULL);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&fake.mu);
    while (fake.active > 0 && pthread_cond_timedwait(&fake.cv, &fake.mu, &until) == 0)
        ;
    ck_assert_int_eq(fake.active, 0);
    pthread_mutex_unlock(&fake.mu);
}

/* ---- walsender messages -----------------------------------------------------------------------
 */

static void
send_xlog(int fd, uint64_t start, const struct buf *payload)
{
    struct buf b = {.n = 0};

    put(&b, "w", 1);
    put_be(&b, start, 8);
    put_be(&b, start, 8);
    put_be(&b, 0, 8);
    put(&b, payload->d, payload->n);
    send_msg(fd, 'd', &b);
}

static void
send_keepalive(int fd, uint64_t wal_end, bool reply)
{
    struct buf b = {.n = 0};

    put(&b, "k", 1);
    put_be(&b, wal_end, 8);
    put_be(&b, 0, 8);
    put_be(&b, reply, 1);
    send_msg(fd, 'd', &b);
}

static void
send_begin(int fd, uint64_t final_lsn, uint32_t xid)
{
    struct buf p = {.n = 0};

    put(&p, "B", 1);
    put_be(&p, final_lsn, 8);
    put_be(&p, 0, 8);
    put_be(&p, xid, 4);
    send_xlog(fd, final_lsn, &p);
}

/* Relation public.t (id int4 key, payload text). */
static void
send_relation(int fd, uint64_t lsn)
{
    struct buf p = {.n = 0};

    put(&p, "R", 1);
    put_be(&p, RELID, 4);
    put_str(&p, "public");
    put_str(&p, "t");
    put(&p, "d", 1);
    put_be(&p, 2, 2);
    put_be(&p, 1, 1);
    put_str(&p, "id");
    put_be(&p, 23, 4);
    put_be(&p, 0xffffffff, 4);
    put_be(&p, 0, 1);
    put_str(&p, "payload");
    put_be(&p, 25, 4);
    put_be(&p, 0xffffffff, 4);
    send_xlog(fd, lsn, &p);
}

static void
send_insert(int fd, uint64_t lsn, uint32_t relid, const char *id, const char *payload)
{
    struct buf p = {.n = 0};

    put(&p, "I", 1);
    put_be(&p, relid, 4);
    put(&p, "N", 1);
    put_be(&p, 2, 2);
    put(&p, "t", 1);
    put_be(&p, strlen(id), 4);
    put(&p, id, strlen(id));
    put(&p, "t", 1);
    put_be(&p, strlen(payload), 4);
    put(&p, payload, strlen(payload));
    send_xlog(fd, lsn, &p);
}

static void
send_commit(int fd, uint64_t commit_lsn, uint64_t end_lsn)
{
    struct buf p = {.n = 0};

    put(&p, "C", 1);
    put_be(&p, 0, 1);
    put_be(&p, commit_lsn, 8);
    put_be(&p, end_lsn, 8);
    put_be(&p, 0, 8);
    send_xlog(fd, commit_lsn, &p);
}

/* Transaction n: Begin, (Relation), Insert id=n, Commit ending at 0x1000000 + n * 0x100. */
static uint64_t
send_txn(int fd, int n, bool relation)
{
    uint64_t base = 0x1000000 + (uint64_t)n * 0x100;
    char id[16];

    snprintf(id, sizeof(id), "%d", n);
    send_begin(fd, base + 0x80, (uint32_t)(700 + n));
    if (relation)
        send_relation(fd, base + 0x10);
    send_insert(fd, base + 0x20, RELID, id, "p");
    send_commit(fd, base + 0x80, base + 0xb0);
    return base + 0xb0;
}

/* ---- the consumer -----------------------------------------------------------------------------
 */

struct consumer {
    pthread_mutex_t mu;
    char events[1024];
    uint64_t confirmable;
    bool in_txn;
    bool blocked;        /* can_take returns false */
    int fatal_on_insert; /* on_insert fails fatally with this code when non-zero */
    int tables;
};

static struct consumer consumer;

static void note(struct consumer *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
note(struct consumer *c, const char *fmt, ...)
{
    size_t n;
    va_list ap;

    pthread_mutex_lock(&c->mu);
    n = strlen(c->events);
    va_start(ap, fmt);
    vsnprintf(c->events + n, sizeof(c->events) - n, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&c->mu);
}

static int
c_table(void *ctx, const struct obx_relation *rel, struct obx_error *err)
{
    struct consumer *c = ctx;

    ck_assert_uint_eq(rel->relid, RELID);
    ck_assert_uint_eq(rel->ncols, 2);
    ck_assert_str_eq(rel->cols[0].name, "id");
    ck_assert(rel->cols[0].key && !rel->cols[1].key);
    c->tables++;
    return 0;
}

static int
c_begin(void *ctx, const struct obx_pgo_begin *m, struct obx_error *err)
{
    struct consumer *c = ctx;

    c->in_txn = true;
    note(c, "B%u ", m->xid);
    return 0;
}

static int
c_commit(void *ctx, const struct obx_pgo_commit *m, struct obx_error *err)
{
    struct consumer *c = ctx;

    c->in_txn = false;
    c->confirmable = m->end_lsn;
    note(c, "C ");
    return 0;
}

static int
c_relation(void *ctx, const struct obx_relation *rel, struct obx_error *err)
{
    note(ctx, "R ");
    return 0;
}

static int
c_insert(void *ctx, const struct obx_relation *rel, const struct obx_pgo_tuple *tup,
         struct obx_error *err)
{
    struct consumer *c = ctx;

    if (c->fatal_on_insert != 0)
        return obx_error_set(err, c->fatal_on_insert, true, "the consumer refuses the row");
    note(c, "I%.*s ", (int)tup->cols[0].len, (const char *)tup->cols[0].data);
    return 0;
}

static void
c_keepalive(void *ctx, uint64_t wal_end)
{
    struct consumer *c = ctx;

    if (!c->in_txn && wal_end > c->confirmable)
        c->confirmable = wal_end;
}

static uint64_t
c_confirmable(void *ctx)
{
    return ((struct consumer *)ctx)->confirmable;
}

static bool
c_can_take(void *ctx)
{
    return !__atomic_load_n(&((struct consumer *)ctx)->blocked, __ATOMIC_SEQ_CST);
}

static void
c_disconnect(void *ctx)
{
    struct consumer *c = ctx;

    c->in_txn = false;
    note(c, "D ");
}

static int
c_drain(void *ctx, struct obx_error *err)
{
    note(ctx, "drain");
    return 0;
}

static const struct obx_repl_handler handler = {
    .ctx = &consumer,
    .on_table = c_table,
    .on_begin = c_begin,
    .on_commit = c_commit,
    .on_relation = c_relation,
    .on_insert = c_insert,
    .on_keepalive = c_keepalive,
    .can_take = c_can_take,
    .confirmable = c_confirmable,
    .on_disconnect = c_disconnect,
    .drain = c_drain,
    .wakeup_fd = -1,
};

static volatile sig_atomic_t stop_flag;

/* A repl for the fake, with extra "key=value" settings (NULL-terminated). */
static struct obx_repl *
repl_for_fake(const char *setting, ...)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err = {0};
    struct obx_repl *r;
    char conninfo[160];
    va_list ap;

    ck_assert_ptr_nonnull(cfg);
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=u dbname=postgres sslmode=disable gssencmode=disable",
             fake.port);
    ck_assert_int_eq(obx_config_set(cfg, "postgres.conninfo", conninfo, "test", &err), 0);
    ck_assert_int_eq(obx_config_set(cfg, "postgres.tables", "public.t", "test", &err), 0);
    ck_assert_int_eq(obx_config_set(cfg, "postgres.status.interval.ms", "100", "test", &err), 0);
    ck_assert_int_eq(obx_config_set(cfg, "postgres.reconnect.backoff.ms", "10", "test", &err), 0);
    ck_assert_int_eq(obx_config_set(cfg, "postgres.reconnect.backoff.max.ms", "20", "test", &err),
                     0);
    va_start(ap, setting);
    for (const char *s = setting; s != NULL; s = va_arg(ap, const char *))
        ck_assert_msg(obx_config_set_pair(cfg, s, "test", &err) == 0, "%s", err.msg);
    va_end(ap);
    r = obx_repl_new(cfg, &err);
    ck_assert_msg(r != NULL, "obx_repl_new: %s", err.msg);
    obx_config_free(cfg);
    return r;
}

static void
setup(void)
{
    memset(&consumer, 0, sizeof(consumer));
    pthread_mutex_init(&consumer.mu, NULL);
    stop_flag = 0;
    obx_log_set_level(OBX_LOG_ERROR);
}

/* ---- scripts ----------------------------------------------------------------------------------
 */

/* Ends a script's streaming part: records whether what it waited for came, asks the client to
 * stop and serves it until it is gone. */
static void
finish(struct fake *f, int fd, bool awaited)
{
    pthread_mutex_lock(&f->mu);
    f->awaited = awaited;
    pthread_mutex_unlock(&f->mu);
    *f->stop = 1;
    serve_until_end(f, fd, WAIT_MS);
}

/* One transaction, then stop once the client confirmed it. */
static void
script_one_txn(struct fake *f, int fd, int session)
{
    uint64_t end = send_txn(fd, 1, true);

    finish(f, fd, await_flush(f, fd, end, WAIT_MS));
}

/* A keepalive asking for a reply; with no interval updates, only the reply can confirm it. */
static void
script_keepalive(struct fake *f, int fd, int session)
{
    send_keepalive(fd, 0x2000000, true);
    finish(f, fd, await_flush(f, fd, 0x2000000, 1000));
}

/* Session 1: a confirmed transaction, then one with a truncated Insert. Session 2: stop. */
static void
script_malformed(struct fake *f, int fd, int session)
{
    struct buf p = {.n = 0};

    if (session == 1) {
        uint64_t end = send_txn(fd, 1, true);
        bool confirmed = await_flush(f, fd, end, WAIT_MS);

        pthread_mutex_lock(&f->mu);
        f->awaited = confirmed;
        pthread_mutex_unlock(&f->mu);
        send_begin(fd, 0x1100080, 777);
        put(&p, "I\0\0\x40", 4);
        send_xlog(fd, 0x1100020, &p);
        send_commit(fd, 0x1100080, 0x11000b0);
        serve_until_end(f, fd, WAIT_MS);
    } else {
        *f->stop = 1;
        serve_until_end(f, fd, WAIT_MS);
    }
}

/* Session 1: an Insert for a relation never announced. Session 2: stop. */
static void
script_unknown_relation(struct fake *f, int fd, int session)
{
    if (session == 1) {
        send_begin(fd, 0x1000080, 701);
        send_insert(fd, 0x1000020, RELID + 1, "1", "p");
        send_commit(fd, 0x1000080, 0x10000b0);
        serve_until_end(f, fd, WAIT_MS);
    } else {
        *f->stop = 1;
        serve_until_end(f, fd, WAIT_MS);
    }
}

/* Sends a transaction while the consumer is blocked, counts the status updates that still come
 * in the next three intervals, then unblocks it and waits for the commit to be confirmed. */
static void
script_backpressure(struct fake *f, int fd, int session)
{
    uint64_t end = send_txn(fd, 1, true);
    struct consumer *c = f->user;
    int updates = 0;

    for (int i = 0; i < 3; i++)
        updates += await_flush(f, fd, 0, WAIT_MS);
    pthread_mutex_lock(&f->mu);
    f->blocked_updates = updates;
    pthread_mutex_unlock(&f->mu);
    note(c, "unblock ");
    __atomic_store_n(&c->blocked, false, __ATOMIC_SEQ_CST);
    finish(f, fd, await_flush(f, fd, end, WAIT_MS));
}

/* The connection drops right after START_REPLICATION. */
static void
script_drop(struct fake *f, int fd, int session)
{
    shutdown(fd, SHUT_RDWR);
}

/* Stop at once. */
static void
script_stop(struct fake *f, int fd, int session)
{
    finish(f, fd, true);
}

/* Sends a transaction and serves the client until it is gone. */
static void
script_until_gone(struct fake *f, int fd, int session)
{
    send_txn(fd, 1, true);
    serve_until_end(f, fd, WAIT_MS);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static int
run_fake(struct obx_repl *r, struct obx_error *err)
{
    fake.stop = &stop_flag;
    return obx_repl_run(r, &handler, &stop_flag, err);
}

START_TEST(obx_repl_new__reads_settings)
{
    struct obx_repl *r;
    struct obx_repl_stats st;

    fake_start(script_stop);
    r = repl_for_fake("postgres.slot=s1", "postgres.tables=public.t, other.u", NULL);
    obx_repl_get_stats(r, &st);
    ck_assert_uint_eq(st.reconnects, 0);
    ck_assert_uint_eq(st.confirmed_lsn, 0);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_free__null_is_noop)
{
    obx_repl_free(NULL);
}
END_TEST

START_TEST(obx_repl_get_stats__counts_a_session)
{
    struct obx_error err = {0};
    struct obx_repl_stats st;
    struct obx_repl *r;

    fake_start(script_one_txn);
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), 0);
    obx_repl_get_stats(r, &st);
    ck_assert_uint_eq(st.messages, 4);
    ck_assert_uint_eq(st.confirmed_lsn, 0x10001b0);
    ck_assert_uint_eq(st.received_lsn, 0x1000180);
    ck_assert_uint_eq(st.reconnects, 0);
    ck_assert_uint_ge(st.status_updates, 2);
    ck_assert_uint_gt(st.bytes, 0);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__streams_confirms_and_stops)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_one_txn);
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), 0);
    ck_assert(fake.awaited);
    ck_assert_str_eq(consumer.events, "B701 R I1 C drain");
    ck_assert_int_eq(consumer.tables, 1);
    /* The final status update carried the commit's end_lsn, and nothing went beyond it. */
    ck_assert_uint_eq(fake.last_flush, 0x10001b0);
    ck_assert_uint_eq(fake.max_flush, 0x10001b0);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__answers_keepalive_at_once)
{
    struct obx_error err = {0};
    struct obx_repl_stats st;
    struct obx_repl *r;

    fake_start(script_keepalive);
    r = repl_for_fake("postgres.status.interval.ms=3600000", NULL);
    ck_assert_int_eq(run_fake(r, &err), 0);
    ck_assert_msg(fake.awaited, "no reply to the keepalive within 1 s");
    ck_assert_uint_eq(fake.max_flush, 0x2000000);
    ck_assert_uint_eq(fake.last_write, 0x2000000);
    obx_repl_get_stats(r, &st);
    ck_assert_uint_eq(st.keepalives, 1);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__malformed_message_reconnects_without_advance)
{
    struct obx_error err = {0};
    struct obx_repl_stats st;
    struct obx_repl *r;

    fake_start(script_malformed);
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), 0);
    ck_assert(fake.awaited);
    ck_assert_int_eq(fake.sessions, 2);
    /* Transaction 777 never reached its Commit; nothing past transaction 1 was confirmed. */
    ck_assert_str_eq(consumer.events, "B701 R I1 C B777 D drain");
    ck_assert_uint_eq(fake.max_flush, 0x10001b0);
    obx_repl_get_stats(r, &st);
    ck_assert_uint_eq(st.reconnects, 1);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__unknown_relation_reconnects)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_unknown_relation);
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), 0);
    ck_assert_int_eq(fake.sessions, 2);
    ck_assert_str_eq(consumer.events, "B701 D drain");
    ck_assert_uint_eq(fake.max_flush, 0);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__status_updates_continue_under_backpressure)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_backpressure);
    fake.user = &consumer;
    consumer.blocked = true;
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), 0);
    ck_assert(fake.awaited);
    /* Nothing was read while blocked, yet status updates kept coming. */
    ck_assert_str_eq(consumer.events, "unblock B701 R I1 C drain");
    ck_assert_int_eq(fake.blocked_updates, 3);
    ck_assert_uint_eq(fake.max_flush, 0x10001b0);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__slot_dropped_while_running_is_fatal)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_drop);
    fake.slot_gone_after_first = true;
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), OBX_ERR_SERVER);
    ck_assert(err.fatal);
    ck_assert_ptr_nonnull(strstr(err.msg, "was dropped while outboxd was running"));
    ck_assert_int_eq(fake.sessions, 1);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__lost_slot_is_fatal)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_stop);
    fake.wal_status = "lost";
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), OBX_ERR_SERVER);
    ck_assert_ptr_nonnull(strstr(err.msg, "is invalidated (wal_status = lost)"));
    ck_assert_int_eq(fake.sessions, 0);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__wal_level_replica_is_fatal)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_stop);
    fake.wal_level = "replica";
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), OBX_ERR_SERVER);
    ck_assert_str_eq(err.msg, "wal_level is replica; set wal_level = logical in postgresql.conf "
                              "and restart PostgreSQL");
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__busy_slot_is_retried)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_stop);
    fake.slot_busy_first = true;
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), 0);
    ck_assert_int_eq(fake.starts, 2);
    ck_assert_int_eq(fake.sessions, 1);
    ck_assert_int_eq(fake.holder_queries, 1);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

START_TEST(obx_repl_run__fatal_callback_error_ends_run)
{
    struct obx_error err = {0};
    struct obx_repl *r;

    fake_start(script_until_gone);
    consumer.fatal_on_insert = OBX_ERR_INVALID;
    r = repl_for_fake(NULL);
    ck_assert_int_eq(run_fake(r, &err), OBX_ERR_INVALID);
    ck_assert(err.fatal);
    ck_assert_str_eq(err.msg, "the consumer refuses the row");
    ck_assert_str_eq(consumer.events, "B701 R ");
    ck_assert_uint_eq(fake.max_flush, 0);
    obx_repl_free(r);
    fake_stop();
}
END_TEST

static void *
stop_later(void *arg)
{
    struct timespec ts = {0, 300 * 1000 * 1000};

    nanosleep(&ts, NULL);
    stop_flag = 1;
    return NULL;
}

START_TEST(obx_repl_run__stop_while_unreachable_returns_0)
{
    struct obx_error err = {0};
    struct obx_repl_stats st;
    struct obx_repl *r;
    pthread_t t;

    fake_start(script_stop);
    r = repl_for_fake(NULL);
    fake_stop(); /* nothing listens any more: every connect is refused */
    ck_assert_int_eq(pthread_create(&t, NULL, stop_later, NULL), 0);
    ck_assert_int_eq(run_fake(r, &err), 0);
    pthread_join(t, NULL);
    ck_assert_msg(strncmp(consumer.events, "D D ", 4) == 0, "%s", consumer.events);
    ck_assert_ptr_nonnull(strstr(consumer.events, " drain"));
    obx_repl_get_stats(r, &st);
    ck_assert_uint_ge(st.reconnects, 2);
    ck_assert_uint_eq(st.status_updates, 0);
    obx_repl_free(r);
}
END_TEST

static Suite *
repl_suite(void)
{
    Suite *s = suite_create("repl");
    TCase *tc_new = tcase_create("obx_repl_new");
    TCase *tc_free = tcase_create("obx_repl_free");
    TCase *tc_run = tcase_create("obx_repl_run");
    TCase *tc_stats = tcase_create("obx_repl_get_stats");

    tcase_add_checked_fixture(tc_new, setup, NULL);
    tcase_add_test(tc_new, obx_repl_new__reads_settings);
    suite_add_tcase(s, tc_new);
    tcase_add_test(tc_free, obx_repl_free__null_is_noop);
    suite_add_tcase(s, tc_free);
    tcase_add_checked_fixture(tc_run, setup, NULL);
    tcase_set_timeout(tc_run, 30);
    tcase_add_test(tc_run, obx_repl_run__streams_confirms_and_stops);
    tcase_add_test(tc_run, obx_repl_run__answers_keepalive_at_once);
    tcase_add_test(tc_run, obx_repl_run__malformed_message_reconnects_without_advance);
    tcase_add_test(tc_run, obx_repl_run__unknown_relation_reconnects);
    tcase_add_test(tc_run, obx_repl_run__status_updates_continue_under_backpressure);
    tcase_add_test(tc_run, obx_repl_run__slot_dropped_while_running_is_fatal);
    tcase_add_test(tc_run, obx_repl_run__lost_slot_is_fatal);
    tcase_add_test(tc_run, obx_repl_run__wal_level_replica_is_fatal);
    tcase_add_test(tc_run, obx_repl_run__busy_slot_is_retried);
    tcase_add_test(tc_run, obx_repl_run__fatal_callback_error_ends_run);
    tcase_add_test(tc_run, obx_repl_run__stop_while_unreachable_returns_0);
    suite_add_tcase(s, tc_run);
    tcase_add_checked_fixture(tc_stats, setup, NULL);
    tcase_set_timeout(tc_stats, 30);
    tcase_add_test(tc_stats, obx_repl_get_stats__counts_a_session);
    suite_add_tcase(s, tc_stats);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(repl_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
