/* repl_conn.c - the two connections of a session and the replication commands.
 *
 * Each session opens two connections with the user's postgres.conninfo: an ordinary one for
 * catalog queries (repl_catalog.c) and a replication=database one for IDENTIFY_SYSTEM and
 * START_REPLICATION. Connecting never blocks past a stop request. Failures retrying can fix come
 * back as OBX_ERR_CONN; server states that need an operator as a fatal OBX_ERR_SERVER naming what
 * is wrong and how to fix it. */
#include "repl_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outboxd/log.h"

/* libpq's asynchronous connect has no timeout of its own. */
#define CONNECT_TIMEOUT_US (30LL * 1000000)
#define CONNECT_POLL_MS 200
#define MIN_SERVER_VERSION 140000

static const char SQL_WAL_LEVEL[] = "SELECT pg_catalog.current_setting('wal_level')";

static const char SQL_SLOT_HOLDER[] =
    "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1";

/* Statements */

/* Whether retrying a failed statement can help: the connection broke, or the server is
 * shutting down, short of resources, or reported a serialization failure or deadlock. */
static bool
retriable(PGconn *conn, const PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (PQstatus(conn) != CONNECTION_OK || state == NULL)
        return true;
    return strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
           strncmp(state, "53", 2) == 0 || strncmp(state, "40", 2) == 0;
}

bool
obx_repl_sqlstate_is(const PGresult *res, const char *state)
{
    const char *s = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    return s != NULL && strcmp(s, state) == 0;
}

/* Records a failed statement in err as "what: server message": OBX_ERR_CONN when retrying can
 * help, a fatal OBX_ERR_SERVER otherwise. res may be NULL. */
int
obx_repl_query_failed(PGconn *conn, const PGresult *res, const char *what, struct obx_error *err)
{
    char msg[OBX_ERROR_MSG_MAX];

    obx_repl_pq_msg(res != NULL ? PQresultErrorMessage(res) : NULL, msg, sizeof(msg));
    if (msg[0] == '\0')
        obx_repl_pq_msg(PQerrorMessage(conn), msg, sizeof(msg));
    if (retriable(conn, res))
        return obx_error_set(err, OBX_ERR_CONN, false, "%s: %s", what, msg);
    return obx_error_set(err, OBX_ERR_SERVER, true, "%s: %s", what, msg);
}

/* Runs sql with text parameters. Returns the result (caller PQclears it) when its status is
 * want, else NULL with err set by obx_repl_query_failed. */
PGresult *
obx_repl_query(PGconn *conn, const char *sql, int nparams, const char *const *params,
               ExecStatusType want, const char *what, struct obx_error *err)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);

    if (res != NULL && PQresultStatus(res) == want)
        return res;
    obx_repl_query_failed(conn, res, what, err);
    PQclear(res);
    return NULL;
}

/* Connecting */

/* Waits for the socket of a connection being opened. Returns 0 when it is ready or the slice
 * ended, -1 when poll failed. */
static int
wait_connecting(PGconn *conn, PostgresPollingStatusType st)
{
    struct pollfd pfd = {PQsocket(conn), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};

    if (poll(&pfd, 1, CONNECT_POLL_MS) < 0 && errno != EINTR)
        return -1;
    return 0;
}

/* Opens a connection with the user's conninfo plus replication (= "database" or "false") and a
 * fallback application_name, without blocking past a stop request. Returns 0 with *out set,
 * OBX_ERR_STOPPED or OBX_ERR_CONN. */
static int
open_conn(const char *conninfo, const char *replication, volatile sig_atomic_t *stop, PGconn **out,
          struct obx_error *err)
{
    const char *const keys[] = {"dbname", "replication", "fallback_application_name", NULL};
    const char *const vals[] = {conninfo, replication, "outboxd", NULL};
    int64_t deadline = obx_repl_now_us() + CONNECT_TIMEOUT_US;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    char msg[OBX_ERROR_MSG_MAX];
    int rc;

    if (conn == NULL)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
           st != PGRES_POLLING_FAILED) {
        if (*stop) {
            rc = obx_error_set(err, OBX_ERR_STOPPED, false, "stopped while connecting");
            goto fail;
        }
        if (obx_repl_now_us() > deadline) {
            rc = obx_error_set(err, OBX_ERR_CONN, false,
                               "could not connect to PostgreSQL: timed out after %lld s",
                               CONNECT_TIMEOUT_US / 1000000);
            goto fail;
        }
        if (wait_connecting(conn, st) < 0)
            break;
        st = PQconnectPoll(conn);
    }
    if (PQstatus(conn) == CONNECTION_OK) {
        *out = conn;
        return 0;
    }
    obx_repl_pq_msg(PQerrorMessage(conn), msg, sizeof(msg));
    rc = obx_error_set(err, OBX_ERR_CONN, false, "could not connect to PostgreSQL: %s", msg);
fail:
    PQfinish(conn);
    return rc;
}

/* Server version and wal_level, on the catalog connection. */
static int
check_server(struct obx_repl *r, struct obx_error *err)
{
    int version = PQserverVersion(r->cat);
    PGresult *res;
    int rc = 0;

    if (version < MIN_SERVER_VERSION)
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "PostgreSQL %d.%d is too old; outboxd needs PostgreSQL 14 or newer",
                             version / 10000, version % 10000);
    res = obx_repl_query(r->cat, SQL_WAL_LEVEL, 0, NULL, PGRES_TUPLES_OK,
                         "could not read wal_level", err);
    if (res == NULL)
        return err->code;
    if (PQntuples(res) != 1)
        rc = obx_error_set(err, OBX_ERR_PROTOCOL, false, "could not read wal_level: no row");
    else if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0)
        rc = obx_error_set(
            err, OBX_ERR_SERVER, true,
            "wal_level is %s; set wal_level = logical in postgresql.conf and restart PostgreSQL",
            PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/* IDENTIFY_SYSTEM on the replication connection: systemid, timeline, xlogpos, dbname. */
static int
identify_system(struct obx_repl *r, struct obx_error *err)
{
    PGresult *res = PQexec(r->conn, "IDENTIFY_SYSTEM");
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = obx_repl_query_failed(r->conn, res, "IDENTIFY_SYSTEM failed", err);
    } else if (PQntuples(res) != 1 || PQnfields(res) < 4) {
        rc = obx_error_set(err, OBX_ERR_PROTOCOL, false,
                           "IDENTIFY_SYSTEM returned %d rows and %d fields, expected 1 and 4",
                           PQntuples(res), PQnfields(res));
    } else if (PQgetisnull(res, 0, 3)) {
        rc = obx_error_set(err, OBX_ERR_SERVER, true,
                           "the replication connection is not bound to a database");
    } else {
        const char *server = PQparameterStatus(r->conn, "server_version");

        /* Once per outage: while a failure repeats, reconnecting is not news. */
        OBX_LOG(r->last_problem[0] == '\0' ? OBX_LOG_INFO : OBX_LOG_DEBUG, "repl",
                "connected to %s:%s database %s as %s (PostgreSQL %s, system %s, "
                "timeline %s, WAL at %s)",
                PQhost(r->conn), PQport(r->conn), PQgetvalue(res, 0, 3), PQuser(r->conn),
                server != NULL ? server : "?", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
                PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return rc;
}

/* pgoutput prints column values with the walsender's session settings: pin the formats the
 * router parses (ISO timestamps, hex bytea), whatever the server's or role's defaults are. */
static int
set_output_format(struct obx_repl *r, struct obx_error *err)
{
    PGresult *res = PQexec(r->conn, "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
                                    "SET bytea_output = 'hex'; SET extra_float_digits = 3");
    int rc = 0;

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = obx_repl_query_failed(r->conn, res, "could not set the output format", err);
    PQclear(res);
    return rc;
}

int
obx_repl_connect(struct obx_repl *r, volatile sig_atomic_t *stop, struct obx_error *err)
{
    int rc;

    if ((rc = open_conn(r->conninfo, "false", stop, &r->cat, err)) < 0)
        return rc;
    if ((rc = check_server(r, err)) < 0)
        return rc;
    if ((rc = open_conn(r->conninfo, "database", stop, &r->conn, err)) < 0)
        return rc;
    if ((rc = identify_system(r, err)) < 0)
        return rc;
    return set_output_format(r, err);
}

/* START_REPLICATION */

/* START_REPLICATION SLOT "slot" LOGICAL 0/0 (proto_version '1', publication_names '"pub"'
 * [, messages 'true']), malloc'd. The slot name is [a-z0-9_] (checked by obx_repl_new); the
 * publication name is an identifier (" doubled) inside a literal (' doubled). */
static char *
start_command(const struct obx_repl *r)
{
    char *cmd = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&cmd, &len);

    if (f == NULL)
        return NULL;
    fprintf(f, "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (proto_version '1', ", r->slot);
    fputs("publication_names '\"", f);
    for (const char *p = r->publication; *p != '\0'; p++) {
        if (*p == '"' || *p == '\'')
            fputc(*p, f);
        fputc(*p, f);
    }
    fputs("\"'", f);
    fputs(r->messages ? ", messages 'true')" : ")", f);
    if (fclose(f) != 0) {
        free(cmd);
        return NULL;
    }
    return cmd;
}

/* Names who holds the slot (pg_replication_slots.active_pid), or "another process". */
static void
slot_holder(struct obx_repl *r, char *out, size_t cap)
{
    const char *const params[] = {r->slot};
    PGresult *res = PQexecParams(r->cat, SQL_SLOT_HOLDER, 1, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        snprintf(out, cap, "PID %s", PQgetvalue(res, 0, 0));
    else
        snprintf(out, cap, "another process");
    PQclear(res);
}

/* Classifies a START_REPLICATION failure. */
static int
start_failed(struct obx_repl *r, const PGresult *res, struct obx_error *err)
{
    char msg[OBX_ERROR_MSG_MAX], holder[64];

    if (obx_repl_sqlstate_is(res, "55006")) {
        slot_holder(r, holder, sizeof(holder));
        return obx_error_set(err, OBX_ERR_CONN, false,
                             "replication slot \"%s\" is active for %s (another outboxd "
                             "instance?); waiting for it to be released",
                             r->slot, holder);
    }
    if (obx_repl_sqlstate_is(res, "42704"))
        return obx_repl_slot_missing(r, err);
    if (obx_repl_sqlstate_is(res, "55000")) {
        obx_repl_pq_msg(PQresultErrorMessage(res), msg, sizeof(msg));
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "cannot stream from replication slot \"%s\": %s", r->slot, msg);
    }
    return obx_repl_query_failed(r->conn, res, "could not start replication", err);
}

int
obx_repl_start(struct obx_repl *r, struct obx_error *err)
{
    char *cmd = start_command(r);
    PGresult *res;
    int rc = 0;

    if (cmd == NULL)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    res = PQexec(r->conn, cmd);
    if (PQresultStatus(res) != PGRES_COPY_BOTH)
        rc = start_failed(r, res, err);
    else if (PQsetnonblocking(r->conn, 1) != 0)
        rc = obx_error_set(err, OBX_ERR_CONN, false, "could not make the connection non-blocking");
    else
        obx_log_info("repl", "streaming from " REPL_LSN_FMT " (slot \"%s\", publication \"%s\"%s)",
                     REPL_LSN_ARGS(r->start_lsn), r->slot, r->publication,
                     r->messages ? ", logical messages" : "");
    PQclear(res);
    free(cmd);
    return rc;
}

void
obx_repl_close(struct obx_repl *r)
{
    PQfinish(r->conn);
    r->conn = NULL;
    PQfinish(r->cat);
    r->cat = NULL;
}
