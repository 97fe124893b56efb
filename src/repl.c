/* repl.c - the replication connection's outer loop and settings.
 *
 * obx_repl_run runs sessions (connect and check: repl_conn.c and repl_catalog.c; stream:
 * repl_stream.c) with capped exponential backoff and jitter between them, serving the handler
 * while it waits, and honors a stop request at every step. On a non-fatal failure the session's
 * state is forgotten (relation cache, decoder, the handler's open transaction) and streaming
 * resumes from the slot. */
#include "repl_internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "outboxd/config.h"
#include "outboxd/log.h"

/* Longest wait between two service calls while waiting to reconnect. */
#define BACKOFF_SLICE_MS 100
#define NAMEDATALEN_MAX 63

/* Settings */

static int
nomem(struct obx_error *err)
{
    return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
}

/* The tables of postgres.tables, parsed by the config module's one parser of that list. */
static int
read_tables(struct obx_repl *r, const struct obx_config *cfg, struct obx_error *err)
{
    struct obx_table_name *names;
    int rc = obx_config_tables(cfg, &names, &r->ntables, err);

    if (rc != 0)
        return rc;
    r->tables = calloc(r->ntables, sizeof(*r->tables));
    if (r->tables == NULL) {
        free(names);
        return nomem(err);
    }
    for (size_t i = 0; i < r->ntables; i++) {
        memcpy(r->tables[i].nspname, names[i].nspname, sizeof(names[i].nspname));
        memcpy(r->tables[i].relname, names[i].relname, sizeof(names[i].relname));
    }
    free(names);
    return 0;
}

/* Replication slot names: 1 to 63 lower-case letters, digits and underscores. */
static bool
valid_slot_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > NAMEDATALEN_MAX)
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* A conninfo that is more than a database name must parse. */
static int
check_conninfo(const char *conninfo, struct obx_error *err)
{
    char *msg = NULL, line[OBX_ERROR_MSG_MAX];
    PQconninfoOption *opts;

    if (strchr(conninfo, '=') == NULL && strncmp(conninfo, "postgres", 8) != 0)
        return 0;
    opts = PQconninfoParse(conninfo, &msg);
    if (opts != NULL) {
        PQconninfoFree(opts);
        return 0;
    }
    obx_repl_pq_msg(msg != NULL ? msg : "out of memory", line, sizeof(line));
    PQfreemem(msg);
    return obx_error_set(err, OBX_ERR_CONFIG, true, "postgres.conninfo: %s", line);
}

static int
read_strings(struct obx_repl *r, const struct obx_config *cfg, struct obx_error *err)
{
    const char *conninfo = obx_config_str(cfg, "postgres.conninfo");
    const char *slot = obx_config_str(cfg, "postgres.slot");
    const char *pub = obx_config_str(cfg, "postgres.publication");

    r->conninfo = strdup(conninfo != NULL ? conninfo : "");
    r->slot = strdup(slot != NULL ? slot : "");
    r->publication = strdup(pub != NULL ? pub : "");
    if (r->conninfo == NULL || r->slot == NULL || r->publication == NULL)
        return nomem(err);
    if (check_conninfo(r->conninfo, err) < 0)
        return err->code;
    if (!valid_slot_name(r->slot))
        return obx_error_set(err, OBX_ERR_CONFIG, true,
                             "postgres.slot: \"%s\" is not a valid replication slot name (1 to 63 "
                             "lower-case letters, digits and underscores)",
                             r->slot);
    if (r->publication[0] == '\0' || strlen(r->publication) > NAMEDATALEN_MAX)
        return obx_error_set(err, OBX_ERR_CONFIG, true,
                             "postgres.publication: a name of 1 to 63 characters is needed");
    return read_tables(r, cfg, err);
}

static int
read_settings(struct obx_repl *r, const struct obx_config *cfg, struct obx_error *err)
{
    long long interval = obx_config_int(cfg, "postgres.status.interval.ms");

    if (read_strings(r, cfg, err) < 0)
        return err->code;
    r->slot_create = obx_config_bool(cfg, "postgres.slot.create");
    r->publication_create = obx_config_bool(cfg, "postgres.publication.create");
    r->messages = obx_config_bool(cfg, "postgres.messages");
    r->backoff_ms = obx_config_int(cfg, "postgres.reconnect.backoff.ms");
    r->backoff_max_ms = obx_config_int(cfg, "postgres.reconnect.backoff.max.ms");
    r->wal_warn_bytes = obx_config_int(cfg, "postgres.wal.warn.bytes");
    r->stop_wait_us = obx_config_int(cfg, "shutdown.timeout.ms") * 1000;
    if (interval <= 0)
        return obx_error_set(err, OBX_ERR_CONFIG, true,
                             "postgres.status.interval.ms: must be positive");
    r->status_interval_us = interval * 1000;
    if (r->backoff_ms <= 0 || r->backoff_max_ms < r->backoff_ms)
        return obx_error_set(err, OBX_ERR_CONFIG, true,
                             "postgres.reconnect.backoff.ms must be positive and at most "
                             "postgres.reconnect.backoff.max.ms");
    return 0;
}

struct obx_repl *
obx_repl_new(const struct obx_config *cfg, struct obx_error *err)
{
    struct obx_repl *r = calloc(1, sizeof(*r));
    struct timespec ts;

    if (r == NULL) {
        nomem(err);
        return NULL;
    }
    if (read_settings(r, cfg, err) < 0)
        goto fail;
    if ((r->dec = obx_pgoutput_new(1, err)) == NULL)
        goto fail;
    if ((r->cache = obx_relcache_new()) == NULL) {
        nomem(err);
        goto fail;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    r->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
    r->rng |= 1;
    return r;
fail:
    obx_repl_free(r);
    return NULL;
}

void
obx_repl_free(struct obx_repl *r)
{
    if (r == NULL)
        return;
    obx_repl_close(r);
    obx_relcache_free(r->cache);
    obx_pgoutput_free(r->dec);
    free(r->tables);
    free(r->publication);
    free(r->slot);
    free(r->conninfo);
    free(r);
}

void
obx_repl_get_stats(const struct obx_repl *r, struct obx_repl_stats *out)
{
    *out = r->stats;
}

/* Helpers shared by the repl files */

int64_t
obx_repl_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int
obx_repl_ms_until(int64_t deadline_us)
{
    int64_t left = deadline_us - obx_repl_now_us();

    return left <= 0 ? 0 : (int)((left + 999) / 1000);
}

void
obx_repl_pq_msg(const char *src, char *dst, size_t cap)
{
    size_t n = 0;

    if (cap == 0)
        return;
    for (; src != NULL && *src != '\0' && n + 1 < cap; src++) {
        char c = (*src == '\n' || *src == '\t' || *src == '\r') ? ' ' : *src;

        if (c == ' ' && (n == 0 || dst[n - 1] == ' '))
            continue;
        dst[n++] = c;
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

int
obx_repl_callback_failed(int rc, const char *what, struct obx_error *err)
{
    if (err->code >= 0)
        err->code = rc;
    if (err->msg[0] == '\0')
        snprintf(err->msg, sizeof(err->msg), "%s failed: %s", what, obx_error_name(err->code));
    return err->code;
}

int
obx_repl_serve(const struct obx_repl_handler *h, struct obx_error *err)
{
    int rc;

    if (h->service == NULL)
        return 0;
    obx_error_clear(err);
    rc = h->service(h->ctx, err);
    return rc < 0 ? obx_repl_callback_failed(rc, "service", err) : 0;
}

int
obx_repl_drain(const struct obx_repl_handler *h, struct obx_error *err)
{
    int rc;

    if (h->drain == NULL)
        return 0;
    obx_error_clear(err);
    rc = h->drain(h->ctx, err);
    return rc < 0 ? obx_repl_callback_failed(rc, "drain", err) : 0;
}

/* Sessions */

/* Connect, check, start, stream, from a clean relation cache and decoder (the server announces
 * every relation again). *started is set when streaming began. */
static int
session(struct obx_repl *r, const struct obx_repl_handler *h, volatile sig_atomic_t *stop,
        int64_t *started, struct obx_error *err)
{
    int rc;

    obx_relcache_clear(r->cache);
    obx_pgoutput_reset(r->dec);
    if ((rc = obx_repl_connect(r, stop, err)) < 0)
        return rc;
    if ((rc = obx_repl_prepare(r, h, err)) < 0)
        return rc;
    if ((rc = obx_repl_start(r, err)) < 0)
        return rc;
    *started = obx_repl_now_us();
    return obx_repl_stream(r, h, stop, err);
}

/* Ends a session that failed: the handler forgets its open transaction. */
static void
end_session(struct obx_repl *r, const struct obx_repl_handler *h)
{
    obx_repl_close(r);
    if (h->on_disconnect != NULL)
        h->on_disconnect(h->ctx);
    r->stats.reconnects++;
}

/* Capped exponential backoff with equal jitter: half the step plus a random half. */
static long long
backoff_delay(struct obx_repl *r, unsigned attempt)
{
    long long step = r->backoff_ms;

    for (unsigned i = 0; i < attempt && step < r->backoff_max_ms; i++)
        step *= 2;
    if (step > r->backoff_max_ms)
        step = r->backoff_max_ms;
    r->rng ^= r->rng << 13; /* xorshift64 */
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return step / 2 + (long long)(r->rng % (uint64_t)(step / 2 + 1));
}

/* Logs why the session ended (once while it keeps failing the same way), then waits delay_ms
 * while serving the handler. Returns 0, OBX_ERR_STOPPED or a fatal error from service. */
static int
wait_backoff(struct obx_repl *r, const struct obx_repl_handler *h, volatile sig_atomic_t *stop,
             long long delay_ms, struct obx_error *err)
{
    int64_t deadline = obx_repl_now_us() + delay_ms * 1000;

    if (strcmp(err->msg, r->last_problem) != 0) {
        obx_log_warn("repl", "%s; reconnecting in %lld ms", err->msg, delay_ms);
        snprintf(r->last_problem, sizeof(r->last_problem), "%s", err->msg);
    } else {
        obx_log_debug("repl", "%s; reconnecting in %lld ms", err->msg, delay_ms);
    }
    while (!*stop) {
        int left = obx_repl_ms_until(deadline);
        struct pollfd pfd = {h->wakeup_fd, POLLIN, 0};

        if (left == 0)
            return 0;
        if (obx_repl_serve(h, err) < 0) {
            if (err->fatal)
                return err->code;
            obx_log_warn("repl", "while waiting to reconnect: %s", err->msg);
        }
        poll(&pfd, h->wakeup_fd >= 0 ? 1 : 0, left < BACKOFF_SLICE_MS ? left : BACKOFF_SLICE_MS);
    }
    return obx_error_set(err, OBX_ERR_STOPPED, false, "stopped");
}

int
obx_repl_run(struct obx_repl *r, const struct obx_repl_handler *h, volatile sig_atomic_t *stop,
             struct obx_error *err)
{
    static volatile sig_atomic_t never;
    struct obx_error e;
    unsigned attempt = 0;
    int rc;

    if (stop == NULL)
        stop = &never;
    for (;;) {
        int64_t started = 0;

        obx_error_clear(&e);
        rc = session(r, h, stop, &started, &e);
        if (rc == 0 || (rc < 0 && e.fatal))
            break;
        end_session(r, h);
        if (rc == OBX_ERR_STOPPED)
            break;
        /* A session that streamed for a while starts the backoff over. */
        if (started != 0 && obx_repl_now_us() - started > r->backoff_max_ms * 1000)
            attempt = 0;
        rc = wait_backoff(r, h, stop, backoff_delay(r, attempt), &e);
        attempt += attempt < 32;
        if (rc < 0)
            break;
    }
    if (rc == OBX_ERR_STOPPED)
        rc = obx_repl_drain(h, &e);
    obx_repl_close(r);
    if (rc < 0 && err != NULL)
        *err = e;
    return rc;
}
