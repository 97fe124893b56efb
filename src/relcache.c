/* relcache.c - relation OID -> schema, table and columns, from pgoutput Relation messages.
 *
 * A sorted array of pointers, searched by binary search: a publication holds a handful of
 * tables, and lookups (one per row) must not allocate. Each relation is one allocation holding
 * the struct, its column array and every string, so replacing or dropping one is one free(). */
#include "outboxd/relcache.h"

#include <assert.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

struct obx_relcache {
    struct obx_relation **rels; /* sorted by relid */
    unsigned count;
    unsigned cap;
};

struct obx_relcache *
obx_relcache_new(void)
{
    return calloc(1, sizeof(struct obx_relcache));
}

void
obx_relcache_clear(struct obx_relcache *cache)
{
    for (unsigned i = 0; i < cache->count; i++)
        free(cache->rels[i]);
    cache->count = 0;
}

void
obx_relcache_free(struct obx_relcache *cache)
{
    if (cache == NULL)
        return;
    obx_relcache_clear(cache);
    free(cache->rels);
    free(cache);
}

unsigned
obx_relcache_count(const struct obx_relcache *cache)
{
    return cache->count;
}

/* Index of relid in the sorted array, or the index where it would be inserted; *found says
 * which. */
static unsigned
search(const struct obx_relcache *cache, uint32_t relid, bool *found)
{
    unsigned lo = 0;
    unsigned hi = cache->count;

    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        uint32_t cur = cache->rels[mid]->relid;

        if (cur == relid) {
            *found = true;
            return mid;
        }
        if (cur < relid)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

const struct obx_relation *
obx_relcache_get(const struct obx_relcache *cache, uint32_t relid)
{
    bool found;
    unsigned i = search(cache, relid, &found);

    return found ? cache->rels[i] : NULL;
}

/* Appends the NUL-terminated string s at *dst and returns where it went. */
static char *
copy_string(char **dst, const char *s)
{
    size_t n = strlen(s) + 1;
    char *at = *dst;

    memcpy(at, s, n);
    *dst += n;
    return at;
}

/* Returns a copy of m in one allocation: struct, column array, then the strings. */
static struct obx_relation *
copy_relation(const struct obx_pgo_relation *m)
{
    size_t head = sizeof(struct obx_relation);
    size_t cols = (size_t)m->ncols * sizeof(struct obx_relcol);
    size_t strings = strlen(m->nspname) + strlen(m->relname) + 2;
    struct obx_relation *rel;
    char *text;

    static_assert(sizeof(struct obx_relation) % alignof(struct obx_relcol) == 0,
                  "column array follows the relation struct");
    for (uint16_t i = 0; i < m->ncols; i++)
        strings += strlen(m->cols[i].name) + 1;
    rel = malloc(head + cols + strings);
    if (rel == NULL)
        return NULL;
    rel->cols = (struct obx_relcol *)(void *)((char *)rel + head);
    text = (char *)rel + head + cols;
    rel->relid = m->relid;
    rel->replident = m->replident;
    rel->ncols = m->ncols;
    rel->nspname = copy_string(&text, m->nspname);
    rel->relname = copy_string(&text, m->relname);
    for (uint16_t i = 0; i < m->ncols; i++) {
        rel->cols[i].name = copy_string(&text, m->cols[i].name);
        rel->cols[i].type_oid = m->cols[i].type_oid;
        rel->cols[i].typmod = m->cols[i].typmod;
        rel->cols[i].key = (m->cols[i].flags & 1) != 0;
    }
    assert(text == (char *)rel + head + cols + strings);
    return rel;
}

/* Makes room for one more entry. */
static int
reserve_one(struct obx_relcache *cache)
{
    unsigned want = cache->cap == 0 ? 8 : cache->cap * 2;
    struct obx_relation **p;

    if (cache->count < cache->cap)
        return 0;
    p = realloc(cache->rels, (size_t)want * sizeof(*p));
    if (p == NULL)
        return OBX_ERR_NOMEM;
    cache->rels = p;
    cache->cap = want;
    return 0;
}

int
obx_relcache_put(struct obx_relcache *cache, const struct obx_pgo_relation *m,
                 const struct obx_relation **out, struct obx_error *err)
{
    struct obx_relation *rel;
    bool found;
    unsigned i;

    rel = copy_relation(m);
    if (rel == NULL || reserve_one(cache) != 0) {
        free(rel);
        return obx_error_set(err, OBX_ERR_NOMEM, false, "out of memory caching relation %s.%s",
                             m->nspname, m->relname);
    }
    i = search(cache, m->relid, &found);
    if (found) {
        free(cache->rels[i]);
    } else {
        memmove(&cache->rels[i + 1], &cache->rels[i],
                (size_t)(cache->count - i) * sizeof(cache->rels[0]));
        cache->count++;
    }
    cache->rels[i] = rel;
    if (out != NULL)
        *out = rel;
    return 0;
}

int
obx_relation_column(const struct obx_relation *rel, const char *name)
{
    for (uint16_t i = 0; i < rel->ncols; i++) {
        if (strcmp(rel->cols[i].name, name) == 0)
            return i;
    }
    return -1;
}

int
obx_relation_check_tuple(const struct obx_relation *rel, const struct obx_pgo_tuple *tup,
                         struct obx_error *err)
{
    if (tup->ncols == rel->ncols)
        return 0;
    return obx_error_set(err, OBX_ERR_PROTOCOL, true,
                         "tuple for relation %s.%s (OID %u) has %u columns but the relation has %u",
                         rel->nspname, rel->relname, rel->relid, (unsigned)tup->ncols,
                         (unsigned)rel->ncols);
}
