/* repl_probe.c - obx-repl-probe: runs the repl module alone and prints one line per callback.
 *
 *   obx-repl-probe [-v] -X key=value...
 *
 * Lets integration tests exercise the replication connection before (and without) the Kafka
 * pipeline: every committed transaction counts as delivered at once, so the confirmable LSN is
 * the end_lsn of the last commit, or the walEnd of the last keepalive while no transaction is
 * open. Lines on stdout (flushed one by one):
 *   table rel=S.T relid=N ncols=N cols=name:typeoid[:key],...
 *   relation rel=S.T relid=N ncols=N replident=C
 *   begin xid=N final_lsn=X/X
 *   insert rel=S.T ncols=N name=value ... (value <null>, <unchanged> or <binary:N>)
 *   change tag=U|D|T rel=S.T (rel=- for Truncate)
 *   message prefix=P transactional=0|1 lsn=X/X wal_end=X/X content=...
 *   commit commit_lsn=X/X end_lsn=X/X
 *   keepalive wal_end=X/X
 *   disconnect
 *   drain
 *   stopped received=X/X confirmed=X/X status_updates=N reconnects=N
 * SIGTERM or SIGINT: drain, final status update, "stopped ..." line, exit 0. A fatal error:
 * "error: <message>" on stderr and the error code's absolute value as exit status (2 for a bad
 * setting, 5 for a server state that needs an operator). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/log.h"
#include "outboxd/repl.h"

#define LSN_FMT "%X/%X"
#define LSN_ARGS(lsn) (unsigned)((uint64_t)(lsn) >> 32), (unsigned)(lsn)

struct probe {
    uint64_t confirmable;
    bool in_txn;
};

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void
print_cols(const struct obx_relation *rel, const struct obx_pgo_tuple *tup)
{
    for (uint16_t i = 0; i < tup->ncols && i < rel->ncols; i++) {
        const struct obx_pgo_col *col = &tup->cols[i];

        printf(" %s=", rel->cols[i].name);
        if (col->kind == OBX_PGO_COL_NULL)
            fputs("<null>", stdout);
        else if (col->kind == OBX_PGO_COL_UNCHANGED)
            fputs("<unchanged>", stdout);
        else if (col->kind == OBX_PGO_COL_BINARY)
            printf("<binary:%u>", (unsigned)col->len);
        else
            fwrite(col->data, 1, col->len, stdout);
    }
}

static int
on_table(void *ctx, const struct obx_relation *rel, struct obx_error *err)
{
    printf("table rel=%s.%s relid=%u ncols=%u cols=", rel->nspname, rel->relname, rel->relid,
           (unsigned)rel->ncols);
    for (uint16_t i = 0; i < rel->ncols; i++)
        printf("%s%s:%u%s", i > 0 ? "," : "", rel->cols[i].name, rel->cols[i].type_oid,
               rel->cols[i].key ? ":key" : "");
    putchar('\n');
    fflush(stdout);
    return 0;
}

static int
on_begin(void *ctx, const struct obx_pgo_begin *m, struct obx_error *err)
{
    struct probe *p = ctx;

    p->in_txn = true;
    printf("begin xid=%u final_lsn=" LSN_FMT "\n", m->xid, LSN_ARGS(m->final_lsn));
    fflush(stdout);
    return 0;
}

static int
on_commit(void *ctx, const struct obx_pgo_commit *m, struct obx_error *err)
{
    struct probe *p = ctx;

    p->in_txn = false;
    if (m->end_lsn > p->confirmable)
        p->confirmable = m->end_lsn;
    printf("commit commit_lsn=" LSN_FMT " end_lsn=" LSN_FMT "\n", LSN_ARGS(m->commit_lsn),
           LSN_ARGS(m->end_lsn));
    fflush(stdout);
    return 0;
}

static int
on_relation(void *ctx, const struct obx_relation *rel, struct obx_error *err)
{
    printf("relation rel=%s.%s relid=%u ncols=%u replident=%c\n", rel->nspname, rel->relname,
           rel->relid, (unsigned)rel->ncols, rel->replident);
    fflush(stdout);
    return 0;
}

static int
on_insert(void *ctx, const struct obx_relation *rel, const struct obx_pgo_tuple *tup,
          struct obx_error *err)
{
    printf("insert rel=%s.%s ncols=%u", rel->nspname, rel->relname, (unsigned)tup->ncols);
    print_cols(rel, tup);
    putchar('\n');
    fflush(stdout);
    return 0;
}

static int
on_change(void *ctx, uint8_t tag, const struct obx_relation *rel, struct obx_error *err)
{
    if (rel != NULL)
        printf("change tag=%c rel=%s.%s\n", tag, rel->nspname, rel->relname);
    else
        printf("change tag=%c rel=-\n", tag);
    fflush(stdout);
    return 0;
}

static int
on_message(void *ctx, const struct obx_pgo_message *m, uint64_t wal_end, struct obx_error *err)
{
    printf("message prefix=%s transactional=%d lsn=" LSN_FMT " wal_end=" LSN_FMT " content=",
           m->prefix, m->transactional ? 1 : 0, LSN_ARGS(m->lsn), LSN_ARGS(wal_end));
    fwrite(m->content, 1, m->content_len, stdout);
    putchar('\n');
    fflush(stdout);
    return 0;
}

static void
on_keepalive(void *ctx, uint64_t wal_end)
{
    struct probe *p = ctx;

    if (!p->in_txn && wal_end > p->confirmable)
        p->confirmable = wal_end;
    printf("keepalive wal_end=" LSN_FMT "\n", LSN_ARGS(wal_end));
    fflush(stdout);
}

static uint64_t
confirmable(void *ctx)
{
    const struct probe *p = ctx;

    return p->confirmable;
}

static void
on_disconnect(void *ctx)
{
    struct probe *p = ctx;

    p->in_txn = false;
    puts("disconnect");
    fflush(stdout);
}

static int
drain(void *ctx, struct obx_error *err)
{
    puts("drain");
    fflush(stdout);
    return 0;
}

/* Builds the config from -X pairs (and -v). Returns the config or NULL after a message. */
static struct obx_config *
parse_args(int argc, char **argv, struct obx_error *err)
{
    struct obx_config *cfg = obx_config_new();
    int opt;

    if (cfg == NULL) {
        obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
        return NULL;
    }
    while ((opt = getopt(argc, argv, "vX:")) != -1) {
        if (opt == 'v') {
            obx_log_set_level(OBX_LOG_DEBUG);
        } else if (opt != 'X') {
            obx_error_set(err, OBX_ERR_CONFIG, true, "usage: obx-repl-probe [-v] -X key=value...");
            goto fail;
        } else if (obx_config_set_pair(cfg, optarg, "-X", err) < 0) {
            goto fail;
        }
    }
    if (obx_config_validate(cfg, err) == 0)
        return cfg;
fail:
    obx_config_free(cfg);
    return NULL;
}

int
main(int argc, char **argv)
{
    struct probe p = {0};
    struct obx_repl_handler h = {
        .ctx = &p,
        .on_table = on_table,
        .on_begin = on_begin,
        .on_commit = on_commit,
        .on_relation = on_relation,
        .on_insert = on_insert,
        .on_change = on_change,
        .on_message = on_message,
        .on_keepalive = on_keepalive,
        .confirmable = confirmable,
        .on_disconnect = on_disconnect,
        .drain = drain,
        .wakeup_fd = -1,
    };
    struct sigaction sa = {.sa_handler = on_signal};
    struct obx_error err = {0};
    struct obx_repl_stats st;
    struct obx_config *cfg = parse_args(argc, argv, &err);
    struct obx_repl *r = cfg != NULL ? obx_repl_new(cfg, &err) : NULL;
    int rc = r != NULL ? 0 : err.code;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (rc == 0)
        rc = obx_repl_run(r, &h, &stop_requested, &err);
    if (rc == 0) {
        obx_repl_get_stats(r, &st);
        printf("stopped received=" LSN_FMT " confirmed=" LSN_FMT
               " status_updates=%llu reconnects=%llu\n",
               LSN_ARGS(st.received_lsn), LSN_ARGS(st.confirmed_lsn),
               (unsigned long long)st.status_updates, (unsigned long long)st.reconnects);
        fflush(stdout);
    } else {
        fprintf(stderr, "error: %s\n", err.msg);
    }
    obx_repl_free(r);
    obx_config_free(cfg);
    return rc < 0 ? -rc : rc;
}
