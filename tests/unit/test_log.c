/* test_log.c - unit tests of the log module: level filtering, text and JSON line formats,
 * escaping, the librdkafka callback, and whole lines under concurrent writers. Lines are
 * captured through a pipe (obx_log_set_fd). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outboxd/error.h"
#include "outboxd/log.h"

static int capture_fds[2] = {-1, -1};

/* Routes log lines into a pipe and resets level and format. */
static void
capture_start(void)
{
    if (capture_fds[0] >= 0) {
        close(capture_fds[0]);
        close(capture_fds[1]);
    }
    ck_assert_int_eq(pipe(capture_fds), 0);
    ck_assert_int_eq(fcntl(capture_fds[0], F_SETFL, O_NONBLOCK), 0);
    obx_log_set_fd(capture_fds[1]);
    obx_log_set_level(OBX_LOG_INFO);
    obx_log_set_json(false);
}

/* Returns everything logged since capture_start (caller frees). */
static char *
capture_read(void)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t n;

    ck_assert_ptr_nonnull(buf);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        n = read(capture_fds[0], buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

static bool
matches(const char *text, const char *pattern)
{
    regex_t re;
    int rc;

    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    return rc == 0;
}

#define TS "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* Parses one JSON line and checks its level, module and msg. */
static void
assert_json_line(const char *line, const char *level, const char *module, const char *msg)
{
    json_error_t jerr;
    json_t *o = json_loads(line, 0, &jerr);

    ck_assert_msg(o != NULL, "not JSON (%s): %s", jerr.text, line);
    ck_assert_uint_eq(json_object_size(o), 4);
    ck_assert(matches(json_string_value(json_object_get(o, "ts")), "^" TS "$"));
    ck_assert_str_eq(json_string_value(json_object_get(o, "level")), level);
    ck_assert_str_eq(json_string_value(json_object_get(o, "module")), module);
    ck_assert_str_eq(json_string_value(json_object_get(o, "msg")), msg);
    json_decref(o);
}

/* --- obx_log_set_level ----------------------------------------------------------------------- */

static int evaluated;

static int
side_effect(void)
{
    return ++evaluated;
}

START_TEST(set_level__filters_lower_levels)
{
    char *out;

    capture_start();
    obx_log_set_level(OBX_LOG_WARN);
    obx_log_debug("t", "d%d", 1);
    obx_log_info("t", "i%d", 2);
    obx_log_warn("t", "w%d", 3);
    obx_log_error("t", "e%d", 4);
    out = capture_read();
    ck_assert(matches(out, "^" TS " WARN  t: w3\n" TS " ERROR t: e4\n$"));
    free(out);

    obx_log_set_level(OBX_LOG_DEBUG);
    obx_log_debug("t", "d%d", 5);
    out = capture_read();
    ck_assert(matches(out, "^" TS " DEBUG t: d5\n$"));
    free(out);
}
END_TEST

START_TEST(set_level__filtered_arguments_are_not_evaluated)
{
    char *out;

    capture_start();
    evaluated = 0;
    obx_log_debug("t", "%d", side_effect());
    ck_assert_int_eq(evaluated, 0);
    obx_log_info("t", "%d", side_effect());
    ck_assert_int_eq(evaluated, 1);
    out = capture_read();
    ck_assert(matches(out, "t: 1\n$"));
    free(out);
}
END_TEST

/* --- obx_log_write (text) ------------------------------------------------------------------- */

START_TEST(write__text_line_format)
{
    char *out;

    capture_start();
    obx_log_write(OBX_LOG_INFO, "repl", "streaming from %X/%X", 0x16u, 0xB374D48u);
    out = capture_read();
    ck_assert_msg(matches(out, "^" TS " INFO  repl: streaming from 16/B374D48\n$"), "%s", out);
    free(out);
}
END_TEST

START_TEST(write__text_escapes_control_characters)
{
    char *out;

    capture_start();
    obx_log_write(OBX_LOG_ERROR, "outbox", "bad\nrow\there\x01 \"q\" \\");
    out = capture_read();
    ck_assert_msg(matches(out, "^" TS " ERROR outbox: bad\\\\nrow\\\\there\\\\x01 \"q\" \\\\\n$"),
                  "%s", out);
    ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
}
END_TEST

START_TEST(write__long_message_is_cut_to_one_line)
{
    char *big = malloc(20001), *out;

    memset(big, 'x', 20000);
    big[20000] = '\0';
    capture_start();
    obx_log_write(OBX_LOG_INFO, "t", "%s", big);
    out = capture_read();
    ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
    ck_assert(matches(out, "xxx\\.\\.\\.\n$"));
    ck_assert_uint_lt(strlen(out), 9000);
    free(out);
    free(big);
}
END_TEST

START_TEST(write__preserves_errno)
{
    char *out;

    capture_start();
    errno = ENOENT;
    obx_log_write(OBX_LOG_INFO, "t", "x");
    ck_assert_int_eq(errno, ENOENT);
    out = capture_read();
    free(out);
}
END_TEST

/* --- obx_log_set_json ----------------------------------------------------------------------- */

START_TEST(set_json__writes_one_object_per_line)
{
    char *out;

    capture_start();
    obx_log_set_json(true);
    obx_log_info("repl", "hello %s", "world");
    out = capture_read();
    ck_assert(matches(out, "^\\{\"ts\":\"" TS "\",\"level\":\"info\",\"module\":\"repl\","
                           "\"msg\":\"hello world\"\\}\n$"));
    assert_json_line(out, "info", "repl", "hello world");
    free(out);
}
END_TEST

START_TEST(set_json__escapes_quotes_controls_and_bad_utf8)
{
    char *out;

    capture_start();
    obx_log_set_json(true);
    obx_log_error("mod\"x", "q\"b\\s\n\t\r\x01\x7f é \xff\xc3 end");
    out = capture_read();
    ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
    assert_json_line(out, "error", "mod\"x",
                     "q\"b\\s\n\t\r\x01\x7f \xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd end");
    free(out);
}
END_TEST

START_TEST(set_json__every_level_name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char *out, *line;

    capture_start();
    obx_log_set_json(true);
    obx_log_set_level(OBX_LOG_DEBUG);
    for (int lv = OBX_LOG_DEBUG; lv <= OBX_LOG_ERROR; lv++)
        obx_log_write((enum obx_log_level)lv, "m", "%d", lv);
    out = capture_read();
    line = strtok(out, "\n");
    for (int lv = 0; lv < 4; lv++) {
        char msg[4];

        ck_assert_ptr_nonnull(line);
        snprintf(msg, sizeof(msg), "%d", lv);
        assert_json_line(line, names[lv], "m", msg);
        line = strtok(NULL, "\n");
    }
    ck_assert_ptr_null(line);
    free(out);
}
END_TEST

/* --- obx_log_parse_level --------------------------------------------------------------------- */

START_TEST(parse_level__every_name)
{
    enum obx_log_level lv = OBX_LOG_ERROR;

    ck_assert_int_eq(obx_log_parse_level("debug", &lv), 0);
    ck_assert_int_eq(lv, OBX_LOG_DEBUG);
    ck_assert_int_eq(obx_log_parse_level("info", &lv), 0);
    ck_assert_int_eq(lv, OBX_LOG_INFO);
    ck_assert_int_eq(obx_log_parse_level("warn", &lv), 0);
    ck_assert_int_eq(lv, OBX_LOG_WARN);
    ck_assert_int_eq(obx_log_parse_level("error", &lv), 0);
    ck_assert_int_eq(lv, OBX_LOG_ERROR);
}
END_TEST

START_TEST(parse_level__refuses_unknown)
{
    enum obx_log_level lv = OBX_LOG_WARN;

    ck_assert_int_eq(obx_log_parse_level("warning", &lv), OBX_ERR_CONFIG);
    ck_assert_int_eq(obx_log_parse_level("", &lv), OBX_ERR_CONFIG);
    ck_assert_int_eq(obx_log_parse_level(NULL, &lv), OBX_ERR_CONFIG);
    ck_assert_int_eq(lv, OBX_LOG_WARN);
}
END_TEST

/* --- obx_log_rdkafka ------------------------------------------------------------------------- */

START_TEST(rdkafka__maps_syslog_levels)
{
    char *out;

    capture_start();
    obx_log_set_level(OBX_LOG_INFO);
    obx_log_rdkafka(NULL, 0, "EMERG", "a");
    obx_log_rdkafka(NULL, 3, "FAIL", "b");
    obx_log_rdkafka(NULL, 4, "WARN", "c");
    obx_log_rdkafka(NULL, 5, "NOTICE", "d");
    obx_log_rdkafka(NULL, 6, "INFO", "e");
    obx_log_rdkafka(NULL, 7, "BROKER", "filtered");
    out = capture_read();
    ck_assert_msg(matches(out, "^" TS " ERROR kafka: EMERG: a\n" TS " ERROR kafka: FAIL: b\n" TS
                               " WARN  kafka: WARN: c\n" TS " INFO  kafka: NOTICE: d\n" TS
                               " INFO  kafka: INFO: e\n$"),
                  "%s", out);
    free(out);

    obx_log_set_level(OBX_LOG_DEBUG);
    obx_log_rdkafka(NULL, 7, "BROKER", "shown");
    out = capture_read();
    ck_assert(matches(out, "^" TS " DEBUG kafka: BROKER: shown\n$"));
    free(out);
}
END_TEST

/* --- whole lines from many threads ------------------------------------------------------------ */

#define THREADS 4
#define LINES_PER_THREAD 100

static void *
log_many(void *arg)
{
    long id = (long)arg;

    for (int i = 0; i < LINES_PER_THREAD; i++)
        obx_log_info("thread", "t%ld line %d %s", id, i,
                     "padding padding padding padding padding padding padding padding");
    return NULL;
}

START_TEST(write__concurrent_lines_do_not_interleave)
{
    pthread_t t[THREADS];
    size_t total = 0;
    char *out;

    capture_start();
    /* a pipe holds 64 KiB: enough for these 400 lines of ~110 bytes */
    for (long i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, log_many, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    out = capture_read();
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        ck_assert_msg(matches(line, "^" TS " INFO  thread: t[0-3] line [0-9]+ (padding ?){8}$"),
                      "torn line: %s", line);
        total++;
    }
    ck_assert_uint_eq(total, THREADS * LINES_PER_THREAD);
    free(out);
}
END_TEST

static Suite *
log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc;

    tc = tcase_create("set_level");
    tcase_add_test(tc, set_level__filters_lower_levels);
    tcase_add_test(tc, set_level__filtered_arguments_are_not_evaluated);
    suite_add_tcase(s, tc);

    tc = tcase_create("write");
    tcase_add_test(tc, write__text_line_format);
    tcase_add_test(tc, write__text_escapes_control_characters);
    tcase_add_test(tc, write__long_message_is_cut_to_one_line);
    tcase_add_test(tc, write__preserves_errno);
    tcase_add_test(tc, write__concurrent_lines_do_not_interleave);
    suite_add_tcase(s, tc);

    tc = tcase_create("set_json");
    tcase_add_test(tc, set_json__writes_one_object_per_line);
    tcase_add_test(tc, set_json__escapes_quotes_controls_and_bad_utf8);
    tcase_add_test(tc, set_json__every_level_name);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse_level");
    tcase_add_test(tc, parse_level__every_name);
    tcase_add_test(tc, parse_level__refuses_unknown);
    suite_add_tcase(s, tc);

    tc = tcase_create("rdkafka");
    tcase_add_test(tc, rdkafka__maps_syslog_levels);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(log_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
