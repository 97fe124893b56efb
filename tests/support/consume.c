/* consume.c - obx-consume: reads back every record of the named topics from the beginning of
 * every partition, as a real Kafka consumer sees them, and prints one JSON object per record per
 * line. Used by the demo script, the benchmarks and by people checking what outboxd published.
 *
 * Usage: obx-consume -b BOOTSTRAP -t TOPIC [-t TOPIC]... [-n COUNT] [-T TIMEOUT_MS] [-i IDLE_MS]
 *                    [-X key=value]...
 *
 * Each line: {"topic": ..., "partition": ..., "offset": ..., "timestamp": ..., "key": ...,
 * "value": ..., "headers": [[name, value], ...]}. Bytes that are valid UTF-8 print as a JSON
 * string, other bytes as {"base64": "..."}, a null key/value/header value as null.
 *
 * Partitions are assigned by hand (no consumer group membership, nothing committed); a topic
 * that does not exist yet is looked for again until the timeout. Stops at TIMEOUT_MS, or IDLE_MS
 * after the last record once COUNT records were read (without -n: once any record was read), so
 * duplicates that follow the expected records still show. Exit status: 0 when COUNT records (or,
 * without -n, at least one) were read, 1 otherwise, 2 on a usage error. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#define PROG "obx-consume"
#define MAX_TOPICS 64
#define MAX_XOPTS 64
#define POLL_MS 100
#define METADATA_EVERY_MS 250

struct consume_opts {
    const char *bootstrap;
    const char *topics[MAX_TOPICS];
    int ntopics;
    long count; /* -1: not given */
    long timeout_ms;
    long idle_ms;
    const char *xopts[MAX_XOPTS]; /* key=value for librdkafka */
    int nxopts;
};

struct consumer {
    rd_kafka_t *rk;
    const struct consume_opts *opts;
    bool assigned[MAX_TOPICS]; /* topic found and its partitions assigned */
    long nread;
    char last_error[512]; /* the latest client error, for the final message */
};

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: " PROG " -b BOOTSTRAP -t TOPIC [-t TOPIC]... [-n COUNT] [-T TIMEOUT_MS]\n"
                 "                   [-i IDLE_MS] [-X key=value]...\n"
                 "  -b  bootstrap servers (host:port,...)\n"
                 "  -t  topic to read from the beginning (repeatable; waited for if missing)\n"
                 "  -n  records expected: exit 0 once read, 1 if the timeout comes first\n"
                 "  -T  give up after this many ms (default 30000)\n"
                 "  -i  stop this many ms after the last record once done (default 1000)\n"
                 "  -X  librdkafka consumer property (repeatable)\n");
}

/* Parses a non-negative decimal long; false on garbage. */
static bool
parse_long(const char *s, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(s, &end, 10);
    return errno == 0 && *s != '\0' && *end == '\0' && *out >= 0;
}

/* Adds topic to opts unless it is there already. */
static void
add_topic(struct consume_opts *opts, const char *topic)
{
    for (int i = 0; i < opts->ntopics; i++)
        if (strcmp(opts->topics[i], topic) == 0)
            return;
    opts->topics[opts->ntopics++] = topic;
}

/* Fills opts from argv. Returns 0, or 2 (the exit status) after printing why to stderr. */
static int
parse_args(int argc, char **argv, struct consume_opts *opts)
{
    int c;

    *opts = (struct consume_opts){.count = -1, .timeout_ms = 30000, .idle_ms = 1000};
    while ((c = getopt(argc, argv, "b:t:n:T:i:X:h")) != -1) {
        bool ok = true;

        if (c == 'b')
            opts->bootstrap = optarg;
        else if (c == 't' && opts->ntopics < MAX_TOPICS)
            add_topic(opts, optarg);
        else if (c == 'n')
            ok = parse_long(optarg, &opts->count);
        else if (c == 'T')
            ok = parse_long(optarg, &opts->timeout_ms);
        else if (c == 'i')
            ok = parse_long(optarg, &opts->idle_ms);
        else if (c == 'X' && opts->nxopts < MAX_XOPTS && strchr(optarg, '=') != NULL)
            opts->xopts[opts->nxopts++] = optarg;
        else if (c == 'h') {
            usage(stdout);
            exit(0);
        } else
            ok = false;
        if (!ok) {
            fprintf(stderr, PROG ": bad option -%c%s%s\n", c == '?' ? optopt : c, optarg ? " " : "",
                    optarg ? optarg : "");
            usage(stderr);
            return 2;
        }
    }
    if (opts->bootstrap == NULL || opts->ntopics == 0 || optind != argc) {
        fprintf(stderr, PROG ": need -b BOOTSTRAP and at least one -t TOPIC, and no other "
                             "arguments\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* librdkafka's own log: only critical lines (connection errors arrive through error_cb). */
static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 2)
        fprintf(stderr, PROG ": librdkafka %s: %s\n", fac, buf);
}

/* Client errors: a broker that is down now may be up later, so transient ones are only kept for
 * the final message; fatal ones are printed. */
static void
error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct consumer *c = opaque;

    snprintf(c->last_error, sizeof(c->last_error), "%s", reason);
    if (rd_kafka_fatal_error(rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fprintf(stderr, PROG ": fatal: %s\n", reason);
}

/* Sets one librdkafka property; prints why and returns false when refused. */
static bool
conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK)
        return true;
    fprintf(stderr, PROG ": librdkafka property %s=%s: %s\n", key, value, errstr);
    return false;
}

/* Creates the consumer. A group.id is required by librdkafka's assign(), but no group is joined
 * and no offset is committed. Returns NULL after printing why. */
static rd_kafka_t *
consumer_new(struct consumer *c)
{
    const struct consume_opts *opts = c->opts;
    char errstr[512], group[64];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    bool ok;

    snprintf(group, sizeof(group), "obx-consume-%ld", (long)getpid());
    ok = conf_set(conf, "bootstrap.servers", opts->bootstrap) &&
         conf_set(conf, "group.id", group) && conf_set(conf, "enable.auto.commit", "false") &&
         conf_set(conf, "enable.auto.offset.store", "false") &&
         conf_set(conf, "fetch.wait.max.ms", "100") &&
         conf_set(conf, "auto.offset.reset", "earliest");
    for (int i = 0; ok && i < opts->nxopts; i++) {
        char kv[512];
        char *eq;

        snprintf(kv, sizeof(kv), "%s", opts->xopts[i]);
        eq = strchr(kv, '=');
        *eq = '\0';
        ok = conf_set(conf, kv, eq + 1);
    }
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, c);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, PROG ": cannot create the consumer: %s\n", errstr);
    }
    return rk;
}

/* Adds every partition of the topic described by mt to the assignment, from the beginning.
 * Returns 0, or -1 after printing why. */
static int
consumer_assign_topic(rd_kafka_t *rk, const rd_kafka_metadata_topic_t *mt)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(mt->partition_cnt);
    rd_kafka_error_t *error;

    for (int i = 0; i < mt->partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, mt->topic, mt->partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    error = rd_kafka_incremental_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (error == NULL)
        return 0;
    fprintf(stderr, PROG ": cannot assign the partitions of %s: %s\n", mt->topic,
            rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    return -1;
}

/* Assigns every requested topic that exists now and was not assigned yet. Asks for the metadata
 * of all topics: asking for one by name could create it. Returns -1 on a hard error, else the
 * number of topics still missing. */
static int
consumer_assign_missing(struct consumer *c)
{
    const struct rd_kafka_metadata *md;
    int missing = 0;

    if (rd_kafka_metadata(c->rk, 1, NULL, &md, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return c->opts->ntopics; /* broker unreachable for now: try again later */
    for (int i = 0; i < c->opts->ntopics; i++) {
        for (int t = 0; !c->assigned[i] && t < md->topic_cnt; t++) {
            const rd_kafka_metadata_topic_t *mt = &md->topics[t];

            if (strcmp(mt->topic, c->opts->topics[i]) != 0 || mt->err != 0 ||
                mt->partition_cnt == 0)
                continue;
            if (consumer_assign_topic(c->rk, mt) != 0) {
                rd_kafka_metadata_destroy(md);
                return -1;
            }
            c->assigned[i] = true;
        }
        missing += !c->assigned[i];
    }
    rd_kafka_metadata_destroy(md);
    return missing;
}

/* Encodes len bytes as standard base64 into a new string (free()). */
static char *
base64_encode(const unsigned char *p, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    char *o = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;

        v |= i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0;
        v |= i + 2 < len ? p[i + 2] : 0;
        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* A JSON value for bytes: null, a string when valid UTF-8, else {"base64": "..."}. */
static json_t *
json_bytes(const void *p, size_t len)
{
    json_t *j;
    char *b64;

    if (p == NULL)
        return json_null();
    j = json_stringn(p, len);
    if (j != NULL)
        return j;
    b64 = base64_encode(p, len);
    j = json_pack("{s:s}", "base64", b64 ? b64 : "");
    free(b64);
    return j;
}

/* The headers of msg as [[name, value], ...]. */
static json_t *
json_headers(const rd_kafka_message_t *msg)
{
    json_t *arr = json_array();
    rd_kafka_headers_t *hdrs;
    const char *name;
    const void *val;
    size_t size;

    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return arr;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++)
        json_array_append_new(arr, json_pack("[s,o]", name, json_bytes(val, size)));
    return arr;
}

/* Prints msg as one JSON line. Returns 0, or -1 when stdout failed. */
static int
print_record(const rd_kafka_message_t *msg)
{
    json_t *rec = json_pack("{s:s,s:i,s:I,s:I,s:o,s:o,s:o}", "topic", rd_kafka_topic_name(msg->rkt),
                            "partition", (int)msg->partition, "offset", (json_int_t)msg->offset,
                            "timestamp", (json_int_t)rd_kafka_message_timestamp(msg, NULL), "key",
                            json_bytes(msg->key, msg->key_len), "value",
                            json_bytes(msg->payload, msg->len), "headers", json_headers(msg));
    char *line = rec ? json_dumps(rec, 0) : NULL;
    int ret = -1;

    if (line != NULL && printf("%s\n", line) >= 0 && fflush(stdout) == 0)
        ret = 0;
    free(line);
    json_decref(rec);
    return ret;
}

/* Reads until done (see the top of the file). Returns the exit status. */
static int
consumer_run(struct consumer *c)
{
    const struct consume_opts *o = c->opts;
    int64_t start = now_ms(), next_md = start, last = start;
    int missing = o->ntopics;

    while (!stop_requested && now_ms() - start < o->timeout_ms) {
        rd_kafka_message_t *msg;
        bool done = o->count >= 0 ? c->nread >= o->count : c->nread > 0;

        if (done && now_ms() - last >= o->idle_ms)
            break;
        if (missing > 0 && now_ms() >= next_md) {
            missing = consumer_assign_missing(c);
            if (missing < 0)
                return 1;
            next_md = now_ms() + METADATA_EVERY_MS;
        }
        msg = rd_kafka_consumer_poll(c->rk, POLL_MS);
        if (msg == NULL)
            continue;
        if (msg->err == 0) {
            c->nread++;
            last = now_ms();
            if (print_record(msg) != 0) {
                rd_kafka_message_destroy(msg);
                return 1;
            }
        } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, PROG ": %s\n", rd_kafka_message_errstr(msg));
        }
        rd_kafka_message_destroy(msg);
    }
    return o->count >= 0 ? (c->nread >= o->count ? 0 : 1) : (c->nread > 0 ? 0 : 1);
}

/* Says on stderr what was missing when the run failed. */
static void
report_shortfall(const struct consumer *c)
{
    const struct consume_opts *o = c->opts;

    if (o->count >= 0)
        fprintf(stderr, PROG ": read %ld of %ld records", c->nread, o->count);
    else
        fprintf(stderr, PROG ": read no record");
    fprintf(stderr, " within %ld ms from %s", o->timeout_ms, o->bootstrap);
    for (int i = 0, first = 1; i < o->ntopics; i++) {
        if (!c->assigned[i]) {
            fprintf(stderr, "%s%s", first ? "; topics never found: " : ", ", o->topics[i]);
            first = 0;
        }
    }
    if (c->last_error[0] != '\0')
        fprintf(stderr, "; last client error: %s", c->last_error);
    fprintf(stderr, "\n");
}

int
main(int argc, char **argv)
{
    struct consume_opts opts;
    struct consumer c = {0};
    int status;

    if (parse_args(argc, argv, &opts) != 0)
        return 2;
    c.opts = &opts;
    c.rk = consumer_new(&c);
    if (c.rk == NULL)
        return 2;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    rd_kafka_poll_set_consumer(c.rk);
    status = consumer_run(&c);
    if (status != 0 && !stop_requested)
        report_shortfall(&c);
    rd_kafka_consumer_close(c.rk);
    rd_kafka_destroy(c.rk);
    return status;
}
