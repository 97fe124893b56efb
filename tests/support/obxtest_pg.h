/* obxtest_pg.h - the PostgreSQL side of integration tests: a throwaway cluster run by
 * obx-pgtmp ($OBX_PGTMP), its supervisor commands, and SQL over libpq.
 *
 * Functions that cannot go on when something breaks (a server that does not start, a failed
 * statement in obxt_pg_exec, a command answered with an error) fail the running libcheck test
 * with a message that names what broke; the try_ variants and obxt_pg_stop return a value for
 * the test to assert on. Strings are printf formats: quote identifiers and literals yourself. */
#ifndef OBXTEST_PG_H
#define OBXTEST_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <sys/types.h>

struct obxt_proc;

/* A running obx-pgtmp and a cached libpq connection to its server. */
struct obxt_pg;

/* Starts obx-pgtmp with the given postgresql.conf settings, "name=value" each, the list ending
 * with NULL: obxt_pg_start(NULL), obxt_pg_start("wal_level=replica", NULL). Waits (60 s at most)
 * for its conninfo line and fails the test if it does not come. Stop it with obxt_pg_stop. */
struct obxt_pg *obxt_pg_start(const char *setting, ...);

/* Same with the settings as a NULL-terminated array (NULL: none). */
struct obxt_pg *obxt_pg_startv(const char *const settings[]);

/* libpq conninfo of the server ("host=127.0.0.1 port=N user=postgres dbname=postgres"); lives as
 * long as pg. Append " replication=database" for a walsender connection. */
const char *obxt_pg_conninfo(const struct obxt_pg *pg);

/* TCP port of the server. */
int obxt_pg_port(const struct obxt_pg *pg);

/* The data directory (PGDATA) and the server log file; live as long as pg. */
const char *obxt_pg_datadir(const struct obxt_pg *pg);
const char *obxt_pg_logfile(const struct obxt_pg *pg);

/* The obx-pgtmp process, e.g. to signal it. */
struct obxt_proc *obxt_pg_proc(struct obxt_pg *pg);

/* Sends a supervisor command ("stop fast", "stop immediate", "start", "restart fast",
 * "restart immediate", "pid", "datadir", "dir", "log", "conninfo") and returns the text after
 * "ok" (malloc'd, "" when there is none). Fails the test on "error ..." or no answer within
 * 90 s. Commands that stop or start the server drop the cached connection. */
char *obxt_pg_cmd(struct obxt_pg *pg, const char *cmd);

/* Same, but returns 0 on "ok", -1 otherwise; *reply (if not NULL) gets the whole reply line
 * (malloc'd) or NULL when there was none. */
int obxt_pg_try_cmd(struct obxt_pg *pg, const char *cmd, char **reply);

/* Pid of the running postmaster (asks obx-pgtmp), 0 when the server is stopped. */
pid_t obxt_pg_postmaster_pid(struct obxt_pg *pg);

/* The cached connection (opened on first use, reopened after a restart or a lost connection);
 * owned by pg, valid until the next obxt_pg_* call that may reconnect. Fails the test if the
 * server cannot be reached. */
PGconn *obxt_pg_conn(struct obxt_pg *pg);

/* Runs one or more SQL statements (printf format); fails the test with the server's message and
 * the statement on any error. */
void obxt_pg_exec(struct obxt_pg *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs SQL; returns NULL on success, or the error as "SQLSTATE message" (e.g. "42P01 relation
 * \"x\" does not exist"), malloc'd, caller frees. */
char *obxt_pg_try_exec(struct obxt_pg *pg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Runs a query and returns the first column of its first row as text (malloc'd, caller frees),
 * NULL when that value is SQL NULL. Fails the test on an error or when there is no row. */
char *obxt_pg_query_value(struct obxt_pg *pg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* obxt_pg_query_value parsed as a 64-bit integer; fails the test on NULL or non-numbers. */
long long obxt_pg_query_int(struct obxt_pg *pg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Orderly end: closes the connection and obx-pgtmp's stdin, waits up to 60 s for it to exit,
 * and checks that it exited with status 0, that its temp directory is gone and that the last
 * postmaster is no longer alive. Returns 0 if all holds, -1 otherwise (why goes to stderr);
 * frees pg either way. NULL is a no-op returning 0. */
int obxt_pg_stop(struct obxt_pg *pg);

#endif
