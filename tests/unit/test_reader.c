/* test_reader.c - unit tests of the bounds-checked big-endian reader. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "outboxd/error.h"
#include "outboxd/reader.h"

static const uint8_t bytes9[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09};

/* --- obx_reader_init ------------------------------------------------------------------------ */

START_TEST(init__starts_at_zero)
{
    struct obx_reader r;

    obx_reader_init(&r, bytes9, sizeof(bytes9));
    ck_assert_ptr_eq(r.p, bytes9);
    ck_assert_uint_eq(r.len, 9);
    ck_assert_uint_eq(r.off, 0);
}
END_TEST

START_TEST(init__null_empty_buffer)
{
    struct obx_reader r;
    const uint8_t *span = bytes9;
    uint8_t v;

    obx_reader_init(&r, NULL, 0);
    ck_assert_uint_eq(obx_reader_remaining(&r), 0);
    ck_assert_int_eq(obx_reader_end(&r), 0);
    ck_assert_int_eq(obx_reader_u8(&r, &v), OBX_ERR_PROTOCOL);
    ck_assert_int_eq(obx_reader_bytes(&r, 0, &span), 0);
    ck_assert_ptr_null(span);
    ck_assert_int_eq(obx_reader_bytes(&r, 1, &span), OBX_ERR_PROTOCOL);
}
END_TEST

/* --- obx_reader_u8 -------------------------------------------------------------------------- */

START_TEST(u8__reads_then_refuses_at_end)
{
    struct obx_reader r;
    uint8_t v = 0;

    obx_reader_init(&r, bytes9, 2);
    ck_assert_int_eq(obx_reader_u8(&r, &v), 0);
    ck_assert_uint_eq(v, 0x01);
    ck_assert_int_eq(obx_reader_u8(&r, &v), 0);
    ck_assert_uint_eq(v, 0x02);
    v = 0x77;
    ck_assert_int_eq(obx_reader_u8(&r, &v), OBX_ERR_PROTOCOL);
    ck_assert_uint_eq(v, 0x77); /* untouched on failure */
    ck_assert_uint_eq(r.off, 2);
}
END_TEST

/* --- obx_reader_u16 ------------------------------------------------------------------------- */

START_TEST(u16__big_endian)
{
    struct obx_reader r;
    uint16_t v;

    obx_reader_init(&r, bytes9, 3);
    ck_assert_int_eq(obx_reader_u16(&r, &v), 0);
    ck_assert_uint_eq(v, 0x0102);
    ck_assert_int_eq(obx_reader_u16(&r, &v), OBX_ERR_PROTOCOL);
    ck_assert_uint_eq(r.off, 2); /* the cursor did not move */
    ck_assert_uint_eq(obx_reader_remaining(&r), 1);
}
END_TEST

/* --- obx_reader_u32 ------------------------------------------------------------------------- */

START_TEST(u32__big_endian_and_short)
{
    struct obx_reader r;
    uint32_t v;

    obx_reader_init(&r, bytes9, 7);
    ck_assert_int_eq(obx_reader_u32(&r, &v), 0);
    ck_assert_uint_eq(v, 0x01020304u);
    ck_assert_int_eq(obx_reader_u32(&r, &v), OBX_ERR_PROTOCOL);
    ck_assert_uint_eq(r.off, 4);
}
END_TEST

/* --- obx_reader_i32 ------------------------------------------------------------------------- */

START_TEST(i32__negative_values)
{
    static const uint8_t b[] = {0xff, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00,
                                0x00, 0x7f, 0xff, 0xff, 0xff, 0x00};
    struct obx_reader r;
    int32_t v;

    obx_reader_init(&r, b, sizeof(b));
    ck_assert_int_eq(obx_reader_i32(&r, &v), 0);
    ck_assert_int_eq(v, -1);
    ck_assert_int_eq(obx_reader_i32(&r, &v), 0);
    ck_assert_int_eq(v, INT32_MIN);
    ck_assert_int_eq(obx_reader_i32(&r, &v), 0);
    ck_assert_int_eq(v, INT32_MAX);
    ck_assert_int_eq(obx_reader_i32(&r, &v), OBX_ERR_PROTOCOL);
}
END_TEST

/* --- obx_reader_u64 ------------------------------------------------------------------------- */

START_TEST(u64__big_endian_and_short)
{
    struct obx_reader r;
    uint64_t v;

    obx_reader_init(&r, bytes9, 9);
    ck_assert_int_eq(obx_reader_u64(&r, &v), 0);
    ck_assert_uint_eq(v, 0x0102030405060708ull);
    ck_assert_int_eq(obx_reader_u64(&r, &v), OBX_ERR_PROTOCOL);
    ck_assert_uint_eq(obx_reader_remaining(&r), 1);
}
END_TEST

/* --- obx_reader_i64 ------------------------------------------------------------------------- */

START_TEST(i64__negative_values)
{
    static const uint8_t b[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
                                0x80, 0,    0,    0,    0,    0,    0,    0};
    struct obx_reader r;
    int64_t v;

    obx_reader_init(&r, b, sizeof(b));
    ck_assert_int_eq(obx_reader_i64(&r, &v), 0);
    ck_assert_int_eq(v, -2);
    ck_assert_int_eq(obx_reader_i64(&r, &v), 0);
    ck_assert_int_eq(v, INT64_MIN);
    ck_assert_int_eq(obx_reader_end(&r), 0);
}
END_TEST

/* --- obx_reader_bytes ----------------------------------------------------------------------- */

START_TEST(bytes__points_into_buffer)
{
    struct obx_reader r;
    const uint8_t *span = NULL;

    obx_reader_init(&r, bytes9, sizeof(bytes9));
    ck_assert_int_eq(obx_reader_bytes(&r, 3, &span), 0);
    ck_assert_ptr_eq(span, bytes9);
    ck_assert_int_eq(obx_reader_bytes(&r, 0, &span), 0);
    ck_assert_ptr_eq(span, bytes9 + 3);
    ck_assert_int_eq(obx_reader_bytes(&r, 7, &span), OBX_ERR_PROTOCOL);
    ck_assert_ptr_eq(span, bytes9 + 3);
    ck_assert_int_eq(obx_reader_bytes(&r, 6, &span), 0);
    ck_assert_ptr_eq(span, bytes9 + 3);
    ck_assert_int_eq(obx_reader_end(&r), 0);
}
END_TEST

START_TEST(bytes__huge_count_refused)
{
    struct obx_reader r;
    const uint8_t *span;

    obx_reader_init(&r, bytes9, sizeof(bytes9));
    ck_assert_int_eq(obx_reader_bytes(&r, 1, &span), 0);
    ck_assert_int_eq(obx_reader_bytes(&r, SIZE_MAX, &span), OBX_ERR_PROTOCOL);
    ck_assert_uint_eq(r.off, 1);
}
END_TEST

/* --- obx_reader_cstr ------------------------------------------------------------------------ */

START_TEST(cstr__reads_strings)
{
    static const char b[] = "ab\0\0xyz"; /* "ab", "", "xyz" (the literal's own NUL ends it) */
    struct obx_reader r;
    const char *s;
    size_t n = 99;

    obx_reader_init(&r, b, sizeof(b));
    ck_assert_int_eq(obx_reader_cstr(&r, &s, &n), 0);
    ck_assert_str_eq(s, "ab");
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(obx_reader_cstr(&r, &s, &n), 0);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(obx_reader_cstr(&r, &s, NULL), 0);
    ck_assert_str_eq(s, "xyz");
    ck_assert_ptr_eq(s, b + 4);
    ck_assert_int_eq(obx_reader_end(&r), 0);
}
END_TEST

START_TEST(cstr__missing_nul_refused)
{
    struct obx_reader r;
    const char *s = NULL;

    obx_reader_init(&r, "abc", 3);
    ck_assert_int_eq(obx_reader_cstr(&r, &s, NULL), OBX_ERR_PROTOCOL);
    ck_assert_ptr_null(s);
    ck_assert_uint_eq(r.off, 0);
    ck_assert_int_eq(obx_reader_bytes(&r, 3, &(const uint8_t *){NULL}), 0);
    ck_assert_int_eq(obx_reader_cstr(&r, &s, NULL), OBX_ERR_PROTOCOL);
}
END_TEST

/* --- obx_reader_remaining ------------------------------------------------------------------- */

START_TEST(remaining__counts_down)
{
    struct obx_reader r;
    uint16_t v;

    obx_reader_init(&r, bytes9, sizeof(bytes9));
    for (size_t left = 9; left >= 2; left -= 2) {
        ck_assert_uint_eq(obx_reader_remaining(&r), left);
        ck_assert_int_eq(obx_reader_u16(&r, &v), 0);
    }
    ck_assert_uint_eq(obx_reader_remaining(&r), 1);
}
END_TEST

/* --- obx_reader_end ------------------------------------------------------------------------- */

START_TEST(end__only_when_all_consumed)
{
    struct obx_reader r;
    uint32_t v;
    uint8_t b;

    obx_reader_init(&r, bytes9, 5);
    ck_assert_int_eq(obx_reader_end(&r), OBX_ERR_PROTOCOL);
    ck_assert_int_eq(obx_reader_u32(&r, &v), 0);
    ck_assert_int_eq(obx_reader_end(&r), OBX_ERR_PROTOCOL);
    ck_assert_int_eq(obx_reader_u8(&r, &b), 0);
    ck_assert_int_eq(obx_reader_end(&r), 0);
}
END_TEST

static Suite *
reader_suite(void)
{
    Suite *s = suite_create("reader");
    TCase *tc;

    tc = tcase_create("init");
    tcase_add_test(tc, init__starts_at_zero);
    tcase_add_test(tc, init__null_empty_buffer);
    suite_add_tcase(s, tc);

    tc = tcase_create("u8");
    tcase_add_test(tc, u8__reads_then_refuses_at_end);
    suite_add_tcase(s, tc);

    tc = tcase_create("u16");
    tcase_add_test(tc, u16__big_endian);
    suite_add_tcase(s, tc);

    tc = tcase_create("u32");
    tcase_add_test(tc, u32__big_endian_and_short);
    suite_add_tcase(s, tc);

    tc = tcase_create("i32");
    tcase_add_test(tc, i32__negative_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("u64");
    tcase_add_test(tc, u64__big_endian_and_short);
    suite_add_tcase(s, tc);

    tc = tcase_create("i64");
    tcase_add_test(tc, i64__negative_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("bytes");
    tcase_add_test(tc, bytes__points_into_buffer);
    tcase_add_test(tc, bytes__huge_count_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("cstr");
    tcase_add_test(tc, cstr__reads_strings);
    tcase_add_test(tc, cstr__missing_nul_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("remaining");
    tcase_add_test(tc, remaining__counts_down);
    suite_add_tcase(s, tc);

    tc = tcase_create("end");
    tcase_add_test(tc, end__only_when_all_consumed);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(reader_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
