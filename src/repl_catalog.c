/* repl_catalog.c - the catalog checks of a session, on the ordinary connection.
 *
 * The configured tables must exist; the publication must exist (created when allowed and never
 * seen), publish inserts and include every table; the slot must exist (created when allowed and
 * never seen: a slot that disappears while outboxd runs is never recreated), use pgoutput, belong
 * to our database and not be invalidated. Then each table's columns, as pgoutput will announce
 * them, go to the handler's on_table. While streaming, the slot's WAL budget is checked at most
 * once a minute. Every fatal error names what is wrong and how to fix it. */
#include "repl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outboxd/log.h"

#define WAL_CHECK_INTERVAL_US (60LL * 1000000)
/* Room for a schema-qualified, quoted name in messages. */
#define NAME_BUF 300

static const char SQL_TABLE[] = "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c "
                                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE n.nspname = $1 AND c.relname = $2";

static const char SQL_PUBLICATION[] =
    "SELECT pubinsert FROM pg_catalog.pg_publication WHERE pubname = $1";

static const char SQL_PUBLISHED[] = "SELECT 1 FROM pg_catalog.pg_publication_tables "
                                    "WHERE pubname = $1 AND schemaname = $2 AND tablename = $3";

static const char SQL_SLOT[] =
    "SELECT slot_type, plugin, database, wal_status, confirmed_flush_lsn, "
    "pg_catalog.current_database() FROM pg_catalog.pg_replication_slots WHERE slot_name = $1";

static const char SQL_CREATE_SLOT[] =
    "SELECT lsn FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')";

/* wal_status, safe_wal_size (NULL without max_slot_wal_keep_size) and the WAL the slot retains. */
static const char SQL_WAL_BUDGET[] =
    "SELECT wal_status, safe_wal_size, pg_catalog.pg_wal_lsn_diff(CASE WHEN "
    "pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn() ELSE "
    "pg_catalog.pg_current_wal_lsn() END, restart_lsn)::bigint "
    "FROM pg_catalog.pg_replication_slots WHERE slot_name = $1";

/* The columns pgoutput sends in a Relation message (not dropped, not generated), in order, with
 * the key flag it sets: every column for REPLICA IDENTITY FULL, else the columns of the primary
 * key (DEFAULT) or of the replica identity index (USING INDEX). */
static const char SQL_COLUMNS[] =
    "SELECT a.attname, a.atttypid, a.atttypmod, c.relreplident, "
    "c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
    "WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey) "
    "AND ((c.relreplident = 'd' AND i.indisprimary) "
    "OR (c.relreplident = 'i' AND i.indisreplident))) "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
    "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
    "ORDER BY a.attnum";

/* Names in messages */

/* Appends s to out (capacity cap) as an SQL identifier, double-quoted only when it has to be.
 * For messages and hints; SQL sent to the server uses PQescapeIdentifier. */
static void
append_ident(char *out, size_t cap, const char *s)
{
    size_t n = strlen(out);
    bool plain = (*s >= 'a' && *s <= 'z') || *s == '_';

    for (const char *p = s; *p != '\0' && plain; p++)
        plain = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '$';
    if (plain) {
        snprintf(out + n, cap - n, "%s", s);
        return;
    }
    if (n + 1 < cap)
        out[n++] = '"';
    for (const char *p = s; *p != '\0' && n + 3 < cap; p++) {
        if (*p == '"')
            out[n++] = '"';
        out[n++] = *p;
    }
    if (n + 1 < cap)
        out[n++] = '"';
    out[n] = '\0';
}

/* "schema.table" for messages, each part quoted when needed. */
static const char *
table_name(const struct obx_repl_table *t, char *out, size_t cap)
{
    out[0] = '\0';
    append_ident(out, cap, t->nspname);
    snprintf(out + strlen(out), cap - strlen(out), ".");
    append_ident(out, cap, t->relname);
    return out;
}

/* Every configured table as "a.b, c.d" for hints. */
static void
table_list(const struct obx_repl *r, char *out, size_t cap)
{
    char name[NAME_BUF];

    out[0] = '\0';
    for (size_t i = 0; i < r->ntables; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i > 0 ? ", " : "",
                 table_name(&r->tables[i], name, sizeof(name)));
}

/* Tables and publication */

/* The table exists and is a table (plain or partitioned); remembers its OID. */
static int
check_table(struct obx_repl *r, struct obx_repl_table *t, struct obx_error *err)
{
    const char *const params[] = {t->nspname, t->relname};
    char name[NAME_BUF];
    int rc = 0;
    PGresult *res = obx_repl_query(r->cat, SQL_TABLE, 2, params, PGRES_TUPLES_OK,
                                   "could not look up a table", err);

    if (res == NULL)
        return err->code;
    table_name(t, name, sizeof(name));
    if (PQntuples(res) == 0)
        rc = obx_error_set(err, OBX_ERR_SERVER, true,
                           "table %s does not exist; create it (see sql/outbox.sql) or fix "
                           "postgres.tables",
                           name);
    else if (strcmp(PQgetvalue(res, 0, 1), "r") != 0 && strcmp(PQgetvalue(res, 0, 1), "p") != 0)
        rc = obx_error_set(err, OBX_ERR_SERVER, true,
                           "%s is not a table (relkind %s); fix postgres.tables", name,
                           PQgetvalue(res, 0, 1));
    else
        t->relid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return rc;
}

/* Looks the publication up: *exists, and whether it publishes inserts. */
static int
lookup_publication(struct obx_repl *r, bool *exists, bool *inserts, struct obx_error *err)
{
    const char *const params[] = {r->publication};
    PGresult *res = obx_repl_query(r->cat, SQL_PUBLICATION, 1, params, PGRES_TUPLES_OK,
                                   "could not look up the publication", err);

    if (res == NULL)
        return err->code;
    *exists = PQntuples(res) > 0;
    *inserts = *exists && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return 0;
}

/* Writes s to f as an identifier quoted by libpq. Returns 0 or OBX_ERR_NOMEM. */
static int
write_ident(FILE *f, PGconn *conn, const char *s)
{
    char *quoted = PQescapeIdentifier(conn, s, strlen(s));

    if (quoted == NULL)
        return OBX_ERR_NOMEM;
    fputs(quoted, f);
    PQfreemem(quoted);
    return 0;
}

/* CREATE PUBLICATION "pub" FOR TABLE "s"."t", ... WITH (publish = 'insert'), malloc'd. */
static char *
create_publication_sql(struct obx_repl *r)
{
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    int rc;

    if (f == NULL)
        return NULL;
    fputs("CREATE PUBLICATION ", f);
    rc = write_ident(f, r->cat, r->publication);
    fputs(" FOR TABLE ", f);
    for (size_t i = 0; i < r->ntables && rc == 0; i++) {
        fputs(i > 0 ? ", " : "", f);
        rc = write_ident(f, r->cat, r->tables[i].nspname);
        fputc('.', f);
        rc = rc < 0 ? rc : write_ident(f, r->cat, r->tables[i].relname);
    }
    fputs(" WITH (publish = 'insert')", f);
    if (fclose(f) != 0 || rc < 0) {
        free(sql);
        return NULL;
    }
    return sql;
}

/* Creates the publication. One created meanwhile by someone else is fine: the caller looks
 * again. */
static int
create_publication(struct obx_repl *r, struct obx_error *err)
{
    char tables[OBX_ERROR_MSG_MAX], what[NAME_BUF];
    char *sql = create_publication_sql(r);
    PGresult *res;
    int rc = 0;

    if (sql == NULL)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    res = PQexec(r->cat, sql);
    table_list(r, tables, sizeof(tables));
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        obx_log_info("repl", "created publication \"%s\" for table %s (inserts only)",
                     r->publication, tables);
    } else if (!obx_repl_sqlstate_is(res, "42710")) {
        snprintf(what, sizeof(what), "could not create publication \"%s\"", r->publication);
        rc = obx_repl_query_failed(r->cat, res, what, err);
    }
    PQclear(res);
    free(sql);
    return rc;
}

/* The fatal error for a publication that does not exist (any more). */
static int
publication_missing(struct obx_repl *r, struct obx_error *err)
{
    char tables[OBX_ERROR_MSG_MAX], pub[NAME_BUF] = "";

    table_list(r, tables, sizeof(tables));
    append_ident(pub, sizeof(pub), r->publication);
    if (r->publication_seen)
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "publication \"%s\" was dropped while outboxd was running; "
                             "recreate it with CREATE PUBLICATION %s FOR TABLE %s WITH "
                             "(publish = 'insert') and restart outboxd",
                             r->publication, pub, tables);
    return obx_error_set(err, OBX_ERR_SERVER, true,
                         "publication \"%s\" does not exist; create it with CREATE PUBLICATION "
                         "%s FOR TABLE %s WITH (publish = 'insert'), or set "
                         "postgres.publication.create = true",
                         r->publication, pub, tables);
}

/* The publication includes table t. */
static int
check_published(struct obx_repl *r, const struct obx_repl_table *t, struct obx_error *err)
{
    const char *const params[] = {r->publication, t->nspname, t->relname};
    char name[NAME_BUF], pub[NAME_BUF] = "";
    int rc = 0;
    PGresult *res = obx_repl_query(r->cat, SQL_PUBLISHED, 3, params, PGRES_TUPLES_OK,
                                   "could not read the publication's tables", err);

    if (res == NULL)
        return err->code;
    if (PQntuples(res) == 0) {
        table_name(t, name, sizeof(name));
        append_ident(pub, sizeof(pub), r->publication);
        rc = obx_error_set(err, OBX_ERR_SERVER, true,
                           "publication \"%s\" does not include table %s; fix it with ALTER "
                           "PUBLICATION %s ADD TABLE %s",
                           r->publication, name, pub, name);
    }
    PQclear(res);
    return rc;
}

/* The publication exists (created when allowed and never seen), publishes inserts and
 * includes every configured table. */
static int
check_publication(struct obx_repl *r, struct obx_error *err)
{
    char pub[NAME_BUF] = "";
    bool exists = false, inserts = false;
    int rc;

    if ((rc = lookup_publication(r, &exists, &inserts, err)) < 0)
        return rc;
    if (!exists && r->publication_create && !r->publication_seen) {
        if ((rc = create_publication(r, err)) < 0)
            return rc;
        if ((rc = lookup_publication(r, &exists, &inserts, err)) < 0)
            return rc;
    }
    if (!exists)
        return publication_missing(r, err);
    r->publication_seen = true;
    append_ident(pub, sizeof(pub), r->publication);
    if (!inserts)
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "publication \"%s\" does not publish inserts; fix it with ALTER "
                             "PUBLICATION %s SET (publish = 'insert')",
                             r->publication, pub);
    for (size_t i = 0; i < r->ntables; i++)
        if ((rc = check_published(r, &r->tables[i], err)) < 0)
            return rc;
    return 0;
}

/* Slot */

/* The fatal error for a slot that does not exist (any more). */
int
obx_repl_slot_missing(struct obx_repl *r, struct obx_error *err)
{
    if (r->slot_seen)
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "replication slot \"%s\" was dropped while outboxd was running; "
                             "outboxd does not recreate it (events committed meanwhile would be "
                             "skipped): re-sync the outbox, recreate the slot by hand and restart",
                             r->slot);
    return obx_error_set(err, OBX_ERR_SERVER, true,
                         "replication slot \"%s\" does not exist; create it with SELECT "
                         "pg_create_logical_replication_slot('%s', 'pgoutput'), or set "
                         "postgres.slot.create = true",
                         r->slot, r->slot);
}

/* The fatal error for an invalidated slot. */
static int
slot_lost(struct obx_repl *r, struct obx_error *err)
{
    return obx_error_set(err, OBX_ERR_SERVER, true,
                         "replication slot \"%s\" is invalidated (wal_status = lost): "
                         "PostgreSQL removed WAL it still needed, so events may be missing; "
                         "re-sync the outbox, then drop and recreate the slot by hand",
                         r->slot);
}

/* Creates the slot. One created meanwhile by someone else is fine: the caller looks again. */
static int
create_slot(struct obx_repl *r, struct obx_error *err)
{
    const char *const params[] = {r->slot};
    char what[NAME_BUF];
    PGresult *res;
    int rc = 0;

    obx_log_info("repl", "creating replication slot \"%s\" (waits for running transactions)",
                 r->slot);
    res = PQexecParams(r->cat, SQL_CREATE_SLOT, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        obx_log_info("repl", "created replication slot \"%s\" (pgoutput) at %s", r->slot,
                     PQgetvalue(res, 0, 0));
    } else if (!obx_repl_sqlstate_is(res, "42710")) {
        snprintf(what, sizeof(what), "could not create replication slot \"%s\"", r->slot);
        rc = obx_repl_query_failed(r->cat, res, what, err);
    }
    PQclear(res);
    return rc;
}

/* Judges an existing slot (a row of SQL_SLOT): logical, pgoutput, our database, not lost. */
static int
judge_slot(struct obx_repl *r, const PGresult *res, struct obx_error *err)
{
    const char *type = PQgetvalue(res, 0, 0), *plugin = PQgetvalue(res, 0, 1);
    const char *db = PQgetvalue(res, 0, 2), *wal = PQgetvalue(res, 0, 3);
    const char *lsn = PQgetvalue(res, 0, 4), *ourdb = PQgetvalue(res, 0, 5);
    unsigned hi, lo;

    if (strcmp(type, "logical") != 0)
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "replication slot \"%s\" is a %s slot; outboxd needs a logical slot "
                             "with plugin pgoutput: set another postgres.slot",
                             r->slot, type);
    if (strcmp(plugin, "pgoutput") != 0)
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "replication slot \"%s\" uses plugin %s, not pgoutput; set another "
                             "postgres.slot, or drop that slot if nothing else uses it",
                             r->slot, plugin);
    if (strcmp(db, ourdb) != 0)
        return obx_error_set(err, OBX_ERR_SERVER, true,
                             "replication slot \"%s\" belongs to database %s, not %s; connect to "
                             "%s or set another postgres.slot",
                             r->slot, db, ourdb, db);
    if (strcmp(wal, "lost") == 0)
        return slot_lost(r, err);
    r->slot_seen = true;
    if (sscanf(lsn, "%X/%X", &hi, &lo) == 2)
        r->start_lsn = (uint64_t)hi << 32 | lo;
    return 0;
}

/* The slot exists (created when allowed and never seen) and is usable. */
static int
check_slot(struct obx_repl *r, struct obx_error *err)
{
    const char *const params[] = {r->slot};
    PGresult *res = obx_repl_query(r->cat, SQL_SLOT, 1, params, PGRES_TUPLES_OK,
                                   "could not look up the replication slot", err);
    int rc;

    if (res == NULL)
        return err->code;
    if (PQntuples(res) == 0 && r->slot_create && !r->slot_seen) {
        PQclear(res);
        if ((rc = create_slot(r, err)) < 0)
            return rc;
        res = obx_repl_query(r->cat, SQL_SLOT, 1, params, PGRES_TUPLES_OK,
                             "could not look up the replication slot", err);
        if (res == NULL)
            return err->code;
    }
    rc = PQntuples(res) == 0 ? obx_repl_slot_missing(r, err) : judge_slot(r, res, err);
    PQclear(res);
    return rc;
}

/* Columns */

/* Reads t's columns as pgoutput will announce them and hands them to h->on_table. */
static int
announce_table(struct obx_repl *r, const struct obx_repl_handler *h, const struct obx_repl_table *t,
               struct obx_error *err)
{
    char relid[16];
    const char *const params[] = {relid};
    struct obx_relcol *cols = NULL;
    /* the handler only reads rel: its names may point at t's */
    struct obx_relation rel = {
        .relid = t->relid, .nspname = (char *)t->nspname, .relname = (char *)t->relname};
    PGresult *res;
    int rc = 0;

    snprintf(relid, sizeof(relid), "%u", t->relid);
    res = obx_repl_query(r->cat, SQL_COLUMNS, 1, params, PGRES_TUPLES_OK, "could not read columns",
                         err);
    if (res == NULL)
        return err->code;
    rel.ncols = (uint16_t)PQntuples(res);
    rel.replident = rel.ncols > 0 ? (uint8_t)PQgetvalue(res, 0, 3)[0] : 'd';
    cols = calloc(rel.ncols > 0 ? rel.ncols : 1, sizeof(*cols));
    if (cols == NULL) {
        rc = obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
        goto out;
    }
    for (int i = 0; i < rel.ncols; i++) {
        cols[i].name = PQgetvalue(res, i, 0);
        cols[i].type_oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        cols[i].typmod = (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10);
        cols[i].key = PQgetvalue(res, i, 4)[0] == 't';
    }
    rel.cols = cols;
    obx_error_clear(err);
    rc = h->on_table(h->ctx, &rel, err);
    if (rc < 0)
        rc = obx_repl_callback_failed(rc, "on_table", err);
out:
    free(cols);
    PQclear(res);
    return rc;
}

int
obx_repl_prepare(struct obx_repl *r, const struct obx_repl_handler *h, struct obx_error *err)
{
    int rc;

    for (size_t i = 0; i < r->ntables; i++)
        if ((rc = check_table(r, &r->tables[i], err)) < 0)
            return rc;
    /* The publication before the slot: pgoutput looks publications up as of the slot's
     * position, so one created after the slot fails decoding of everything in between. */
    if ((rc = check_publication(r, err)) < 0)
        return rc;
    if ((rc = check_slot(r, err)) < 0)
        return rc;
    for (size_t i = 0; i < r->ntables && h->on_table != NULL; i++)
        if ((rc = announce_table(r, h, &r->tables[i], err)) < 0)
            return rc;
    return 0;
}

/* Warns when the slot retains more than postgres.wal.warn.bytes of WAL, or when
 * max_slot_wal_keep_size leaves it less than that before invalidation (a row of SQL_WAL_BUDGET).
 */
static void
warn_wal_budget(const struct obx_repl *r, const PGresult *res)
{
    const char *wal_status = PQgetvalue(res, 0, 0);

    if (r->wal_warn_bytes <= 0)
        return;
    if (!PQgetisnull(res, 0, 2) && strtoll(PQgetvalue(res, 0, 2), NULL, 10) > r->wal_warn_bytes)
        obx_log_warn("repl",
                     "replication slot \"%s\" retains %s bytes of WAL (more than "
                     "postgres.wal.warn.bytes = %lld): outboxd is falling behind",
                     r->slot, PQgetvalue(res, 0, 2), r->wal_warn_bytes);
    if (!PQgetisnull(res, 0, 1) && strtoll(PQgetvalue(res, 0, 1), NULL, 10) < r->wal_warn_bytes)
        obx_log_warn("repl",
                     "replication slot \"%s\" can fall only %s more bytes behind before "
                     "max_slot_wal_keep_size invalidates it (wal_status %s)",
                     r->slot, PQgetvalue(res, 0, 1), wal_status);
}

int
obx_repl_check_wal(struct obx_repl *r, struct obx_error *err)
{
    const char *const params[] = {r->slot};
    int64_t now = obx_repl_now_us();
    char msg[OBX_ERROR_MSG_MAX];
    PGresult *res;
    int rc = 0;

    if (now < r->next_wal_check_us)
        return 0;
    r->next_wal_check_us = now + WAL_CHECK_INTERVAL_US;
    res = PQexecParams(r->cat, SQL_WAL_BUDGET, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        obx_repl_pq_msg(PQresultErrorMessage(res), msg, sizeof(msg));
        obx_log_warn("repl", "could not check the slot's WAL budget: %s", msg);
    } else if (PQntuples(res) == 0) {
        rc = obx_repl_slot_missing(r, err);
    } else if (strcmp(PQgetvalue(res, 0, 0), "lost") == 0) {
        rc = slot_lost(r, err);
    } else {
        warn_wal_budget(r, res);
    }
    PQclear(res);
    return rc;
}
