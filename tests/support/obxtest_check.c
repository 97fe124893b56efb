/* obxtest_check.c - the fault suite's workload (written table, writer thread) and delivery
 * checker (no loss, bounded duplicates, per-key commit order). See obxtest_check.h. */
#include "obxtest_check.h"

#include "obxtest.h"
#include "obxtest_outboxd.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WRITER_RETRY_MS 100
#define WRITER_GIVE_UP_MS 120000
#define FIGURES_MAX 2048
#define REPORT_MAX 8 /* missing / reordered events named in a failure message */
#define WATERMARK_TIMEOUT_MS 10000

/* ---- the workload --------------------------------------------------------------------------- */

static const char workload_sql[] =
    "CREATE TABLE written (id uuid PRIMARY KEY, key text NOT NULL, seq bigint NOT NULL);\n"
    "CREATE TABLE key_seq (key text PRIMARY KEY, seq bigint NOT NULL DEFAULT 0);\n"
    "INSERT INTO key_seq SELECT 'k' || g, 0 FROM generate_series(0, %d - 1) g;\n"
    "CREATE FUNCTION obxt_write(first bigint, n int, nkeys int, pad int) RETURNS void\n"
    "LANGUAGE plpgsql AS $$\n"
    "DECLARE k text; s bigint; eid uuid;\n"
    "BEGIN\n"
    "  FOR i IN 0 .. n - 1 LOOP\n"
    "    k := 'k' || ((first + i) %% nkeys);\n"
    "    UPDATE key_seq SET seq = key_seq.seq + 1 WHERE key_seq.key = k RETURNING key_seq.seq\n"
    "      INTO s;\n"
    "    eid := gen_random_uuid();\n"
    "    INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)\n"
    "      VALUES (eid, 'fault', k, 'e', jsonb_build_object('seq', s, 'pad', repeat('x', pad)));\n"
    "    INSERT INTO written VALUES (eid, k, s);\n"
    "  END LOOP;\n"
    "END $$;\n"
    /* one statement per table: per-row plpgsql is too slow for 10^5 rows in one transaction.
     * The counters are locked first, so seq stays in commit order per key. */
    "CREATE FUNCTION obxt_write_bulk(n int, nkeys int) RETURNS void\n"
    "LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM 1 FROM key_seq FOR UPDATE;\n"
    "  CREATE TEMP TABLE obxt_bulk ON COMMIT DROP AS\n"
    "    SELECT gen_random_uuid() AS id, ks.key, ks.seq + 1 + g / nkeys AS seq\n"
    "    FROM generate_series(0, n - 1) g JOIN key_seq ks ON ks.key = 'k' || (g %% nkeys);\n"
    "  INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)\n"
    "    SELECT id, 'fault', key, 'e', jsonb_build_object('seq', seq) FROM obxt_bulk\n"
    "    ORDER BY seq, key;\n"
    "  INSERT INTO written SELECT id, key, seq FROM obxt_bulk;\n"
    "  UPDATE key_seq ks SET seq = b.top FROM\n"
    "    (SELECT key, max(seq) AS top FROM obxt_bulk GROUP BY key) b WHERE b.key = ks.key;\n"
    "END $$;\n";

void
obxt_workload_setup(struct obxt_pg *pg, int nkeys)
{
    ck_assert_int_gt(nkeys, 0);
    obxt_pg_exec(pg, workload_sql, nkeys);
}

struct obxt_stack *
obxt_workload_stack(const char *const pg_settings[], int nkeys)
{
    static const char *const broker_args[] = {"--topic", OBXT_FAULT_TOPIC ":8", NULL};
    struct obxt_stack_opts opts = {.broker_args = broker_args, .pg_settings = pg_settings};
    struct obxt_stack *s = obxt_stack_start(&opts);

    obxt_workload_setup(s->pg, nkeys);
    return s;
}

struct obxt_writer {
    pthread_t thread;
    char *conninfo;
    struct obxt_writer_opts opts;
    atomic_llong committed;
    atomic_bool done;
    atomic_bool stop;
    char failure[512]; /* set when it gave up; read after join */
};

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Connects, retrying every WRITER_RETRY_MS until deadline. NULL when it gave up. */
static PGconn *
writer_connect(struct obxt_writer *w, long long deadline)
{
    for (;;) {
        PGconn *conn = PQconnectdb(w->conninfo);

        if (PQstatus(conn) == CONNECTION_OK)
            return conn;
        if (obxt_proc_now_ms() >= deadline || atomic_load(&w->stop)) {
            snprintf(w->failure, sizeof(w->failure), "writer could not connect: %s",
                     PQerrorMessage(conn));
            PQfinish(conn);
            return NULL;
        }
        PQfinish(conn);
        sleep_ms(WRITER_RETRY_MS);
    }
}

/* Commits one transaction of n events starting at key index first. 0, or -1 when the
 * connection broke (the caller reconnects), or -2 on another error (w->failure says). */
static int
writer_txn(struct obxt_writer *w, PGconn *conn, long long first, int n)
{
    char sql[160];
    PGresult *res;
    int rc = 0;

    snprintf(sql, sizeof(sql), "SELECT obxt_write(%lld, %d, %d, %d)", first, n, w->opts.nkeys,
             w->opts.pad);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = PQstatus(conn) == CONNECTION_OK ? -2 : -1;
        /* the server going down answers on a still-open connection (57P01 admin shutdown) */
        if (rc == -2 && PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL &&
            strncmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "57", 2) == 0)
            rc = -1;
        if (rc == -2)
            snprintf(w->failure, sizeof(w->failure), "writer: %s", PQresultErrorMessage(res));
    }
    PQclear(res);
    return rc;
}

static void *
writer_main(void *arg)
{
    struct obxt_writer *w = arg;
    long long start = obxt_proc_now_ms(), first = 0, deadline = 0;
    PGconn *conn = writer_connect(w, start + WRITER_GIVE_UP_MS);

    while (conn != NULL && first < w->opts.events && !atomic_load(&w->stop)) {
        int n = (int)(w->opts.events - first < w->opts.per_txn ? w->opts.events - first
                                                               : w->opts.per_txn);
        int rc = writer_txn(w, conn, first, n);

        if (rc == -2)
            break;
        if (rc == -1) {
            PQfinish(conn);
            if (deadline == 0)
                deadline = obxt_proc_now_ms() + WRITER_GIVE_UP_MS;
            sleep_ms(WRITER_RETRY_MS);
            conn = writer_connect(w, deadline);
            continue;
        }
        deadline = 0;
        first += n;
        atomic_store(&w->committed, first);
        if (w->opts.rate > 0) {
            long long due = start + first * 1000 / w->opts.rate;
            long long now = obxt_proc_now_ms();

            if (due > now)
                sleep_ms((long)(due - now));
        }
    }
    PQfinish(conn);
    atomic_store(&w->done, true);
    return NULL;
}

struct obxt_writer *
obxt_writer_start(const char *conninfo, const struct obxt_writer_opts *opts)
{
    struct obxt_writer *w = calloc(1, sizeof(*w));

    ck_assert_msg(w != NULL, "out of memory");
    w->conninfo = strdup(conninfo);
    ck_assert_msg(w->conninfo != NULL, "out of memory");
    w->opts = *opts;
    if (w->opts.per_txn <= 0)
        w->opts.per_txn = 10;
    ck_assert_int_gt(w->opts.nkeys, 0);
    atomic_init(&w->committed, 0);
    atomic_init(&w->done, false);
    atomic_init(&w->stop, false);
    ck_assert_int_eq(pthread_create(&w->thread, NULL, writer_main, w), 0);
    return w;
}

long long
obxt_writer_committed(struct obxt_writer *w)
{
    return atomic_load(&w->committed);
}

bool
obxt_writer_wait_for(struct obxt_writer *w, long long n, int timeout_ms)
{
    long long deadline = obxt_proc_now_ms() + timeout_ms;

    while (atomic_load(&w->committed) < n && !atomic_load(&w->done)) {
        if (obxt_proc_now_ms() >= deadline)
            return false;
        sleep_ms(10);
    }
    return true;
}

long long
obxt_writer_finish(struct obxt_writer *w)
{
    long long committed;
    char failure[sizeof(w->failure)];

    pthread_join(w->thread, NULL);
    committed = atomic_load(&w->committed);
    snprintf(failure, sizeof(failure), "%s", w->failure);
    free(w->conninfo);
    free(w);
    ck_assert_msg(failure[0] == '\0', "%s", failure);
    return committed;
}

/* ---- Kafka positions ------------------------------------------------------------------------ */

struct obxt_hw {
    rd_kafka_t *rk;
    char *bootstrap;
    char *topic;
    int nparts;
    int32_t *ids;
};

struct obxt_hw *
obxt_hw_new(const char *bootstrap, const char *topic)
{
    struct obxt_hw *hw = calloc(1, sizeof(*hw));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt;
    rd_kafka_resp_err_t e;
    char errstr[512];

    ck_assert_msg(hw != NULL, "out of memory");
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) ==
              RD_KAFKA_CONF_OK);
    hw->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(hw->rk != NULL, "watermarks: %s", errstr);
    hw->bootstrap = strdup(bootstrap);
    hw->topic = strdup(topic);
    rkt = rd_kafka_topic_new(hw->rk, topic, NULL);
    e = rd_kafka_metadata(hw->rk, 0, rkt, &md, WATERMARK_TIMEOUT_MS);
    ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
                      md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR,
                  "metadata of %s: %s", topic, rd_kafka_err2str(e != 0 ? e : md->topics[0].err));
    hw->nparts = md->topics[0].partition_cnt;
    hw->ids = calloc((size_t)hw->nparts + 1, sizeof(*hw->ids));
    ck_assert_msg(hw->ids != NULL && hw->topic != NULL && hw->bootstrap != NULL, "no memory");
    for (int p = 0; p < hw->nparts; p++)
        hw->ids[p] = md->topics[0].partitions[p].id;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return hw;
}

int64_t
obxt_hw_total(struct obxt_hw *hw, int64_t per[])
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(hw->nparts);
    rd_kafka_resp_err_t e;
    int64_t total = 0;

    /* one ListOffsets request per leader, in parallel: "timestamp" OFFSET_END asks for the end */
    for (int p = 0; p < hw->nparts; p++)
        rd_kafka_topic_partition_list_add(parts, hw->topic, hw->ids[p])->offset =
            RD_KAFKA_OFFSET_END;
    e = rd_kafka_offsets_for_times(hw->rk, parts, WATERMARK_TIMEOUT_MS);
    ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "end offsets of %s: %s", hw->topic,
                  rd_kafka_err2str(e));
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];

        ck_assert_msg(tp->err == RD_KAFKA_RESP_ERR_NO_ERROR && tp->offset >= 0,
                      "end offset of %s [%d]: %s", hw->topic, tp->partition,
                      rd_kafka_err2str(tp->err));
        if (per != NULL)
            per[tp->partition] = tp->offset;
        total += tp->offset;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return total;
}

int
obxt_hw_partitions(const struct obxt_hw *hw)
{
    return hw->nparts;
}

/* A consumer (no group) for one read. */
static rd_kafka_t *
hw_consumer(const struct obxt_hw *hw)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    rd_kafka_t *rk;

    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", hw->bootstrap, errstr, sizeof(errstr)) ==
              RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "group.id", "obxt-hw", errstr, sizeof(errstr)) ==
              RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ==
              RD_KAFKA_CONF_OK);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "consumer: %s", errstr);
    return rk;
}

/* The value of header name in m, malloc'd, or NULL. */
static char *
message_header(const rd_kafka_message_t *m, const char *name)
{
    rd_kafka_headers_t *hdrs;
    const void *value;
    size_t size;
    char *out;

    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        value == NULL)
        return NULL;
    out = strndup(value, size);
    ck_assert_msg(out != NULL, "out of memory");
    return out;
}

char *
obxt_hw_last_header(struct obxt_hw *hw, int partition, const char *name)
{
    int64_t lo, hi;
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts;
    long long deadline = obxt_proc_now_ms() + WATERMARK_TIMEOUT_MS;
    char *value = NULL;
    bool got = false;

    ck_assert(rd_kafka_query_watermark_offsets(hw->rk, hw->topic, partition, &lo, &hi,
                                               WATERMARK_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR);
    if (hi <= lo)
        return NULL;
    rk = hw_consumer(hw);
    parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, hw->topic, partition)->offset = hi - 1;
    ck_assert(rd_kafka_assign(rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    while (!got && obxt_proc_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

        if (m != NULL && m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            value = message_header(m, name);
            got = true;
        }
        if (m != NULL)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    ck_assert_msg(got, "could not read the last record of %s [%d]", hw->topic, partition);
    return value;
}

void
obxt_hw_free(struct obxt_hw *hw)
{
    if (hw == NULL)
        return;
    rd_kafka_destroy(hw->rk);
    free(hw->ids);
    free(hw->topic);
    free(hw->bootstrap);
    free(hw);
}

uint64_t
obxt_check_lsn(const char *text)
{
    unsigned hi, lo;
    int n = 0;

    ck_assert_msg(text != NULL && sscanf(text, "%X/%X%n", &hi, &lo, &n) == 2 && text[n] == '\0',
                  "not an LSN: %s", text != NULL ? text : "(null)");
    return (uint64_t)hi << 32 | lo;
}

/* ---- the check: data ------------------------------------------------------------------------ */

struct event {
    char *id;
    char *key;
    long long seq;
    uint64_t lsn;  /* commit LSN from the outbox.lsn header, 0 until seen */
    size_t copies; /* records read back */
};

struct fault {
    char what[64];
    uint64_t confirmed, wal;
    char *wal_text;
    long long t_ms;
    bool bound_known;
    double recover_s; /* < 0: not measured */
};

/* Open addressing, string keys, values are indexes (size_t). */
struct strmap {
    const char **keys;
    size_t *vals;
    size_t cap, len;
};

struct obxt_check {
    char name[64];
    struct event *ev;
    size_t nev, cap;
    struct strmap ids;
    struct fault faults[OBXT_CHECK_MAX_FAULTS];
    int nfaults;
    long peak_rss_kb;
    char extra[FIGURES_MAX]; /* obxt_check_figure */
    struct obxt_check_figures fig;
    char problems[FIGURES_MAX]; /* first missing / reordered / unknown events */
    bool ran;
};

static uint64_t
str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static void
strmap_grow(struct strmap *m)
{
    struct strmap n = {0};

    n.cap = m->cap == 0 ? 1024 : m->cap * 2;
    n.keys = calloc(n.cap, sizeof(*n.keys));
    n.vals = calloc(n.cap, sizeof(*n.vals));
    ck_assert_msg(n.keys != NULL && n.vals != NULL, "out of memory");
    for (size_t i = 0; i < m->cap; i++) {
        size_t j;

        if (m->keys[i] == NULL)
            continue;
        for (j = str_hash(m->keys[i]) & (n.cap - 1); n.keys[j] != NULL; j = (j + 1) & (n.cap - 1))
            ;
        n.keys[j] = m->keys[i];
        n.vals[j] = m->vals[i];
    }
    n.len = m->len;
    free(m->keys);
    free(m->vals);
    *m = n;
}

/* Slot of key: where it is, or the empty slot where it would go. */
static size_t
strmap_slot(const struct strmap *m, const char *key)
{
    size_t j = str_hash(key) & (m->cap - 1);

    while (m->keys[j] != NULL && strcmp(m->keys[j], key) != 0)
        j = (j + 1) & (m->cap - 1);
    return j;
}

/* Index stored for key, or (size_t)-1. */
static size_t
strmap_get(const struct strmap *m, const char *key)
{
    size_t j;

    if (m->cap == 0)
        return (size_t)-1;
    j = strmap_slot(m, key);
    return m->keys[j] != NULL ? m->vals[j] : (size_t)-1;
}

/* Stores key -> val (key must outlive m). Returns false when key was there already. */
static bool
strmap_put(struct strmap *m, const char *key, size_t val)
{
    size_t j;

    if (2 * (m->len + 1) > m->cap)
        strmap_grow(m);
    j = strmap_slot(m, key);
    if (m->keys[j] != NULL)
        return false;
    m->keys[j] = key;
    m->vals[j] = val;
    m->len++;
    return true;
}

static void
strmap_free(struct strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

struct obxt_check *
obxt_check_new(const char *name)
{
    struct obxt_check *c = calloc(1, sizeof(*c));

    ck_assert_msg(c != NULL, "out of memory");
    snprintf(c->name, sizeof(c->name), "%s", name);
    return c;
}

void
obxt_check_free(struct obxt_check *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nev; i++) {
        free(c->ev[i].id);
        free(c->ev[i].key);
    }
    for (int i = 0; i < c->nfaults; i++)
        free(c->faults[i].wal_text);
    free(c->ev);
    strmap_free(&c->ids);
    free(c);
}

void
obxt_check_expect(struct obxt_check *c, const char *id, const char *key, long long seq)
{
    struct event *e;

    if (c->nev == c->cap) {
        c->cap = c->cap == 0 ? 1024 : c->cap * 2;
        c->ev = realloc(c->ev, c->cap * sizeof(*c->ev));
        ck_assert_msg(c->ev != NULL, "out of memory");
    }
    e = &c->ev[c->nev];
    memset(e, 0, sizeof(*e));
    e->id = strdup(id);
    e->key = strdup(key);
    e->seq = seq;
    ck_assert_msg(e->id != NULL && e->key != NULL, "out of memory");
    ck_assert_msg(strmap_put(&c->ids, e->id, c->nev), "event id %s committed twice", id);
    c->nev++;
}

size_t
obxt_check_expect_written(struct obxt_check *c, struct obxt_pg *pg)
{
    PGresult *res = PQexec(obxt_pg_conn(pg), "SELECT id::text, key, seq FROM written");
    size_t n;

    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "reading written: %s",
                  PQresultErrorMessage(res));
    n = (size_t)PQntuples(res);
    for (size_t i = 0; i < n; i++)
        obxt_check_expect(c, PQgetvalue(res, (int)i, 0), PQgetvalue(res, (int)i, 1),
                          strtoll(PQgetvalue(res, (int)i, 2), NULL, 10));
    PQclear(res);
    return n;
}

/* ---- the check: faults and figures ---------------------------------------------------------- */

int
obxt_check_fault(struct obxt_check *c, struct obxt_stack *s, const char *what, bool bound_known)
{
    struct fault *f;
    char *confirmed;

    ck_assert_msg(c->nfaults < OBXT_CHECK_MAX_FAULTS, "too many faults");
    f = &c->faults[c->nfaults];
    memset(f, 0, sizeof(*f));
    f->t_ms = obxt_proc_now_ms();
    snprintf(f->what, sizeof(f->what), "%s", what);
    confirmed = obxt_stack_confirmed(s, OBXT_SLOT);
    f->wal_text = obxt_stack_wal_lsn(s);
    f->confirmed = confirmed != NULL ? obxt_check_lsn(confirmed) : 0;
    f->wal = obxt_check_lsn(f->wal_text);
    f->bound_known = bound_known && confirmed != NULL;
    f->recover_s = -1;
    fprintf(stderr, "%s: fault %d (%s): confirmed %s, wal %s\n", c->name, c->nfaults, what,
            confirmed != NULL ? confirmed : "none", f->wal_text);
    free(confirmed);
    return c->nfaults++;
}

void
obxt_check_fault_wal(struct obxt_check *c, int fault, struct obxt_stack *s)
{
    struct fault *f;

    ck_assert_int_lt(fault, c->nfaults);
    f = &c->faults[fault];
    free(f->wal_text);
    f->wal_text = obxt_stack_wal_lsn(s);
    f->wal = obxt_check_lsn(f->wal_text);
    fprintf(stderr, "%s: fault %d (%s): wal %s after it\n", c->name, fault, f->what, f->wal_text);
}

double
obxt_check_recovered(struct obxt_check *c, int fault, struct obxt_stack *s, int timeout_ms)
{
    struct fault *f;
    long long left;

    ck_assert_int_lt(fault, c->nfaults);
    f = &c->faults[fault];
    left = f->t_ms + timeout_ms - obxt_proc_now_ms();
    ck_assert_msg(obxt_stack_wait_confirmed(s, OBXT_SLOT, f->wal_text, left > 0 ? (int)left : 0),
                  "%s: the slot did not confirm %s (written before fault %s) within %d ms", c->name,
                  f->wal_text, f->what, timeout_ms);
    f->recover_s = (double)(obxt_proc_now_ms() - f->t_ms) / 1000.0;
    return f->recover_s;
}

long
obxt_check_rss(struct obxt_check *c, pid_t pid)
{
    char path[64], line[256];
    long kb = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f != NULL)
        fclose(f);
    if (kb > c->peak_rss_kb)
        c->peak_rss_kb = kb;
    return kb;
}

long
obxt_check_peak_rss(const struct obxt_check *c)
{
    return c->peak_rss_kb;
}

void
obxt_check_figure(struct obxt_check *c, const char *name, const char *fmt, ...)
{
    size_t n = strlen(c->extra);
    va_list ap;

    snprintf(c->extra + n, sizeof(c->extra) - n, " %s ", name);
    n = strlen(c->extra);
    va_start(ap, fmt);
    vsnprintf(c->extra + n, sizeof(c->extra) - n, fmt, ap);
    va_end(ap);
}

/* ---- the check: verification ---------------------------------------------------------------- */

static const char *
header(const struct obxt_record *rec, const char *name)
{
    return obxt_records_header(rec, name, NULL);
}

static void problem(struct obxt_check *c, size_t *shown, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends one problem to c->problems (the first REPORT_MAX of each kind). */
static void
problem(struct obxt_check *c, size_t *shown, const char *fmt, ...)
{
    size_t n = strlen(c->problems);
    va_list ap;

    if ((*shown)++ >= REPORT_MAX)
        return;
    va_start(ap, fmt);
    vsnprintf(c->problems + n, sizeof(c->problems) - n, fmt, ap);
    va_end(ap);
}

/* Per-key last seq in arrival order of first copies: counts events that came after a later
 * event of their key. Keys live in c->ev; the map's values index last[]. */
static void
check_order(struct obxt_check *c, const size_t *order, size_t n)
{
    struct strmap keys = {0};
    long long *last = calloc(c->nev + 1, sizeof(*last));
    size_t nkeys = 0, shown = 0;

    ck_assert_msg(last != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const struct event *e = &c->ev[order[i]];
        size_t k = strmap_get(&keys, e->key);

        if (k == (size_t)-1) {
            strmap_put(&keys, e->key, nkeys);
            last[nkeys++] = e->seq;
            continue;
        }
        if (e->seq < last[k]) {
            c->fig.reordered++;
            problem(c, &shown, " reordered: key %s seq %lld after seq %lld;", e->key, e->seq,
                    last[k]);
        } else {
            last[k] = e->seq;
        }
    }
    strmap_free(&keys);
    free(last);
}

/* Sum over the faults that know their bound of the events committed in [confirmed, wal). */
static long long
duplicate_bound(const struct obxt_check *c)
{
    long long bound = 0;

    if (c->nfaults == 0)
        return 0;
    for (int f = 0; f < c->nfaults; f++) {
        const struct fault *ft = &c->faults[f];

        if (!ft->bound_known)
            return -1;
        for (size_t i = 0; i < c->nev; i++) {
            if (c->ev[i].copies > 0 && c->ev[i].lsn == 0)
                return -1; /* no outbox.lsn header: cannot tell */
            if (c->ev[i].lsn >= ft->confirmed && c->ev[i].lsn < ft->wal)
                bound++;
        }
    }
    return bound;
}

/* Counts copies, unknown records and the arrival order of first copies. */
static size_t *
scan_records(struct obxt_check *c, const struct obxt_records *recs, const char *topic,
             size_t *norder)
{
    size_t *order = calloc(c->nev + 1, sizeof(*order));
    size_t shown = 0;

    ck_assert_msg(order != NULL, "out of memory");
    *norder = 0;
    for (size_t i = 0; i < recs->count; i++) {
        const struct obxt_record *rec = &recs->recs[i];
        const char *id = header(rec, "id"), *lsn = header(rec, "outbox.lsn");
        size_t ix;

        if (topic != NULL && strcmp(rec->topic, topic) != 0)
            continue;
        c->fig.records++;
        ix = id != NULL ? strmap_get(&c->ids, id) : (size_t)-1;
        if (ix == (size_t)-1) {
            c->fig.unknown++;
            problem(c, &shown, " unknown record %s/%d@%" PRId64 " id %s;", rec->topic,
                    rec->partition, rec->offset, id != NULL ? id : "(none)");
            continue;
        }
        if (c->ev[ix].copies++ > 0) {
            c->fig.duplicates++;
            continue;
        }
        if (lsn != NULL)
            c->ev[ix].lsn = obxt_check_lsn(lsn);
        order[(*norder)++] = ix;
    }
    return order;
}

void
obxt_check_print(const struct obxt_check *c)
{
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);

    ck_assert_msg(f != NULL, "out of memory");
    fprintf(f, "FIGURES %s:", c->name);
    if (c->ran) {
        fprintf(f, " events %zu records %zu delivered %zu missing %zu duplicates %zu",
                c->fig.events, c->fig.records, c->fig.delivered, c->fig.missing, c->fig.duplicates);
        if (c->fig.dup_bound >= 0)
            fprintf(f, " (bound %lld)", c->fig.dup_bound);
        else
            fprintf(f, " (bound unknown)");
        fprintf(f, " reordered %zu unknown %zu", c->fig.reordered, c->fig.unknown);
    }
    for (int i = 0; i < c->nfaults; i++) {
        if (c->faults[i].recover_s >= 0)
            fprintf(f, " recover[%s] %.2f s", c->faults[i].what, c->faults[i].recover_s);
        else
            fprintf(f, " fault[%s]", c->faults[i].what);
    }
    if (c->peak_rss_kb > 0)
        fprintf(f, " peak_rss %.1f MiB", (double)c->peak_rss_kb / 1024.0);
    fprintf(f, "%s", c->extra);
    ck_assert_msg(fclose(f) == 0, "out of memory");
    printf("%s\n", line);
    fflush(stdout);
    fprintf(stderr, "%s\n", line);
    free(line);
}

const struct obxt_check_figures *
obxt_check_run(struct obxt_check *c, const struct obxt_records *recs, const char *topic)
{
    size_t norder, shown = 0;
    size_t *order;

    memset(&c->fig, 0, sizeof(c->fig));
    c->problems[0] = '\0';
    for (size_t i = 0; i < c->nev; i++) {
        c->ev[i].copies = 0;
        c->ev[i].lsn = 0;
    }
    c->fig.events = c->nev;
    order = scan_records(c, recs, topic, &norder);
    for (size_t i = 0; i < c->nev; i++) {
        if (c->ev[i].copies > 0) {
            c->fig.delivered++;
            continue;
        }
        c->fig.missing++;
        problem(c, &shown, " missing: id %s key %s seq %lld;", c->ev[i].id, c->ev[i].key,
                c->ev[i].seq);
    }
    check_order(c, order, norder);
    free(order);
    c->fig.dup_bound = duplicate_bound(c);
    c->ran = true;
    return &c->fig;
}

void
obxt_check_assert(struct obxt_check *c, unsigned flags)
{
    const struct obxt_check_figures *f = &c->fig;

    ck_assert_msg(c->ran, "obxt_check_assert before obxt_check_run");
    obxt_check_print(c);
    ck_assert_msg(f->events > 0, "%s: no committed events to check", c->name);
    ck_assert_msg(f->missing == 0, "%s: %zu of %zu committed events lost:%s", c->name, f->missing,
                  f->events, c->problems);
    ck_assert_msg(f->reordered == 0, "%s: %zu events out of commit order:%s", c->name, f->reordered,
                  c->problems);
    ck_assert_msg(f->unknown == 0, "%s: %zu records that are no committed event:%s", c->name,
                  f->unknown, c->problems);
    if (flags & OBXT_CHECK_NO_DUPLICATES)
        ck_assert_msg(f->duplicates == 0, "%s: %zu duplicates after an orderly stop", c->name,
                      f->duplicates);
    if (f->dup_bound >= 0)
        ck_assert_msg((long long)f->duplicates <= f->dup_bound,
                      "%s: %zu duplicates, more than the %lld events unconfirmed at the faults",
                      c->name, f->duplicates, f->dup_bound);
}

const struct obxt_check_figures *
obxt_check_stack(struct obxt_check *c, struct obxt_stack *s, int timeout_ms)
{
    const char *const topics[] = {OBXT_FAULT_TOPIC, NULL};
    char *wal = obxt_stack_wal_lsn(s);
    const struct obxt_check_figures *fig;
    struct obxt_records *recs;
    long long start = obxt_proc_now_ms();
    size_t n;

    ck_assert_msg(obxt_stack_wait_confirmed(s, OBXT_SLOT, wal, timeout_ms),
                  "%s: the slot did not confirm %s within %d ms", c->name, wal, timeout_ms);
    free(wal);
    n = obxt_check_expect_written(c, s->pg);
    recs = obxt_consume(obxt_stack_bootstrap(s), topics, n, timeout_ms);
    fprintf(stderr, "%s: read %zu records back in %.1f s\n", c->name, recs->count,
            (double)(obxt_proc_now_ms() - start) / 1000.0);
    fig = obxt_check_run(c, recs, OBXT_FAULT_TOPIC);
    obxt_records_free(recs);
    return fig;
}
