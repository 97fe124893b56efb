/* loadgen.c - bench-loadgen: writes outbox rows at a steady rate, one row per transaction, for
 * the benchmark's latency runs.
 *
 *   bench-loadgen -d CONNINFO -r RATE -s SECONDS [-n FIRST] [-a AGGREGATETYPE] [-t TICK_US]
 *
 * Row k (k = 0, 1, ...) is due at start + k / RATE and is sent at the first tick (every TICK_US
 * microseconds, default 1000) at or after that, whatever happened to the rows before it:
 * libpq's pipeline mode keeps sending while earlier commits are still on their way, so a slow
 * commit delays its own row only. Each INSERT is its own implicit transaction (a Sync after
 * each), so the rows of one tick are separate commits that reach the server together, as
 * concurrent requests of a service would; the tick keeps the generator's own wake-ups (and its
 * CPU, on a machine it shares with everything it measures) to one per tick. -t 0 sends every
 * row at its due time. Payload {"n": FIRST + k, "note": ...}, the shape of the drain
 * workloads.
 *
 * Prints "sent N rows in S s (R rows/s), max lag L ms" on stdout: the lag is how late the
 * latest-sent row went out after its due time, the tick included (a generator that cannot keep
 * up says so).
 * Exit status 0, 1 on an error, 2 on a usage error. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define PROG "bench-loadgen"

static const char insert_sql[] =
    "INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) "
    "VALUES ($2, 'agg-' || ($1::bigint % 1000), 'BenchEvent', "
    "jsonb_build_object('n', $1::bigint, 'note', 'benchmark event payload of moderate size'))";

struct loadgen {
    PGconn *conn;
    long long rate, total, first;
    const char *aggtype;
    long long sent, synced;
    int64_t start_ns, max_lag_ns, tick_ns;
};

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
due_ns(const struct loadgen *g, long long k)
{
    return g->start_ns + (int64_t)(k * 1000000000LL / g->rate);
}

static int
parse_args(int argc, char **argv, struct loadgen *g, const char **conninfo)
{
    long long seconds = 0;
    int c;

    g->aggtype = "bench";
    g->tick_ns = 1000000;
    while ((c = getopt(argc, argv, "d:r:s:n:a:t:")) != -1) {
        if (c == 'd')
            *conninfo = optarg;
        else if (c == 'r')
            g->rate = atoll(optarg);
        else if (c == 's')
            seconds = atoll(optarg);
        else if (c == 'n')
            g->first = atoll(optarg);
        else if (c == 'a')
            g->aggtype = optarg;
        else if (c == 't')
            g->tick_ns = atoll(optarg) * 1000;
        else
            break;
    }
    if (*conninfo == NULL || g->rate <= 0 || seconds <= 0 || g->tick_ns < 0 || optind != argc) {
        fprintf(stderr, "usage: " PROG " -d CONNINFO -r RATE -s SECONDS [-n FIRST] "
                        "[-a AGGREGATETYPE] [-t TICK_US]\n");
        return 2;
    }
    g->total = g->rate * seconds;
    return 0;
}

/* Queues the rows that are due now. */
static bool
send_due(struct loadgen *g)
{
    int64_t now = now_ns();

    while (g->sent < g->total && due_ns(g, g->sent) <= now) {
        char n[32];
        const char *params[2] = {n, g->aggtype};

        snprintf(n, sizeof(n), "%lld", g->first + g->sent);
        if (!PQsendQueryPrepared(g->conn, "ins", 2, params, NULL, NULL, 0) ||
            !PQpipelineSync(g->conn)) {
            fprintf(stderr, PROG ": send: %s", PQerrorMessage(g->conn));
            return false;
        }
        if (now - due_ns(g, g->sent) > g->max_lag_ns)
            g->max_lag_ns = now - due_ns(g, g->sent);
        g->sent++;
    }
    return true;
}

/* Reads every result that has arrived; counts the Syncs (one per row). */
static bool
read_results(struct loadgen *g)
{
    if (!PQconsumeInput(g->conn)) {
        fprintf(stderr, PROG ": %s", PQerrorMessage(g->conn));
        return false;
    }
    while (g->synced < g->sent && !PQisBusy(g->conn)) {
        PGresult *res = PQgetResult(g->conn);
        ExecStatusType st;

        if (res == NULL)
            continue; /* the end of one query's results */
        st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC)
            g->synced++;
        else if (st != PGRES_COMMAND_OK) {
            fprintf(stderr, PROG ": insert: %s", PQresultErrorMessage(res));
            PQclear(res);
            return false;
        }
        PQclear(res);
    }
    return true;
}

/* When the next row goes out: its due time, rounded up to the next tick. */
static int64_t
send_ns(const struct loadgen *g, long long k)
{
    int64_t due = due_ns(g, k) - g->start_ns;

    if (g->tick_ns > 0)
        due = (due + g->tick_ns - 1) / g->tick_ns * g->tick_ns;
    return g->start_ns + due;
}

/* Waits for the next tick with a due row (or, once every row is sent, for results), and for the
 * socket to take more while output is pending. Results that arrive before the tick wait in the
 * socket: reading them as they come would wake the generator once per commit. */
static void
wait_io(struct loadgen *g, int flushing)
{
    bool sending = g->sent < g->total;
    int64_t wait = sending ? send_ns(g, g->sent) - now_ns() : 100000000;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = wait > 0 ? (long)wait : 0};
    struct pollfd pfd = {
        PQsocket(g->conn),
        (short)((sending && g->tick_ns > 0 ? 0 : POLLIN) | (flushing ? POLLOUT : 0)), 0};

    if (wait > 100000000)
        ts.tv_nsec = 100000000;
    if (wait > 0)
        ppoll(&pfd, 1, &ts, NULL);
}

static int
run(struct loadgen *g)
{
    PGresult *res = PQprepare(g->conn, "ins", insert_sql, 2, NULL);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, PROG ": prepare: %s", PQerrorMessage(g->conn));
        PQclear(res);
        return 1;
    }
    PQclear(res);
    if (!PQenterPipelineMode(g->conn) || PQsetnonblocking(g->conn, 1) != 0) {
        fprintf(stderr, PROG ": pipeline mode: %s", PQerrorMessage(g->conn));
        return 1;
    }
    g->start_ns = now_ns();
    while (g->synced < g->total) {
        int flushing;

        if (!send_due(g) || (flushing = PQflush(g->conn)) < 0 || !read_results(g))
            return 1;
        wait_io(g, flushing);
    }
    printf("sent %lld rows in %.3f s (%.0f rows/s), max lag %.1f ms\n", g->sent,
           (double)(now_ns() - g->start_ns) / 1e9,
           (double)g->sent * 1e9 / (double)(now_ns() - g->start_ns), (double)g->max_lag_ns / 1e6);
    return 0;
}

int
main(int argc, char **argv)
{
    struct loadgen g = {0};
    const char *conninfo = NULL;
    int rc = parse_args(argc, argv, &g, &conninfo);

    if (rc != 0)
        return rc;
    g.conn = PQconnectdb(conninfo);
    if (PQstatus(g.conn) != CONNECTION_OK) {
        fprintf(stderr, PROG ": connect: %s", PQerrorMessage(g.conn));
        PQfinish(g.conn);
        return 1;
    }
    rc = run(&g);
    PQfinish(g.conn);
    return rc;
}
