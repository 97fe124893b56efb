/* capture.c - obx-pgcapture: records the raw pgoutput messages of a logical replication slot.
 *
 *   obx-pgcapture -d CONNINFO -S SLOT -P PUBLICATION -o FILE [-V PROTO] [--messages]
 *                 [--streaming] [--two-phase] [--binary] [-e END_LSN] [-t IDLE_MS]
 *
 * Connects with replication=database, runs START_REPLICATION SLOT <slot> LOGICAL 0/0 with the
 * given pgoutput options and writes the payload of every XLogData message to FILE as records of
 * [Int32 big-endian length][payload] (tests/fixtures/README.md). It answers keepalives but never
 * confirms a position, so the slot does not move and a capture can be repeated.
 *
 * It stops when a keepalive reports a walEnd at or past END_LSN (the walsender has then decoded
 * everything before END_LSN and sent it ahead of the keepalive), or after IDLE_MS without any
 * message (default 2000 ms, or 30000 ms with -e). Without -e, the idle stop is the normal end;
 * with -e it is an error (exit 1), so an incomplete fixture never goes unnoticed. Exit status 2
 * for bad arguments. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

/* Seconds between unsolicited status updates (wal_sender_timeout is 60 s by default). */
#define STATUS_INTERVAL_US (10 * 1000000LL)
/* Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01. */
#define PG_EPOCH_OFFSET_US 946684800000000LL

struct options {
    const char *conninfo;
    const char *slot;
    const char *publication;
    const char *output;
    int proto_version;
    bool messages;
    bool streaming;
    bool two_phase;
    bool binary;
    bool has_end_lsn;
    uint64_t end_lsn;
    long idle_ms;
};

struct capture {
    PGconn *conn;
    FILE *out;
    uint64_t nmsgs;
    uint64_t nbytes;
    long long last_status_us;
};

static long long
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static long long
monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void
put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t
get_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void
usage(FILE *to)
{
    fprintf(to, "usage: obx-pgcapture -d CONNINFO -S SLOT -P PUBLICATION -o FILE [-V PROTO]\n"
                "       [--messages] [--streaming] [--two-phase] [--binary]\n"
                "       [-e END_LSN] [-t IDLE_MS]\n");
}

/* Slot and publication names go into the command unquoted: allow plain identifiers only. */
static bool
plain_identifier(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    }
    return true;
}

static bool
parse_lsn(const char *s, uint64_t *lsn)
{
    unsigned hi, lo;
    char tail;

    if (sscanf(s, "%X/%X%c", &hi, &lo, &tail) != 2)
        return false;
    *lsn = (uint64_t)hi << 32 | lo;
    return true;
}

/* Checks the parsed options and fills in the idle timeout default. */
static int
check_options(struct options *o)
{
    if (o->conninfo == NULL || o->slot == NULL || o->publication == NULL || o->output == NULL ||
        o->proto_version < 1 || o->proto_version > 4) {
        usage(stderr);
        return -1;
    }
    if (!plain_identifier(o->slot) || !plain_identifier(o->publication)) {
        fprintf(stderr, "obx-pgcapture: slot and publication must match [a-z0-9_]+\n");
        return -1;
    }
    if (o->idle_ms < 0)
        o->idle_ms = o->has_end_lsn ? 30000 : 2000;
    return 0;
}

static int
parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"messages", no_argument, NULL, 'm'},  {"streaming", no_argument, NULL, 's'},
        {"two-phase", no_argument, NULL, '2'}, {"binary", no_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0},
    };
    int ch;

    *o = (struct options){.proto_version = 1, .idle_ms = -1};
    while ((ch = getopt_long(argc, argv, "d:S:P:o:V:e:t:msh2b", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            o->conninfo = optarg;
            break;
        case 'S':
            o->slot = optarg;
            break;
        case 'P':
            o->publication = optarg;
            break;
        case 'o':
            o->output = optarg;
            break;
        case 'V':
            o->proto_version = atoi(optarg);
            break;
        case 't':
            o->idle_ms = atol(optarg);
            break;
        case 'm':
            o->messages = true;
            break;
        case 's':
            o->streaming = true;
            break;
        case '2':
            o->two_phase = true;
            break;
        case 'b':
            o->binary = true;
            break;
        case 'e':
            if (!parse_lsn(optarg, &o->end_lsn)) {
                fprintf(stderr, "obx-pgcapture: bad LSN \"%s\"\n", optarg);
                return -1;
            }
            o->has_end_lsn = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return -1;
    }
    return check_options(o);
}

static PGconn *
connect_replication(const char *conninfo)
{
    const char *keys[] = {"dbname", "replication", NULL};
    const char *values[] = {conninfo, "database", NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);

    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "obx-pgcapture: connection failed: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static int
start_replication(PGconn *conn, const struct options *o)
{
    char cmd[1024];
    PGresult *res;
    int rc = 0;

    snprintf(cmd, sizeof(cmd),
             "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '%d', "
             "publication_names '%s'%s%s%s%s)",
             o->slot, o->proto_version, o->publication, o->messages ? ", messages 'true'" : "",
             o->streaming ? ", streaming 'on'" : "", o->two_phase ? ", two_phase 'on'" : "",
             o->binary ? ", binary 'true'" : "");
    res = PQexec(conn, cmd);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        fprintf(stderr, "obx-pgcapture: %s failed: %s", cmd, PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* Standby status update 'r'. Reports no position at all: the slot must stay where it is, and a
 * write position behind the walsender keeps it sending keepalives whenever it is idle. */
static int
send_status(struct capture *cap)
{
    uint8_t msg[1 + 8 + 8 + 8 + 8 + 1] = {'r'};

    put_be64(msg + 25, (uint64_t)(now_us() - PG_EPOCH_OFFSET_US));
    if (PQputCopyData(cap->conn, (const char *)msg, sizeof(msg)) != 1 || PQflush(cap->conn) != 0) {
        fprintf(stderr, "obx-pgcapture: sending status: %s", PQerrorMessage(cap->conn));
        return -1;
    }
    cap->last_status_us = now_us();
    return 0;
}

/* XLogData: 'w', Int64 dataStart, Int64 walEnd, Int64 sendTime, then the pgoutput message. */
static int
write_xlogdata(struct capture *cap, const uint8_t *buf, int len)
{
    uint8_t head[4];
    uint32_t n;

    if (len < 25) {
        fprintf(stderr, "obx-pgcapture: short XLogData message (%d bytes)\n", len);
        return -1;
    }
    n = (uint32_t)(len - 25);
    head[0] = (uint8_t)(n >> 24);
    head[1] = (uint8_t)(n >> 16);
    head[2] = (uint8_t)(n >> 8);
    head[3] = (uint8_t)n;
    if (fwrite(head, 1, 4, cap->out) != 4 || fwrite(buf + 25, 1, n, cap->out) != n) {
        fprintf(stderr, "obx-pgcapture: write: %s\n", strerror(errno));
        return -1;
    }
    cap->nmsgs++;
    cap->nbytes += n;
    return 0;
}

/* Handles one CopyData message. Returns 1 when the end LSN was reached, 0 to go on, -1. */
static int
handle_copydata(struct capture *cap, const struct options *o, const uint8_t *buf, int len)
{
    uint64_t wal_end;

    if (len < 1)
        return -1;
    if (buf[0] == 'w')
        return write_xlogdata(cap, buf, len);
    if (buf[0] != 'k' || len != 18) {
        fprintf(stderr, "obx-pgcapture: unexpected CopyData message 0x%02x (%d bytes)\n", buf[0],
                len);
        return -1;
    }
    /* keepalive: 'k', Int64 walEnd, Int64 sendTime, Byte1 replyRequested */
    wal_end = get_be64(buf + 1);
    if (buf[17] != 0 && send_status(cap) != 0)
        return -1;
    return o->has_end_lsn && wal_end >= o->end_lsn ? 1 : 0;
}

/* Waits for the socket to become readable, at most timeout_ms. */
static int
wait_readable(PGconn *conn, long long timeout_ms)
{
    struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};

    if (poll(&pfd, 1, (int)timeout_ms) < 0 && errno != EINTR) {
        fprintf(stderr, "obx-pgcapture: poll: %s\n", strerror(errno));
        return -1;
    }
    if (PQconsumeInput(conn) != 1) {
        fprintf(stderr, "obx-pgcapture: receive: %s", PQerrorMessage(conn));
        return -1;
    }
    return 0;
}

/* Receives until the end LSN or the idle timeout. Returns 0 or -1. */
static int
capture_loop(struct capture *cap, const struct options *o)
{
    long long idle_since = monotonic_ms();

    for (;;) {
        char *buf = NULL;
        int len = PQgetCopyData(cap->conn, &buf, 1);
        long long left = o->idle_ms - (monotonic_ms() - idle_since);

        if (len > 0) {
            int rc = handle_copydata(cap, o, (const uint8_t *)buf, len);

            PQfreemem(buf);
            if (rc != 0)
                return rc > 0 ? 0 : -1;
            idle_since = monotonic_ms();
            continue;
        }
        if (len < 0) {
            fprintf(stderr, "obx-pgcapture: stream ended: %s", PQerrorMessage(cap->conn));
            return -1;
        }
        if (left <= 0) {
            if (!o->has_end_lsn)
                return 0;
            fprintf(stderr, "obx-pgcapture: idle for %ld ms before reaching the end LSN\n",
                    o->idle_ms);
            return -1;
        }
        if (now_us() - cap->last_status_us >= STATUS_INTERVAL_US && send_status(cap) != 0)
            return -1;
        if (wait_readable(cap->conn, left < 1000 ? left : 1000) != 0)
            return -1;
    }
}

int
main(int argc, char **argv)
{
    struct options o;
    struct capture cap = {0};
    int status = 1;

    if (parse_options(argc, argv, &o) != 0)
        return 2;
    cap.conn = connect_replication(o.conninfo);
    if (cap.conn == NULL)
        goto cleanup;
    cap.out = fopen(o.output, "wb");
    if (cap.out == NULL) {
        fprintf(stderr, "obx-pgcapture: %s: %s\n", o.output, strerror(errno));
        goto cleanup;
    }
    if (start_replication(cap.conn, &o) != 0 || capture_loop(&cap, &o) != 0)
        goto cleanup;
    if (fflush(cap.out) != 0) {
        fprintf(stderr, "obx-pgcapture: %s: %s\n", o.output, strerror(errno));
        goto cleanup;
    }
    fprintf(stderr, "obx-pgcapture: %" PRIu64 " messages, %" PRIu64 " payload bytes -> %s\n",
            cap.nmsgs, cap.nbytes, o.output);
    status = 0;
cleanup:
    if (cap.out != NULL && fclose(cap.out) != 0)
        status = 1;
    PQfinish(cap.conn);
    return status;
}
