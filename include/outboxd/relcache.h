/* relcache.h - relation OID -> schema, table and columns, from pgoutput Relation messages.
 *
 * The cache owns copies of everything it holds. A Relation message for a known OID replaces the
 * entry; the cache is emptied on every reconnect (the server re-announces relations). */
#ifndef OUTBOXD_RELCACHE_H
#define OUTBOXD_RELCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "outboxd/error.h"
#include "outboxd/pgoutput.h"

/* Built-in type OIDs outboxd cares about (pg_type.dat). */
#define OBX_OID_BYTEA 17u
#define OBX_OID_INT8 20u
#define OBX_OID_INT4 23u
#define OBX_OID_TEXT 25u
#define OBX_OID_JSON 114u
#define OBX_OID_VARCHAR 1043u
#define OBX_OID_TIMESTAMP 1114u
#define OBX_OID_TIMESTAMPTZ 1184u
#define OBX_OID_UUID 2950u
#define OBX_OID_JSONB 3802u

struct obx_relcol {
    char *name;
    uint32_t type_oid;
    int32_t typmod;
    bool key;
};

struct obx_relation {
    uint32_t relid;
    char *nspname;
    char *relname;
    uint8_t replident;
    uint16_t ncols;
    struct obx_relcol *cols;
};

struct obx_relcache;

/* Returns an empty cache or NULL when out of memory. Free with obx_relcache_free(). */
struct obx_relcache *obx_relcache_new(void);

/* Frees the cache and every relation in it; NULL is a no-op. */
void obx_relcache_free(struct obx_relcache *cache);

/* Drops every entry (on reconnect). Pointers returned earlier become invalid. */
void obx_relcache_clear(struct obx_relcache *cache);

/* Copies a decoded Relation message into the cache, replacing any entry with the same OID.
 * Stores the cached relation in *out when out is not NULL. Returns 0 or OBX_ERR_NOMEM.
 * A pointer to a replaced entry becomes invalid. */
int obx_relcache_put(struct obx_relcache *cache, const struct obx_pgo_relation *m,
                     const struct obx_relation **out, struct obx_error *err);

/* The cached relation for relid, or NULL if it was never announced. Valid until the entry is
 * replaced or the cache is cleared or freed. */
const struct obx_relation *obx_relcache_get(const struct obx_relcache *cache, uint32_t relid);

/* Number of cached relations. */
unsigned obx_relcache_count(const struct obx_relcache *cache);

/* Index of the column called name in rel, or -1 if there is none. */
int obx_relation_column(const struct obx_relation *rel, const char *name);

/* 0 if tup has exactly rel->ncols columns, else OBX_ERR_PROTOCOL naming the relation and both
 * counts. */
int obx_relation_check_tuple(const struct obx_relation *rel, const struct obx_pgo_tuple *tup,
                             struct obx_error *err);

#endif
