/* kafka_broker.c - kafka-broker: a Kafka-protocol server on 127.0.0.1 for tests, the demo and the
 * benchmarks, built on librdkafka's mock cluster (rdkafka_mock.h).
 *
 * Usage: kafka-broker [--brokers N] [--partitions P] [--topic NAME[:P]]... [--ignore-eof]
 *
 * Prints the bootstrap list (host:port,...) as the first line on stdout, then reads control
 * commands from stdin, one per line, and answers each with exactly one line, "ok" or
 * "error <why>":
 *
 *   down <id|all>            disconnect the broker(s) and refuse new connections
 *   up <id|all>              accept connections again
 *   rtt <id|all> <ms>        delay every response by ms milliseconds (0 to stop)
 *   errors <n> [<error>]     fail the next n Produce requests with <error> (a Kafka error name
 *                            such as NOT_LEADER_FOR_PARTITION, or its number; default
 *                            NOT_LEADER_FOR_PARTITION); nothing of a failed request is written
 *   topic <name> [<p>]       create a topic with p partitions (default: --partitions)
 *   brokers                  answers "ok <id,id,...>"
 *
 * Broker ids are 1..N. Topics a client asks for are created on first use with the mock's fixed
 * 4 partitions (librdkafka 2.0.2 has no setting for that); use --topic or "topic" to choose the
 * count. Partition p of a topic created here is led by broker (p mod N) + 1, as a cluster
 * spreads its leaders (the mock would pick each leader at random, so which broker threads a
 * client keeps busy, and what it costs, would change from run to run). Each partition keeps at
 * most 5 MB / 100000 batches: older batches are dropped.
 * Exits 0 on stdin EOF (unless --ignore-eof, for scripts that run it in the background), SIGTERM
 * or SIGINT, and dies with its parent (PR_SET_PDEATHSIG). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define PROG "kafka-broker"
#define LINE_MAX_LEN 1024
#define MAX_TOPICS 64
#define API_KEY_PRODUCE 0 /* RD_KAFKAP_Produce: the Kafka protocol's ProduceRequest */
#define MAX_INJECTED_ERRORS 100000

struct broker_opts {
    int nbrokers;
    int partitions;
    int ntopics;
    bool ignore_eof;                /* --ignore-eof: run until a signal even when stdin ends */
    const char *topics[MAX_TOPICS]; /* NAME or NAME:P, from argv */
};

struct broker {
    rd_kafka_t *rk; /* hosts the mock cluster; never connects anywhere itself */
    rd_kafka_mock_cluster_t *mcluster;
    const struct broker_opts *opts;
};

static void
usage(FILE *out)
{
    fprintf(out, "usage: " PROG " [--brokers N] [--partitions P] [--topic NAME[:P]]... "
                 "[--ignore-eof]\n"
                 "  --brokers N       number of brokers, ids 1..N (default 3)\n"
                 "  --partitions P    partitions of topics created by --topic/topic without a\n"
                 "                    count (default 4, the count of auto-created topics)\n"
                 "  --topic NAME[:P]  create topic NAME before printing the bootstrap list\n"
                 "  --ignore-eof      keep running when stdin ends (stop with SIGTERM/SIGINT)\n"
                 "commands on stdin: down <id|all>, up <id|all>, rtt <id|all> <ms>,\n"
                 "  errors <n> [<error>], topic <name> [<p>], brokers\n");
}

/* Parses a decimal int in [min, max]; returns false on garbage or out of range. */
static bool
parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

/* Fills opts from argv. Returns 0, or 2 (the exit status) after printing why to stderr. */
static int
parse_args(int argc, char **argv, struct broker_opts *opts)
{
    opts->nbrokers = 3;
    opts->partitions = 4;
    opts->ntopics = 0;
    opts->ignore_eof = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(arg, "--brokers") == 0 && parse_int(val, 1, 32, &opts->nbrokers)) {
            i++;
        } else if (strcmp(arg, "--partitions") == 0 && parse_int(val, 1, 1000, &opts->partitions)) {
            i++;
        } else if (strcmp(arg, "--ignore-eof") == 0) {
            opts->ignore_eof = true;
        } else if (strcmp(arg, "--topic") == 0 && val != NULL && opts->ntopics < MAX_TOPICS) {
            opts->topics[opts->ntopics++] = val;
            i++;
        } else {
            fprintf(stderr,
                    PROG ": bad argument '%s'%s%s: --brokers takes 1..32, --partitions 1..1000, "
                         "--topic a name (at most %d)\n",
                    arg, val != NULL ? " followed by " : " (no value)", val != NULL ? val : "",
                    MAX_TOPICS);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* librdkafka log lines of the hosting handle: only real problems, one line each. */
static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 4)
        fprintf(stderr, PROG ": librdkafka %s: %s\n", fac, buf);
}

/* Creates the hosting handle and the mock cluster. Returns 0 or -1 after printing why. */
static int
broker_open(struct broker *b, const struct broker_opts *opts)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    b->opts = opts;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (b->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, PROG ": cannot create the librdkafka handle: %s\n", errstr);
        return -1;
    }
    b->mcluster = rd_kafka_mock_cluster_new(b->rk, opts->nbrokers);
    if (b->mcluster == NULL) {
        fprintf(stderr,
                PROG ": cannot create the mock cluster (%d brokers): are loopback "
                     "ports available?\n",
                opts->nbrokers);
        rd_kafka_destroy(b->rk);
        b->rk = NULL;
        return -1;
    }
    return 0;
}

static void
broker_close(struct broker *b)
{
    if (b->mcluster != NULL)
        rd_kafka_mock_cluster_destroy(b->mcluster);
    if (b->rk != NULL)
        rd_kafka_destroy(b->rk);
    b->mcluster = NULL;
    b->rk = NULL;
}

/* Writes "error <why>" into reply and returns -1. */
static int reply_error(char *reply, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
reply_error(char *reply, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(reply, size, "error ");

    va_start(ap, fmt);
    vsnprintf(reply + n, size - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Creates topic name with partitions partitions. Returns 0, or -1 with reply filled. */
static int
broker_topic_create(struct broker *b, const char *name, int partitions, char *reply, size_t size)
{
    int rf = b->opts->nbrokers < 3 ? b->opts->nbrokers : 3;
    rd_kafka_resp_err_t kerr;

    if (name[0] == '\0' || strlen(name) > 249)
        return reply_error(reply, size, "topic name must be 1..249 characters");
    kerr = rd_kafka_mock_topic_create(b->mcluster, name, partitions, rf);
    for (int p = 0; p < partitions && kerr == RD_KAFKA_RESP_ERR_NO_ERROR; p++)
        kerr = rd_kafka_mock_partition_set_leader(b->mcluster, name, p, p % b->opts->nbrokers + 1);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        return reply_error(reply, size, "cannot create topic %s: %s", name,
                           rd_kafka_err2name(kerr));
    return 0;
}

/* Creates the --topic NAME[:P] topics. Returns 0 or -1 after printing why. */
static int
broker_create_opt_topics(struct broker *b)
{
    char reply[LINE_MAX_LEN];

    for (int i = 0; i < b->opts->ntopics; i++) {
        char name[256];
        const char *spec = b->opts->topics[i];
        const char *colon = strrchr(spec, ':');
        int partitions = b->opts->partitions;

        snprintf(name, sizeof(name), "%.*s", (int)(colon ? colon - spec : (long)strlen(spec)),
                 spec);
        if (colon != NULL && !parse_int(colon + 1, 1, 1000, &partitions)) {
            fprintf(stderr, PROG ": --topic %s: partition count after ':' must be 1..1000\n", spec);
            return -1;
        }
        if (broker_topic_create(b, name, partitions, reply, sizeof(reply)) != 0) {
            fprintf(stderr, PROG ": --topic %s: %s\n", spec, reply + strlen("error "));
            return -1;
        }
    }
    return 0;
}

/* Parses "all" (-1) or a broker id 1..N. Returns 0, or -1 with reply filled. */
static int
parse_broker_id(const struct broker *b, const char *s, int32_t *id, char *reply, size_t size)
{
    int v;

    if (s != NULL && strcmp(s, "all") == 0) {
        *id = -1;
        return 0;
    }
    if (!parse_int(s, 1, b->opts->nbrokers, &v))
        return reply_error(reply, size, "broker must be 'all' or an id 1..%d, not '%s'",
                           b->opts->nbrokers, s ? s : "");
    *id = v;
    return 0;
}

/* Resolves a Kafka error given as a name (NOT_LEADER_FOR_PARTITION, with or without the
 * RD_KAFKA_RESP_ERR_ prefix, any case) or a number. Returns 0, or -1 with reply filled. */
static int
parse_kafka_error(const char *s, rd_kafka_resp_err_t *out, char *reply, size_t size)
{
    const struct rd_kafka_err_desc *descs;
    size_t cnt;
    int num;

    if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
        s += 18;
    rd_kafka_get_err_descs(&descs, &cnt);
    for (size_t i = 0; i < cnt; i++) {
        if (descs[i].name == NULL)
            continue;
        if (strcasecmp(descs[i].name, s) == 0 ||
            (parse_int(s, INT_MIN, INT_MAX, &num) && num == (int)descs[i].code)) {
            if (descs[i].code == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            *out = descs[i].code;
            return 0;
        }
    }
    return reply_error(reply, size,
                       "unknown Kafka error '%s': give a name such as NOT_LEADER_FOR_PARTITION "
                       "or REQUEST_TIMED_OUT, or its number",
                       s);
}

/* errors <n> [<error>] */
static int
cmd_errors(struct broker *b, char **argv, int argc, char *reply, size_t size)
{
    rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION;
    rd_kafka_resp_err_t *errs;
    int n;

    if (argc < 2 || argc > 3 || !parse_int(argv[1], 0, MAX_INJECTED_ERRORS, &n))
        return reply_error(reply, size, "usage: errors <n 0..%d> [<kafka error name or number>]",
                           MAX_INJECTED_ERRORS);
    if (argc == 3 && parse_kafka_error(argv[2], &kerr, reply, size) != 0)
        return -1;
    if (n == 0)
        return 0;
    errs = malloc(sizeof(*errs) * (size_t)n);
    if (errs == NULL)
        return reply_error(reply, size, "out of memory");
    for (int i = 0; i < n; i++)
        errs[i] = kerr;
    rd_kafka_mock_push_request_errors_array(b->mcluster, API_KEY_PRODUCE, (size_t)n, errs);
    free(errs);
    return 0;
}

/* down <id|all>, up <id|all>, rtt <id|all> <ms> */
static int
cmd_broker_state(struct broker *b, char **argv, int argc, char *reply, size_t size)
{
    bool is_rtt = strcmp(argv[0], "rtt") == 0;
    rd_kafka_resp_err_t kerr;
    int32_t id = -1;
    int ms = 0;

    if (argc != (is_rtt ? 3 : 2))
        return reply_error(reply, size, "usage: %s <broker id|all>%s", argv[0],
                           is_rtt ? " <ms>" : "");
    if (parse_broker_id(b, argv[1], &id, reply, size) != 0)
        return -1;
    if (is_rtt && !parse_int(argv[2], 0, 3600000, &ms))
        return reply_error(reply, size, "rtt must be 0..3600000 ms, not '%s'", argv[2]);
    if (is_rtt)
        kerr = rd_kafka_mock_broker_set_rtt(b->mcluster, id, ms);
    else if (strcmp(argv[0], "down") == 0)
        kerr = rd_kafka_mock_broker_set_down(b->mcluster, id);
    else
        kerr = rd_kafka_mock_broker_set_up(b->mcluster, id);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        return reply_error(reply, size, "%s %s failed: %s", argv[0], argv[1],
                           rd_kafka_err2str(kerr));
    return 0;
}

/* topic <name> [<partitions>] */
static int
cmd_topic(struct broker *b, char **argv, int argc, char *reply, size_t size)
{
    int partitions = b->opts->partitions;

    if (argc < 2 || argc > 3 || (argc == 3 && !parse_int(argv[2], 1, 1000, &partitions)))
        return reply_error(reply, size, "usage: topic <name> [<partitions 1..1000>]");
    return broker_topic_create(b, argv[1], partitions, reply, size);
}

/* brokers: "ok 1,2,3" */
static int
cmd_brokers(struct broker *b, char **argv, int argc, char *reply, size_t size)
{
    size_t off = (size_t)snprintf(reply, size, "ok ");

    if (argc != 1)
        return reply_error(reply, size, "usage: brokers");
    for (int id = 1; id <= b->opts->nbrokers && off < size; id++)
        off += (size_t)snprintf(reply + off, size - off, "%s%d", id > 1 ? "," : "", id);
    return 0;
}

/* Splits line in place at blanks into at most max words. Returns the word count. */
static int
split_words(char *line, char **argv, int max)
{
    int argc = 0;
    char *p = line;

    while (*p != '\0') {
        while (isspace((unsigned char)*p))
            *p++ = '\0';
        if (*p == '\0')
            break;
        if (argc == max)
            return max + 1;
        argv[argc++] = p;
        while (*p != '\0' && !isspace((unsigned char)*p))
            p++;
    }
    return argc;
}

/* Runs one command line and fills reply with the one answer line (without newline). */
static void
broker_command(struct broker *b, char *line, char *reply, size_t size)
{
    static const struct {
        const char *name;
        int (*fn)(struct broker *b, char **argv, int argc, char *reply, size_t size);
    } cmds[] = {
        {"down", cmd_broker_state}, {"up", cmd_broker_state}, {"rtt", cmd_broker_state},
        {"errors", cmd_errors},     {"topic", cmd_topic},     {"brokers", cmd_brokers},
    };
    char *argv[8];
    int argc = split_words(line, argv, 8);

    snprintf(reply, size, "ok");
    if (argc == 0) {
        reply_error(reply, size, "empty command");
        return;
    }
    if (argc > 8) {
        reply_error(reply, size, "too many words");
        return;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(argv[0], cmds[i].name) == 0) {
            cmds[i].fn(b, argv, argc, reply, size);
            return;
        }
    }
    reply_error(reply, size, "unknown command '%s' (down, up, rtt, errors, topic, brokers)",
                argv[0]);
}

/* Answers every complete line in buf[0..*len) and keeps the partial rest. Returns 0, or -1 when
 * stdout is gone. */
static int
broker_serve_lines(struct broker *b, char *buf, size_t *len)
{
    char reply[LINE_MAX_LEN + 128];
    char *start = buf;
    char *nl;

    while ((nl = memchr(start, '\n', *len - (size_t)(start - buf))) != NULL) {
        *nl = '\0';
        if (nl > start && nl[-1] == '\r')
            nl[-1] = '\0';
        broker_command(b, start, reply, sizeof(reply));
        if (printf("%s\n", reply) < 0 || fflush(stdout) != 0)
            return -1;
        start = nl + 1;
    }
    *len -= (size_t)(start - buf);
    memmove(buf, start, *len);
    if (*len == LINE_MAX_LEN) {
        *len = 0;
        if (printf("error line longer than %d bytes\n", LINE_MAX_LEN) < 0 || fflush(stdout) != 0)
            return -1;
    }
    return 0;
}

/* Serves stdin until EOF or a termination signal on sigfd. Returns the exit status. */
static int
broker_run(struct broker *b, int sigfd)
{
    char buf[LINE_MAX_LEN + 1];
    size_t len = 0;
    int in_fd = STDIN_FILENO; /* -1 once stdin ended under --ignore-eof: poll skips it */

    for (;;) {
        struct pollfd pfd[2] = {{.fd = in_fd, .events = POLLIN}, {.fd = sigfd, .events = POLLIN}};
        ssize_t n;

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, PROG ": poll: %s\n", strerror(errno));
            return 1;
        }
        if (pfd[1].revents != 0)
            return 0; /* SIGTERM / SIGINT: orderly exit */
        if (pfd[0].revents == 0)
            continue;
        n = read(STDIN_FILENO, buf + len, LINE_MAX_LEN - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n == 0 && b->opts->ignore_eof) {
            in_fd = -1;
            continue;
        }
        if (n <= 0)
            return n == 0 ? 0 : 1; /* EOF: the parent is done with us */
        len += (size_t)n;
        if (broker_serve_lines(b, buf, &len) != 0)
            return 0; /* nobody reads our answers any more */
    }
}

/* Blocks SIGTERM/SIGINT in every thread (before librdkafka starts any) and returns a signalfd
 * for them, or -1. Also arranges to get SIGTERM when the parent dies. */
static int
signals_setup(void)
{
    sigset_t set;
    pid_t parent = getppid();

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
        return -1;
    return signalfd(-1, &set, SFD_CLOEXEC);
}

int
main(int argc, char **argv)
{
    struct broker_opts opts;
    struct broker b = {0};
    int status = 1;
    int sigfd;

    if (parse_args(argc, argv, &opts) != 0)
        return 2;
    sigfd = signals_setup();
    if (sigfd < 0) {
        fprintf(stderr, PROG ": cannot set up signal handling (or the parent is gone): %s\n",
                strerror(errno));
        return 1;
    }
    if (broker_open(&b, &opts) != 0)
        goto cleanup;
    if (broker_create_opt_topics(&b) != 0)
        goto cleanup;
    if (printf("%s\n", rd_kafka_mock_cluster_bootstraps(b.mcluster)) < 0 || fflush(stdout) != 0)
        goto cleanup;
    status = broker_run(&b, sigfd);
cleanup:
    broker_close(&b);
    close(sigfd);
    return status;
}
