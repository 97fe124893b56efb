/* main.c - outboxd: CLI, signals, wiring and shutdown order.
 *
 * Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 on a fatal runtime error (server state
 * that needs an operator, permanent delivery failure with outbox.invalid.behavior = fail), 2 on a
 * configuration error (before touching PostgreSQL or Kafka). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/log.h"
#include "outboxd/pipeline.h"
#include "outboxd/repl.h"

#ifndef OUTBOXD_VERSION
#define OUTBOXD_VERSION "0.1.0"
#endif

#define EXIT_FATAL 1
#define EXIT_CONFIG 2

extern char **environ;

static volatile sig_atomic_t stop_requested;

static void
on_signal(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: outboxd [-c FILE] [-X key=value]... [--dump-config]\n"
                 "\n"
                 "Relays rows inserted into a PostgreSQL outbox table to Kafka, from a logical\n"
                 "replication slot (pgoutput), at least once and in commit order per key.\n"
                 "\n"
                 "  -c, --config FILE     read `key = value` settings from FILE\n"
                 "  -X key=value          set one key (overrides file and environment)\n"
                 "      --dump-config     print the effective settings (secrets redacted), exit\n"
                 "  -h, --help            show this help and every configuration key\n"
                 "  -V, --version         print the version\n"
                 "\n"
                 "Precedence: defaults < FILE < environment (OUTBOXD_KEY_NAME) < -X.\n"
                 "\n");
}

struct cli {
    const char *file;
    const char **pairs; /* -X arguments, in order */
    int npairs;
    bool dump;
};

/* Parses argv into cli. Returns -1 to exit 0 (help/version), 0 to go on, or EXIT_CONFIG. */
static int
parse_args(int argc, char **argv, struct cli *cli)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"dump-config", no_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    cli->pairs = calloc((size_t)argc, sizeof(*cli->pairs));
    if (cli->pairs == NULL)
        return EXIT_CONFIG;
    while ((opt = getopt_long(argc, argv, "c:X:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cli->file = optarg;
            break;
        case 'X':
            cli->pairs[cli->npairs++] = optarg;
            break;
        case 'D':
            cli->dump = true;
            break;
        case 'h':
            usage(stdout);
            obx_config_print_help(stdout);
            return -1;
        case 'V':
            printf("outboxd %s\n", OUTBOXD_VERSION);
            return -1;
        default:
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "outboxd: unexpected argument \"%s\"\n", argv[optind]);
        return EXIT_CONFIG;
    }
    return 0;
}

/* Applies the layers in order: file < environment < -X, then cross-key validation. */
static int
load_config(struct obx_config *cfg, const struct cli *cli, struct obx_error *err)
{
    int rc;

    if (cli->file != NULL && (rc = obx_config_load_file(cfg, cli->file, err)) != 0)
        return rc;
    if ((rc = obx_config_load_env(cfg, environ, err)) != 0)
        return rc;
    for (int i = 0; i < cli->npairs; i++)
        if ((rc = obx_config_set_pair(cfg, cli->pairs[i], "-X", err)) != 0)
            return rc;
    return obx_config_validate(cfg, err);
}

static int
setup_logging(const struct obx_config *cfg, struct obx_error *err)
{
    enum obx_log_level level;

    if (obx_log_parse_level(obx_config_str(cfg, "log.level"), &level) != 0)
        return obx_error_set(err, OBX_ERR_CONFIG, true, "log.level: unknown level");
    obx_log_set_level(level);
    obx_log_set_json(strcmp(obx_config_str(cfg, "log.format"), "json") == 0);
    return 0;
}

static void
install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR and the loop stops */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Streams until stopped or a fatal error; returns the exit status. */
static int
run(const struct obx_config *cfg)
{
    struct obx_error err = {0};
    struct obx_pipeline *pipeline = NULL;
    struct obx_repl *repl = NULL;
    struct obx_repl_handler handler;
    struct obx_pipeline_stats st;
    int status = EXIT_FATAL;
    int rc;

    pipeline = obx_pipeline_new(cfg, &err);
    if (pipeline == NULL) {
        status = err.code == OBX_ERR_CONFIG ? EXIT_CONFIG : EXIT_FATAL;
        goto out;
    }
    repl = obx_repl_new(cfg, &err);
    if (repl == NULL) {
        status = err.code == OBX_ERR_CONFIG ? EXIT_CONFIG : EXIT_FATAL;
        goto out;
    }
    obx_pipeline_handler(pipeline, &handler);
    obx_log_info("main", "outboxd %s starting", OUTBOXD_VERSION);
    rc = obx_repl_run(repl, &handler, &stop_requested, &err);
    obx_pipeline_get_stats(pipeline, &st);
    obx_log_info("main",
                 "stopped: %llu events sent, %llu acknowledged, %llu dead-lettered, %llu "
                 "skipped, confirmed %X/%X",
                 (unsigned long long)st.events_sent, (unsigned long long)st.events_acked,
                 (unsigned long long)st.events_dlq, (unsigned long long)st.events_skipped,
                 (unsigned)(st.confirmable_lsn >> 32), (unsigned)st.confirmable_lsn);
    status = rc == 0 ? EXIT_SUCCESS : EXIT_FATAL;
out:
    if (status != EXIT_SUCCESS)
        obx_log_error("main", "%s", err.msg[0] != '\0' ? err.msg : obx_error_name(err.code));
    obx_repl_free(repl);
    obx_pipeline_free(pipeline);
    return status;
}

int
main(int argc, char **argv)
{
    struct cli cli = {0};
    struct obx_error err = {0};
    struct obx_config *cfg = NULL;
    int status;

    status = parse_args(argc, argv, &cli);
    if (status != 0) {
        status = status < 0 ? EXIT_SUCCESS : status;
        goto out;
    }
    cfg = obx_config_new();
    if (cfg == NULL || load_config(cfg, &cli, &err) != 0 || setup_logging(cfg, &err) != 0) {
        fprintf(stderr, "outboxd: %s\n", cfg == NULL ? "out of memory" : err.msg);
        status = EXIT_CONFIG;
        goto out;
    }
    if (cli.dump) {
        obx_config_dump(cfg, stdout);
        goto out;
    }
    install_signals();
    status = run(cfg);
out:
    obx_config_free(cfg);
    free(cli.pairs);
    return status;
}
