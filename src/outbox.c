/* outbox.c - the router: an inserted outbox row or a logical message becomes an event (topic, key,
 * value, headers), shaped like Debezium's outbox event router output (DESIGN.md, the record).
 *
 * Both inputs are first reduced to the same thing: one "field value" per configured field (id,
 * key, payload, timestamp, routing value, headers, additional placements), taken from a table
 * column (PostgreSQL's text output) or from a member of the message's JSON object. One builder
 * then makes the event from those, so rows and messages behave alike.
 *
 * No allocation per row: the event points into the tuple or message and into one scratch buffer
 * that grows to the largest event seen and is reused (emptied at the start of every routing
 * call). While an event is being built the scratch buffer may move, so pieces are kept as offsets
 * ("spans") and turned into pointers only once the event is complete.
 *
 * Decisions:
 * - value: text/varchar/json/jsonb as PostgreSQL prints it, bytea decoded from hex; SQL NULL is a
 *   tombstone, with or without envelope placements (compaction keeps working).
 * - envelope placements: the value becomes {"payload": P, "<name>": V, ...} with jsonb's spacing.
 *   P is the json/jsonb text itself, a JSON string for text/varchar, a base64 (RFC 4648, padded)
 *   JSON string for bytea (what Debezium's binary.handling.mode=base64 and Jackson do). V is a
 *   number for int2/int4/int8, true/false for bool, the JSON itself for json/jsonb, a string for
 *   everything else (bytea other than the payload: its "\x..." text), null for SQL NULL.
 * - topic: the routing value must give a legal Kafka topic name (1 to 249 of [A-Za-z0-9._-]),
 *   else the row is invalid: better a dead letter naming the column than a produce error.
 * - headers: the id column (SQL NULL id makes the row invalid, as Debezium requires an id);
 *   header placements (SQL NULL: a null header value); the headers column's members: strings
 *   decoded, numbers/true/false as their JSON text, objects/arrays as JSON text with jsonb's
 *   spacing, null as a null header value.
 * - logical messages: a JSON object with the configured column names as members. Text fields take
 *   strings (decoded) or numbers/true/false (as written); the payload (any JSON value) becomes its
 *   JSON text with jsonb's spacing (", " and ": ", no other whitespace, member order and numbers
 *   as written), so a payload taken from jsonb (jsonb_build_object(...)::text, the natural way to
 *   build the message) gives the same bytes as a jsonb payload column. A JSON string payload keeps
 *   its quotes (it is JSON). "payload": null is a tombstone; a missing payload is invalid.
 * - timestamp: the timestamp column (timestamptz or timestamp, ISO output, any offset; timestamp
 *   without zone is taken as UTC; SQL NULL falls back to the commit time), else the commit time.
 * - invalid rows: the dead-letter value is a JSON object of column name -> text (or null), for a
 *   message its content as received. */
#include "outboxd/outbox.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OID_BOOL 16u
#define OID_INT2 21u

#define ROUTED_BY_VALUE "${routedByValue}"
#define PLACEMENT_KEY "outbox.table.fields.additional.placement"
#define MAX_PLACEMENTS 32
#define MAX_TOPIC_LEN 249
#define JSON_MAX_DEPTH 256
#define POSTGRES_EPOCH_MS INT64_C(946684800000) /* 2000-01-01 in Unix milliseconds */

/* The configured fields, in the order they are read. */
enum field_role {
    F_KEY = 0,
    F_ROUTE,
    F_ID,
    F_PAYLOAD,
    F_TIMESTAMP,
    F_HEADERS,
    F_PLACEMENT, /* F_PLACEMENT + i for the i-th additional placement */
};

static const char *const role_keys[F_PLACEMENT] = {
    "outbox.table.field.event.key",       "outbox.route.by.field",
    "outbox.table.field.event.id",        "outbox.table.field.event.payload",
    "outbox.table.field.event.timestamp", "outbox.table.field.event.headers",
};

enum placement_kind {
    PLACE_HEADER,
    PLACE_ENVELOPE,
    PLACE_PARTITION,
};

struct placement {
    enum placement_kind kind;
    char *column;
    char *name; /* header or envelope member name; NULL for the partition */
};

/* The scratch buffer: grows, never shrinks, emptied at every routing call. */
struct sbuf {
    char *p;
    size_t len, cap;
};

/* A piece of the event being built: absent (SQL NULL), outside the scratch buffer (tuple,
 * message, router), or at an offset in it. */
enum span_where {
    SPAN_NULL = 0,
    SPAN_EXT,
    SPAN_SCRATCH,
};

struct span {
    uint8_t where;
    const char *ext;
    size_t off, len;
};

/* One configured field's value, from a column or a JSON member. */
enum fval_kind {
    FV_MISSING = 0, /* no such column / member */
    FV_NULL,        /* SQL NULL or JSON null */
    FV_TEXT,        /* a column's text output: p/len, type_oid, col */
    FV_JSON,        /* a JSON value as written in a message: p/len, jtype */
    FV_UNCHANGED,   /* unchanged TOASTed column ('u'): cannot happen for an insert */
    FV_BINARY,      /* binary-format column: never requested */
};

enum json_type {
    J_ERROR = 0,
    J_OBJECT,
    J_ARRAY,
    J_STRING,
    J_NUMBER,
    J_TRUE,
    J_FALSE,
    J_NULL,
};

struct fval {
    uint8_t kind;  /* enum fval_kind */
    uint8_t jtype; /* enum json_type, for FV_JSON */
    uint32_t type_oid;
    const char *p;
    size_t len;
    const struct obx_pgo_col *col;
};

/* What is being routed, for error messages and dead letters. */
struct route_ctx {
    const struct obx_relation *rel;    /* a row, or NULL */
    const struct obx_pgo_tuple *tup;   /* with rel */
    const struct obx_pgo_message *msg; /* a message, or NULL */
    const struct obx_txn_info *txn;    /* may be NULL for a non-transactional message */
    struct fval fields[F_PLACEMENT + MAX_PLACEMENTS];
};

/* The event under construction. */
struct stage {
    struct span topic, key, value;
    struct span hname[OBX_EVENT_MAX_HEADERS], hvalue[OBX_EVENT_MAX_HEADERS];
    size_t nheaders;
    int32_t partition;
    int64_t timestamp_ms;
};

struct obx_outbox {
    char *fields[F_PLACEMENT]; /* column names per role; "" = not used */
    char *topic_template;
    bool template_has_value;
    struct placement placements[MAX_PLACEMENTS];
    size_t nplacements;
    bool envelope; /* any envelope placement */
    struct obx_table_name *tables;
    size_t ntables;
    bool source_headers;
    char *message_prefix;
    enum obx_invalid_behavior invalid;
    char *dlq_topic;

    struct sbuf scratch;
    struct stage st;
    char reason[OBX_ERROR_MSG_MAX];    /* why the last row was invalid */
    char dl_reason[OBX_ERROR_MSG_MAX]; /* error header of obx_outbox_dead_letter */
    char num[3][32];                   /* source header values */
};

/* ---------------------------------------------------------------------------------------------
 * Scratch buffer and spans
 * ------------------------------------------------------------------------------------------- */

/* Makes room for n more bytes. Returns 0 or OBX_ERR_NOMEM. */
static int
sb_reserve(struct sbuf *sb, size_t n)
{
    size_t cap = sb->cap != 0 ? sb->cap : 4096;
    char *p;

    if (n <= sb->cap - sb->len)
        return 0;
    if (n > SIZE_MAX / 2 - sb->len)
        return OBX_ERR_NOMEM;
    while (cap - sb->len < n)
        cap *= 2;
    p = realloc(sb->p, cap);
    if (p == NULL)
        return OBX_ERR_NOMEM;
    sb->p = p;
    sb->cap = cap;
    return 0;
}

static int
sb_put(struct sbuf *sb, const void *p, size_t n)
{
    if (sb_reserve(sb, n) != 0)
        return OBX_ERR_NOMEM;
    if (n > 0)
        memcpy(sb->p + sb->len, p, n);
    sb->len += n;
    return 0;
}

static int
sb_puts(struct sbuf *sb, const char *s)
{
    return sb_put(sb, s, strlen(s));
}

static int
sb_putc(struct sbuf *sb, char c)
{
    return sb_put(sb, &c, 1);
}

static struct span
span_ext(const void *p, size_t len)
{
    struct span s = {.where = SPAN_EXT, .ext = p, .len = len};

    return s;
}

/* The bytes appended to the scratch buffer since offset start. */
static struct span
span_since(const struct sbuf *sb, size_t start)
{
    struct span s = {.where = SPAN_SCRATCH, .off = start, .len = sb->len - start};

    return s;
}

static const void *
span_ptr(const struct sbuf *sb, const struct span *s)
{
    switch (s->where) {
    case SPAN_EXT:
        return s->ext;
    case SPAN_SCRATCH:
        return sb->p + s->off;
    default:
        return NULL;
    }
}

/* ---------------------------------------------------------------------------------------------
 * JSON: a validating scanner that never allocates. Values are validated once, then walked,
 * decoded or re-spaced from their text.
 * ------------------------------------------------------------------------------------------- */

struct jcur {
    const char *p, *end;
    int depth;
};

static void
json_ws(struct jcur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool
is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool
is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* A string at c->p (on the opening quote). */
static enum json_type
json_string(struct jcur *c)
{
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p++;

        if (ch == '"')
            return J_STRING;
        if (ch < 0x20)
            return J_ERROR;
        if (ch != '\\')
            continue;
        if (c->p >= c->end || strchr("\"\\/bfnrtu", *c->p) == NULL || *c->p == '\0')
            return J_ERROR;
        if (*c->p++ != 'u')
            continue;
        if (c->end - c->p < 4 || !is_hex(c->p[0]) || !is_hex(c->p[1]) || !is_hex(c->p[2]) ||
            !is_hex(c->p[3]))
            return J_ERROR;
        c->p += 4;
    }
    return J_ERROR;
}

/* Skips one or more digits; false if there is none. */
static bool
json_digits(struct jcur *c)
{
    const char *start = c->p;

    while (c->p < c->end && is_digit(*c->p))
        c->p++;
    return c->p > start;
}

static enum json_type
json_number(struct jcur *c)
{
    if (*c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++;
    else if (!json_digits(c))
        return J_ERROR;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!json_digits(c))
            return J_ERROR;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!json_digits(c))
            return J_ERROR;
    }
    return J_NUMBER;
}

static enum json_type
json_literal(struct jcur *c, const char *word, enum json_type type)
{
    size_t n = strlen(word);

    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return J_ERROR;
    c->p += n;
    return type;
}

static enum json_type json_value(struct jcur *c);

/* An object or array at c->p (on the opening bracket). */
static enum json_type
json_container(struct jcur *c, char close, enum json_type type)
{
    if (++c->depth > JSON_MAX_DEPTH)
        return J_ERROR;
    c->p++;
    json_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        c->depth--;
        return type;
    }
    for (;;) {
        if (type == J_OBJECT) {
            if (c->p >= c->end || *c->p != '"' || json_string(c) != J_STRING)
                return J_ERROR;
            json_ws(c);
            if (c->p >= c->end || *c->p++ != ':')
                return J_ERROR;
        }
        if (json_value(c) == J_ERROR)
            return J_ERROR;
        json_ws(c);
        if (c->p >= c->end)
            return J_ERROR;
        if (*c->p == close)
            break;
        if (*c->p++ != ',')
            return J_ERROR;
        json_ws(c);
    }
    c->p++;
    c->depth--;
    return type;
}

/* Validates and skips one value (leading whitespace allowed). Returns its type or J_ERROR. */
static enum json_type
json_value(struct jcur *c)
{
    json_ws(c);
    if (c->p >= c->end)
        return J_ERROR;
    switch (*c->p) {
    case '{':
        return json_container(c, '}', J_OBJECT);
    case '[':
        return json_container(c, ']', J_ARRAY);
    case '"':
        return json_string(c);
    case 't':
        return json_literal(c, "true", J_TRUE);
    case 'f':
        return json_literal(c, "false", J_FALSE);
    case 'n':
        return json_literal(c, "null", J_NULL);
    default:
        if (*c->p == '-' || is_digit(*c->p))
            return json_number(c);
        return J_ERROR;
    }
}

/* Validates that [p, p+n) is exactly one JSON value (surrounding whitespace allowed); stores its
 * trimmed text in *vp and *vn. Returns its type or J_ERROR. */
static enum json_type
json_document(const char *p, size_t n, const char **vp, size_t *vn)
{
    struct jcur c = {p, p + n, 0};
    enum json_type t;

    json_ws(&c);
    *vp = c.p;
    t = json_value(&c);
    if (t == J_ERROR)
        return J_ERROR;
    *vn = (size_t)(c.p - *vp);
    json_ws(&c);
    return c.p == c.end ? t : J_ERROR;
}

/* Walks the members of a validated object: c starts on '{'. Returns false after the last one. */
static bool
json_member_next(struct jcur *c, const char **name, size_t *name_len, const char **val,
                 size_t *val_len, enum json_type *type)
{
    const char *start;

    if (c->p >= c->end || *c->p == '}')
        return false;
    c->p++; /* '{' or ',' */
    json_ws(c);
    if (*c->p == '}')
        return false;
    start = c->p;
    json_string(c);
    *name = start;
    *name_len = (size_t)(c->p - start);
    json_ws(c);
    c->p++; /* ':' */
    json_ws(c);
    start = c->p;
    *type = json_value(c);
    *val = start;
    *val_len = (size_t)(c->p - start);
    json_ws(c);
    return true;
}

static unsigned
hex4(const char *p)
{
    unsigned v = 0;

    for (int i = 0; i < 4; i++) {
        char ch = p[i];

        v = v * 16 + (unsigned)(is_digit(ch) ? ch - '0' : (ch | 0x20) - 'a' + 10);
    }
    return v;
}

static int
put_utf8(struct sbuf *sb, unsigned cp)
{
    char b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | cp >> 6);
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | cp >> 12);
        b[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | cp >> 18);
        b[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return sb_put(sb, b, n);
}

/* The code point of a \u escape at p (after "\u"), joining a surrogate pair; lone surrogates
 * become U+FFFD. *used is the number of bytes consumed after the first "\u". */
static unsigned
json_escape_cp(const char *p, const char *end, size_t *used)
{
    unsigned cp = hex4(p);

    *used = 4;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end - p >= 10 && p[4] == '\\' && p[5] == 'u') {
            unsigned lo = hex4(p + 6);

            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                *used = 10;
                return 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
        }
        return 0xFFFD;
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return 0xFFFD;
    return cp;
}

/* Appends the decoded contents of a validated string token (with its quotes). */
static int
json_unescape(struct sbuf *sb, const char *p, size_t n)
{
    const char *end = p + n - 1;

    for (p++; p < end; p++) {
        const char *run = p;
        size_t used;

        while (p < end && *p != '\\')
            p++;
        if (sb_put(sb, run, (size_t)(p - run)) != 0)
            return OBX_ERR_NOMEM;
        if (p >= end)
            break;
        p++;
        switch (*p) {
        case 'b':
            if (sb_putc(sb, '\b') != 0)
                return OBX_ERR_NOMEM;
            break;
        case 'f':
            if (sb_putc(sb, '\f') != 0)
                return OBX_ERR_NOMEM;
            break;
        case 'n':
            if (sb_putc(sb, '\n') != 0)
                return OBX_ERR_NOMEM;
            break;
        case 'r':
            if (sb_putc(sb, '\r') != 0)
                return OBX_ERR_NOMEM;
            break;
        case 't':
            if (sb_putc(sb, '\t') != 0)
                return OBX_ERR_NOMEM;
            break;
        case 'u':
            if (put_utf8(sb, json_escape_cp(p + 1, end, &used)) != 0)
                return OBX_ERR_NOMEM;
            p += used;
            break;
        default: /* '"', '\\', '/' */
            if (sb_putc(sb, *p) != 0)
                return OBX_ERR_NOMEM;
        }
    }
    return 0;
}

/* Appends a validated JSON value with jsonb's spacing: ", " and ": " between items, no other
 * whitespace outside strings; strings, numbers and member order as written. */
static int
json_respace(struct sbuf *sb, const char *p, size_t n)
{
    const char *end = p + n;
    bool in_string = false;

    if (sb_reserve(sb, n + n / 2) != 0)
        return OBX_ERR_NOMEM;
    for (; p < end; p++) {
        char ch = *p;

        if (in_string) {
            if (ch == '\\') {
                if (sb_put(sb, p, 2) != 0)
                    return OBX_ERR_NOMEM;
                p++;
                continue;
            }
            in_string = ch != '"';
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            continue;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == ',' || ch == ':') {
            if (sb_putc(sb, ch) != 0 || sb_putc(sb, ' ') != 0)
                return OBX_ERR_NOMEM;
            continue;
        }
        if (sb_putc(sb, ch) != 0)
            return OBX_ERR_NOMEM;
    }
    return 0;
}

/* The escape of one byte in a JSON string, as PostgreSQL's escape_json() writes it, or NULL when
 * the byte stands for itself. u must have room for 7 bytes. */
static const char *
json_escape_of(unsigned char ch, char *u)
{
    static const char hex[] = "0123456789abcdef";

    switch (ch) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    default:
        if (ch >= 0x20)
            return NULL;
        memcpy(u, "\\u00", 4);
        u[4] = hex[ch >> 4];
        u[5] = hex[ch & 15];
        u[6] = '\0';
        return u;
    }
}

/* Appends s as a JSON string; runs of plain bytes are copied at once. */
static int
json_put_string(struct sbuf *sb, const char *s, size_t n)
{
    size_t run = 0;
    char u[7];

    if (sb_reserve(sb, n + 2) != 0 || sb_putc(sb, '"') != 0)
        return OBX_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *esc = json_escape_of((unsigned char)s[i], u);

        if (esc == NULL)
            continue;
        if (sb_put(sb, s + run, i - run) != 0 || sb_puts(sb, esc) != 0)
            return OBX_ERR_NOMEM;
        run = i + 1;
    }
    if (sb_put(sb, s + run, n - run) != 0)
        return OBX_ERR_NOMEM;
    return sb_putc(sb, '"');
}

/* Appends bytes as a padded base64 JSON string (RFC 4648). */
static int
json_put_base64(struct sbuf *sb, const uint8_t *b, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out;

    if (sb_reserve(sb, (n + 2) / 3 * 4 + 2) != 0)
        return OBX_ERR_NOMEM;
    out = sb->p + sb->len;
    *out++ = '"';
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16;

        if (i + 1 < n)
            v |= (uint32_t)b[i + 1] << 8;
        if (i + 2 < n)
            v |= b[i + 2];
        *out++ = alphabet[v >> 18 & 63];
        *out++ = alphabet[v >> 12 & 63];
        *out++ = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
        *out++ = i + 2 < n ? alphabet[v & 63] : '=';
    }
    *out++ = '"';
    sb->len = (size_t)(out - sb->p);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Timestamps
 * ------------------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static unsigned
days_in_month(int64_t y, unsigned m)
{
    static const unsigned days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

/* Reads min..max digits at *p (before end) into *v. */
static bool
read_num(const char **p, const char *end, int min, int max, int64_t *v)
{
    int n = 0;

    *v = 0;
    while (*p < end && n < max && is_digit(**p)) {
        *v = *v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    return n >= min;
}

static bool
read_char(const char **p, const char *end, char ch)
{
    if (*p >= end || **p != ch)
        return false;
    (*p)++;
    return true;
}

/* [.fraction] and [+-hh[:mm[:ss]] | Z] after the seconds: milliseconds of the fraction (truncated)
 * and the offset east of UTC in seconds. */
static bool
parse_tail(const char *p, const char *end, int64_t *frac_ms, int64_t *offset_s)
{
    int64_t hh, mm = 0, ss = 0;
    int sign;

    *frac_ms = 0;
    *offset_s = 0;
    if (read_char(&p, end, '.')) {
        int64_t scale = 100;

        if (p >= end || !is_digit(*p))
            return false;
        for (; p < end && is_digit(*p); p++, scale /= 10)
            *frac_ms += (*p - '0') * scale;
    }
    if (p == end)
        return true;
    if (*p == 'Z')
        return p + 1 == end;
    if (*p != '+' && *p != '-')
        return false;
    sign = *p++ == '-' ? -1 : 1;
    if (!read_num(&p, end, 2, 2, &hh) || hh > 15)
        return false;
    if (read_char(&p, end, ':') && (!read_num(&p, end, 2, 2, &mm) || mm > 59))
        return false;
    if (read_char(&p, end, ':') && (!read_num(&p, end, 2, 2, &ss) || ss > 59))
        return false;
    *offset_s = sign * (hh * 3600 + mm * 60 + ss);
    return p == end;
}

/* Parses PostgreSQL's ISO output of a timestamptz or timestamp ("2026-11-22 21:40:00.123456+00",
 * offsets like +05:30 or -03:00:00, 'T' also accepted as separator, no offset meaning UTC) into
 * Unix milliseconds. BC dates and infinity are refused. */
static bool
parse_timestamp(const char *p, size_t n, int64_t *ms)
{
    const char *end = p + n;
    int64_t y, mo, d, hh, mi, ss, frac, off;

    if (!read_num(&p, end, 4, 6, &y) || !read_char(&p, end, '-') || !read_num(&p, end, 2, 2, &mo) ||
        !read_char(&p, end, '-') || !read_num(&p, end, 2, 2, &d))
        return false;
    if (p >= end || (*p != ' ' && *p != 'T'))
        return false;
    p++;
    if (!read_num(&p, end, 2, 2, &hh) || !read_char(&p, end, ':') ||
        !read_num(&p, end, 2, 2, &mi) || !read_char(&p, end, ':') || !read_num(&p, end, 2, 2, &ss))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, (unsigned)mo) || hh > 23 || mi > 59 ||
        ss > 59)
        return false;
    if (!parse_tail(p, end, &frac, &off))
        return false;
    *ms = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400000 +
          (hh * 3600 + mi * 60 + ss - off) * 1000 + frac;
    return true;
}

/* The commit time in Unix milliseconds (PostgreSQL epoch microseconds, floored), or 0 (the
 * producer stamps the record) without a transaction or a commit time. */
static int64_t
commit_ms(const struct obx_txn_info *txn)
{
    int64_t ms;

    if (txn == NULL || txn->commit_ts == 0)
        return 0;
    ms = txn->commit_ts / 1000;
    if (txn->commit_ts % 1000 < 0)
        ms--;
    return ms + POSTGRES_EPOCH_MS;
}

/* A decimal integer (optional sign) filling all of [p, p+n). */
static bool
parse_int64(const char *p, size_t n, int64_t *v)
{
    const char *end = p + n;
    bool neg = false;
    uint64_t acc = 0;

    if (p < end && (*p == '-' || *p == '+'))
        neg = *p++ == '-';
    if (p == end)
        return false;
    for (; p < end; p++) {
        if (!is_digit(*p) || acc > (UINT64_MAX - 9) / 10)
            return false;
        acc = acc * 10 + (uint64_t)(*p - '0');
    }
    if (acc > (uint64_t)INT64_MAX)
        return false;
    *v = neg ? -(int64_t)acc : (int64_t)acc;
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Construction from the configuration
 * ------------------------------------------------------------------------------------------- */

/* The next comma-separated entry of *list, trimmed, as [*start, *start+*len); false at the end. */
static bool
next_entry(const char **list, const char **start, size_t *len)
{
    const char *p = *list;
    const char *end;

    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return false;
        end = p + strcspn(p, ",");
        *list = *end == ',' ? end + 1 : end;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end > p) {
            *start = p;
            *len = (size_t)(end - p);
            return true;
        }
        p = *list;
    }
}

static int config_error(struct obx_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
config_error(struct obx_error *err, const char *fmt, ...)
{
    char msg[OBX_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return obx_error_set(err, OBX_ERR_CONFIG, true, "%s", msg);
}

/* One placement entry "column:header[:name]", "column:envelope[:name]" or "column:partition". */
static int
parse_placement(struct obx_outbox *ob, const char *s, size_t n, struct obx_error *err)
{
    const char *c1 = memchr(s, ':', n);
    const char *c2 = c1 != NULL ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - s)) : NULL;
    const char *kind = c1 != NULL ? c1 + 1 : NULL;
    size_t kind_len = c1 == NULL ? 0 : (size_t)((c2 != NULL ? c2 : s + n) - kind);
    size_t name_len = c2 != NULL ? (size_t)(s + n - c2 - 1) : 0;
    struct placement *pl;

    if (ob->nplacements == MAX_PLACEMENTS)
        return config_error(err, PLACEMENT_KEY ": at most %d entries", MAX_PLACEMENTS);
    pl = &ob->placements[ob->nplacements];
    if (c1 == NULL || c1 == s || (c2 != NULL && (name_len == 0 || memchr(c2 + 1, ':', name_len))))
        goto bad;
    if (kind_len == 6 && memcmp(kind, "header", 6) == 0)
        pl->kind = PLACE_HEADER;
    else if (kind_len == 8 && memcmp(kind, "envelope", 8) == 0)
        pl->kind = PLACE_ENVELOPE;
    else if (kind_len == 9 && memcmp(kind, "partition", 9) == 0 && c2 == NULL)
        pl->kind = PLACE_PARTITION;
    else
        goto bad;
    pl->column = strndup(s, (size_t)(c1 - s));
    if (pl->kind != PLACE_PARTITION)
        pl->name = c2 != NULL ? strndup(c2 + 1, name_len) : strndup(s, (size_t)(c1 - s));
    ob->nplacements++;
    if (pl->column == NULL || (pl->kind != PLACE_PARTITION && pl->name == NULL))
        return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    if (pl->kind == PLACE_ENVELOPE && strcmp(pl->name, "payload") == 0)
        return config_error(err, PLACEMENT_KEY ": envelope member \"payload\" holds the payload");
    ob->envelope |= pl->kind == PLACE_ENVELOPE;
    return 0;
bad:
    return config_error(err,
                        PLACEMENT_KEY ": expected column:header[:name], column:envelope[:name] "
                                      "or column:partition, got \"%.*s\"",
                        (int)n, s);
}

static int
parse_placements(struct obx_outbox *ob, const char *list, struct obx_error *err)
{
    const char *s;
    size_t n;
    unsigned partitions = 0;

    while (next_entry(&list, &s, &n)) {
        int rc = parse_placement(ob, s, n, err);

        if (rc != 0)
            return rc;
        if (ob->placements[ob->nplacements - 1].kind == PLACE_PARTITION && ++partitions > 1)
            return config_error(err, PLACEMENT_KEY ": at most one column may be placed in the "
                                                   "partition");
    }
    return 0;
}

static int
parse_invalid_behavior(struct obx_outbox *ob, const char *s, struct obx_error *err)
{
    if (strcmp(s, "dlq") == 0)
        ob->invalid = OBX_INVALID_DLQ;
    else if (strcmp(s, "skip") == 0)
        ob->invalid = OBX_INVALID_SKIP;
    else if (strcmp(s, "fail") == 0)
        ob->invalid = OBX_INVALID_FAIL;
    else
        return config_error(err, "outbox.invalid.behavior: expected dlq, skip or fail, got \"%s\"",
                            s);
    return 0;
}

/* Copies the plain string settings. */
static int
copy_strings(struct obx_outbox *ob, const struct obx_config *cfg, struct obx_error *err)
{
    for (int i = 0; i < F_PLACEMENT; i++) {
        ob->fields[i] = strdup(obx_config_str(cfg, role_keys[i]));
        if (ob->fields[i] == NULL)
            return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    }
    ob->topic_template = strdup(obx_config_str(cfg, "outbox.route.topic.replacement"));
    ob->message_prefix = strdup(obx_config_str(cfg, "outbox.message.prefix"));
    ob->dlq_topic = strdup(obx_config_str(cfg, "outbox.dlq.topic"));
    if (ob->topic_template == NULL || ob->message_prefix == NULL || ob->dlq_topic == NULL)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
    return 0;
}

/* Cross-checks of the settings the router relies on. */
static int
check_settings(const struct obx_outbox *ob, struct obx_error *err)
{
    if (ob->fields[F_PAYLOAD][0] == '\0')
        return config_error(err, "outbox.table.field.event.payload: must name a column");
    if (ob->topic_template[0] == '\0')
        return config_error(err, "outbox.route.topic.replacement: must not be empty");
    if (ob->template_has_value && ob->fields[F_ROUTE][0] == '\0')
        return config_error(err, "outbox.route.by.field: must name a column when "
                                 "outbox.route.topic.replacement uses " ROUTED_BY_VALUE);
    if (ob->invalid == OBX_INVALID_DLQ && ob->dlq_topic[0] == '\0')
        return config_error(err, "outbox.dlq.topic: must not be empty when "
                                 "outbox.invalid.behavior is dlq");
    return 0;
}

struct obx_outbox *
obx_outbox_new(const struct obx_config *cfg, struct obx_error *err)
{
    struct obx_outbox *ob = calloc(1, sizeof(*ob));
    int rc;

    if (ob == NULL) {
        obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
        return NULL;
    }
    rc = copy_strings(ob, cfg, err);
    if (rc == 0)
        rc = parse_placements(ob, obx_config_str(cfg, PLACEMENT_KEY), err);
    if (rc == 0)
        rc = obx_config_tables(cfg, &ob->tables, &ob->ntables, err);
    if (rc == 0)
        rc = parse_invalid_behavior(ob, obx_config_str(cfg, "outbox.invalid.behavior"), err);
    if (rc != 0)
        goto fail;
    ob->template_has_value = strstr(ob->topic_template, ROUTED_BY_VALUE) != NULL;
    ob->source_headers = obx_config_bool(cfg, "outbox.headers.source");
    rc = check_settings(ob, err);
    if (rc != 0)
        goto fail;
    if (sb_reserve(&ob->scratch, 4096) != 0) {
        obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
        goto fail;
    }
    return ob;
fail:
    obx_outbox_free(ob);
    return NULL;
}

void
obx_outbox_free(struct obx_outbox *ob)
{
    if (ob == NULL)
        return;
    free(ob->scratch.p);
    free(ob->tables);
    for (size_t i = 0; i < ob->nplacements; i++) {
        free(ob->placements[i].column);
        free(ob->placements[i].name);
    }
    free(ob->dlq_topic);
    free(ob->message_prefix);
    free(ob->topic_template);
    for (int i = 0; i < F_PLACEMENT; i++)
        free(ob->fields[i]);
    free(ob);
}

enum obx_invalid_behavior
obx_outbox_invalid_behavior(const struct obx_outbox *ob)
{
    return ob->invalid;
}

size_t
obx_outbox_scratch_capacity(const struct obx_outbox *ob)
{
    return ob->scratch.cap;
}

bool
obx_outbox_is_table(const struct obx_outbox *ob, const struct obx_relation *rel)
{
    for (size_t i = 0; i < ob->ntables; i++)
        if (strcmp(ob->tables[i].nspname, rel->nspname) == 0 &&
            strcmp(ob->tables[i].relname, rel->relname) == 0)
            return true;
    return false;
}

/* ---------------------------------------------------------------------------------------------
 * Fields: names, relation checks, values from a row or a message
 * ------------------------------------------------------------------------------------------- */

static size_t
field_count(const struct obx_outbox *ob)
{
    return F_PLACEMENT + ob->nplacements;
}

/* The column (or message member) name of a field; "" when the field is not used. */
static const char *
field_name(const struct obx_outbox *ob, size_t role)
{
    return role < F_PLACEMENT ? ob->fields[role] : ob->placements[role - F_PLACEMENT].column;
}

static const char *
field_key(size_t role)
{
    return role < F_PLACEMENT ? role_keys[role] : PLACEMENT_KEY;
}

static const char *
type_name(uint32_t oid)
{
    switch (oid) {
    case OID_BOOL:
        return "boolean";
    case OBX_OID_BYTEA:
        return "bytea";
    case OID_INT2:
        return "smallint";
    case OBX_OID_INT4:
        return "integer";
    case OBX_OID_INT8:
        return "bigint";
    case OBX_OID_TEXT:
        return "text";
    case OBX_OID_JSON:
        return "json";
    case OBX_OID_VARCHAR:
        return "varchar";
    case OBX_OID_TIMESTAMP:
        return "timestamp";
    case OBX_OID_TIMESTAMPTZ:
        return "timestamptz";
    case OBX_OID_UUID:
        return "uuid";
    case OBX_OID_JSONB:
        return "jsonb";
    default:
        return "another type";
    }
}

static bool
is_int_type(uint32_t oid)
{
    return oid == OID_INT2 || oid == OBX_OID_INT4 || oid == OBX_OID_INT8;
}

static bool
is_json_type(uint32_t oid)
{
    return oid == OBX_OID_JSON || oid == OBX_OID_JSONB;
}

/* The types a field accepts, as a list for the error message, or NULL for any type. */
static const char *
field_types(const struct obx_outbox *ob, size_t role, uint32_t oid, bool *ok)
{
    *ok = true;
    if (role == F_PAYLOAD) {
        *ok = is_json_type(oid) || oid == OBX_OID_TEXT || oid == OBX_OID_VARCHAR ||
              oid == OBX_OID_BYTEA;
        return "json, jsonb, text, varchar or bytea";
    }
    if (role == F_TIMESTAMP) {
        *ok = oid == OBX_OID_TIMESTAMPTZ || oid == OBX_OID_TIMESTAMP;
        return "timestamptz or timestamp";
    }
    if (role == F_HEADERS) {
        *ok = is_json_type(oid);
        return "json or jsonb";
    }
    if (role >= F_PLACEMENT && ob->placements[role - F_PLACEMENT].kind == PLACE_PARTITION) {
        *ok = is_int_type(oid);
        return "smallint, integer or bigint";
    }
    return NULL;
}

int
obx_outbox_check_relation(const struct obx_outbox *ob, const struct obx_relation *rel,
                          struct obx_error *err)
{
    for (size_t role = 0; role < field_count(ob); role++) {
        const char *name = field_name(ob, role);
        const char *types;
        uint32_t oid;
        bool ok;
        int idx;

        if (name[0] == '\0' || (role == F_ROUTE && !ob->template_has_value))
            continue;
        idx = obx_relation_column(rel, name);
        if (idx < 0)
            return obx_error_set(err, OBX_ERR_SERVER, true,
                                 "table %s.%s has no column \"%s\" (named by %s): add the "
                                 "column or change the setting",
                                 rel->nspname, rel->relname, name, field_key(role));
        oid = rel->cols[idx].type_oid;
        types = field_types(ob, role, oid, &ok);
        if (!ok)
            return obx_error_set(err, OBX_ERR_SERVER, true,
                                 "column \"%s\" of table %s.%s has type %s (oid %u) but %s "
                                 "needs %s",
                                 name, rel->nspname, rel->relname, type_name(oid), oid,
                                 field_key(role), types);
    }
    return 0;
}

/* Records why the event cannot be routed, naming the field. Returns OBX_ERR_INVALID. */
static int field_invalid(struct obx_outbox *ob, const struct route_ctx *cx, size_t role,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
field_invalid(struct obx_outbox *ob, const struct route_ctx *cx, size_t role, const char *fmt, ...)
{
    char what[OBX_ERROR_MSG_MAX / 2];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (cx->rel != NULL)
        snprintf(ob->reason, sizeof(ob->reason), "column \"%s\" (%s) of table %s.%s %s",
                 field_name(ob, role), field_key(role), cx->rel->nspname, cx->rel->relname, what);
    else
        snprintf(ob->reason, sizeof(ob->reason), "field \"%s\" (%s) of logical message \"%s\" %s",
                 field_name(ob, role), field_key(role), cx->msg->prefix, what);
    return OBX_ERR_INVALID;
}

static void
row_fields(const struct obx_outbox *ob, struct route_ctx *cx)
{
    for (size_t role = 0; role < field_count(ob); role++) {
        struct fval *fv = &cx->fields[role];
        const char *name = field_name(ob, role);
        const struct obx_pgo_col *col;
        int idx;

        memset(fv, 0, sizeof(*fv));
        idx = name[0] != '\0' ? obx_relation_column(cx->rel, name) : -1;
        if (idx < 0)
            continue; /* FV_MISSING */
        col = &cx->tup->cols[idx];
        fv->type_oid = cx->rel->cols[idx].type_oid;
        fv->col = col;
        switch (col->kind) {
        case OBX_PGO_COL_TEXT:
            fv->kind = FV_TEXT;
            fv->p = (const char *)col->data;
            fv->len = col->len;
            break;
        case OBX_PGO_COL_UNCHANGED:
            fv->kind = FV_UNCHANGED;
            break;
        case OBX_PGO_COL_BINARY:
            fv->kind = FV_BINARY;
            break;
        default:
            fv->kind = FV_NULL;
        }
    }
}

/* true if the member name token (with quotes) equals name. */
static bool
member_is(struct sbuf *sb, const char *tok, size_t n, const char *name)
{
    size_t mark = sb->len, len = strlen(name);
    bool eq;

    if (memchr(tok, '\\', n) == NULL)
        return n - 2 == len && memcmp(tok + 1, name, len) == 0;
    if (json_unescape(sb, tok, n) != 0)
        return false;
    eq = sb->len - mark == len && memcmp(sb->p + mark, name, len) == 0;
    sb->len = mark;
    return eq;
}

/* Fills the fields from the members of the message's JSON object (the last of duplicate members
 * wins, as in jsonb). Optional fields that are absent read as null. Returns 0 or
 * OBX_ERR_INVALID. */
static int
message_fields(struct obx_outbox *ob, struct route_ctx *cx)
{
    const char *doc, *name, *val;
    size_t doc_len, name_len, val_len;
    enum json_type type;
    struct jcur c;

    memset(cx->fields, 0, sizeof(cx->fields));
    if (json_document((const char *)cx->msg->content, cx->msg->content_len, &doc, &doc_len) !=
        J_OBJECT) {
        snprintf(ob->reason, sizeof(ob->reason),
                 "content of logical message \"%s\" is not a JSON object", cx->msg->prefix);
        return OBX_ERR_INVALID;
    }
    c = (struct jcur){doc, doc + doc_len, 0};
    while (json_member_next(&c, &name, &name_len, &val, &val_len, &type)) {
        for (size_t role = 0; role < field_count(ob); role++) {
            struct fval *fv = &cx->fields[role];

            if (field_name(ob, role)[0] == '\0' ||
                !member_is(&ob->scratch, name, name_len, field_name(ob, role)))
                continue;
            fv->kind = type == J_NULL ? FV_NULL : FV_JSON;
            fv->jtype = (uint8_t)type;
            fv->p = val;
            fv->len = val_len;
        }
    }
    for (size_t role = F_TIMESTAMP; role < field_count(ob); role++)
        if (cx->fields[role].kind == FV_MISSING)
            cx->fields[role].kind = FV_NULL;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Building the event
 * ------------------------------------------------------------------------------------------- */

/* A field that must hold a value: explains the other cases. */
static int
field_unusable(struct obx_outbox *ob, const struct route_ctx *cx, size_t role)
{
    switch (cx->fields[role].kind) {
    case FV_MISSING:
        return field_invalid(ob, cx, role, "is missing");
    case FV_NULL:
        return field_invalid(ob, cx, role, "is NULL");
    case FV_UNCHANGED:
        return field_invalid(ob, cx, role, "holds an unchanged TOAST value (not an insert)");
    case FV_BINARY:
        return field_invalid(ob, cx, role, "is in binary format");
    default:
        return field_invalid(ob, cx, role, "cannot be used");
    }
}

/* The text of a field: a column's text, a JSON string decoded, a number/true/false as written,
 * an object/array with jsonb's spacing when composite_ok. SQL/JSON null gives a SPAN_NULL span.
 * Returns 0, OBX_ERR_INVALID or OBX_ERR_NOMEM. */
static int
field_text(struct obx_outbox *ob, const struct route_ctx *cx, size_t role, bool composite_ok,
           struct span *out)
{
    const struct fval *fv = &cx->fields[role];
    size_t mark = ob->scratch.len;

    *out = (struct span){.where = SPAN_NULL};
    if (fv->kind == FV_NULL)
        return 0;
    if (fv->kind == FV_TEXT) {
        *out = span_ext(fv->p, fv->len);
        return 0;
    }
    if (fv->kind != FV_JSON)
        return field_unusable(ob, cx, role);
    if (fv->jtype == J_STRING) {
        if (memchr(fv->p, '\\', fv->len) == NULL) {
            *out = span_ext(fv->p + 1, fv->len - 2);
            return 0;
        }
        if (json_unescape(&ob->scratch, fv->p, fv->len) != 0)
            return OBX_ERR_NOMEM;
    } else if (fv->jtype == J_OBJECT || fv->jtype == J_ARRAY) {
        if (!composite_ok)
            return field_invalid(ob, cx, role, "must be a JSON string or number");
        if (json_respace(&ob->scratch, fv->p, fv->len) != 0)
            return OBX_ERR_NOMEM;
    } else {
        *out = span_ext(fv->p, fv->len);
        return 0;
    }
    *out = span_since(&ob->scratch, mark);
    return 0;
}

/* Like field_text, for a field that must not be null. */
static int
field_required_text(struct obx_outbox *ob, const struct route_ctx *cx, size_t role,
                    struct span *out)
{
    int rc = field_text(ob, cx, role, false, out);

    if (rc == 0 && out->where == SPAN_NULL)
        return field_unusable(ob, cx, role);
    return rc;
}

static bool
is_topic_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || is_digit(ch) || ch == '.' ||
           ch == '_' || ch == '-';
}

static bool
valid_topic(const char *t, size_t n)
{
    if (n == 0 || n > MAX_TOPIC_LEN || (n == 1 && t[0] == '.') ||
        (n == 2 && t[0] == '.' && t[1] == '.'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_topic_char(t[i]))
            return false;
    return true;
}

/* The topic: the template with every ${routedByValue} replaced, NUL-terminated, checked against
 * Kafka's topic name rules. */
static int
build_topic(struct obx_outbox *ob, const struct route_ctx *cx)
{
    struct sbuf *sb = &ob->scratch;
    const char *t = ob->topic_template, *hit;
    struct span value;
    size_t start;
    int rc;

    if (!ob->template_has_value) {
        ob->st.topic = span_ext(t, strlen(t));
        return 0;
    }
    rc = field_required_text(ob, cx, F_ROUTE, &value);
    if (rc != 0)
        return rc;
    start = sb->len;
    while ((hit = strstr(t, ROUTED_BY_VALUE)) != NULL) {
        if (sb_put(sb, t, (size_t)(hit - t)) != 0 || sb_reserve(sb, value.len) != 0)
            return OBX_ERR_NOMEM;
        sb_put(sb, span_ptr(sb, &value), value.len);
        t = hit + strlen(ROUTED_BY_VALUE);
    }
    if (sb_puts(sb, t) != 0 || sb_putc(sb, '\0') != 0)
        return OBX_ERR_NOMEM;
    ob->st.topic = span_since(sb, start);
    ob->st.topic.len--;
    if (!valid_topic(sb->p + start, ob->st.topic.len))
        return field_invalid(ob, cx, F_ROUTE,
                             "gives topic \"%.*s\", not a valid Kafka topic name (1 to 249 "
                             "letters, digits, '.', '_', '-')",
                             (int)(ob->st.topic.len > 300 ? 300 : ob->st.topic.len), sb->p + start);
    return 0;
}

/* The payload as bytes: text as printed, bytea decoded, a message's JSON re-spaced; SQL NULL or
 * JSON null: a tombstone. */
static int
build_payload(struct obx_outbox *ob, const struct route_ctx *cx, struct span *out)
{
    const struct fval *fv = &cx->fields[F_PAYLOAD];
    struct sbuf *sb = &ob->scratch;
    size_t start = sb->len, n;

    *out = (struct span){.where = SPAN_NULL};
    if (fv->kind == FV_NULL)
        return 0;
    if (fv->kind == FV_JSON) {
        if (json_respace(sb, fv->p, fv->len) != 0)
            return OBX_ERR_NOMEM;
        *out = span_since(sb, start);
        return 0;
    }
    if (fv->kind != FV_TEXT)
        return field_unusable(ob, cx, F_PAYLOAD);
    if (fv->type_oid != OBX_OID_BYTEA) {
        *out = span_ext(fv->p, fv->len);
        return 0;
    }
    if (sb_reserve(sb, fv->len / 2) != 0)
        return OBX_ERR_NOMEM;
    if (obx_pgoutput_col_bytea(fv->col, (uint8_t *)sb->p + start, sb->cap - start, &n) != 0)
        return field_invalid(ob, cx, F_PAYLOAD, "is not bytea in hex format");
    sb->len += n;
    *out = span_since(sb, start);
    return 0;
}

/* Appends the payload as a JSON value for the envelope. */
static int
put_payload_json(struct obx_outbox *ob, const struct route_ctx *cx, const struct span *payload)
{
    const struct fval *fv = &cx->fields[F_PAYLOAD];
    struct sbuf *sb = &ob->scratch;
    const char *p;

    /* reserve the worst case first: payload may live in the scratch buffer itself */
    if (sb_reserve(sb, payload->len * 6 + 16) != 0)
        return OBX_ERR_NOMEM;
    p = span_ptr(sb, payload);
    if (fv->kind == FV_JSON || is_json_type(fv->type_oid))
        return sb_put(sb, p, payload->len);
    if (fv->type_oid == OBX_OID_BYTEA)
        return json_put_base64(sb, (const uint8_t *)p, payload->len);
    return json_put_string(sb, p, payload->len);
}

/* Appends an envelope member's value as JSON. */
static int
put_field_json(struct obx_outbox *ob, const struct route_ctx *cx, size_t role)
{
    const struct fval *fv = &cx->fields[role];
    struct sbuf *sb = &ob->scratch;

    switch (fv->kind) {
    case FV_NULL:
        return sb_puts(sb, "null");
    case FV_JSON:
        return json_respace(sb, fv->p, fv->len);
    case FV_TEXT:
        break;
    default:
        return field_unusable(ob, cx, role);
    }
    if (is_int_type(fv->type_oid) || is_json_type(fv->type_oid))
        return sb_put(sb, fv->p, fv->len);
    if (fv->type_oid == OID_BOOL)
        return sb_puts(sb, fv->len == 1 && fv->p[0] == 't' ? "true" : "false");
    return json_put_string(sb, fv->p, fv->len);
}

/* {"payload": P, "<name>": V, ...} with jsonb's spacing. */
static int
build_envelope(struct obx_outbox *ob, const struct route_ctx *cx, const struct span *payload)
{
    struct sbuf *sb = &ob->scratch;
    size_t start = sb->len;
    int rc;

    if (sb_puts(sb, "{\"payload\": ") != 0)
        return OBX_ERR_NOMEM;
    rc = put_payload_json(ob, cx, payload);
    for (size_t i = 0; rc == 0 && i < ob->nplacements; i++) {
        const struct placement *pl = &ob->placements[i];

        if (pl->kind != PLACE_ENVELOPE)
            continue;
        if (sb_puts(sb, ", ") != 0 || json_put_string(sb, pl->name, strlen(pl->name)) != 0 ||
            sb_puts(sb, ": ") != 0)
            return OBX_ERR_NOMEM;
        rc = put_field_json(ob, cx, F_PLACEMENT + i);
    }
    if (rc == 0)
        rc = sb_putc(sb, '}');
    ob->st.value = span_since(sb, start);
    return rc;
}

static int
build_value(struct obx_outbox *ob, const struct route_ctx *cx)
{
    struct span payload;
    int rc = build_payload(ob, cx, &payload);

    if (rc != 0)
        return rc;
    if (!ob->envelope || payload.where == SPAN_NULL) {
        ob->st.value = payload;
        return 0;
    }
    return build_envelope(ob, cx, &payload);
}

/* Adds a header; name must be NUL-terminated where it points. */
static int
add_header(struct obx_outbox *ob, const struct route_ctx *cx, size_t role, struct span name,
           struct span value)
{
    struct stage *st = &ob->st;

    if (st->nheaders == OBX_EVENT_MAX_HEADERS)
        return field_invalid(ob, cx, role, "adds more than %d headers", OBX_EVENT_MAX_HEADERS);
    st->hname[st->nheaders] = name;
    st->hvalue[st->nheaders] = value;
    st->nheaders++;
    return 0;
}

/* The header of one member of the headers object: name decoded (NUL-terminated in the scratch
 * buffer), strings decoded, null as a null value, other values as JSON text. */
static int
add_json_header(struct obx_outbox *ob, const struct route_ctx *cx, const char *name,
                size_t name_len, const char *val, size_t val_len, enum json_type type)
{
    struct sbuf *sb = &ob->scratch;
    size_t start = sb->len;
    struct span sname, svalue = {.where = SPAN_NULL};

    if (json_unescape(sb, name, name_len) != 0 || sb_putc(sb, '\0') != 0)
        return OBX_ERR_NOMEM;
    sname = span_since(sb, start);
    start = sb->len;
    if (type == J_STRING && memchr(val, '\\', val_len) == NULL) {
        svalue = span_ext(val + 1, val_len - 2);
    } else if (type == J_STRING) {
        if (json_unescape(sb, val, val_len) != 0)
            return OBX_ERR_NOMEM;
        svalue = span_since(sb, start);
    } else if (type == J_OBJECT || type == J_ARRAY) {
        if (json_respace(sb, val, val_len) != 0)
            return OBX_ERR_NOMEM;
        svalue = span_since(sb, start);
    } else if (type != J_NULL) {
        svalue = span_ext(val, val_len);
    }
    return add_header(ob, cx, F_HEADERS, sname, svalue);
}

/* The members of the headers column (a JSON object) become headers. */
static int
add_headers_column(struct obx_outbox *ob, const struct route_ctx *cx)
{
    const struct fval *fv = &cx->fields[F_HEADERS];
    const char *doc, *name, *val;
    size_t doc_len, name_len, val_len;
    enum json_type type;
    struct jcur c;
    int rc = 0;

    if (ob->fields[F_HEADERS][0] == '\0' || fv->kind == FV_NULL)
        return 0;
    if (fv->kind != FV_TEXT && fv->kind != FV_JSON)
        return field_unusable(ob, cx, F_HEADERS);
    if (json_document(fv->p, fv->len, &doc, &doc_len) != J_OBJECT)
        return field_invalid(ob, cx, F_HEADERS, "is not a JSON object");
    c = (struct jcur){doc, doc + doc_len, 0};
    while (rc == 0 && json_member_next(&c, &name, &name_len, &val, &val_len, &type))
        rc = add_json_header(ob, cx, name, name_len, val, val_len, type);
    return rc;
}

/* outbox.lsn, outbox.xid, outbox.seq: the consumers' dedupe key across replays. */
static int
add_source_headers(struct obx_outbox *ob, const struct route_ctx *cx)
{
    uint64_t lsn = cx->txn != NULL ? cx->txn->commit_lsn : cx->msg->lsn;
    uint32_t xid = cx->txn != NULL ? cx->txn->xid : cx->msg->xid;
    uint32_t seq = cx->txn != NULL ? cx->txn->seq : 0;
    static const char *const names[3] = {"outbox.lsn", "outbox.xid", "outbox.seq"};
    int n[3], rc = 0;

    n[0] = snprintf(ob->num[0], sizeof(ob->num[0]), "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
    n[1] = snprintf(ob->num[1], sizeof(ob->num[1]), "%" PRIu32, xid);
    n[2] = snprintf(ob->num[2], sizeof(ob->num[2]), "%" PRIu32, seq);
    for (int i = 0; rc == 0 && i < 3; i++)
        rc = add_header(ob, cx, F_ID, span_ext(names[i], strlen(names[i])),
                        span_ext(ob->num[i], (size_t)n[i]));
    return rc;
}

/* id, header placements, the headers column, source headers, in that order. */
static int
build_headers(struct obx_outbox *ob, const struct route_ctx *cx)
{
    struct span value;
    int rc = 0;

    if (ob->fields[F_ID][0] != '\0') {
        rc = field_required_text(ob, cx, F_ID, &value);
        if (rc == 0)
            rc = add_header(ob, cx, F_ID, span_ext("id", 2), value);
    }
    for (size_t i = 0; rc == 0 && i < ob->nplacements; i++) {
        const struct placement *pl = &ob->placements[i];

        if (pl->kind != PLACE_HEADER)
            continue;
        rc = field_text(ob, cx, F_PLACEMENT + i, true, &value);
        if (rc == 0)
            rc = add_header(ob, cx, F_PLACEMENT + i, span_ext(pl->name, strlen(pl->name)), value);
    }
    if (rc == 0)
        rc = add_headers_column(ob, cx);
    if (rc == 0 && ob->source_headers)
        rc = add_source_headers(ob, cx);
    return rc;
}

/* The timestamp column when set and not null, else the commit time. */
static int
build_timestamp(struct obx_outbox *ob, const struct route_ctx *cx)
{
    const struct fval *fv = &cx->fields[F_TIMESTAMP];
    const char *p = fv->p;
    size_t n = fv->len;
    int64_t ms;

    ob->st.timestamp_ms = commit_ms(cx->txn);
    if (ob->fields[F_TIMESTAMP][0] == '\0' || fv->kind == FV_NULL)
        return 0;
    if (fv->kind == FV_JSON && fv->jtype == J_STRING) {
        p++;
        n -= 2;
    } else if (fv->kind != FV_TEXT) {
        return fv->kind == FV_JSON ? field_invalid(ob, cx, F_TIMESTAMP, "must be a JSON string")
                                   : field_unusable(ob, cx, F_TIMESTAMP);
    }
    if (!parse_timestamp(p, n, &ms))
        return field_invalid(ob, cx, F_TIMESTAMP, "is not a timestamp: \"%.*s\"",
                             (int)(n > 100 ? 100 : n), p);
    if (ms < 0)
        return field_invalid(ob, cx, F_TIMESTAMP, "is before 1970: \"%.*s\"", (int)n, p);
    ob->st.timestamp_ms = ms;
    return 0;
}

static int
build_partition(struct obx_outbox *ob, const struct route_ctx *cx)
{
    ob->st.partition = OBX_PARTITION_ANY;
    for (size_t i = 0; i < ob->nplacements; i++) {
        const struct fval *fv = &cx->fields[F_PLACEMENT + i];
        int64_t v;

        if (ob->placements[i].kind != PLACE_PARTITION || fv->kind == FV_NULL)
            continue;
        if (fv->kind != FV_TEXT && !(fv->kind == FV_JSON && fv->jtype == J_NUMBER))
            return fv->kind == FV_JSON
                       ? field_invalid(ob, cx, F_PLACEMENT + i, "must be a JSON number")
                       : field_unusable(ob, cx, F_PLACEMENT + i);
        if (!parse_int64(fv->p, fv->len, &v) || v < 0 || v > INT32_MAX)
            return field_invalid(ob, cx, F_PLACEMENT + i, "is not a partition number: \"%.*s\"",
                                 (int)(fv->len > 40 ? 40 : fv->len), fv->p);
        ob->st.partition = (int32_t)v;
    }
    return 0;
}

/* Builds the whole event into ob->st. Returns 0, OBX_ERR_INVALID (ob->reason) or
 * OBX_ERR_NOMEM. The key comes first so that a dead letter can carry it. */
static int
build_event(struct obx_outbox *ob, const struct route_ctx *cx)
{
    int rc = 0;

    if (ob->fields[F_KEY][0] != '\0')
        rc = field_required_text(ob, cx, F_KEY, &ob->st.key);
    if (rc == 0)
        rc = build_topic(ob, cx);
    if (rc == 0)
        rc = build_value(ob, cx);
    if (rc == 0)
        rc = build_headers(ob, cx);
    if (rc == 0)
        rc = build_timestamp(ob, cx);
    if (rc == 0)
        rc = build_partition(ob, cx);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Results: the event, dead letters, skip and fail
 * ------------------------------------------------------------------------------------------- */

/* Empties the stage (not the header arrays: nheaders says how much of them is used). */
static void
stage_reset(struct stage *st)
{
    st->topic = st->key = st->value = (struct span){.where = SPAN_NULL};
    st->nheaders = 0;
    st->partition = OBX_PARTITION_ANY;
    st->timestamp_ms = 0;
}

static void
begin_route(struct obx_outbox *ob)
{
    ob->scratch.len = 0;
    stage_reset(&ob->st);
    ob->reason[0] = '\0';
}

/* Turns the staged spans into the event's pointers (the scratch buffer no longer moves). */
static void
finalize(const struct obx_outbox *ob, struct obx_event *ev)
{
    const struct sbuf *sb = &ob->scratch;
    const struct stage *st = &ob->st;

    memset(ev, 0, offsetof(struct obx_event, headers));
    ev->topic = span_ptr(sb, &st->topic);
    ev->key = span_ptr(sb, &st->key);
    ev->key_len = st->key.len;
    ev->value = span_ptr(sb, &st->value);
    ev->value_len = st->value.len;
    ev->partition = st->partition;
    ev->timestamp_ms = st->timestamp_ms;
    ev->nheaders = st->nheaders;
    for (size_t i = 0; i < st->nheaders; i++) {
        ev->headers[i].name = span_ptr(sb, &st->hname[i]);
        ev->headers[i].value = span_ptr(sb, &st->hvalue[i]);
        ev->headers[i].value_len = st->hvalue[i].len;
    }
}

/* The dead-letter value of a row: {"column": "text" or null, ...} with jsonb's spacing. */
static int
build_row_dump(struct obx_outbox *ob, const struct route_ctx *cx)
{
    struct sbuf *sb = &ob->scratch;
    size_t start = sb->len;

    if (sb_putc(sb, '{') != 0)
        return OBX_ERR_NOMEM;
    for (uint16_t i = 0; i < cx->rel->ncols; i++) {
        const struct obx_pgo_col *col = &cx->tup->cols[i];
        const char *name = cx->rel->cols[i].name;
        int rc;

        if ((i > 0 && sb_puts(sb, ", ") != 0) || json_put_string(sb, name, strlen(name)) != 0 ||
            sb_puts(sb, ": ") != 0)
            return OBX_ERR_NOMEM;
        if (col->kind == OBX_PGO_COL_TEXT)
            rc = json_put_string(sb, (const char *)col->data, col->len);
        else
            rc = sb_puts(sb, "null");
        if (rc != 0)
            return rc;
    }
    if (sb_putc(sb, '}') != 0)
        return OBX_ERR_NOMEM;
    ob->st.value = span_since(sb, start);
    return 0;
}

/* The dead letter of an invalid row or message: to outbox.dlq.topic, its key when it could be
 * read, the row dump or the message content, an `error` header with the reason. */
static int
build_dead_letter(struct obx_outbox *ob, const struct route_ctx *cx)
{
    struct span key = ob->st.key;
    int rc = 0;

    stage_reset(&ob->st);
    ob->st.key = key;
    ob->st.topic = span_ext(ob->dlq_topic, strlen(ob->dlq_topic));
    ob->st.timestamp_ms = commit_ms(cx->txn);
    if (cx->rel != NULL)
        rc = build_row_dump(ob, cx);
    else
        ob->st.value = span_ext(cx->msg->content, cx->msg->content_len);
    ob->st.hname[0] = span_ext("error", 5);
    ob->st.hvalue[0] = span_ext(ob->reason, strlen(ob->reason));
    ob->st.nheaders = 1;
    return rc;
}

/* Result of a routing call from the builder's return code. */
static int
finish(struct obx_outbox *ob, const struct route_ctx *cx, int rc, struct obx_event *ev,
       struct obx_error *err)
{
    if (rc == OBX_ERR_INVALID) {
        switch (ob->invalid) {
        case OBX_INVALID_SKIP:
            return OBX_ROUTE_SKIP;
        case OBX_INVALID_FAIL:
            return obx_error_set(err, OBX_ERR_INVALID, true, "%s", ob->reason);
        case OBX_INVALID_DLQ:
            rc = build_dead_letter(ob, cx);
            if (rc == 0) {
                finalize(ob, ev);
                return OBX_ROUTE_DLQ;
            }
        }
    }
    if (rc == OBX_ERR_NOMEM)
        return obx_error_set(err, OBX_ERR_NOMEM, true, "outbox router: out of memory");
    assert(rc == 0);
    finalize(ob, ev);
    return OBX_ROUTE_EVENT;
}

int
obx_outbox_route_row(struct obx_outbox *ob, const struct obx_relation *rel,
                     const struct obx_pgo_tuple *tup, const struct obx_txn_info *txn,
                     struct obx_event *ev, struct obx_error *err)
{
    struct route_ctx cx = {.rel = rel, .tup = tup, .txn = txn};
    int rc = obx_relation_check_tuple(rel, tup, err);

    assert(txn != NULL);
    if (rc != 0)
        return rc;
    begin_route(ob);
    row_fields(ob, &cx);
    return finish(ob, &cx, build_event(ob, &cx), ev, err);
}

int
obx_outbox_route_message(struct obx_outbox *ob, const struct obx_pgo_message *msg,
                         const struct obx_txn_info *txn, struct obx_event *ev,
                         struct obx_error *err)
{
    struct route_ctx cx = {.msg = msg, .txn = txn};
    int rc;

    if (msg->prefix == NULL || strcmp(msg->prefix, ob->message_prefix) != 0)
        return OBX_ROUTE_SKIP;
    begin_route(ob);
    rc = message_fields(ob, &cx);
    if (rc == 0)
        rc = build_event(ob, &cx);
    return finish(ob, &cx, rc, ev, err);
}

/* The dead-letter topic refused a dead letter: the same record once more without its value
 * (which is what was refused, e.g. too large), the reason added to its error header. A dead
 * letter that has no value left is refused for good (no loop). */
static int
dead_letter_again(struct obx_outbox *ob, const struct obx_event *ev, const char *reason,
                  struct obx_event *dlq, struct obx_error *err)
{
    char why[sizeof(ob->dl_reason)];
    const struct obx_header *old = NULL;
    size_t i;

    if (ev->value == NULL)
        return obx_error_set(err, OBX_ERR_KAFKA, true,
                             "the dead-letter topic %s refused a record: %s", ob->dlq_topic,
                             reason);
    for (i = 0; i < ev->nheaders && old == NULL; i++)
        if (strcmp(ev->headers[i].name, "error") == 0 && ev->headers[i].value != NULL)
            old = &ev->headers[i];
    /* via why: the old reason may live in dl_reason itself */
    snprintf(why, sizeof(why), "%.*s (value of %zu bytes dropped: refused again: %s)",
             old != NULL ? (int)old->value_len : 0, old != NULL ? (const char *)old->value : "",
             ev->value_len, reason);
    if (dlq != ev)
        *dlq = *ev;
    memcpy(ob->dl_reason, why, sizeof(why));
    dlq->value = NULL;
    dlq->value_len = 0;
    i = old != NULL                             ? (size_t)(old - ev->headers)
        : dlq->nheaders < OBX_EVENT_MAX_HEADERS ? dlq->nheaders++
                                                : OBX_EVENT_MAX_HEADERS - 1;
    dlq->headers[i].name = "error";
    dlq->headers[i].value = ob->dl_reason;
    dlq->headers[i].value_len = strlen(ob->dl_reason);
    return 0;
}

int
obx_outbox_dead_letter(struct obx_outbox *ob, const struct obx_event *ev, const char *reason,
                       struct obx_event *dlq, struct obx_error *err)
{
    size_t i;

    if (reason == NULL)
        reason = "unknown reason";
    if (ob->dlq_topic[0] == '\0')
        return obx_error_set(err, OBX_ERR_CONFIG, true,
                             "no dead-letter topic (outbox.dlq.topic) for a refused record: %s",
                             reason);
    if (ev->topic != NULL && strcmp(ev->topic, ob->dlq_topic) == 0)
        return dead_letter_again(ob, ev, reason, dlq, err);
    if (dlq != ev)
        *dlq = *ev;
    snprintf(ob->dl_reason, sizeof(ob->dl_reason), "%s", reason);
    dlq->topic = ob->dlq_topic;
    dlq->partition = OBX_PARTITION_ANY;
    /* full: the last header gives way to the reason */
    i = dlq->nheaders < OBX_EVENT_MAX_HEADERS ? dlq->nheaders++ : OBX_EVENT_MAX_HEADERS - 1;
    dlq->headers[i].name = "error";
    dlq->headers[i].value = ob->dl_reason;
    dlq->headers[i].value_len = strlen(ob->dl_reason);
    return 0;
}
