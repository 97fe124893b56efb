/* obxtest_pg.c - throwaway PostgreSQL for integration tests: obx-pgtmp as a child process plus
 * SQL helpers over one cached libpq connection. See obxtest_pg.h. */
#include "obxtest_pg.h"

#include "obxtest.h"
#include "obxtest_proc.h"

#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define OBXT_PG_START_TIMEOUT_MS 60000
#define OBXT_PG_CMD_TIMEOUT_MS 90000
#define OBXT_PG_MAX_SETTINGS 32

struct obxt_pg {
    struct obxt_proc *proc;
    char *conninfo;
    int port;
    char *datadir;
    char *dir; /* obx-pgtmp's temp directory, parent of datadir */
    char *logfile;
    pid_t postmaster; /* last postmaster pid seen, for the check in obxt_pg_stop */
    PGconn *conn;
};

/* Ends obx-pgtmp the orderly way (EOF, so it removes its cluster) and frees pg: the path out
 * of obxt_pg_start when it is about to fail the test. Never SIGKILL it: it would leave the
 * server behind. */
static void
abandon(struct obxt_pg *pg)
{
    obxt_proc_finish(pg->proc, OBXT_PG_START_TIMEOUT_MS, NULL);
    obxt_proc_free(pg->proc);
    free(pg->conninfo);
    free(pg->datadir);
    free(pg->dir);
    free(pg->logfile);
    free(pg);
}

/* Spawns obx-pgtmp with -s settings. Returns NULL after a message on stderr. */
static struct obxt_proc *
spawn_pgtmp(const char *const settings[])
{
    const char *argv[2 + 2 * OBXT_PG_MAX_SETTINGS + 1];
    size_t argc = 0;

    argv[argc++] = obxt_env("OBX_PGTMP");
    for (size_t i = 0; settings && settings[i]; i++) {
        ck_assert_msg(i < OBXT_PG_MAX_SETTINGS, "obxt_pg_start: more than %d settings",
                      OBXT_PG_MAX_SETTINGS);
        argv[argc++] = "-s";
        argv[argc++] = settings[i];
    }
    argv[argc] = NULL;
    return obxt_proc_spawn(argv, NULL, NULL, 0);
}

/* Asks obx-pgtmp for a path ("datadir", "dir", "log"); NULL on error. */
static char *
ask(struct obxt_pg *pg, const char *cmd)
{
    char *reply = NULL;
    char *value = NULL;

    if (obxt_pg_try_cmd(pg, cmd, &reply) == 0)
        value = strdup(reply + 3);
    free(reply);
    return value;
}

struct obxt_pg *
obxt_pg_startv(const char *const settings[])
{
    struct obxt_pg *pg = calloc(1, sizeof(*pg));
    const char *port;

    ck_assert_msg(pg != NULL, "out of memory");
    pg->proc = spawn_pgtmp(settings);
    ck_assert_msg(pg->proc != NULL, "cannot spawn %s", getenv("OBX_PGTMP"));
    pg->conninfo = obxt_proc_read_line(pg->proc, OBXT_PG_START_TIMEOUT_MS);
    if (!pg->conninfo || strncmp(pg->conninfo, "host=", 5) != 0) {
        char *got = pg->conninfo ? strdup(pg->conninfo) : NULL;

        abandon(pg);
        ck_abort_msg("obx-pgtmp did not start the server (first line: %s; its stderr is in "
                     "the test log)",
                     got ? got : "none");
    }
    port = strstr(pg->conninfo, "port=");
    pg->port = port ? atoi(port + 5) : 0;
    pg->datadir = ask(pg, "datadir");
    pg->dir = ask(pg, "dir");
    pg->logfile = ask(pg, "log");
    pg->postmaster = obxt_pg_postmaster_pid(pg);
    if (pg->port <= 0 || !pg->datadir || !pg->dir || !pg->logfile || pg->postmaster <= 0) {
        abandon(pg);
        ck_abort_msg("obx-pgtmp started but does not answer its commands");
    }
    return pg;
}

struct obxt_pg *
obxt_pg_start(const char *setting, ...)
{
    const char *settings[OBXT_PG_MAX_SETTINGS + 1];
    size_t n = 0;
    va_list ap;

    va_start(ap, setting);
    for (const char *s = setting; s; s = va_arg(ap, const char *)) {
        ck_assert_msg(n < OBXT_PG_MAX_SETTINGS, "obxt_pg_start: more than %d settings",
                      OBXT_PG_MAX_SETTINGS);
        settings[n++] = s;
    }
    va_end(ap);
    settings[n] = NULL;
    return obxt_pg_startv(settings);
}

const char *
obxt_pg_conninfo(const struct obxt_pg *pg)
{
    return pg->conninfo;
}

int
obxt_pg_port(const struct obxt_pg *pg)
{
    return pg->port;
}

const char *
obxt_pg_datadir(const struct obxt_pg *pg)
{
    return pg->datadir;
}

const char *
obxt_pg_logfile(const struct obxt_pg *pg)
{
    return pg->logfile;
}

struct obxt_proc *
obxt_pg_proc(struct obxt_pg *pg)
{
    return pg->proc;
}

static void
drop_conn(struct obxt_pg *pg)
{
    PQfinish(pg->conn);
    pg->conn = NULL;
}

int
obxt_pg_try_cmd(struct obxt_pg *pg, const char *cmd, char **reply)
{
    bool stops = strncmp(cmd, "stop", 4) == 0;
    bool starts = strncmp(cmd, "start", 5) == 0 || strncmp(cmd, "restart", 7) == 0;
    char *line;
    int rc;

    if (stops || starts)
        drop_conn(pg);
    line = obxt_proc_command(pg->proc, cmd, OBXT_PG_CMD_TIMEOUT_MS);
    if (!line)
        fprintf(stderr, "obxt_pg: no answer to '%s' from obx-pgtmp (%s)\n", cmd,
                errno ? strerror(errno) : "it exited");
    rc = line && (strcmp(line, "ok") == 0 || strncmp(line, "ok ", 3) == 0) ? 0 : -1;
    if (reply)
        *reply = line;
    else
        free(line);
    if (rc == 0 && starts)
        obxt_pg_postmaster_pid(pg);
    return rc;
}

char *
obxt_pg_cmd(struct obxt_pg *pg, const char *cmd)
{
    char *reply = NULL;
    char *value;

    if (obxt_pg_try_cmd(pg, cmd, &reply) != 0)
        ck_abort_msg("obx-pgtmp command '%s' failed: %s", cmd, reply ? reply : "no answer");
    value = strdup(reply[2] == ' ' ? reply + 3 : reply + 2);
    free(reply);
    return value;
}

pid_t
obxt_pg_postmaster_pid(struct obxt_pg *pg)
{
    char *reply = NULL;
    pid_t pid = 0;

    if (obxt_pg_try_cmd(pg, "pid", &reply) == 0)
        pid = (pid_t)atol(reply + 3);
    free(reply);
    if (pid > 0)
        pg->postmaster = pid;
    return pid;
}

static void
ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* The cached connection, (re)opened when needed. NULL with *err (malloc'd) on failure. */
static PGconn *
connect_cached(struct obxt_pg *pg, char **err)
{
    char *conninfo = NULL;

    *err = NULL;
    if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
        return pg->conn;
    drop_conn(pg);
    if (asprintf(&conninfo, "%s connect_timeout=10 application_name=obxtest", pg->conninfo) < 0)
        return NULL;
    pg->conn = PQconnectdb(conninfo);
    free(conninfo);
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        if (asprintf(err, "08006 cannot connect to %s: %s", pg->conninfo,
                     PQerrorMessage(pg->conn)) < 0)
            *err = NULL;
        drop_conn(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg->conn, ignore_notice, NULL);
    return pg->conn;
}

PGconn *
obxt_pg_conn(struct obxt_pg *pg)
{
    char *err = NULL;
    PGconn *conn = connect_cached(pg, &err);

    ck_assert_msg(conn != NULL, "%s", err ? err : "out of memory");
    return conn;
}

/* "SQLSTATE message" of a failed result (or of the connection when there is no result). */
static char *
describe_error(PGconn *conn, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char *msg = NULL;

    if (!primary)
        primary =
            res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    if (asprintf(&msg, "%s %s", state ? state : "08006", primary) < 0)
        return NULL;
    msg[strcspn(msg, "\n")] = '\0';
    return msg;
}

/* Runs sql on the cached connection. A connection found broken (the server was restarted
 * behind our back) is reopened and the statement sent once more. Returns the result (caller
 * clears) and *err NULL when it succeeded, else *err (malloc'd) and NULL. */
static PGresult *
run_sql(struct obxt_pg *pg, const char *sql, char **err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *conn = connect_cached(pg, err);
        PGresult *res;
        ExecStatusType st;

        if (!conn)
            return NULL;
        res = PQexec(conn, sql);
        st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
            return res;
        *err = describe_error(conn, res);
        PQclear(res);
        if (PQstatus(conn) == CONNECTION_OK || attempt == 1)
            break;
        free(*err);
        *err = NULL;
        drop_conn(pg);
    }
    return NULL;
}

static char *
format_sql(const char *fmt, va_list ap)
{
    char *sql = NULL;

    if (vasprintf(&sql, fmt, ap) < 0)
        ck_abort_msg("out of memory formatting SQL");
    return sql;
}

void
obxt_pg_exec(struct obxt_pg *pg, const char *fmt, ...)
{
    va_list ap;
    char *sql, *err = NULL;
    PGresult *res;

    va_start(ap, fmt);
    sql = format_sql(fmt, ap);
    va_end(ap);
    res = run_sql(pg, sql, &err);
    if (!res)
        ck_abort_msg("SQL failed: %s\n  statement: %s", err ? err : "?", sql);
    PQclear(res);
    free(sql);
}

char *
obxt_pg_try_exec(struct obxt_pg *pg, const char *fmt, ...)
{
    va_list ap;
    char *sql, *err = NULL;
    PGresult *res;

    va_start(ap, fmt);
    sql = format_sql(fmt, ap);
    va_end(ap);
    res = run_sql(pg, sql, &err);
    PQclear(res);
    free(sql);
    return res ? NULL : (err ? err : strdup("XX000 unknown error"));
}

/* The first value of sql's first row (malloc'd, NULL for SQL NULL); fails the test on errors. */
static char *
query_value(struct obxt_pg *pg, char *sql)
{
    char *err = NULL, *value = NULL;
    PGresult *res = run_sql(pg, sql, &err);

    if (!res)
        ck_abort_msg("SQL failed: %s\n  query: %s", err ? err : "?", sql);
    if (PQntuples(res) < 1 || PQnfields(res) < 1)
        ck_abort_msg("query returned no rows: %s", sql);
    if (!PQgetisnull(res, 0, 0))
        value = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    free(sql);
    return value;
}

char *
obxt_pg_query_value(struct obxt_pg *pg, const char *fmt, ...)
{
    va_list ap;
    char *sql;

    va_start(ap, fmt);
    sql = format_sql(fmt, ap);
    va_end(ap);
    return query_value(pg, sql);
}

long long
obxt_pg_query_int(struct obxt_pg *pg, const char *fmt, ...)
{
    va_list ap;
    char *sql, *text, *end = NULL;
    long long n;

    va_start(ap, fmt);
    sql = format_sql(fmt, ap);
    va_end(ap);
    text = query_value(pg, strdup(sql));
    ck_assert_msg(text != NULL, "query returned NULL, want an integer: %s", sql);
    errno = 0;
    n = strtoll(text, &end, 10);
    ck_assert_msg(errno == 0 && end != text && *end == '\0',
                  "query returned '%s', want an integer: %s", text, sql);
    free(text);
    free(sql);
    return n;
}

int
obxt_pg_stop(struct obxt_pg *pg)
{
    int status = 0, rc = 0;

    if (!pg)
        return 0;
    drop_conn(pg);
    if (obxt_proc_running(pg->proc))
        obxt_pg_postmaster_pid(pg);
    if (obxt_proc_finish(pg->proc, OBXT_PG_START_TIMEOUT_MS, &status) != 0) {
        fprintf(stderr, "obxt_pg_stop: obx-pgtmp did not exit on EOF\n");
        rc = -1;
    }
    if (obxt_proc_exit_code(pg->proc) != 0) {
        fprintf(stderr, "obxt_pg_stop: obx-pgtmp exit code %d\n", obxt_proc_exit_code(pg->proc));
        rc = -1;
    }
    if (obxt_proc_path_exists(pg->dir)) {
        fprintf(stderr, "obxt_pg_stop: %s is still there\n", pg->dir);
        rc = -1;
    }
    if (obxt_proc_pid_wait_gone(pg->postmaster, 1000) != 0) {
        fprintf(stderr, "obxt_pg_stop: postmaster %d is still alive\n", (int)pg->postmaster);
        rc = -1;
    }
    abandon(pg);
    return rc;
}
