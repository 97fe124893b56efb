/* test_relcache.c - unit tests of the relation cache (OID -> schema, table, columns). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outboxd/relcache.h"

/* A decoded Relation message with columns named by names (types from oids). The strings live
 * in a scratch buffer that the test overwrites after put(), to prove the cache copied them. */
struct fake_rel {
    char nspname[32];
    char relname[32];
    char names[8][32];
    struct obx_pgo_relcol cols[8];
    struct obx_pgo_relation msg;
};

static void
fake_rel(struct fake_rel *f, uint32_t relid, const char *relname, uint16_t ncols)
{
    static const uint32_t oids[] = {OBX_OID_UUID, OBX_OID_TEXT,  OBX_OID_VARCHAR, OBX_OID_JSONB,
                                    OBX_OID_INT8, OBX_OID_BYTEA, OBX_OID_INT4,    OBX_OID_JSON};

    memset(f, 0, sizeof(*f));
    snprintf(f->nspname, sizeof(f->nspname), "public");
    snprintf(f->relname, sizeof(f->relname), "%s", relname);
    for (uint16_t i = 0; i < ncols; i++) {
        snprintf(f->names[i], sizeof(f->names[i]), "col%u", (unsigned)i);
        f->cols[i] = (struct obx_pgo_relcol){.flags = i == 0 ? 1 : 0,
                                             .name = f->names[i],
                                             .type_oid = oids[i],
                                             .typmod = i == 2 ? 259 : -1};
    }
    f->msg = (struct obx_pgo_relation){.relid = relid,
                                       .nspname = f->nspname,
                                       .relname = f->relname,
                                       .replident = 'd',
                                       .ncols = ncols,
                                       .cols = f->cols};
}

/* Scribbles over every string of f, so the cache must not point into it. */
static void
scribble(struct fake_rel *f)
{
    memset(f->nspname, 'X', sizeof(f->nspname) - 1);
    memset(f->relname, 'X', sizeof(f->relname) - 1);
    for (int i = 0; i < 8; i++)
        memset(f->names[i], 'X', sizeof(f->names[i]) - 1);
}

/* --- obx_relcache_new / obx_relcache_free --------------------------------------------------- */

START_TEST(new__empty)
{
    struct obx_relcache *cache = obx_relcache_new();

    ck_assert_ptr_nonnull(cache);
    ck_assert_uint_eq(obx_relcache_count(cache), 0);
    ck_assert_ptr_null(obx_relcache_get(cache, 16384));
    obx_relcache_free(cache);
}
END_TEST

START_TEST(free__null_is_noop)
{
    obx_relcache_free(NULL);
}
END_TEST

/* --- obx_relcache_put ----------------------------------------------------------------------- */

START_TEST(put__copies_everything)
{
    struct obx_relcache *cache = obx_relcache_new();
    const struct obx_relation *rel = NULL;
    struct obx_error err;
    struct fake_rel f;

    fake_rel(&f, 16384, "outbox", 4);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, &rel, &err), 0);
    scribble(&f);
    ck_assert_ptr_nonnull(rel);
    ck_assert_ptr_eq(rel, obx_relcache_get(cache, 16384));
    ck_assert_uint_eq(rel->relid, 16384);
    ck_assert_str_eq(rel->nspname, "public");
    ck_assert_str_eq(rel->relname, "outbox");
    ck_assert_uint_eq(rel->replident, 'd');
    ck_assert_uint_eq(rel->ncols, 4);
    ck_assert_str_eq(rel->cols[0].name, "col0");
    ck_assert_str_eq(rel->cols[3].name, "col3");
    ck_assert(rel->cols[0].key);
    ck_assert(!rel->cols[1].key);
    ck_assert_uint_eq(rel->cols[0].type_oid, OBX_OID_UUID);
    ck_assert_uint_eq(rel->cols[3].type_oid, OBX_OID_JSONB);
    ck_assert_int_eq(rel->cols[2].typmod, 259);
    ck_assert_int_eq(rel->cols[1].typmod, -1);
    obx_relcache_free(cache);
}
END_TEST

START_TEST(put__replaces_on_resend)
{
    struct obx_relcache *cache = obx_relcache_new();
    const struct obx_relation *rel;
    struct fake_rel f;

    fake_rel(&f, 16384, "outbox", 2);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
    fake_rel(&f, 16384, "outbox_renamed", 5);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, &rel, NULL), 0);
    ck_assert_uint_eq(obx_relcache_count(cache), 1);
    ck_assert_ptr_eq(obx_relcache_get(cache, 16384), rel);
    ck_assert_str_eq(rel->relname, "outbox_renamed");
    ck_assert_uint_eq(rel->ncols, 5);
    ck_assert_str_eq(rel->cols[4].name, "col4");
    obx_relcache_free(cache);
}
END_TEST

START_TEST(put__zero_columns)
{
    struct obx_relcache *cache = obx_relcache_new();
    const struct obx_relation *rel;
    struct fake_rel f;

    fake_rel(&f, 7, "empty", 0);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, &rel, NULL), 0);
    ck_assert_uint_eq(rel->ncols, 0);
    ck_assert_str_eq(rel->relname, "empty");
    ck_assert_int_eq(obx_relation_column(rel, "col0"), -1);
    obx_relcache_free(cache);
}
END_TEST

/* Many OIDs in a scrambled order: every one is found, absent ones are not. */
START_TEST(put__many_relations_any_order)
{
    struct obx_relcache *cache = obx_relcache_new();
    struct fake_rel f;
    char name[32];

    for (uint32_t i = 0; i < 500; i++) {
        uint32_t relid = 16384 + (i * 7919u) % 500 * 2; /* even OIDs, scrambled */

        snprintf(name, sizeof(name), "t%u", relid);
        fake_rel(&f, relid, name, (uint16_t)(i % 8));
        ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
    }
    ck_assert_uint_eq(obx_relcache_count(cache), 500);
    for (uint32_t relid = 16384; relid < 16384 + 1000; relid++) {
        const struct obx_relation *rel = obx_relcache_get(cache, relid);

        if (relid % 2 == 1) {
            ck_assert_ptr_null(rel);
            continue;
        }
        ck_assert_ptr_nonnull(rel);
        ck_assert_uint_eq(rel->relid, relid);
        snprintf(name, sizeof(name), "t%u", relid);
        ck_assert_str_eq(rel->relname, name);
    }
    obx_relcache_free(cache);
}
END_TEST

/* --- obx_relcache_get ----------------------------------------------------------------------- */

START_TEST(get__unknown_oid)
{
    struct obx_relcache *cache = obx_relcache_new();
    struct fake_rel f;

    fake_rel(&f, 100, "a", 1);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
    ck_assert_ptr_null(obx_relcache_get(cache, 99));
    ck_assert_ptr_null(obx_relcache_get(cache, 101));
    ck_assert_ptr_null(obx_relcache_get(cache, 0));
    ck_assert_ptr_null(obx_relcache_get(cache, UINT32_MAX));
    ck_assert_ptr_nonnull(obx_relcache_get(cache, 100));
    obx_relcache_free(cache);
}
END_TEST

/* --- obx_relcache_clear --------------------------------------------------------------------- */

START_TEST(clear__empties_and_refills)
{
    struct obx_relcache *cache = obx_relcache_new();
    const struct obx_relation *rel;
    struct fake_rel f;

    fake_rel(&f, 1, "a", 1);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
    fake_rel(&f, 2, "b", 2);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
    obx_relcache_clear(cache);
    ck_assert_uint_eq(obx_relcache_count(cache), 0);
    ck_assert_ptr_null(obx_relcache_get(cache, 1));
    ck_assert_ptr_null(obx_relcache_get(cache, 2));
    fake_rel(&f, 2, "b2", 3);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
    rel = obx_relcache_get(cache, 2);
    ck_assert_ptr_nonnull(rel);
    ck_assert_str_eq(rel->relname, "b2");
    ck_assert_uint_eq(obx_relcache_count(cache), 1);
    obx_relcache_free(cache);
}
END_TEST

/* --- obx_relcache_count --------------------------------------------------------------------- */

START_TEST(count__counts_distinct_oids)
{
    struct obx_relcache *cache = obx_relcache_new();
    struct fake_rel f;

    for (uint32_t i = 0; i < 3; i++) {
        fake_rel(&f, 10 + i, "t", 1);
        ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
        ck_assert_uint_eq(obx_relcache_count(cache), i + 1);
    }
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, NULL, NULL), 0);
    ck_assert_uint_eq(obx_relcache_count(cache), 3);
    obx_relcache_free(cache);
}
END_TEST

/* --- obx_relation_column -------------------------------------------------------------------- */

START_TEST(column__finds_by_exact_name)
{
    struct obx_relcache *cache = obx_relcache_new();
    const struct obx_relation *rel;
    struct fake_rel f;

    fake_rel(&f, 5, "outbox", 4);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, &rel, NULL), 0);
    ck_assert_int_eq(obx_relation_column(rel, "col0"), 0);
    ck_assert_int_eq(obx_relation_column(rel, "col3"), 3);
    ck_assert_int_eq(obx_relation_column(rel, "col4"), -1);
    ck_assert_int_eq(obx_relation_column(rel, "COL1"), -1);
    ck_assert_int_eq(obx_relation_column(rel, "col"), -1);
    ck_assert_int_eq(obx_relation_column(rel, ""), -1);
    obx_relcache_free(cache);
}
END_TEST

/* --- obx_relation_check_tuple --------------------------------------------------------------- */

START_TEST(check_tuple__count_must_match)
{
    struct obx_relcache *cache = obx_relcache_new();
    const struct obx_relation *rel;
    struct obx_pgo_col cols[4] = {{0}};
    struct obx_pgo_tuple tup = {.ncols = 3, .cols = cols};
    struct obx_error err;
    struct fake_rel f;

    fake_rel(&f, 16390, "outbox", 3);
    ck_assert_int_eq(obx_relcache_put(cache, &f.msg, &rel, NULL), 0);
    ck_assert_int_eq(obx_relation_check_tuple(rel, &tup, &err), 0);
    tup.ncols = 4;
    ck_assert_int_eq(obx_relation_check_tuple(rel, &tup, &err), OBX_ERR_PROTOCOL);
    ck_assert_int_eq(err.code, OBX_ERR_PROTOCOL);
    ck_assert(err.fatal);
    ck_assert_str_eq(err.msg,
                     "tuple for relation public.outbox (OID 16390) has 4 columns but the relation "
                     "has 3");
    tup.ncols = 2;
    ck_assert_int_eq(obx_relation_check_tuple(rel, &tup, NULL), OBX_ERR_PROTOCOL);
    obx_relcache_free(cache);
}
END_TEST

static Suite *
relcache_suite(void)
{
    Suite *s = suite_create("relcache");
    TCase *tc;

    tc = tcase_create("new");
    tcase_add_test(tc, new__empty);
    tcase_add_test(tc, free__null_is_noop);
    suite_add_tcase(s, tc);

    tc = tcase_create("put");
    tcase_add_test(tc, put__copies_everything);
    tcase_add_test(tc, put__replaces_on_resend);
    tcase_add_test(tc, put__zero_columns);
    tcase_add_test(tc, put__many_relations_any_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("get");
    tcase_add_test(tc, get__unknown_oid);
    suite_add_tcase(s, tc);

    tc = tcase_create("clear");
    tcase_add_test(tc, clear__empties_and_refills);
    suite_add_tcase(s, tc);

    tc = tcase_create("count");
    tcase_add_test(tc, count__counts_distinct_oids);
    suite_add_tcase(s, tc);

    tc = tcase_create("column");
    tcase_add_test(tc, column__finds_by_exact_name);
    suite_add_tcase(s, tc);

    tc = tcase_create("check_tuple");
    tcase_add_test(tc, check_tuple__count_must_match);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(relcache_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
