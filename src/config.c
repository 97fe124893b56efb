/* config.c - outboxd's settings: one static table of keys from which parsing, validation, --help,
 * the Markdown reference and the redacted dump are all derived.
 *
 * Adding a key is one row in `keys` below. Values are parsed when set (each set overrides the
 * previous one; the caller applies file, then environment, then -X). kafka.* keys are not in the
 * table: they are kept verbatim, in the order first set, for librdkafka. */
#include "outboxd/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum key_type {
    KEY_STRING,
    KEY_INT,
    KEY_BOOL,
    KEY_ENUM,
};

/* How a value is shown in the dump and in error messages. */
enum key_secret {
    SECRET_NONE = 0,
    SECRET_CONNINFO, /* a libpq conninfo: only its passwords are hidden */
    SECRET_WHOLE,    /* the whole value is hidden */
};

struct key_def {
    const char *name;
    enum key_type type;
    const char *def;     /* default, as text */
    long long min, max;  /* KEY_INT bounds, inclusive */
    const char *allowed; /* KEY_ENUM values, "a|b|c" */
    enum key_secret secret;
    const char *desc; /* one line: --help and docs/configuration.md */
};

/* clang-format off */
static const struct key_def keys[] = {
    {.name = "postgres.conninfo", .type = KEY_STRING, .def = "", .secret = SECRET_CONNINFO,
     .desc = "libpq connection string or URI; empty: libpq defaults and PG* variables"},
    {.name = "postgres.slot", .type = KEY_STRING, .def = "outboxd",
     .desc = "logical replication slot to stream from (pgoutput)"},
    {.name = "postgres.slot.create", .type = KEY_BOOL, .def = "true",
     .desc = "create the slot at start when it does not exist"},
    {.name = "postgres.publication", .type = KEY_STRING, .def = "outboxd",
     .desc = "publication that carries the outbox tables"},
    {.name = "postgres.publication.create", .type = KEY_BOOL, .def = "true",
     .desc = "create the publication for postgres.tables when it does not exist"},
    {.name = "postgres.tables", .type = KEY_STRING, .def = "public.outbox",
     .desc = "outbox tables, comma-separated schema.table names"},
    {.name = "postgres.messages", .type = KEY_BOOL, .def = "false",
     .desc = "also publish transactional pg_logical_emit_message() with outbox.message.prefix"},
    {.name = "postgres.status.interval.ms", .type = KEY_INT, .def = "1000",
     .min = 100, .max = 3600000,
     .desc = "interval between standby status updates (confirmed position) sent to PostgreSQL"},
    {.name = "postgres.reconnect.backoff.ms", .type = KEY_INT, .def = "500",
     .min = 10, .max = 600000,
     .desc = "first delay before reconnecting to PostgreSQL; doubles on each failure"},
    {.name = "postgres.reconnect.backoff.max.ms", .type = KEY_INT, .def = "30000",
     .min = 10, .max = 3600000,
     .desc = "cap of the reconnect delay"},
    {.name = "postgres.wal.warn.bytes", .type = KEY_INT, .def = "1073741824",
     .min = 0, .max = LLONG_MAX,
     .desc = "warn when the slot retains more WAL than this (0: never warn)"},
    {.name = "outbox.table.field.event.id", .type = KEY_STRING, .def = "id",
     .desc = "column with the event id, sent as header id (the consumers' dedupe key)"},
    {.name = "outbox.table.field.event.key", .type = KEY_STRING, .def = "aggregateid",
     .desc = "column with the record key (as text)"},
    {.name = "outbox.table.field.event.payload", .type = KEY_STRING, .def = "payload",
     .desc = "column with the record value; SQL NULL becomes a tombstone"},
    {.name = "outbox.table.field.event.timestamp", .type = KEY_STRING, .def = "",
     .desc = "column with the record timestamp (empty: the commit time)"},
    {.name = "outbox.route.by.field", .type = KEY_STRING, .def = "aggregatetype",
     .desc = "column whose value replaces ${routedByValue} in the topic"},
    {.name = "outbox.route.topic.replacement", .type = KEY_STRING,
     .def = "outbox.event.${routedByValue}",
     .desc = "topic name template"},
    {.name = "outbox.table.fields.additional.placement", .type = KEY_STRING, .def = "",
     .desc = "extra columns, comma-separated: col:header[:name], col:envelope[:name], "
             "col:partition"},
    {.name = "outbox.table.field.event.headers", .type = KEY_STRING, .def = "",
     .desc = "json/jsonb column whose object members become headers (empty: none)"},
    {.name = "outbox.headers.source", .type = KEY_BOOL, .def = "false",
     .desc = "add headers outbox.lsn (commit LSN), outbox.xid, outbox.seq (dedupe key)"},
    {.name = "outbox.message.prefix", .type = KEY_STRING, .def = "outbox",
     .desc = "prefix of the logical messages to publish (with postgres.messages)"},
    {.name = "outbox.invalid.behavior", .type = KEY_ENUM, .def = "dlq", .allowed = "dlq|skip|fail",
     .desc = "what to do with a row that cannot be routed: dead-letter topic, skip it, or stop"},
    {.name = "outbox.dlq.topic", .type = KEY_STRING, .def = "outbox.dlq",
     .desc = "dead-letter topic (records carry an error header)"},
    {.name = "log.level", .type = KEY_ENUM, .def = "info", .allowed = "debug|info|warn|error",
     .desc = "minimum level of log lines"},
    {.name = "log.format", .type = KEY_ENUM, .def = "text", .allowed = "text|json",
     .desc = "log line format on stderr: text or one JSON object per line"},
    {.name = "shutdown.timeout.ms", .type = KEY_INT, .def = "30000", .min = 0, .max = 3600000,
     .desc = "how long SIGTERM waits for the open transaction to be read and for Kafka to acknowledge it"},
};
/* clang-format on */

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

/* The passthrough row of --help and the docs. */
static const char kafka_help_name[] = "kafka.<property>";
static const char kafka_help_desc[] =
    "any librdkafka producer property, e.g. kafka.bootstrap.servers";

static const char redacted[] = "********";

/* librdkafka properties whose whole value is secret (besides any name containing "password" or
 * "secret"). */
static const char *const kafka_secret_keys[] = {
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.extensions",
    "ssl.key.pem",
    "ssl_key",
};

/* Libpq conninfo keywords whose value is secret. */
static const char *const conninfo_secret_keys[] = {"password", "sslpassword"};

#define KAFKA_PREFIX "kafka."
#define ENV_PREFIX "OUTBOXD_"
#define SECRET_FILE_MAX (1024 * 1024)

struct setting {
    char *text;    /* canonical text (owned) */
    long long num; /* KEY_INT value; KEY_BOOL 0/1 */
};

struct kafka_prop {
    char *key; /* prefix stripped (owned) */
    char *value;
};

struct obx_config {
    struct setting settings[N_KEYS];
    struct kafka_prop *kafka;
    size_t n_kafka, cap_kafka;
};

/* Every configuration error is fatal: the process exits with status 2. */
#define config_error(err, ...) obx_error_set((err), OBX_ERR_CONFIG, true, __VA_ARGS__)

static int
nomem(struct obx_error *err)
{
    return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
}

static const struct key_def *
find_key(const char *name, size_t *index)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(keys[i].name, name) == 0) {
            if (index != NULL)
                *index = i;
            return &keys[i];
        }
    }
    return NULL;
}

/* ---- value parsing ---------------------------------------------------------------------- */

static bool
parse_int(const char *s, long long *out)
{
    char *end;

    if (*s == '\0' || !(isdigit((unsigned char)*s) || *s == '-' || *s == '+'))
        return false;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

static bool
parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Finds the allowed value of k that s names (case-insensitively). Returns its offset in
 * k->allowed and its length in *len, or -1. */
static long
parse_enum(const struct key_def *k, const char *s, size_t *len)
{
    const char *p = k->allowed;

    while (*p != '\0') {
        size_t n = strcspn(p, "|");

        if (n == strlen(s) && strncasecmp(p, s, n) == 0) {
            *len = n;
            return p - k->allowed;
        }
        p += n;
        if (*p == '|')
            p++;
    }
    return -1;
}

/* Writes "a, b, c" for "a|b|c" into buf. */
static void
format_allowed(const char *allowed, char *buf, size_t cap)
{
    size_t o = 0;

    for (const char *p = allowed; *p != '\0' && o + 3 < cap; p++) {
        if (*p == '|') {
            buf[o++] = ',';
            buf[o++] = ' ';
        } else {
            buf[o++] = *p;
        }
    }
    buf[o] = '\0';
}

/* Describes what k accepts, e.g. "an integer between 100 and 3600000". */
static void
format_expected(const struct key_def *k, char *buf, size_t cap)
{
    char list[256];

    switch (k->type) {
    case KEY_INT:
        if (k->max == LLONG_MAX)
            snprintf(buf, cap, "an integer of at least %lld", k->min);
        else
            snprintf(buf, cap, "an integer between %lld and %lld", k->min, k->max);
        break;
    case KEY_BOOL:
        snprintf(buf, cap, "true/false, 1/0, yes/no or on/off");
        break;
    case KEY_ENUM:
        format_allowed(k->allowed, list, sizeof(list));
        snprintf(buf, cap, "one of %s", list);
        break;
    case KEY_STRING:
        snprintf(buf, cap, "a string");
        break;
    }
}

static int
bad_value(const struct key_def *k, const char *value, const char *origin, struct obx_error *err)
{
    char expected[300];

    format_expected(k, expected, sizeof(expected));
    if (k->secret != SECRET_NONE)
        return config_error(err, "%s: expected %s, got a value that is not shown (from %s)",
                            k->name, expected, origin);
    return config_error(err, "%s: expected %s, got \"%s\" (from %s)", k->name, expected, value,
                        origin);
}

/* Parses value for k into *out (out->text newly allocated). */
static int
parse_value(const struct key_def *k, const char *value, const char *origin, struct setting *out,
            struct obx_error *err)
{
    bool b;
    char buf[32];
    long off;
    size_t len;

    out->num = 0;
    switch (k->type) {
    case KEY_STRING:
        out->text = strdup(value);
        break;
    case KEY_INT:
        if (!parse_int(value, &out->num) || out->num < k->min || out->num > k->max)
            return bad_value(k, value, origin, err);
        snprintf(buf, sizeof(buf), "%lld", out->num);
        out->text = strdup(buf);
        break;
    case KEY_BOOL:
        if (!parse_bool(value, &b))
            return bad_value(k, value, origin, err);
        out->num = b;
        out->text = strdup(b ? "true" : "false");
        break;
    case KEY_ENUM:
        off = parse_enum(k, value, &len);
        if (off < 0)
            return bad_value(k, value, origin, err);
        out->text = strndup(k->allowed + off, len);
        break;
    }
    return out->text == NULL ? nomem(err) : 0;
}

/* ---- @file values ----------------------------------------------------------------------- */

/* Reads the value of key from path (the part after '@') into *out, trailing newlines
 * stripped. */
static int
read_value_file(const char *key, const char *path, const char *origin, char **out,
                struct obx_error *err)
{
    FILE *f;
    char *buf = NULL;
    size_t n;
    int rc = 0;

    f = fopen(path, "rb");
    if (f == NULL)
        return config_error(err, "%s: cannot read \"%s\": %s (from %s)", key, path, strerror(errno),
                            origin);
    buf = malloc(SECRET_FILE_MAX + 1);
    if (buf == NULL) {
        rc = nomem(err);
        goto cleanup;
    }
    n = fread(buf, 1, SECRET_FILE_MAX + 1, f);
    if (ferror(f)) {
        rc = config_error(err, "%s: cannot read \"%s\": %s (from %s)", key, path, strerror(errno),
                          origin);
        goto cleanup;
    }
    if (n > SECRET_FILE_MAX || memchr(buf, '\0', n) != NULL) {
        rc = config_error(err, "%s: \"%s\" is not a text value of at most %d bytes (from %s)", key,
                          path, SECRET_FILE_MAX, origin);
        goto cleanup;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
cleanup:
    free(buf);
    fclose(f);
    return rc;
}

/* For a value "@/path", reads the file into *owned and points *value at it. */
static int
resolve_value(const char *key, const char **value, const char *origin, char **owned,
              struct obx_error *err)
{
    int rc;

    *owned = NULL;
    if (strncmp(*value, "@/", 2) != 0)
        return 0;
    rc = read_value_file(key, *value + 1, origin, owned, err);
    if (rc == 0)
        *value = *owned;
    return rc;
}

/* ---- unknown keys ----------------------------------------------------------------------- */

#define SUGGEST_MAX_LEN 96

/* Levenshtein distance of a and b (both at most SUGGEST_MAX_LEN bytes). */
static size_t
edit_distance(const char *a, const char *b)
{
    size_t row[SUGGEST_MAX_LEN + 1];
    size_t la = strlen(a), lb = strlen(b);

    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Writes the closest known key to name into buf, or returns false when none is close. */
static bool
suggest_key(const char *name, char *buf, size_t cap)
{
    size_t best = SIZE_MAX, len = strlen(name);
    const char *dot = strchr(name, '.');

    if (len > SUGGEST_MAX_LEN)
        return false;
    /* "kafak.acks": a misspelt passthrough prefix */
    if (dot != NULL && dot - name <= 7) {
        char head[8];

        memcpy(head, name, (size_t)(dot - name));
        head[dot - name] = '\0';
        if (edit_distance(head, "kafka") <= 2 && dot[1] != '\0') {
            snprintf(buf, cap, "%s%s", KAFKA_PREFIX, dot + 1);
            return true;
        }
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = edit_distance(name, keys[i].name);

        if (d < best) {
            best = d;
            snprintf(buf, cap, "%s", keys[i].name);
        }
    }
    return best <= 3 && best * 3 <= len;
}

static int
unknown_key(const char *key, const char *origin, struct obx_error *err)
{
    char suggestion[SUGGEST_MAX_LEN + 16];

    if (suggest_key(key, suggestion, sizeof(suggestion)))
        return config_error(err, "unknown configuration key \"%s\" (from %s); did you mean \"%s\"?",
                            key, origin, suggestion);
    return config_error(err, "unknown configuration key \"%s\" (from %s)", key, origin);
}

/* ---- setting ---------------------------------------------------------------------------- */

static int
set_kafka(struct obx_config *cfg, const char *name, const char *value, struct obx_error *err)
{
    char *copy = strdup(value);
    struct kafka_prop *p;

    if (copy == NULL)
        return nomem(err);
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        if (strcmp(cfg->kafka[i].key, name) == 0) {
            free(cfg->kafka[i].value);
            cfg->kafka[i].value = copy;
            return 0;
        }
    }
    if (cfg->n_kafka == cfg->cap_kafka) {
        size_t cap = cfg->cap_kafka == 0 ? 16 : cfg->cap_kafka * 2;

        p = realloc(cfg->kafka, cap * sizeof(*p));
        if (p == NULL)
            goto nomem;
        cfg->kafka = p;
        cfg->cap_kafka = cap;
    }
    p = &cfg->kafka[cfg->n_kafka];
    p->key = strdup(name);
    if (p->key == NULL)
        goto nomem;
    p->value = copy;
    cfg->n_kafka++;
    return 0;
nomem:
    free(copy);
    return nomem(err);
}

int
obx_config_set(struct obx_config *cfg, const char *key, const char *value, const char *origin,
               struct obx_error *err)
{
    const struct key_def *k;
    struct setting s;
    char *owned = NULL;
    size_t i;
    int rc;

    if (origin == NULL)
        origin = "unknown origin";
    if (strncmp(key, KAFKA_PREFIX, strlen(KAFKA_PREFIX)) == 0) {
        if (key[strlen(KAFKA_PREFIX)] == '\0')
            return config_error(err, "\"%s\" names no librdkafka property (from %s)", key, origin);
        rc = resolve_value(key, &value, origin, &owned, err);
        if (rc == 0)
            rc = set_kafka(cfg, key + strlen(KAFKA_PREFIX), value, err);
        free(owned);
        return rc;
    }
    k = find_key(key, &i);
    if (k == NULL)
        return unknown_key(key, origin, err);
    if (k->type == KEY_STRING) {
        rc = resolve_value(key, &value, origin, &owned, err);
        if (rc != 0)
            return rc;
    }
    rc = parse_value(k, value, origin, &s, err);
    if (rc == 0) {
        free(cfg->settings[i].text);
        cfg->settings[i] = s;
    }
    free(owned);
    return rc;
}

/* Whether s looks like a bare key (safe to quote: it cannot be a secret value). */
static bool
looks_like_key(const char *s)
{
    if (*s == '\0' || strlen(s) > SUGGEST_MAX_LEN)
        return false;
    for (; *s != '\0'; s++) {
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '.' || *s == '_' ||
              *s == '-'))
            return false;
    }
    return true;
}

int
obx_config_set_pair(struct obx_config *cfg, const char *pair, const char *origin,
                    struct obx_error *err)
{
    const char *eq = strchr(pair, '=');
    char key[256];
    size_t n;

    if (origin == NULL)
        origin = "-X";
    if (eq == NULL) {
        if (looks_like_key(pair))
            return config_error(err, "expected key=value, got \"%s\" without a value (from %s)",
                                pair, origin);
        return config_error(err, "expected key=value (from %s)", origin);
    }
    n = (size_t)(eq - pair);
    if (n == 0 || n >= sizeof(key))
        return config_error(err, "expected key=value, got no key or an overlong one (from %s)",
                            origin);
    memcpy(key, pair, n);
    key[n] = '\0';
    return obx_config_set(cfg, key, eq + 1, origin, err);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

struct obx_config *
obx_config_new(void)
{
    struct obx_config *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL)
        return NULL;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (parse_value(&keys[i], keys[i].def, "built-in default", &cfg->settings[i], NULL) != 0) {
            obx_config_free(cfg);
            return NULL;
        }
    }
    return cfg;
}

void
obx_config_free(struct obx_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_KEYS; i++)
        free(cfg->settings[i].text);
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        free(cfg->kafka[i].key);
        free(cfg->kafka[i].value);
    }
    free(cfg->kafka);
    free(cfg);
}

/* ---- getters ---------------------------------------------------------------------------- */

/* A wrong key or type is a programming error: say which and abort. */
static size_t
getter_index(const char *key, enum key_type a, enum key_type b, const char *getter)
{
    size_t i;
    const struct key_def *k = find_key(key, &i);

    if (k == NULL || (k->type != a && k->type != b)) {
        fprintf(stderr, "outboxd: BUG: %s(\"%s\"): %s\n", getter, key,
                k == NULL ? "no such key" : "wrong type");
        abort();
    }
    return i;
}

const char *
obx_config_str(const struct obx_config *cfg, const char *key)
{
    return cfg->settings[getter_index(key, KEY_STRING, KEY_ENUM, "obx_config_str")].text;
}

long long
obx_config_int(const struct obx_config *cfg, const char *key)
{
    return cfg->settings[getter_index(key, KEY_INT, KEY_INT, "obx_config_int")].num;
}

bool
obx_config_bool(const struct obx_config *cfg, const char *key)
{
    return cfg->settings[getter_index(key, KEY_BOOL, KEY_BOOL, "obx_config_bool")].num != 0;
}

int
obx_config_foreach_kafka(const struct obx_config *cfg,
                         int (*fn)(void *ctx, const char *key, const char *value), void *ctx)
{
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        int rc = fn(ctx, cfg->kafka[i].key, cfg->kafka[i].value);

        if (rc != 0)
            return rc;
    }
    return 0;
}

const char *
obx_config_kafka(const struct obx_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        if (strcmp(cfg->kafka[i].key, key) == 0)
            return cfg->kafka[i].value;
    }
    return NULL;
}

/* ---- file and environment -------------------------------------------------------------- */

static char *
trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return s;
}

/* Applies one line of a configuration file (modified in place). */
static int
load_line(struct obx_config *cfg, char *line, const char *path, unsigned lineno,
          struct obx_error *err)
{
    char origin[4096 + 32];
    char *eq, *key;

    line = trim(line);
    if (*line == '\0' || *line == '#')
        return 0;
    snprintf(origin, sizeof(origin), "%s:%u", path, lineno);
    eq = strchr(line, '=');
    if (eq == NULL)
        return config_error(err, "%s: expected \"key = value\"", origin);
    *eq = '\0';
    key = trim(line);
    if (*key == '\0')
        return config_error(err, "%s: expected \"key = value\", got no key", origin);
    return obx_config_set(cfg, key, trim(eq + 1), origin, err);
}

int
obx_config_load_file(struct obx_config *cfg, const char *path, struct obx_error *err)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = 0;

    f = fopen(path, "r");
    if (f == NULL)
        return config_error(err, "cannot read configuration file \"%s\": %s", path,
                            strerror(errno));
    errno = 0;
    while (getline(&line, &cap, f) != -1) {
        lineno++;
        /* a UTF-8 byte order mark on the first line */
        if (lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0)
            memmove(line, line + 3, strlen(line + 3) + 1);
        rc = load_line(cfg, line, path, lineno, err);
        if (rc != 0)
            goto cleanup;
    }
    if (ferror(f))
        rc = config_error(err, "cannot read configuration file \"%s\": %s", path, strerror(errno));
cleanup:
    free(line);
    fclose(f);
    return rc;
}

/* Converts a table key to its environment name ("log.level" -> "LOG_LEVEL", no prefix). */
static void
env_name_of(const char *key, char *buf, size_t cap)
{
    size_t i;

    for (i = 0; key[i] != '\0' && i + 1 < cap; i++)
        buf[i] = key[i] == '.' ? '_' : (char)toupper((unsigned char)key[i]);
    buf[i] = '\0';
}

/* Maps an environment name (prefix stripped, "POSTGRES_SLOT") to a configuration key. */
static void
key_of_env_name(const char *name, size_t n, char *buf, size_t cap)
{
    char env[256];
    size_t i;

    for (size_t k = 0; k < N_KEYS; k++) {
        env_name_of(keys[k].name, env, sizeof(env));
        if (strlen(env) == n && strncmp(env, name, n) == 0) {
            snprintf(buf, cap, "%s", keys[k].name);
            return;
        }
    }
    /* kafka.* and unknown keys: lower case, '_' -> '.' */
    for (i = 0; i < n && i + 1 < cap; i++)
        buf[i] = name[i] == '_' ? '.' : (char)tolower((unsigned char)name[i]);
    buf[i] = '\0';
}

int
obx_config_load_env(struct obx_config *cfg, char *const *envp, struct obx_error *err)
{
    const size_t plen = strlen(ENV_PREFIX);

    for (; envp != NULL && *envp != NULL; envp++) {
        const char *var = *envp, *eq = strchr(var, '=');
        char key[256], origin[300];
        size_t n;
        int rc;

        if (eq == NULL || strncmp(var, ENV_PREFIX, plen) != 0)
            continue;
        n = (size_t)(eq - var);
        if (n >= sizeof(key))
            return config_error(err, "unknown configuration key (from environment %.64s...)", var);
        snprintf(origin, sizeof(origin), "environment %.*s", (int)n, var);
        key_of_env_name(var + plen, n - plen, key, sizeof(key));
        rc = obx_config_set(cfg, key, eq + 1, origin, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- help, reference, dump ------------------------------------------------------------- */

/* Describes k's type, bounds and default, e.g. `integer 100..3600000, default 1000`. */
static void
format_type(const struct key_def *k, bool markdown, char *buf, size_t cap)
{
    char list[256];

    switch (k->type) {
    case KEY_STRING:
        snprintf(buf, cap, "string");
        break;
    case KEY_INT:
        if (k->max == LLONG_MAX)
            snprintf(buf, cap, "integer >= %lld", k->min);
        else
            snprintf(buf, cap, "integer %lld..%lld", k->min, k->max);
        break;
    case KEY_BOOL:
        snprintf(buf, cap, "bool");
        break;
    case KEY_ENUM:
        if (markdown)
            format_allowed(k->allowed, list, sizeof(list));
        snprintf(buf, cap, "%s", markdown ? list : k->allowed);
        break;
    }
}

void
obx_config_print_help(FILE *out)
{
    char type[300];
    int width = (int)strlen(kafka_help_name);

    for (size_t i = 0; i < N_KEYS; i++) {
        if ((int)strlen(keys[i].name) > width)
            width = (int)strlen(keys[i].name);
    }
    fprintf(out, "Configuration keys (-c FILE `key = value` lines < environment OUTBOXD_KEY_NAME "
                 "< -X key=value):\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key_def *k = &keys[i];

        format_type(k, false, type, sizeof(type));
        if (k->type == KEY_STRING && k->def[0] == '\0')
            fprintf(out, "  %-*s  %s, default empty\n", width, k->name, type);
        else if (k->type == KEY_STRING)
            fprintf(out, "  %-*s  %s, default \"%s\"\n", width, k->name, type, k->def);
        else
            fprintf(out, "  %-*s  %s, default %s\n", width, k->name, type, k->def);
        fprintf(out, "      %s\n", k->desc);
    }
    fprintf(out, "  %-*s  string\n      %s\n", width, kafka_help_name, kafka_help_desc);
    fprintf(out, "A value @/path is read from that file (secrets stay out of argv and ps).\n");
}

void
obx_config_print_markdown(FILE *out)
{
    char type[300];

    fprintf(out, "| key | type | default | description |\n|---|---|---|---|\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key_def *k = &keys[i];

        format_type(k, true, type, sizeof(type));
        if (k->def[0] == '\0')
            fprintf(out, "| `%s` | %s | (empty) | %s |\n", k->name, type, k->desc);
        else
            fprintf(out, "| `%s` | %s | `%s` | %s |\n", k->name, type, k->def, k->desc);
    }
    fprintf(out, "| `%s` | string | (librdkafka's) | %s |\n", kafka_help_name, kafka_help_desc);
}

/* Whether the librdkafka property key (prefix stripped) holds a secret. */
static bool
kafka_key_is_secret(const char *key)
{
    if (strstr(key, "password") != NULL || strstr(key, "secret") != NULL)
        return true;
    for (size_t i = 0; i < sizeof(kafka_secret_keys) / sizeof(kafka_secret_keys[0]); i++) {
        if (strcmp(key, kafka_secret_keys[i]) == 0)
            return true;
    }
    return false;
}

bool
obx_config_kafka_is_secret(const char *key)
{
    if (strncmp(key, KAFKA_PREFIX, strlen(KAFKA_PREFIX)) == 0)
        key += strlen(KAFKA_PREFIX);
    return kafka_key_is_secret(key);
}

void
obx_config_dump(const struct obx_config *cfg, FILE *out)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *v = cfg->settings[i].text;

        if (keys[i].secret == SECRET_WHOLE && v[0] != '\0') {
            fprintf(out, "%s = %s\n", keys[i].name, redacted);
        } else if (keys[i].secret == SECRET_CONNINFO) {
            size_t cap = 2 * strlen(v) + sizeof(redacted) + 1;
            char *buf = malloc(cap);

            if (buf != NULL)
                obx_config_redact_conninfo(v, buf, cap);
            fprintf(out, "%s = %s\n", keys[i].name, buf != NULL ? buf : redacted);
            free(buf);
        } else {
            fprintf(out, "%s = %s\n", keys[i].name, v);
        }
    }
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        const struct kafka_prop *p = &cfg->kafka[i];

        fprintf(out, "%s%s = %s\n", KAFKA_PREFIX, p->key,
                kafka_key_is_secret(p->key) ? redacted : p->value);
    }
}

/* ---- conninfo redaction ----------------------------------------------------------------- */

/* Output that truncates at cap - 1 bytes and stays NUL-terminated. */
struct outbuf {
    char *p;
    size_t cap, len;
};

static void
put(struct outbuf *o, const char *s, size_t n)
{
    if (o->cap == 0)
        return;
    if (n > o->cap - 1 - o->len)
        n = o->cap - 1 - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static bool
is_uri(const char *conninfo)
{
    return strncmp(conninfo, "postgresql://", 13) == 0 || strncmp(conninfo, "postgres://", 11) == 0;
}

static bool
conninfo_key_is_secret(const char *kw, size_t n)
{
    for (size_t i = 0; i < sizeof(conninfo_secret_keys) / sizeof(conninfo_secret_keys[0]); i++) {
        if (strlen(conninfo_secret_keys[i]) == n && strncmp(kw, conninfo_secret_keys[i], n) == 0)
            return true;
    }
    return false;
}

/* One `keyword = value` of a key=value conninfo: start is where its leading whitespace begins,
 * the value runs from val to end (quotes included). */
struct kv_token {
    const char *start, *kw, *val, *end;
    size_t kw_len;
};

/* Skips a value the way libpq reads it: 'single quoted' or up to whitespace, with \ escapes. */
static const char *
skip_conninfo_value(const char *p)
{
    bool quoted = *p == '\'';

    if (quoted)
        p++;
    while (*p != '\0' && (quoted ? *p != '\'' : !isspace((unsigned char)*p))) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        p++;
    }
    if (quoted && *p == '\'')
        p++;
    return p;
}

/* Reads the next keyword=value at *pp. Returns 1 and advances, 0 at the end, -1 when what
 * follows is not keyword=value (t->start and t->kw are set). */
static int
kv_next(const char **pp, struct kv_token *t)
{
    const char *p = *pp;

    t->start = p;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0')
        return 0;
    t->kw = p;
    while (*p != '\0' && !isspace((unsigned char)*p) && *p != '=')
        p++;
    t->kw_len = (size_t)(p - t->kw);
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '=' || t->kw_len == 0)
        return -1;
    p++;
    while (isspace((unsigned char)*p))
        p++;
    t->val = p;
    t->end = skip_conninfo_value(p);
    *pp = t->end;
    return 1;
}

static void
redact_kv(const char *s, struct outbuf *o)
{
    struct kv_token t;
    int rc;

    while ((rc = kv_next(&s, &t)) == 1) {
        put(o, t.start, (size_t)(t.val - t.start));
        if (conninfo_key_is_secret(t.kw, t.kw_len))
            put(o, redacted, strlen(redacted));
        else
            put(o, t.val, (size_t)(t.end - t.val));
    }
    if (rc == 0) {
        put(o, t.start, strlen(t.start));
    } else {
        /* malformed: we cannot tell what is secret, so hide the rest */
        put(o, t.start, (size_t)(t.kw - t.start));
        put(o, redacted, strlen(redacted));
    }
}

/* Redacts user:password@ (the userinfo ends at the last '@' before any '?', so an unencoded
 * '/' or '@' in a password still gets hidden) and password= query parameters. */
static void
redact_uri(const char *s, struct outbuf *o)
{
    const char *auth = strstr(s, "://") + 3;
    const char *query = strchr(auth, '?');
    const char *at = NULL, *colon, *p;

    for (p = auth; *p != '\0' && p != query; p++) {
        if (*p == '@')
            at = p;
    }
    put(o, s, (size_t)(auth - s));
    p = auth;
    if (at != NULL && (colon = memchr(auth, ':', (size_t)(at - auth))) != NULL) {
        put(o, auth, (size_t)(colon + 1 - auth));
        put(o, redacted, strlen(redacted));
        p = at;
    }
    if (query == NULL) {
        put(o, p, strlen(p));
        return;
    }
    put(o, p, (size_t)(query + 1 - p));
    for (p = query + 1; *p != '\0';) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);

        if (eq != NULL && conninfo_key_is_secret(p, (size_t)(eq - p))) {
            put(o, p, (size_t)(eq + 1 - p));
            put(o, redacted, strlen(redacted));
        } else {
            put(o, p, n);
        }
        p += n;
        if (*p == '&')
            put(o, p++, 1);
    }
}

void
obx_config_redact_conninfo(const char *conninfo, char *out, size_t cap)
{
    struct outbuf o = {out, cap, 0};

    if (cap == 0)
        return;
    out[0] = '\0';
    if (conninfo == NULL)
        return;
    if (is_uri(conninfo))
        redact_uri(conninfo, &o);
    else
        redact_kv(conninfo, &o);
}

/* ---- cross-key validation --------------------------------------------------------------- */

static const char *
get_text(const struct obx_config *cfg, const char *key)
{
    size_t i;

    if (find_key(key, &i) == NULL)
        abort();
    return cfg->settings[i].text;
}

/* An unquoted PostgreSQL identifier as the catalog stores it (lower case, at most 63 bytes). */
static bool
is_identifier(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !(islower((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_' ||
              s[i] == '$'))
            return false;
    }
    return true;
}

/* A Kafka topic name: 1..249 of [A-Za-z0-9._-]. */
static bool
is_topic(const char *s, size_t n)
{
    if (n == 0 || n > 249)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    }
    return true;
}

/* Copies the next comma-separated entry of *pp, whitespace trimmed, into buf. Returns false at
 * the end of the list. */
static bool
next_entry(const char **pp, char *buf, size_t cap)
{
    const char *p = *pp;
    char *t;
    size_t n;

    if (p == NULL)
        return false;
    n = strcspn(p, ",");
    snprintf(buf, cap, "%.*s", (int)n, p);
    *pp = p[n] == ',' ? p + n + 1 : NULL;
    t = trim(buf);
    memmove(buf, t, strlen(t) + 1);
    return true;
}

static int
validate_conninfo(const struct obx_config *cfg, struct obx_error *err)
{
    const char *s = get_text(cfg, "postgres.conninfo");
    struct kv_token t;
    int rc;

    if (is_uri(s)) {
        const char *q = strchr(s, '?');

        for (const char *p = q; p != NULL; p = strchr(p + 1, '&')) {
            if (strncmp(p + 1, "replication=", 12) == 0)
                goto replication;
        }
        return 0;
    }
    while ((rc = kv_next(&s, &t)) == 1) {
        if (t.kw_len == 11 && strncmp(t.kw, "replication", 11) == 0)
            goto replication;
    }
    if (rc < 0)
        return config_error(err, "postgres.conninfo: expected keyword=value pairs or a "
                                 "postgresql:// URI");
    return 0;
replication:
    return config_error(err, "postgres.conninfo: must not set replication (outboxd adds "
                             "replication=database itself)");
}

static int
validate_names(const struct obx_config *cfg, struct obx_error *err)
{
    const char *slot = get_text(cfg, "postgres.slot");
    const char *publication = get_text(cfg, "postgres.publication");

    if (slot[0] == '\0' || strlen(slot) > 63 ||
        strspn(slot, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(slot))
        return config_error(err,
                            "postgres.slot: expected 1 to 63 lower-case letters, digits or "
                            "underscores, got \"%s\"",
                            slot);
    if (!is_identifier(publication, strlen(publication)))
        return config_error(err,
                            "postgres.publication: expected a lower-case unquoted identifier "
                            "of at most 63 bytes, got \"%s\"",
                            publication);
    return 0;
}

static int
validate_tables(const struct obx_config *cfg, struct obx_error *err)
{
    const char *list = get_text(cfg, "postgres.tables");
    char entry[300];

    if (strspn(list, " \t") == strlen(list))
        return config_error(err, "postgres.tables: expected at least one schema.table name");
    while (next_entry(&list, entry, sizeof(entry))) {
        const char *dot = strchr(entry, '.');

        if (dot == NULL || !is_identifier(entry, (size_t)(dot - entry)) ||
            !is_identifier(dot + 1, strlen(dot + 1)))
            return config_error(err,
                                "postgres.tables: expected comma-separated schema.table "
                                "names (lower-case unquoted identifiers), got \"%s\"",
                                entry);
    }
    return 0;
}

int
obx_config_tables(const struct obx_config *cfg, struct obx_table_name **out, size_t *n,
                  struct obx_error *err)
{
    const char *list = get_text(cfg, "postgres.tables"), *scan = list;
    char entry[300];
    struct obx_table_name *t;
    size_t count = 0;
    int rc = validate_tables(cfg, err);

    if (rc != 0)
        return rc;
    while (next_entry(&scan, entry, sizeof(entry)))
        count++;
    t = calloc(count, sizeof(*t));
    if (t == NULL)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    *n = 0;
    while (next_entry(&list, entry, sizeof(entry))) {
        const char *dot = strchr(entry, '.'); /* validate_tables checked both halves */

        memcpy(t[*n].nspname, entry, (size_t)(dot - entry));
        memcpy(t[*n].relname, dot + 1, strlen(dot + 1));
        (*n)++;
    }
    *out = t;
    return 0;
}

#define ROUTED_BY_VALUE "${routedByValue}"

static int
validate_topics(const struct obx_config *cfg, struct obx_error *err)
{
    const char *tpl = get_text(cfg, "outbox.route.topic.replacement");
    const char *dlq = get_text(cfg, "outbox.dlq.topic");
    const char *p = tpl;
    bool placeholder = false;

    if (tpl[0] == '\0')
        return config_error(err, "outbox.route.topic.replacement: must not be empty");
    while (*p != '\0') {
        size_t n = strcspn(p, "$");

        if (n > 0 && !is_topic(p, n))
            goto bad_template;
        p += n;
        if (*p == '\0')
            break;
        if (strncmp(p, ROUTED_BY_VALUE, strlen(ROUTED_BY_VALUE)) != 0)
            goto bad_template;
        placeholder = true;
        p += strlen(ROUTED_BY_VALUE);
    }
    if (placeholder && get_text(cfg, "outbox.route.by.field")[0] == '\0')
        return config_error(err, "outbox.route.by.field: must name a column when "
                                 "outbox.route.topic.replacement uses " ROUTED_BY_VALUE);
    if (strcmp(get_text(cfg, "outbox.invalid.behavior"), "dlq") == 0 && dlq[0] == '\0')
        return config_error(err, "outbox.dlq.topic: must not be empty when "
                                 "outbox.invalid.behavior is dlq");
    if (dlq[0] != '\0' && !is_topic(dlq, strlen(dlq)))
        return config_error(err,
                            "outbox.dlq.topic: expected a topic name (letters, digits, "
                            "'.', '_', '-'), got \"%s\"",
                            dlq);
    return 0;
bad_template:
    return config_error(err,
                        "outbox.route.topic.replacement: expected a topic name (letters, "
                        "digits, '.', '_', '-') with optional " ROUTED_BY_VALUE ", got \"%s\"",
                        tpl);
}

/* One entry of outbox.table.fields.additional.placement: column:header[:name],
 * column:envelope[:name] or column:partition. */
static int
validate_placement_entry(const char *entry, unsigned *partitions, struct obx_error *err)
{
    const char *c1 = strchr(entry, ':');
    const char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    size_t kind_len = c1 == NULL ? 0 : (c2 != NULL ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1));
    const char *kind = c1 != NULL ? c1 + 1 : "";

    if (c1 == NULL || c1 == entry || (c2 != NULL && (c2[1] == '\0' || strchr(c2 + 1, ':'))))
        goto bad;
    if (kind_len == 9 && strncmp(kind, "partition", 9) == 0) {
        if (c2 != NULL)
            goto bad;
        if (++*partitions > 1)
            return config_error(err, "outbox.table.fields.additional.placement: at most one "
                                     "column may be placed in the partition");
        return 0;
    }
    if ((kind_len == 6 && strncmp(kind, "header", 6) == 0) ||
        (kind_len == 8 && strncmp(kind, "envelope", 8) == 0))
        return 0;
bad:
    return config_error(err,
                        "outbox.table.fields.additional.placement: expected "
                        "column:header[:name], column:envelope[:name] or column:partition, "
                        "got \"%s\"",
                        entry);
}

static int
validate_placement(const struct obx_config *cfg, struct obx_error *err)
{
    const char *list = get_text(cfg, "outbox.table.fields.additional.placement");
    char entry[300];
    unsigned partitions = 0;
    int rc;

    if (strspn(list, " \t") == strlen(list))
        return 0;
    while (next_entry(&list, entry, sizeof(entry))) {
        rc = validate_placement_entry(entry, &partitions, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
validate_misc(const struct obx_config *cfg, struct obx_error *err)
{
    long long initial = obx_config_int(cfg, "postgres.reconnect.backoff.ms");
    long long max = obx_config_int(cfg, "postgres.reconnect.backoff.max.ms");

    if (max < initial)
        return config_error(err,
                            "postgres.reconnect.backoff.max.ms: must be at least "
                            "postgres.reconnect.backoff.ms (%lld), got %lld",
                            initial, max);
    if (get_text(cfg, "outbox.table.field.event.payload")[0] == '\0')
        return config_error(err, "outbox.table.field.event.payload: must name a column");
    if (obx_config_bool(cfg, "postgres.messages") &&
        get_text(cfg, "outbox.message.prefix")[0] == '\0')
        return config_error(err, "outbox.message.prefix: must not be empty when "
                                 "postgres.messages is true");
    return 0;
}

int
obx_config_validate(const struct obx_config *cfg, struct obx_error *err)
{
    static int (*const checks[])(const struct obx_config *, struct obx_error *) = {
        validate_conninfo, validate_names,     validate_tables,
        validate_topics,   validate_placement, validate_misc,
    };

    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        int rc = checks[i](cfg, err);

        if (rc != 0)
            return rc;
    }
    return 0;
}
