/* test_config.c - unit tests of the configuration: key table, layers (defaults < file < env <
 * -X), parsing and bounds of every type, @file values, errors, validation, help and the
 * redacted dump. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outboxd/config.h"

/* Writes text to a new temporary file; returns its path (static buffer, one per call site). */
static void
write_temp(char *path, size_t cap, const char *text)
{
    FILE *f;
    int fd;

    snprintf(path, cap, "/tmp/obx-test-config-XXXXXX");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* Runs fn(cfg, out) into a memstream; returns the text (caller frees). */
static char *
capture(void (*fn)(const struct obx_config *, FILE *), const struct obx_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    ck_assert_ptr_nonnull(f);
    fn(cfg, f);
    ck_assert_int_eq(fclose(f), 0);
    return buf;
}

static void
help_of(const struct obx_config *cfg, FILE *out)
{
    (void)cfg;
    obx_config_print_help(out);
}

static void
markdown_of(const struct obx_config *cfg, FILE *out)
{
    (void)cfg;
    obx_config_print_markdown(out);
}

/* Sets key=value and asserts success. */
static void
set_ok(struct obx_config *cfg, const char *key, const char *value)
{
    struct obx_error err = {0};
    int rc = obx_config_set(cfg, key, value, "-X", &err);

    ck_assert_msg(rc == 0, "set %s=%s: %s", key, value, err.msg);
}

/* Sets key=value, asserts OBX_ERR_CONFIG (fatal) and returns the message (static). */
static const char *
set_fails(struct obx_config *cfg, const char *key, const char *value)
{
    static struct obx_error err;
    int rc = obx_config_set(cfg, key, value, "-X", &err);

    ck_assert_msg(rc == OBX_ERR_CONFIG, "set %s=%s returned %d", key, value, rc);
    ck_assert_int_eq(err.code, OBX_ERR_CONFIG);
    ck_assert(err.fatal);
    return err.msg;
}

/* Validates after setting key=value; returns the message, or NULL when valid (static). */
static const char *
validate_with(const char *key, const char *value)
{
    static struct obx_error err;
    struct obx_config *cfg = obx_config_new();
    int rc;

    if (key != NULL)
        set_ok(cfg, key, value);
    rc = obx_config_validate(cfg, &err);
    obx_config_free(cfg);
    if (rc == 0)
        return NULL;
    ck_assert_int_eq(rc, OBX_ERR_CONFIG);
    ck_assert(err.fatal);
    return err.msg;
}

/* Every table key, taken from the dump of the defaults (so the list cannot drift). */
static size_t
all_keys(char keys[][64], size_t max)
{
    struct obx_config *cfg = obx_config_new();
    char *dump = capture(obx_config_dump, cfg);
    size_t n = 0;

    for (char *line = strtok(dump, "\n"); line != NULL && n < max; line = strtok(NULL, "\n")) {
        size_t len = strcspn(line, " ");

        ck_assert_uint_lt(len, 64);
        memcpy(keys[n], line, len);
        keys[n++][len] = '\0';
    }
    free(dump);
    obx_config_free(cfg);
    return n;
}

/* --- obx_config_new / obx_config_free ------------------------------------------------------ */

START_TEST(new__has_every_default)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_ptr_nonnull(cfg);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.conninfo"), "");
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "outboxd");
    ck_assert(obx_config_bool(cfg, "postgres.slot.create"));
    ck_assert_str_eq(obx_config_str(cfg, "postgres.publication"), "outboxd");
    ck_assert(obx_config_bool(cfg, "postgres.publication.create"));
    ck_assert_str_eq(obx_config_str(cfg, "postgres.tables"), "public.outbox");
    ck_assert(!obx_config_bool(cfg, "postgres.messages"));
    ck_assert_int_eq(obx_config_int(cfg, "postgres.status.interval.ms"), 1000);
    ck_assert_int_eq(obx_config_int(cfg, "postgres.reconnect.backoff.ms"), 500);
    ck_assert_int_eq(obx_config_int(cfg, "postgres.reconnect.backoff.max.ms"), 30000);
    ck_assert_int_eq(obx_config_int(cfg, "postgres.wal.warn.bytes"), 1073741824LL);
    ck_assert_str_eq(obx_config_str(cfg, "outbox.table.field.event.id"), "id");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.table.field.event.key"), "aggregateid");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.table.field.event.payload"), "payload");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.table.field.event.timestamp"), "");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.route.by.field"), "aggregatetype");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.route.topic.replacement"),
                     "outbox.event.${routedByValue}");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.table.fields.additional.placement"), "");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.table.field.event.headers"), "");
    ck_assert(!obx_config_bool(cfg, "outbox.headers.source"));
    ck_assert_str_eq(obx_config_str(cfg, "outbox.message.prefix"), "outbox");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.invalid.behavior"), "dlq");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.dlq.topic"), "outbox.dlq");
    ck_assert_str_eq(obx_config_str(cfg, "log.level"), "info");
    ck_assert_str_eq(obx_config_str(cfg, "log.format"), "text");
    ck_assert_int_eq(obx_config_int(cfg, "shutdown.timeout.ms"), 30000);
    ck_assert_ptr_null(obx_config_kafka(cfg, "bootstrap.servers"));
    obx_config_free(cfg);
}
END_TEST

START_TEST(new__defaults_are_valid)
{
    ck_assert_ptr_null(validate_with(NULL, NULL));
}
END_TEST

START_TEST(free__null_is_noop)
{
    obx_config_free(NULL);
}
END_TEST

/* --- obx_config_set ------------------------------------------------------------------------ */

START_TEST(set__string_replaces_value)
{
    struct obx_config *cfg = obx_config_new();

    set_ok(cfg, "postgres.slot", "first");
    set_ok(cfg, "postgres.slot", "second");
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "second");
    set_ok(cfg, "postgres.tables", "");
    ck_assert_str_eq(obx_config_str(cfg, "postgres.tables"), "");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__int_accepts_bounds)
{
    struct obx_config *cfg = obx_config_new();

    set_ok(cfg, "postgres.status.interval.ms", "100");
    ck_assert_int_eq(obx_config_int(cfg, "postgres.status.interval.ms"), 100);
    set_ok(cfg, "postgres.status.interval.ms", "3600000");
    ck_assert_int_eq(obx_config_int(cfg, "postgres.status.interval.ms"), 3600000);
    set_ok(cfg, "postgres.status.interval.ms", "+250");
    ck_assert_int_eq(obx_config_int(cfg, "postgres.status.interval.ms"), 250);
    set_ok(cfg, "shutdown.timeout.ms", "0");
    ck_assert_int_eq(obx_config_int(cfg, "shutdown.timeout.ms"), 0);
    set_ok(cfg, "postgres.wal.warn.bytes", "9223372036854775807");
    ck_assert_int_eq(obx_config_int(cfg, "postgres.wal.warn.bytes"), 9223372036854775807LL);
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__int_refuses_out_of_bounds_and_garbage)
{
    static const char *const bad[] = {"99", "3600001", "-1",  "abc",  "12abc",
                                      "",   " 5",      "1e3", "0x10", "99999999999999999999"};
    struct obx_config *cfg = obx_config_new();
    char want[200];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(want, sizeof(want),
                 "postgres.status.interval.ms: expected an integer between 100 and 3600000, got "
                 "\"%s\" (from -X)",
                 bad[i]);
        ck_assert_str_eq(set_fails(cfg, "postgres.status.interval.ms", bad[i]), want);
    }
    /* a failed set keeps the previous value */
    ck_assert_int_eq(obx_config_int(cfg, "postgres.status.interval.ms"), 1000);
    ck_assert_str_eq(set_fails(cfg, "postgres.wal.warn.bytes", "-1"),
                     "postgres.wal.warn.bytes: expected an integer of at least 0, got \"-1\" "
                     "(from -X)");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__bool_accepts_every_spelling)
{
    static const char *const yes[] = {"true", "1", "yes", "on", "TRUE", "Yes", "On"};
    static const char *const no[] = {"false", "0", "no", "off", "FALSE", "No", "OFF"};
    struct obx_config *cfg = obx_config_new();

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        set_ok(cfg, "postgres.messages", yes[i]);
        ck_assert_msg(obx_config_bool(cfg, "postgres.messages"), "%s", yes[i]);
        set_ok(cfg, "postgres.messages", no[i]);
        ck_assert_msg(!obx_config_bool(cfg, "postgres.messages"), "%s", no[i]);
    }
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__bool_refuses_other_words)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_str_eq(set_fails(cfg, "postgres.slot.create", "maybe"),
                     "postgres.slot.create: expected true/false, 1/0, yes/no or on/off, got "
                     "\"maybe\" (from -X)");
    set_fails(cfg, "postgres.slot.create", "");
    set_fails(cfg, "postgres.slot.create", "2");
    set_fails(cfg, "postgres.slot.create", "truee");
    ck_assert(obx_config_bool(cfg, "postgres.slot.create"));
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__enum_accepts_allowed_values_case_insensitively)
{
    struct obx_config *cfg = obx_config_new();

    set_ok(cfg, "outbox.invalid.behavior", "skip");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.invalid.behavior"), "skip");
    set_ok(cfg, "outbox.invalid.behavior", "FAIL");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.invalid.behavior"), "fail");
    set_ok(cfg, "log.level", "debug");
    ck_assert_str_eq(obx_config_str(cfg, "log.level"), "debug");
    set_ok(cfg, "log.format", "json");
    ck_assert_str_eq(obx_config_str(cfg, "log.format"), "json");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__enum_refuses_other_values)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_str_eq(set_fails(cfg, "outbox.invalid.behavior", "drop"),
                     "outbox.invalid.behavior: expected one of dlq, skip, fail, got \"drop\" "
                     "(from -X)");
    ck_assert_str_eq(set_fails(cfg, "log.level", "warning"),
                     "log.level: expected one of debug, info, warn, error, got \"warning\" "
                     "(from -X)");
    set_fails(cfg, "log.level", "inf");
    set_fails(cfg, "log.level", "");
    ck_assert_str_eq(obx_config_str(cfg, "log.level"), "info");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__unknown_key_suggests_closest)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_str_eq(set_fails(cfg, "postgres.slott", "x"),
                     "unknown configuration key \"postgres.slott\" (from -X); did you mean "
                     "\"postgres.slot\"?");
    ck_assert_str_eq(set_fails(cfg, "log.levle", "x"),
                     "unknown configuration key \"log.levle\" (from -X); did you mean "
                     "\"log.level\"?");
    ck_assert_str_eq(set_fails(cfg, "kafak.bootstrap.servers", "x"),
                     "unknown configuration key \"kafak.bootstrap.servers\" (from -X); did you "
                     "mean \"kafka.bootstrap.servers\"?");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__unknown_key_without_close_match)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_str_eq(set_fails(cfg, "frobnicate", "x"),
                     "unknown configuration key \"frobnicate\" (from -X)");
    ck_assert_str_eq(set_fails(cfg, "", "x"), "unknown configuration key \"\" (from -X)");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__kafka_keys_verbatim_in_order_last_wins)
{
    struct obx_config *cfg = obx_config_new();

    set_ok(cfg, "kafka.bootstrap.servers", "a:1");
    set_ok(cfg, "kafka.acks", "all");
    set_ok(cfg, "kafka.bootstrap.servers", "b:2");
    set_ok(cfg, "kafka.sasl.jaas.like", "x=y z");
    ck_assert_str_eq(obx_config_kafka(cfg, "bootstrap.servers"), "b:2");
    ck_assert_str_eq(obx_config_kafka(cfg, "acks"), "all");
    ck_assert_str_eq(obx_config_kafka(cfg, "sasl.jaas.like"), "x=y z");
    ck_assert_ptr_null(obx_config_kafka(cfg, "kafka.acks"));
    ck_assert_str_eq(set_fails(cfg, "kafka.", "x"),
                     "\"kafka.\" names no librdkafka property (from -X)");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__at_file_reads_secret_for_strings_and_kafka)
{
    struct obx_config *cfg = obx_config_new();
    char path[64], value[80];

    write_temp(path, sizeof(path), "host=db password=s3cret\r\n\n");
    snprintf(value, sizeof(value), "@%s", path);
    set_ok(cfg, "postgres.conninfo", value);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.conninfo"), "host=db password=s3cret");
    set_ok(cfg, "kafka.sasl.password", value);
    ck_assert_str_eq(obx_config_kafka(cfg, "sasl.password"), "host=db password=s3cret");
    unlink(path);

    write_temp(path, sizeof(path), "no newline");
    snprintf(value, sizeof(value), "@%s", path);
    set_ok(cfg, "postgres.slot", value);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "no newline");
    unlink(path);
    /* "@" without an absolute path is a literal value */
    set_ok(cfg, "postgres.slot", "@slot");
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "@slot");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__at_file_missing_names_key_and_path)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_str_eq(set_fails(cfg, "postgres.conninfo", "@/nonexistent/obx-secret"),
                     "postgres.conninfo: cannot read \"/nonexistent/obx-secret\": No such file "
                     "or directory (from -X)");
    ck_assert_str_eq(set_fails(cfg, "kafka.sasl.password", "@/nonexistent/obx-secret"),
                     "kafka.sasl.password: cannot read \"/nonexistent/obx-secret\": No such "
                     "file or directory (from -X)");
    ck_assert_ptr_null(obx_config_kafka(cfg, "sasl.password"));
    ck_assert_str_eq(obx_config_str(cfg, "postgres.conninfo"), "");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__at_file_not_read_for_typed_keys)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_str_eq(set_fails(cfg, "shutdown.timeout.ms", "@/etc/hostname"),
                     "shutdown.timeout.ms: expected an integer between 0 and 3600000, got "
                     "\"@/etc/hostname\" (from -X)");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set__null_err_is_allowed)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_int_eq(obx_config_set(cfg, "nope", "x", "-X", NULL), OBX_ERR_CONFIG);
    ck_assert_int_eq(obx_config_set(cfg, "log.level", "x", NULL, NULL), OBX_ERR_CONFIG);
    ck_assert_int_eq(obx_config_set(cfg, "log.level", "warn", NULL, NULL), 0);
    obx_config_free(cfg);
}
END_TEST

/* --- obx_config_set_pair ------------------------------------------------------------------- */

START_TEST(set_pair__splits_at_first_equals)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;

    ck_assert_int_eq(obx_config_set_pair(cfg, "postgres.slot=s1", "-X", &err), 0);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "s1");
    ck_assert_int_eq(obx_config_set_pair(cfg, "postgres.conninfo=host=x port=5", "-X", &err), 0);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.conninfo"), "host=x port=5");
    ck_assert_int_eq(obx_config_set_pair(cfg, "outbox.dlq.topic=", "-X", &err), 0);
    ck_assert_str_eq(obx_config_str(cfg, "outbox.dlq.topic"), "");
    obx_config_free(cfg);
}
END_TEST

START_TEST(set_pair__refuses_missing_equals_or_key)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;

    ck_assert_int_eq(obx_config_set_pair(cfg, "postgres.slot", "-X", &err), OBX_ERR_CONFIG);
    ck_assert_str_eq(err.msg,
                     "expected key=value, got \"postgres.slot\" without a value (from -X)");
    /* something that may be a secret is not echoed */
    ck_assert_int_eq(obx_config_set_pair(cfg, "kafka.sasl.password:Hunter2", "-X", &err),
                     OBX_ERR_CONFIG);
    ck_assert_str_eq(err.msg, "expected key=value (from -X)");
    ck_assert_ptr_null(strstr(err.msg, "Hunter2"));
    ck_assert_int_eq(obx_config_set_pair(cfg, "=x", "-X", &err), OBX_ERR_CONFIG);
    ck_assert_int_eq(obx_config_set_pair(cfg, "postgres.slott=x", "-X", &err), OBX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "did you mean \"postgres.slot\"?"));
    obx_config_free(cfg);
}
END_TEST

/* --- obx_config_load_file ------------------------------------------------------------------ */

START_TEST(load_file__applies_lines_comments_and_whitespace)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;
    char path[64];

    write_temp(path, sizeof(path),
               "\xEF\xBB\xBF# outboxd\n"
               "\n"
               "   postgres.slot   =   fileslot   \n"
               "\t# indented comment\n"
               "kafka.sasl.password = pa#ss word\r\n"
               "log.level=debug\n"
               "postgres.messages = yes");
    ck_assert_int_eq(obx_config_load_file(cfg, path, &err), 0);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "fileslot");
    ck_assert_str_eq(obx_config_kafka(cfg, "sasl.password"), "pa#ss word");
    ck_assert_str_eq(obx_config_str(cfg, "log.level"), "debug");
    ck_assert(obx_config_bool(cfg, "postgres.messages"));
    unlink(path);
    obx_config_free(cfg);
}
END_TEST

START_TEST(load_file__bad_line_reports_file_and_line)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;
    char path[64], want[200];

    write_temp(path, sizeof(path), "# c\npostgres.slot = a\njust words\nlog.level = info\n");
    ck_assert_int_eq(obx_config_load_file(cfg, path, &err), OBX_ERR_CONFIG);
    snprintf(want, sizeof(want), "%s:3: expected \"key = value\"", path);
    ck_assert_str_eq(err.msg, want);
    ck_assert(err.fatal);
    unlink(path);

    write_temp(path, sizeof(path), "\n\n\n\npostgres.slott = a\n");
    ck_assert_int_eq(obx_config_load_file(cfg, path, &err), OBX_ERR_CONFIG);
    snprintf(want, sizeof(want),
             "unknown configuration key \"postgres.slott\" (from %s:5); did you mean "
             "\"postgres.slot\"?",
             path);
    ck_assert_str_eq(err.msg, want);
    unlink(path);

    write_temp(path, sizeof(path), "log.level = info\n = x\n");
    ck_assert_int_eq(obx_config_load_file(cfg, path, &err), OBX_ERR_CONFIG);
    snprintf(want, sizeof(want), "%s:2: expected \"key = value\", got no key", path);
    ck_assert_str_eq(err.msg, want);
    unlink(path);

    write_temp(path, sizeof(path), "postgres.status.interval.ms = 5\n");
    ck_assert_int_eq(obx_config_load_file(cfg, path, &err), OBX_ERR_CONFIG);
    snprintf(want, sizeof(want),
             "postgres.status.interval.ms: expected an integer between 100 and 3600000, got "
             "\"5\" (from %s:1)",
             path);
    ck_assert_str_eq(err.msg, want);
    unlink(path);
    obx_config_free(cfg);
}
END_TEST

START_TEST(load_file__missing_file_is_config_error)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;

    ck_assert_int_eq(obx_config_load_file(cfg, "/nonexistent/outboxd.conf", &err), OBX_ERR_CONFIG);
    ck_assert_str_eq(err.msg, "cannot read configuration file \"/nonexistent/outboxd.conf\": "
                              "No such file or directory");
    obx_config_free(cfg);
}
END_TEST

/* --- obx_config_load_env ------------------------------------------------------------------- */

START_TEST(load_env__maps_table_and_kafka_keys)
{
    char *envp[] = {
        (char[]){"PATH=/usr/bin"},
        (char[]){"OUTBOXD_POSTGRES_SLOT=envslot"},
        (char[]){"OUTBOXD_POSTGRES_STATUS_INTERVAL_MS=2000"},
        (char[]){"OUTBOXD_KAFKA_BOOTSTRAP_SERVERS=k:9"},
        (char[]){"OUTBOXD_OUTBOX_TABLE_FIELDS_ADDITIONAL_PLACEMENT=type:header:eventType"},
        (char[]){"OUTBOXDX_LOG_LEVEL=nonsense"},
        (char[]){"outboxd_log_level=nonsense"},
        NULL,
    };
    struct obx_config *cfg = obx_config_new();
    struct obx_error err = {0};

    ck_assert_msg(obx_config_load_env(cfg, envp, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "envslot");
    ck_assert_int_eq(obx_config_int(cfg, "postgres.status.interval.ms"), 2000);
    ck_assert_str_eq(obx_config_kafka(cfg, "bootstrap.servers"), "k:9");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.table.fields.additional.placement"),
                     "type:header:eventType");
    ck_assert_str_eq(obx_config_str(cfg, "log.level"), "info");
    ck_assert_int_eq(obx_config_load_env(cfg, NULL, &err), 0);
    obx_config_free(cfg);
}
END_TEST

START_TEST(load_env__errors_name_the_variable)
{
    char *bad_value[] = {(char[]){"OUTBOXD_LOG_LEVEL=loud"}, NULL};
    char *unknown[] = {(char[]){"OUTBOXD_POSTGRES_SLOTT=x"}, NULL};
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;

    ck_assert_int_eq(obx_config_load_env(cfg, bad_value, &err), OBX_ERR_CONFIG);
    ck_assert_str_eq(err.msg, "log.level: expected one of debug, info, warn, error, got \"loud\" "
                              "(from environment OUTBOXD_LOG_LEVEL)");
    ck_assert_int_eq(obx_config_load_env(cfg, unknown, &err), OBX_ERR_CONFIG);
    ck_assert_str_eq(err.msg, "unknown configuration key \"postgres.slott\" (from environment "
                              "OUTBOXD_POSTGRES_SLOTT); did you mean \"postgres.slot\"?");
    obx_config_free(cfg);
}
END_TEST

START_TEST(load_env__layers_defaults_file_env_cli)
{
    char *envp[] = {(char[]){"OUTBOXD_POSTGRES_PUBLICATION=env"},
                    (char[]){"OUTBOXD_OUTBOX_DLQ_TOPIC=env"}, NULL};
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;
    char path[64];

    write_temp(path, sizeof(path),
               "postgres.slot = file\npostgres.publication = file\noutbox.dlq.topic = file\n"
               "kafka.acks = 1\n");
    /* the caller's order: file, then environment, then -X */
    ck_assert_int_eq(obx_config_load_file(cfg, path, &err), 0);
    ck_assert_int_eq(obx_config_load_env(cfg, envp, &err), 0);
    ck_assert_int_eq(obx_config_set_pair(cfg, "outbox.dlq.topic=cli", "-X", &err), 0);
    ck_assert_int_eq(obx_config_set_pair(cfg, "kafka.acks=all", "-X", &err), 0);
    ck_assert_str_eq(obx_config_str(cfg, "postgres.tables"), "public.outbox"); /* default */
    ck_assert_str_eq(obx_config_str(cfg, "postgres.slot"), "file");
    ck_assert_str_eq(obx_config_str(cfg, "postgres.publication"), "env");
    ck_assert_str_eq(obx_config_str(cfg, "outbox.dlq.topic"), "cli");
    ck_assert_str_eq(obx_config_kafka(cfg, "acks"), "all");
    unlink(path);
    obx_config_free(cfg);
}
END_TEST

/* --- obx_config_validate ------------------------------------------------------------------- */

START_TEST(validate__accepts_good_combinations)
{
    ck_assert_ptr_null(validate_with("postgres.tables", " public.outbox , billing.out_box2 "));
    ck_assert_ptr_null(
        validate_with("outbox.table.fields.additional.placement",
                      "type:header, ts:header:eventTime,v:envelope:ver,p:partition"));
    ck_assert_ptr_null(validate_with("postgres.conninfo", "host=db dbname=app password='a b'"));
    ck_assert_ptr_null(validate_with("postgres.conninfo", "postgresql://u:p@db:5432/app?x=1"));
    ck_assert_ptr_null(validate_with("outbox.route.topic.replacement", "fixed-topic"));
    ck_assert_ptr_null(validate_with("outbox.route.topic.replacement", "${routedByValue}"));
}
END_TEST

START_TEST(validate__tables_must_be_schema_qualified)
{
    ck_assert_str_eq(validate_with("postgres.tables", "outbox"),
                     "postgres.tables: expected comma-separated schema.table names (lower-case "
                     "unquoted identifiers), got \"outbox\"");
    ck_assert_ptr_nonnull(strstr(validate_with("postgres.tables", "public.outbox,"), "got \"\""));
    ck_assert_ptr_nonnull(strstr(validate_with("postgres.tables", "a.b.c"), "\"a.b.c\""));
    ck_assert_ptr_nonnull(strstr(validate_with("postgres.tables", "Public.Outbox"), "Public"));
    ck_assert_ptr_nonnull(validate_with("postgres.tables", "public.1outbox"));
    ck_assert_ptr_nonnull(validate_with("postgres.tables", "public.out box"));
    ck_assert_str_eq(validate_with("postgres.tables", "  "),
                     "postgres.tables: expected at least one schema.table name");
}
END_TEST

START_TEST(validate__conninfo_must_not_set_replication)
{
    const char *want = "postgres.conninfo: must not set replication (outboxd adds "
                       "replication=database itself)";

    ck_assert_str_eq(validate_with("postgres.conninfo", "host=db replication=database"), want);
    ck_assert_str_eq(validate_with("postgres.conninfo", "host=db replication = true"), want);
    ck_assert_str_eq(validate_with("postgres.conninfo", "postgres://db/app?replication=database"),
                     want);
    ck_assert_str_eq(validate_with("postgres.conninfo", "postgres://db/app?a=1&replication=1"),
                     want);
    /* a password that merely contains the word is fine */
    ck_assert_ptr_null(validate_with("postgres.conninfo", "password='replication=x'"));
    ck_assert_str_eq(validate_with("postgres.conninfo", "host=db garbage"),
                     "postgres.conninfo: expected keyword=value pairs or a postgresql:// URI");
}
END_TEST

START_TEST(validate__topics)
{
    ck_assert_str_eq(validate_with("outbox.route.topic.replacement", ""),
                     "outbox.route.topic.replacement: must not be empty");
    ck_assert_ptr_nonnull(strstr(validate_with("outbox.route.topic.replacement", "a.${other}"),
                                 "outbox.route.topic.replacement: expected a topic name"));
    ck_assert_ptr_nonnull(validate_with("outbox.route.topic.replacement", "bad topic"));
    ck_assert_str_eq(validate_with("outbox.route.by.field", ""),
                     "outbox.route.by.field: must name a column when "
                     "outbox.route.topic.replacement uses ${routedByValue}");
    ck_assert_str_eq(validate_with("outbox.dlq.topic", ""),
                     "outbox.dlq.topic: must not be empty when outbox.invalid.behavior is dlq");
    ck_assert_ptr_nonnull(
        strstr(validate_with("outbox.dlq.topic", "dead letters"), "outbox.dlq.topic:"));
}
END_TEST

START_TEST(validate__placement_syntax)
{
    static const char *const bad[] = {
        "type",         "type:",         ":header",      "type:body",
        "type:header:", "p:partition:x", "a:header:b:c", "a:header,,b:header"};
    const char *msg;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg = validate_with("outbox.table.fields.additional.placement", bad[i]);
        ck_assert_msg(msg != NULL, "accepted \"%s\"", bad[i]);
        ck_assert_msg(strncmp(msg, "outbox.table.fields.additional.placement: expected ", 51) == 0,
                      "%s", msg);
    }
    ck_assert_str_eq(validate_with("outbox.table.fields.additional.placement", "type:body"),
                     "outbox.table.fields.additional.placement: expected column:header[:name], "
                     "column:envelope[:name] or column:partition, got \"type:body\"");
    ck_assert_str_eq(
        validate_with("outbox.table.fields.additional.placement", "a:partition,b:partition"),
        "outbox.table.fields.additional.placement: at most one column may be placed "
        "in the partition");
}
END_TEST

START_TEST(validate__backoff_and_other_combinations)
{
    struct obx_config *cfg = obx_config_new();
    struct obx_error err;

    set_ok(cfg, "postgres.reconnect.backoff.ms", "5000");
    set_ok(cfg, "postgres.reconnect.backoff.max.ms", "1000");
    ck_assert_int_eq(obx_config_validate(cfg, &err), OBX_ERR_CONFIG);
    ck_assert_str_eq(err.msg, "postgres.reconnect.backoff.max.ms: must be at least "
                              "postgres.reconnect.backoff.ms (5000), got 1000");
    set_ok(cfg, "postgres.reconnect.backoff.max.ms", "5000");
    ck_assert_int_eq(obx_config_validate(cfg, &err), 0);
    set_ok(cfg, "postgres.messages", "on");
    set_ok(cfg, "outbox.message.prefix", "");
    ck_assert_int_eq(obx_config_validate(cfg, &err), OBX_ERR_CONFIG);
    ck_assert_str_eq(err.msg,
                     "outbox.message.prefix: must not be empty when postgres.messages is true");
    obx_config_free(cfg);

    ck_assert_str_eq(validate_with("outbox.table.field.event.payload", ""),
                     "outbox.table.field.event.payload: must name a column");
    ck_assert_ptr_nonnull(strstr(validate_with("postgres.slot", "My-Slot"), "postgres.slot:"));
    ck_assert_ptr_nonnull(validate_with("postgres.slot", ""));
    ck_assert_ptr_nonnull(
        strstr(validate_with("postgres.publication", "a b"), "postgres.publication:"));
    ck_assert_ptr_null(validate_with("outbox.invalid.behavior", "skip"));
}
END_TEST

/* --- getters --------------------------------------------------------------------------------- */

START_TEST(str__wrong_type_aborts)
{
    struct obx_config *cfg = obx_config_new();

    obx_config_str(cfg, "postgres.status.interval.ms");
}
END_TEST

START_TEST(int__unknown_key_aborts)
{
    struct obx_config *cfg = obx_config_new();

    obx_config_int(cfg, "postgres.nope");
}
END_TEST

START_TEST(bool__wrong_type_aborts)
{
    struct obx_config *cfg = obx_config_new();

    obx_config_bool(cfg, "postgres.slot");
}
END_TEST

/* --- obx_config_foreach_kafka / obx_config_kafka ------------------------------------------- */

struct collected {
    char text[512];
    int stop_at;
    int seen;
};

static int
collect(void *ctx, const char *key, const char *value)
{
    struct collected *c = ctx;
    size_t n = strlen(c->text);

    snprintf(c->text + n, sizeof(c->text) - n, "%s=%s;", key, value);
    return ++c->seen == c->stop_at ? 42 : 0;
}

START_TEST(foreach_kafka__in_order_of_setting)
{
    struct obx_config *cfg = obx_config_new();
    struct collected c = {.stop_at = 0};

    ck_assert_int_eq(obx_config_foreach_kafka(cfg, collect, &c), 0);
    ck_assert_str_eq(c.text, "");
    set_ok(cfg, "kafka.linger.ms", "5");
    set_ok(cfg, "kafka.bootstrap.servers", "a");
    set_ok(cfg, "kafka.acks", "all");
    set_ok(cfg, "kafka.linger.ms", "10");
    ck_assert_int_eq(obx_config_foreach_kafka(cfg, collect, &c), 0);
    ck_assert_str_eq(c.text, "linger.ms=10;bootstrap.servers=a;acks=all;");
    obx_config_free(cfg);
}
END_TEST

START_TEST(foreach_kafka__stops_on_nonzero)
{
    struct obx_config *cfg = obx_config_new();
    struct collected c = {.stop_at = 2};

    set_ok(cfg, "kafka.a", "1");
    set_ok(cfg, "kafka.b", "2");
    set_ok(cfg, "kafka.c", "3");
    ck_assert_int_eq(obx_config_foreach_kafka(cfg, collect, &c), 42);
    ck_assert_str_eq(c.text, "a=1;b=2;");
    obx_config_free(cfg);
}
END_TEST

START_TEST(kafka__null_when_unset)
{
    struct obx_config *cfg = obx_config_new();

    ck_assert_ptr_null(obx_config_kafka(cfg, "acks"));
    set_ok(cfg, "kafka.acks", "1");
    ck_assert_str_eq(obx_config_kafka(cfg, "acks"), "1");
    ck_assert_ptr_null(obx_config_kafka(cfg, "ack"));
    obx_config_free(cfg);
}
END_TEST

/* --- obx_config_print_help / obx_config_print_markdown ------------------------------------- */

START_TEST(print_help__lists_every_key)
{
    char keys[64][64];
    size_t n = all_keys(keys, 64);
    char *help = capture(help_of, NULL);

    ck_assert_uint_ge(n, 26);
    for (size_t i = 0; i < n; i++) {
        char needle[80];

        snprintf(needle, sizeof(needle), "  %s ", keys[i]);
        ck_assert_msg(strstr(help, needle) != NULL, "help lacks %s", keys[i]);
    }
    ck_assert_ptr_nonnull(strstr(help, "kafka.<property>"));
    ck_assert_ptr_nonnull(strstr(help, "integer 100..3600000, default 1000"));
    ck_assert_ptr_nonnull(strstr(help, "dlq|skip|fail, default dlq"));
    ck_assert_ptr_nonnull(strstr(help, "string, default \"outboxd\""));
    ck_assert_ptr_nonnull(strstr(help, "bool, default true"));
    for (const char *line = help; *line != '\0'; line += strcspn(line, "\n") + 1)
        ck_assert_msg(strcspn(line, "\n") <= 100, "help line over 100 columns: %.100s", line);
    free(help);
}
END_TEST

START_TEST(print_markdown__one_row_per_key)
{
    char keys[64][64];
    size_t n = all_keys(keys, 64);
    char *md = capture(markdown_of, NULL);
    size_t rows = 0;

    for (size_t i = 0; i < n; i++) {
        char needle[80];

        snprintf(needle, sizeof(needle), "| `%s` |", keys[i]);
        ck_assert_msg(strstr(md, needle) != NULL, "markdown lacks %s", keys[i]);
    }
    for (const char *p = md; (p = strstr(p, "\n| `")) != NULL; p++)
        rows++;
    ck_assert_uint_eq(rows, n + 1); /* plus kafka.<property> */
    free(md);
}
END_TEST

/* --- obx_config_dump ---------------------------------------------------------------------------
 */

START_TEST(dump__never_shows_secrets)
{
    static const char *const secret_kafka[] = {
        "kafka.sasl.password",           "kafka.ssl.key.password",
        "kafka.ssl.keystore.password",   "kafka.ssl.key.pem",
        "kafka.sasl.oauthbearer.config", "kafka.sasl.oauthbearer.client.secret",
    };
    struct obx_config *cfg = obx_config_new();
    char *dump;

    set_ok(cfg, "postgres.conninfo", "host=db user=app password=Hunter2conn");
    set_ok(cfg, "kafka.bootstrap.servers", "broker:9092");
    for (size_t i = 0; i < sizeof(secret_kafka) / sizeof(secret_kafka[0]); i++)
        set_ok(cfg, secret_kafka[i], "Hunter2kafka");
    dump = capture(obx_config_dump, cfg);
    ck_assert_ptr_null(strstr(dump, "Hunter2"));
    ck_assert_ptr_nonnull(strstr(dump, "postgres.conninfo = host=db user=app password=********\n"));
    ck_assert_ptr_nonnull(strstr(dump, "kafka.bootstrap.servers = broker:9092\n"));
    for (size_t i = 0; i < sizeof(secret_kafka) / sizeof(secret_kafka[0]); i++) {
        char line[100];

        snprintf(line, sizeof(line), "%s = ********\n", secret_kafka[i]);
        ck_assert_msg(strstr(dump, line) != NULL, "no %s", line);
    }
    free(dump);

    set_ok(cfg, "postgres.conninfo", "postgresql://app:Hunter2uri@db/app?sslpassword=Hunter2q");
    dump = capture(obx_config_dump, cfg);
    ck_assert_ptr_null(strstr(dump, "Hunter2"));
    free(dump);
    obx_config_free(cfg);
}
END_TEST

START_TEST(dump__reads_back_as_a_file)
{
    struct obx_config *a = obx_config_new(), *b = obx_config_new();
    struct obx_error err = {0};
    char path[64];
    char *da, *db;

    set_ok(a, "postgres.slot", "s");
    set_ok(a, "postgres.status.interval.ms", "250");
    set_ok(a, "outbox.headers.source", "on");
    set_ok(a, "log.format", "JSON");
    set_ok(a, "kafka.acks", "all");
    da = capture(obx_config_dump, a);
    write_temp(path, sizeof(path), da);
    ck_assert_msg(obx_config_load_file(b, path, &err) == 0, "%s", err.msg);
    db = capture(obx_config_dump, b);
    ck_assert_str_eq(da, db);
    ck_assert_ptr_nonnull(strstr(da, "postgres.status.interval.ms = 250\n"));
    ck_assert_ptr_nonnull(strstr(da, "outbox.headers.source = true\n"));
    ck_assert_ptr_nonnull(strstr(da, "log.format = json\n"));
    unlink(path);
    free(da);
    free(db);
    obx_config_free(a);
    obx_config_free(b);
}
END_TEST

/* --- obx_config_redact_conninfo -----------------------------------------------------------------
 */

static void
assert_redacts(const char *in, const char *want)
{
    char out[256];

    memset(out, 'Z', sizeof(out));
    obx_config_redact_conninfo(in, out, sizeof(out));
    ck_assert_str_eq(out, want);
}

START_TEST(redact_conninfo__key_value_forms)
{
    assert_redacts("host=db password=secret dbname=app", "host=db password=******** dbname=app");
    assert_redacts("password = secret", "password = ********");
    assert_redacts("host=db password='se cret' port=5", "host=db password=******** port=5");
    assert_redacts("password='it\\'s x' user=u", "password=******** user=u");
    assert_redacts("password=a\\ b user=u", "password=******** user=u");
    assert_redacts("sslpassword=k password=p", "sslpassword=******** password=********");
    assert_redacts("  host=db  ", "  host=db  ");
    assert_redacts("", "");
    /* passwordless and look-alike keywords are untouched */
    assert_redacts("host=db user=password", "host=db user=password");
    /* malformed: the rest is hidden */
    assert_redacts("host=db oops secret", "host=db ********");
}
END_TEST

START_TEST(redact_conninfo__uri_forms)
{
    assert_redacts("postgres://user:secret@host/db", "postgres://user:********@host/db");
    assert_redacts("postgresql://user:secret@host:5432/db?sslmode=require",
                   "postgresql://user:********@host:5432/db?sslmode=require");
    assert_redacts("postgresql://user@host/db?password=secret&sslmode=require",
                   "postgresql://user@host/db?password=********&sslmode=require");
    assert_redacts("postgresql://host/db?sslmode=disable&password=secret",
                   "postgresql://host/db?sslmode=disable&password=********");
    /* unencoded '@' and '/' in the password are still hidden */
    assert_redacts("postgresql://u:se@c/ret@host/db", "postgresql://u:********@host/db");
    assert_redacts("postgresql://host:5432/db", "postgresql://host:5432/db");
    assert_redacts("postgresql://", "postgresql://");
}
END_TEST

START_TEST(redact_conninfo__truncates_without_leaking)
{
    char out[12];

    obx_config_redact_conninfo("password=supersecretvalue", out, sizeof(out));
    ck_assert_str_eq(out, "password=**");
    obx_config_redact_conninfo("host=db", out, 1);
    ck_assert_str_eq(out, "");
    obx_config_redact_conninfo(NULL, out, sizeof(out));
    ck_assert_str_eq(out, "");
}
END_TEST

/* --- obx_config_kafka_is_secret ------------------------------------------------------------- */

START_TEST(kafka_is_secret__librdkafka_sensitive_keys)
{
    ck_assert(obx_config_kafka_is_secret("sasl.password"));
    ck_assert(obx_config_kafka_is_secret("kafka.sasl.password"));
    ck_assert(obx_config_kafka_is_secret("ssl.key.password"));
    ck_assert(obx_config_kafka_is_secret("ssl.keystore.password"));
    ck_assert(obx_config_kafka_is_secret("ssl.key.pem"));
    ck_assert(obx_config_kafka_is_secret("sasl.oauthbearer.config"));
    ck_assert(obx_config_kafka_is_secret("sasl.oauthbearer.client.secret"));
    ck_assert(!obx_config_kafka_is_secret("bootstrap.servers"));
    ck_assert(!obx_config_kafka_is_secret("sasl.username"));
    ck_assert(!obx_config_kafka_is_secret("ssl.certificate.pem"));
}
END_TEST

/* docs/configuration.md holds the table obx_config_print_markdown() writes, verbatim: a key added
 * to the table without regenerating the page fails here. */
START_TEST(print_markdown__docs_are_current)
{
    const char *fixtures = getenv("OBX_FIXTURES");
    char path[4096], *table = NULL, *doc;
    size_t table_len = 0;
    FILE *mem, *f;
    long n;

    ck_assert_ptr_nonnull(fixtures);
    snprintf(path, sizeof(path), "%s/../../docs/configuration.md", fixtures);
    mem = open_memstream(&table, &table_len);
    ck_assert_ptr_nonnull(mem);
    obx_config_print_markdown(mem);
    fclose(mem);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    doc = calloc(1, (size_t)n + 1);
    ck_assert_ptr_nonnull(doc);
    ck_assert_uint_eq(fread(doc, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    ck_assert_msg(strstr(doc, table) != NULL,
                  "docs/configuration.md is out of date: regenerate its key table with "
                  "obx_config_print_markdown()");
    free(doc);
    free(table);
}
END_TEST

static Suite *
config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("new");
    tcase_add_test(tc, new__has_every_default);
    tcase_add_test(tc, new__defaults_are_valid);
    tcase_add_test(tc, free__null_is_noop);
    suite_add_tcase(s, tc);

    tc = tcase_create("set");
    tcase_add_test(tc, set__string_replaces_value);
    tcase_add_test(tc, set__int_accepts_bounds);
    tcase_add_test(tc, set__int_refuses_out_of_bounds_and_garbage);
    tcase_add_test(tc, set__bool_accepts_every_spelling);
    tcase_add_test(tc, set__bool_refuses_other_words);
    tcase_add_test(tc, set__enum_accepts_allowed_values_case_insensitively);
    tcase_add_test(tc, set__enum_refuses_other_values);
    tcase_add_test(tc, set__unknown_key_suggests_closest);
    tcase_add_test(tc, set__unknown_key_without_close_match);
    tcase_add_test(tc, set__kafka_keys_verbatim_in_order_last_wins);
    tcase_add_test(tc, set__at_file_reads_secret_for_strings_and_kafka);
    tcase_add_test(tc, set__at_file_missing_names_key_and_path);
    tcase_add_test(tc, set__at_file_not_read_for_typed_keys);
    tcase_add_test(tc, set__null_err_is_allowed);
    suite_add_tcase(s, tc);

    tc = tcase_create("set_pair");
    tcase_add_test(tc, set_pair__splits_at_first_equals);
    tcase_add_test(tc, set_pair__refuses_missing_equals_or_key);
    suite_add_tcase(s, tc);

    tc = tcase_create("load_file");
    tcase_add_test(tc, load_file__applies_lines_comments_and_whitespace);
    tcase_add_test(tc, load_file__bad_line_reports_file_and_line);
    tcase_add_test(tc, load_file__missing_file_is_config_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("load_env");
    tcase_add_test(tc, load_env__maps_table_and_kafka_keys);
    tcase_add_test(tc, load_env__errors_name_the_variable);
    tcase_add_test(tc, load_env__layers_defaults_file_env_cli);
    suite_add_tcase(s, tc);

    tc = tcase_create("validate");
    tcase_add_test(tc, validate__accepts_good_combinations);
    tcase_add_test(tc, validate__tables_must_be_schema_qualified);
    tcase_add_test(tc, validate__conninfo_must_not_set_replication);
    tcase_add_test(tc, validate__topics);
    tcase_add_test(tc, validate__placement_syntax);
    tcase_add_test(tc, validate__backoff_and_other_combinations);
    suite_add_tcase(s, tc);

    /* an abort can only be caught in a forked test (the valgrind setup runs with CK_FORK=no) */
    if (getenv("CK_FORK") == NULL || strcmp(getenv("CK_FORK"), "no") != 0) {
        tc = tcase_create("getters");
        tcase_add_test_raise_signal(tc, str__wrong_type_aborts, SIGABRT);
        tcase_add_test_raise_signal(tc, int__unknown_key_aborts, SIGABRT);
        tcase_add_test_raise_signal(tc, bool__wrong_type_aborts, SIGABRT);
        suite_add_tcase(s, tc);
    }

    tc = tcase_create("foreach_kafka");
    tcase_add_test(tc, foreach_kafka__in_order_of_setting);
    tcase_add_test(tc, foreach_kafka__stops_on_nonzero);
    tcase_add_test(tc, kafka__null_when_unset);
    suite_add_tcase(s, tc);

    tc = tcase_create("print_help");
    tcase_add_test(tc, print_help__lists_every_key);
    tcase_add_test(tc, print_markdown__one_row_per_key);
    tcase_add_test(tc, print_markdown__docs_are_current);
    suite_add_tcase(s, tc);

    tc = tcase_create("dump");
    tcase_add_test(tc, dump__never_shows_secrets);
    tcase_add_test(tc, dump__reads_back_as_a_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("redact_conninfo");
    tcase_add_test(tc, redact_conninfo__key_value_forms);
    tcase_add_test(tc, redact_conninfo__uri_forms);
    tcase_add_test(tc, redact_conninfo__truncates_without_leaking);
    tcase_add_test(tc, kafka_is_secret__librdkafka_sensitive_keys);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
