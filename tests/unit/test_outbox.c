/* test_outbox.c - unit tests of the outbox router (being written). */
#include <check.h>
#include <stdlib.h>

#include "outboxd/outbox.h"

START_TEST(free__null_is_noop)
{
    obx_outbox_free(NULL);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc = tcase_create("free");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, free__null_is_noop);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
