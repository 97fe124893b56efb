/* poller.c - bench-poller: the polling outbox publisher the blog posts recommend, as the
 * benchmark's point of comparison for outboxd. One process is one worker; run several for
 * several workers.
 *
 *   bench-poller -d CONNINFO -b BOOTSTRAP [-t TABLE] [-l LIMIT] [-w] [-X key=value]...
 *
 * Loop: BEGIN; SELECT seq, id, aggregatetype, aggregateid, payload FROM TABLE WHERE published_at
 * IS NULL ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED; produce each row (topic
 * outbox.event.<aggregatetype>, key aggregateid, value payload, header id: what outboxd sends);
 * flush (wait for every acknowledgement); UPDATE TABLE SET published_at = now() WHERE seq =
 * ANY(...); COMMIT. Stops when the SELECT finds nothing. The producer is configured like
 * outboxd's (idempotent, acks=all, murmur2_random, linger.ms=5), -X overrides.
 *
 * Prints "backend PID" (its PostgreSQL backend) when connected and "done ROWS" when finished;
 * with -w it then waits for stdin EOF before disconnecting, so the caller can read the CPU time
 * of the process and of its backend. Exit status 0, 1 on an error, 2 on a usage error. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "bench_util.h"

#define PROG "bench-poller"
#define MAX_XOPTS 32

struct poller_opts {
    const char *conninfo;
    const char *bootstrap;
    const char *table;
    const char *limit;
    bool wait_eof;
    const char *xopts[MAX_XOPTS];
    int nxopts;
};

struct poller {
    PGconn *conn;
    rd_kafka_t *rk;
    long failed; /* delivery reports with an error since the last flush */
    char *seqs;  /* "{1,2,...}": the batch's seq values for the UPDATE */
    size_t seqs_cap;
};

static void
usage(void)
{
    fprintf(stderr, "usage: " PROG " -d CONNINFO -b BOOTSTRAP [-t TABLE] [-l LIMIT] [-w] "
                    "[-X key=value]...\n");
}

static int
parse_args(int argc, char **argv, struct poller_opts *o)
{
    int c;

    *o = (struct poller_opts){.table = "public.outbox_poll", .limit = "1000"};
    while ((c = getopt(argc, argv, "d:b:t:l:wX:")) != -1) {
        if (c == 'd')
            o->conninfo = optarg;
        else if (c == 'b')
            o->bootstrap = optarg;
        else if (c == 't')
            o->table = optarg;
        else if (c == 'l')
            o->limit = optarg;
        else if (c == 'w')
            o->wait_eof = true;
        else if (c == 'X' && o->nxopts < MAX_XOPTS && strchr(optarg, '=') != NULL)
            o->xopts[o->nxopts++] = optarg;
        else {
            usage();
            return 2;
        }
    }
    if (o->conninfo == NULL || o->bootstrap == NULL || optind != argc) {
        usage();
        return 2;
    }
    return 0;
}

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct poller *p = opaque;

    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->failed++;
        fprintf(stderr, PROG ": delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
}

/* The producer, configured like outboxd's. Returns NULL after printing why. */
static rd_kafka_t *
producer_new(struct poller *p, const struct poller_opts *o)
{
    static const char *const defaults[][2] = {
        {"client.id", "bench-poller"},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"partitioner", "murmur2_random"},
        {"linger.ms", "5"},
        {"queue.buffering.max.kbytes", "65536"},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    rd_kafka_t *rk;
    bool ok = bench_conf_set(conf, PROG, "bootstrap.servers", o->bootstrap);

    for (size_t i = 0; ok && i < sizeof(defaults) / sizeof(defaults[0]); i++)
        ok = bench_conf_set(conf, PROG, defaults[i][0], defaults[i][1]);
    for (int i = 0; ok && i < o->nxopts; i++) {
        char kv[512], *eq;

        snprintf(kv, sizeof(kv), "%s", o->xopts[i]);
        eq = strchr(kv, '=');
        *eq = '\0';
        ok = bench_conf_set(conf, PROG, kv, eq + 1);
    }
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, PROG ": %s\n", errstr);
    }
    return rk;
}

/* Runs a statement that returns no rows (or any rows, ignored); false after printing why. */
static bool
exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (!ok)
        fprintf(stderr, PROG ": %s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    return ok;
}

static bool
prepare(struct poller *p, const struct poller_opts *o)
{
    char sql[1024];
    PGresult *res;
    bool ok;

    snprintf(sql, sizeof(sql),
             "SELECT seq, id, aggregatetype, aggregateid, payload FROM %s "
             "WHERE published_at IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED",
             o->table, o->limit);
    res = PQprepare(p->conn, "sel", sql, 0, NULL);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (ok) {
        snprintf(sql, sizeof(sql),
                 "UPDATE %s SET published_at = now() WHERE seq = ANY($1::bigint[])", o->table);
        res = PQprepare(p->conn, "upd", sql, 0, NULL);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
    }
    if (!ok)
        fprintf(stderr, PROG ": prepare: %s", PQerrorMessage(p->conn));
    return ok;
}

/* Appends the row's seq to the "{...}" array literal. */
static bool
seqs_add(struct poller *p, size_t *len, const char *seq)
{
    size_t n = strlen(seq);
    char sep;

    if (*len + n + 3 > p->seqs_cap) {
        size_t cap = p->seqs_cap == 0 ? 16384 : p->seqs_cap * 2;
        char *s = realloc(p->seqs, cap);

        if (s == NULL)
            return false;
        p->seqs = s;
        p->seqs_cap = cap;
    }
    sep = *len == 0 ? '{' : ',';
    p->seqs[(*len)++] = sep;
    memcpy(p->seqs + *len, seq, n);
    *len += n;
    p->seqs[*len] = '}';
    p->seqs[*len + 1] = '\0';
    return true;
}

/* Produces one row (seq, id, aggregatetype, aggregateid, payload), waiting while the local queue
 * is full. */
static bool
produce_row(struct poller *p, PGresult *res, int row)
{
    char topic[512];
    const char *id = PQgetvalue(res, row, 1);
    const char *key = PQgetvalue(res, row, 3);
    bool null_value = PQgetisnull(res, row, 4);
    const char *value = null_value ? NULL : PQgetvalue(res, row, 4);
    rd_kafka_resp_err_t err;

    snprintf(topic, sizeof(topic), "outbox.event.%s", PQgetvalue(res, row, 2));
    for (;;) {
        err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)value, null_value ? 0 : (size_t)PQgetlength(res, row, 4)),
            RD_KAFKA_V_HEADER("id", id, -1), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(p->rk, 10);
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fprintf(stderr, PROG ": produce: %s\n", rd_kafka_err2str(err));
    return err == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* One batch in one transaction. Returns the rows published, 0 when none was left, -1 on error. */
static long
poll_batch(struct poller *p)
{
    PGresult *res = NULL;
    size_t len = 0;
    long n = -1;
    int rows;

    if (!exec_ok(p->conn, "BEGIN"))
        return -1;
    res = PQexecPrepared(p->conn, "sel", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, PROG ": select: %s", PQerrorMessage(p->conn));
        goto done;
    }
    rows = PQntuples(res);
    for (int i = 0; i < rows; i++)
        if (!produce_row(p, res, i) || !seqs_add(p, &len, PQgetvalue(res, i, 0)))
            goto done;
    if (rows > 0) {
        const char *params[1] = {p->seqs};
        PGresult *upd;

        p->failed = 0;
        if (rd_kafka_flush(p->rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR || p->failed > 0) {
            fprintf(stderr, PROG ": batch not acknowledged\n");
            goto done;
        }
        upd = PQexecPrepared(p->conn, "upd", 1, params, NULL, NULL, 0);
        if (PQresultStatus(upd) != PGRES_COMMAND_OK || atol(PQcmdTuples(upd)) != rows) {
            fprintf(stderr, PROG ": update: %s", PQerrorMessage(p->conn));
            PQclear(upd);
            goto done;
        }
        PQclear(upd);
    }
    n = rows;
done:
    PQclear(res);
    if (!exec_ok(p->conn, n >= 0 ? "COMMIT" : "ROLLBACK"))
        n = -1;
    return n;
}

static int
poller_run(struct poller *p, const struct poller_opts *o)
{
    long total = 0, n;
    ssize_t got;
    char c;

    printf("backend %d\n", PQbackendPID(p->conn));
    fflush(stdout);
    while ((n = poll_batch(p)) > 0)
        total += n;
    if (n < 0)
        return 1;
    printf("done %ld\n", total);
    fflush(stdout);
    while (o->wait_eof && ((got = read(0, &c, 1)) > 0 || (got < 0 && errno == EINTR)))
        ;
    return 0;
}

int
main(int argc, char **argv)
{
    struct poller_opts o;
    struct poller p = {0};
    int rc = parse_args(argc, argv, &o);

    if (rc != 0)
        return rc;
    rc = 1;
    p.conn = PQconnectdb(o.conninfo);
    if (PQstatus(p.conn) != CONNECTION_OK) {
        fprintf(stderr, PROG ": connect: %s", PQerrorMessage(p.conn));
        goto done;
    }
    if (!prepare(&p, &o) || (p.rk = producer_new(&p, &o)) == NULL)
        goto done;
    rc = poller_run(&p, &o);
done:
    if (p.rk != NULL) {
        rd_kafka_flush(p.rk, 10000);
        rd_kafka_destroy(p.rk);
    }
    PQfinish(p.conn);
    free(p.seqs);
    return rc;
}
