/* pgoutput.c - pure decoder of PostgreSQL's pgoutput logical replication messages.
 *
 * One read function per message type fills the matching struct of pgoutput.h; every wire read
 * goes through the bounds-checked reader, and a message must be consumed exactly. Layouts follow
 * PostgreSQL's "Logical Replication Message Formats" (protocol versions 1 to 4): Int8/16/32/64
 * are big-endian, String is NUL-terminated, and [xid] marks the Int32 transaction id that is
 * present only inside a streamed block (between Stream Start and Stream Stop, protocol >= 2):
 * the xid of the (sub)transaction that made the change.
 *
 * Errors are OBX_ERR_PROTOCOL with the message
 *     "malformed <Type> message: <what> at offset <n> of <len>"
 * where <what> is "truncated" (n is then the offset the missing field would have ended at, so it
 * exceeds len), "bad flags 0x..", "N trailing bytes", and so on. The caller adds the LSN. */
#include "outboxd/pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outboxd/reader.h"

/* Smallest scratch array allocated, so that small tables never reallocate. */
#define SCRATCH_MIN 16

/* Smallest encoding of one Relation column: flags, empty name, type OID, typmod. */
#define RELCOL_MIN_SIZE 10

enum tuple_slot { SLOT_OLD, SLOT_NEW, SLOT_COUNT };

struct obx_pgoutput {
    int proto_version;
    bool in_stream; /* between Stream Start and Stream Stop */
    struct obx_pgo_col *cols[SLOT_COUNT];
    size_t cols_cap[SLOT_COUNT];
    struct obx_pgo_relcol *relcols;
    size_t relcols_cap;
};

/* State of one decode call. */
struct dctx {
    struct obx_pgoutput *dec;
    struct obx_reader r;
    const char *name; /* message type name for errors, NULL before the tag is known */
    struct obx_error *err;
};

typedef int (*read_fn)(struct dctx *c, struct obx_pgo_msg *msg);

struct msg_kind {
    uint8_t tag;
    const char *name;
    int min_version;
    bool in_stream_ok; /* may appear between Stream Start and Stream Stop */
    read_fn read;
};

/* ---- errors -------------------------------------------------------------------------------- */

static int bad(struct dctx *c, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records "malformed <Type> message: <detail> at offset <off> of <len>". */
static int
bad(struct dctx *c, size_t off, const char *fmt, ...)
{
    char detail[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (c->name == NULL)
        return obx_error_set(c->err, OBX_ERR_PROTOCOL, true,
                             "malformed message: %s at offset %zu of %zu", detail, off, c->r.len);
    return obx_error_set(c->err, OBX_ERR_PROTOCOL, true,
                         "malformed %s message: %s at offset %zu of %zu", c->name, detail, off,
                         c->r.len);
}

/* A field of need bytes starting at the cursor runs past the end. */
static int
truncated(struct dctx *c, size_t need)
{
    return bad(c, c->r.off + need, "truncated");
}

/* ---- checked field getters ----------------------------------------------------------------- */

static int
get_u8(struct dctx *c, uint8_t *out)
{
    return obx_reader_u8(&c->r, out) == 0 ? 0 : truncated(c, 1);
}

static int
get_u16(struct dctx *c, uint16_t *out)
{
    return obx_reader_u16(&c->r, out) == 0 ? 0 : truncated(c, 2);
}

static int
get_u32(struct dctx *c, uint32_t *out)
{
    return obx_reader_u32(&c->r, out) == 0 ? 0 : truncated(c, 4);
}

static int
get_i32(struct dctx *c, int32_t *out)
{
    return obx_reader_i32(&c->r, out) == 0 ? 0 : truncated(c, 4);
}

static int
get_u64(struct dctx *c, uint64_t *out)
{
    return obx_reader_u64(&c->r, out) == 0 ? 0 : truncated(c, 8);
}

static int
get_i64(struct dctx *c, int64_t *out)
{
    return obx_reader_i64(&c->r, out) == 0 ? 0 : truncated(c, 8);
}

static int
get_bytes(struct dctx *c, size_t n, const uint8_t **out)
{
    return obx_reader_bytes(&c->r, n, out) == 0 ? 0 : truncated(c, n);
}

/* A String: without a NUL before the end, the terminator would lie one byte past it. */
static int
get_cstr(struct dctx *c, const char **out)
{
    if (obx_reader_cstr(&c->r, out, NULL) == 0)
        return 0;
    return truncated(c, obx_reader_remaining(&c->r) + 1);
}

/* A namespace String; the empty string stands for pg_catalog, as in PostgreSQL's own reader. */
static int
get_nspname(struct dctx *c, const char **out)
{
    int rc = get_cstr(c, out);

    if (rc == 0 && (*out)[0] == '\0')
        *out = "pg_catalog";
    return rc;
}

/* The [xid] field: present only inside a streamed block. */
static int
get_stream_xid(struct dctx *c, uint32_t *xid)
{
    *xid = 0;
    return c->dec->in_stream ? get_u32(c, xid) : 0;
}

/* A flags byte whose only valid value is 0. */
static int
get_zero_flags(struct dctx *c, uint8_t *flags)
{
    int rc = get_u8(c, flags);

    if (rc == 0 && *flags != 0)
        return bad(c, c->r.off - 1, "bad flags 0x%02x", *flags);
    return rc;
}

/* ---- scratch storage ----------------------------------------------------------------------- */

/* Returns arr grown to hold n elements of size elem and updates *cap, or NULL when out of memory
 * (arr is then untouched). Grows geometrically, so a decoder stops allocating once it has seen its
 * widest table. */
static void *
grow(void *arr, size_t *cap, size_t n, size_t elem)
{
    size_t want = *cap * 2;
    void *p;

    if (want < n)
        want = n;
    if (want < SCRATCH_MIN)
        want = SCRATCH_MIN;
    p = realloc(arr, want * elem);
    if (p != NULL)
        *cap = want;
    return p;
}

static int
nomem(struct dctx *c)
{
    return obx_error_set(c->err, OBX_ERR_NOMEM, false, "out of memory decoding %s message",
                         c->name);
}

/* ---- TupleData ----------------------------------------------------------------------------- */

/* One column of TupleData:
 *   Byte1   kind: 'n' NULL, 'u' unchanged TOASTed value (not sent), 't' text, 'b' binary
 *   Int32   length of the value (text and binary only)
 *   Byten   the value (text and binary only), not NUL-terminated */
static int
read_column(struct dctx *c, struct obx_pgo_col *col)
{
    uint8_t kind;
    uint32_t len;
    int rc;

    if ((rc = get_u8(c, &kind)) != 0)
        return rc;
    col->kind = kind;
    col->data = NULL;
    col->len = 0;
    switch (kind) {
    case OBX_PGO_COL_NULL:
    case OBX_PGO_COL_UNCHANGED:
        return 0;
    case OBX_PGO_COL_TEXT:
    case OBX_PGO_COL_BINARY:
        if ((rc = get_u32(c, &len)) != 0 || (rc = get_bytes(c, len, &col->data)) != 0)
            return rc;
        col->len = len;
        return 0;
    default:
        return bad(c, c->r.off - 1, "unknown column kind 0x%02x", kind);
    }
}

/* TupleData:
 *   Int16   number of columns, then that many columns (see read_column)
 * The column array goes into scratch slot `slot`. */
static int
read_tuple(struct dctx *c, enum tuple_slot slot, struct obx_pgo_tuple *tup)
{
    struct obx_pgoutput *dec = c->dec;
    uint16_t ncols;
    int rc;

    if ((rc = get_u16(c, &ncols)) != 0)
        return rc;
    /* every column takes at least its kind byte: refuse before allocating for a bogus count */
    if (ncols > obx_reader_remaining(&c->r))
        return truncated(c, ncols);
    if (ncols > dec->cols_cap[slot]) {
        void *p = grow(dec->cols[slot], &dec->cols_cap[slot], ncols, sizeof(struct obx_pgo_col));

        if (p == NULL)
            return nomem(c);
        dec->cols[slot] = p;
    }
    for (uint16_t i = 0; i < ncols; i++) {
        if ((rc = read_column(c, &dec->cols[slot][i])) != 0)
            return rc;
    }
    tup->ncols = ncols;
    tup->cols = dec->cols[slot];
    return 0;
}

/* A Byte1 announcing a tuple: 'N' new, 'K' key, 'O' old. Fails unless it is one of `allowed`
 * ("N", "KO" or "KON"). */
static int
read_tuple_kind(struct dctx *c, const char *allowed, uint8_t *kind)
{
    static const char *const expected[] = {"'N'", "'K' or 'O'", "'K', 'O' or 'N'"};
    int rc = get_u8(c, kind);

    if (rc == 0 && (*kind == '\0' || strchr(allowed, *kind) == NULL))
        return bad(c, c->r.off - 1, "expected tuple type %s but got 0x%02x",
                   expected[strlen(allowed) - 1], *kind);
    return rc;
}

/* ---- transaction messages ------------------------------------------------------------------ */

/* Begin:
 *   Byte1('B')
 *   Int64   final_lsn: the final LSN of the transaction
 *   Int64   commit_ts: commit timestamp (microseconds since 2000-01-01)
 *   Int32   xid */
static int
read_begin(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_begin *m = &msg->u.begin;
    int rc;

    if ((rc = get_u64(c, &m->final_lsn)) != 0 || (rc = get_i64(c, &m->commit_ts)) != 0)
        return rc;
    return get_u32(c, &m->xid);
}

/* Commit:
 *   Byte1('C')
 *   Int8    flags: currently unused, must be 0
 *   Int64   commit_lsn: LSN of the commit
 *   Int64   end_lsn: end LSN of the transaction
 *   Int64   commit_ts */
static int
read_commit(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_commit *m = &msg->u.commit;
    int rc;

    if ((rc = get_zero_flags(c, &m->flags)) != 0 || (rc = get_u64(c, &m->commit_lsn)) != 0)
        return rc;
    if ((rc = get_u64(c, &m->end_lsn)) != 0)
        return rc;
    return get_i64(c, &m->commit_ts);
}

/* Origin:
 *   Byte1('O')
 *   Int64   commit_lsn: LSN of the commit on the origin server (0 after Stream Start)
 *   String  name of the origin */
static int
read_origin(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_origin *m = &msg->u.origin;
    int rc;

    if ((rc = get_u64(c, &m->commit_lsn)) != 0)
        return rc;
    return get_cstr(c, &m->name);
}

/* ---- schema messages ----------------------------------------------------------------------- */

/* One column of a Relation message:
 *   Int8    flags: 0, or 1 when the column is part of the key
 *   String  name
 *   Int32   type_oid
 *   Int32   typmod */
static int
read_relcol(struct dctx *c, struct obx_pgo_relcol *col)
{
    int rc;

    if ((rc = get_u8(c, &col->flags)) != 0)
        return rc;
    if (col->flags > 1)
        return bad(c, c->r.off - 1, "bad column flags 0x%02x", col->flags);
    if ((rc = get_cstr(c, &col->name)) != 0 || (rc = get_u32(c, &col->type_oid)) != 0)
        return rc;
    return get_i32(c, &col->typmod);
}

/* Relation:
 *   Byte1('R')
 *   [Int32  xid]
 *   Int32   relid: OID of the relation
 *   String  nspname ("" = pg_catalog, returned as "pg_catalog")
 *   String  relname
 *   Int8    replident: 'd' default, 'n' nothing, 'f' full, 'i' index
 *   Int16   ncols, then ncols columns (see read_relcol) */
static int
read_relation(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_relation *m = &msg->u.relation;
    struct obx_pgoutput *dec = c->dec;
    int rc;

    if ((rc = get_stream_xid(c, &m->xid)) != 0 || (rc = get_u32(c, &m->relid)) != 0)
        return rc;
    if ((rc = get_nspname(c, &m->nspname)) != 0 || (rc = get_cstr(c, &m->relname)) != 0)
        return rc;
    if ((rc = get_u8(c, &m->replident)) != 0)
        return rc;
    if (m->replident == '\0' || strchr("dnfi", m->replident) == NULL)
        return bad(c, c->r.off - 1, "unknown replica identity 0x%02x", m->replident);
    if ((rc = get_u16(c, &m->ncols)) != 0)
        return rc;
    if ((size_t)m->ncols * RELCOL_MIN_SIZE > obx_reader_remaining(&c->r))
        return truncated(c, (size_t)m->ncols * RELCOL_MIN_SIZE);
    if (m->ncols > dec->relcols_cap) {
        void *p = grow(dec->relcols, &dec->relcols_cap, m->ncols, sizeof(struct obx_pgo_relcol));

        if (p == NULL)
            return nomem(c);
        dec->relcols = p;
    }
    for (uint16_t i = 0; i < m->ncols; i++) {
        if ((rc = read_relcol(c, &dec->relcols[i])) != 0)
            return rc;
    }
    m->cols = dec->relcols;
    return 0;
}

/* Type:
 *   Byte1('Y')
 *   [Int32  xid]
 *   Int32   type_oid
 *   String  nspname ("" = pg_catalog, returned as "pg_catalog")
 *   String  typname */
static int
read_type(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_type *m = &msg->u.type;
    int rc;

    if ((rc = get_stream_xid(c, &m->xid)) != 0 || (rc = get_u32(c, &m->type_oid)) != 0)
        return rc;
    if ((rc = get_nspname(c, &m->nspname)) != 0)
        return rc;
    return get_cstr(c, &m->typname);
}

/* ---- row messages -------------------------------------------------------------------------- */

/* Insert:
 *   Byte1('I')
 *   [Int32  xid]
 *   Int32   relid
 *   Byte1('N')
 *   TupleData  the new row */
static int
read_insert(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_insert *m = &msg->u.insert;
    uint8_t kind;
    int rc;

    if ((rc = get_stream_xid(c, &m->xid)) != 0 || (rc = get_u32(c, &m->relid)) != 0)
        return rc;
    if ((rc = read_tuple_kind(c, "N", &kind)) != 0)
        return rc;
    return read_tuple(c, SLOT_NEW, &m->newtup);
}

/* Update:
 *   Byte1('U')
 *   [Int32  xid]
 *   Int32   relid
 *   optional: Byte1('K') key columns or Byte1('O') whole old row, then TupleData
 *   Byte1('N')
 *   TupleData  the new row */
static int
read_update(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_update *m = &msg->u.update;
    uint8_t kind;
    int rc;

    if ((rc = get_stream_xid(c, &m->xid)) != 0 || (rc = get_u32(c, &m->relid)) != 0)
        return rc;
    if ((rc = read_tuple_kind(c, "KON", &kind)) != 0)
        return rc;
    if (kind != 'N') {
        m->old_kind = kind;
        if ((rc = read_tuple(c, SLOT_OLD, &m->oldtup)) != 0)
            return rc;
        if ((rc = read_tuple_kind(c, "N", &kind)) != 0)
            return rc;
    }
    return read_tuple(c, SLOT_NEW, &m->newtup);
}

/* Delete:
 *   Byte1('D')
 *   [Int32  xid]
 *   Int32   relid
 *   Byte1('K') key columns or Byte1('O') whole old row
 *   TupleData */
static int
read_delete(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_delete *m = &msg->u.del;
    int rc;

    if ((rc = get_stream_xid(c, &m->xid)) != 0 || (rc = get_u32(c, &m->relid)) != 0)
        return rc;
    if ((rc = read_tuple_kind(c, "KO", &m->old_kind)) != 0)
        return rc;
    return read_tuple(c, SLOT_OLD, &m->oldtup);
}

/* Truncate:
 *   Byte1('T')
 *   [Int32  xid]
 *   Int32   nrelids
 *   Int8    options: bit 1 CASCADE, bit 2 RESTART IDENTITY
 *   Int32   relid, nrelids times (left in the buffer; see obx_pgoutput_truncate_relid) */
static int
read_truncate(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_truncate *m = &msg->u.truncate;
    uint64_t need;
    int rc;

    if ((rc = get_stream_xid(c, &m->xid)) != 0 || (rc = get_u32(c, &m->nrelids)) != 0)
        return rc;
    if ((rc = get_u8(c, &m->options)) != 0)
        return rc;
    if ((m->options & ~3u) != 0)
        return bad(c, c->r.off - 1, "bad options 0x%02x", m->options);
    /* in 64 bits, so that a bogus count cannot wrap where size_t has 32 */
    need = (uint64_t)m->nrelids * 4;
    if (need > obx_reader_remaining(&c->r))
        return truncated(c, need > SIZE_MAX - c->r.off ? SIZE_MAX - c->r.off : (size_t)need);
    return get_bytes(c, (size_t)need, &m->relids);
}

/* Message (logical decoding message, pg_logical_emit_message):
 *   Byte1('M')
 *   [Int32  xid]
 *   Int8    flags: 0, or 1 when transactional
 *   Int64   lsn of the message
 *   String  prefix
 *   Int32   content length
 *   Byten   content */
static int
read_message(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_message *m = &msg->u.message;
    uint8_t flags;
    int rc;

    if ((rc = get_stream_xid(c, &m->xid)) != 0 || (rc = get_u8(c, &flags)) != 0)
        return rc;
    if (flags > 1)
        return bad(c, c->r.off - 1, "bad flags 0x%02x", flags);
    m->transactional = flags == 1;
    if ((rc = get_u64(c, &m->lsn)) != 0 || (rc = get_cstr(c, &m->prefix)) != 0)
        return rc;
    if ((rc = get_u32(c, &m->content_len)) != 0)
        return rc;
    return get_bytes(c, m->content_len, &m->content);
}

/* ---- streaming (protocol >= 2) ------------------------------------------------------------- */

/* Stream Start:
 *   Byte1('S')
 *   Int32   xid of the streamed transaction
 *   Int8    first_segment: 1 for the first block of this xid, else 0 */
static int
read_stream_start(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_stream_start *m = &msg->u.stream_start;
    uint8_t first;
    int rc;

    if ((rc = get_u32(c, &m->xid)) != 0 || (rc = get_u8(c, &first)) != 0)
        return rc;
    if (first > 1)
        return bad(c, c->r.off - 1, "bad first_segment 0x%02x", first);
    m->first_segment = first == 1;
    return 0;
}

/* Stream Stop:
 *   Byte1('E')   (no fields) */
static int
read_stream_stop(struct dctx *c, struct obx_pgo_msg *msg)
{
    (void)c;
    (void)msg;
    return 0;
}

/* Stream Commit:
 *   Byte1('c')
 *   Int32   xid
 *   Int8    flags: currently unused, must be 0
 *   Int64   commit_lsn
 *   Int64   end_lsn
 *   Int64   commit_ts */
static int
read_stream_commit(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_stream_commit *m = &msg->u.stream_commit;
    int rc;

    if ((rc = get_u32(c, &m->xid)) != 0 || (rc = get_zero_flags(c, &m->flags)) != 0)
        return rc;
    if ((rc = get_u64(c, &m->commit_lsn)) != 0 || (rc = get_u64(c, &m->end_lsn)) != 0)
        return rc;
    return get_i64(c, &m->commit_ts);
}

/* Stream Abort:
 *   Byte1('A')
 *   Int32   xid of the transaction
 *   Int32   subxid (equal to xid when the whole transaction aborts)
 *   Int64   abort_lsn  (protocol >= 4, only with streaming = parallel)
 *   Int64   abort_ts   (protocol >= 4, only with streaming = parallel)
 * The decoder is not told whether parallel streaming was requested, so it goes by length: with
 * protocol 4 the message is either 9 bytes (no abort fields) or 25 bytes (both); anything else
 * is truncated or has trailing bytes. Before protocol 4 it is always 9 bytes. */
static int
read_stream_abort(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_stream_abort *m = &msg->u.stream_abort;
    int rc;

    if ((rc = get_u32(c, &m->xid)) != 0 || (rc = get_u32(c, &m->subxid)) != 0)
        return rc;
    if (c->dec->proto_version < 4 || obx_reader_remaining(&c->r) == 0)
        return 0;
    if ((rc = get_u64(c, &m->abort_lsn)) != 0)
        return rc;
    return get_i64(c, &m->abort_ts);
}

/* ---- two-phase commit (protocol >= 3) ------------------------------------------------------ */

/* The tail shared by Begin Prepare, Prepare, Commit Prepared and Stream Prepare:
 *   Int64   prepare_lsn (Commit Prepared: commit_lsn)
 *   Int64   end_lsn
 *   Int64   prepare_ts (Commit Prepared: commit_ts)
 *   Int32   xid
 *   String  gid */
static int
read_prepare_tail(struct dctx *c, struct obx_pgo_prepare *m)
{
    int rc;

    if ((rc = get_u64(c, &m->lsn)) != 0 || (rc = get_u64(c, &m->end_lsn)) != 0)
        return rc;
    if ((rc = get_i64(c, &m->ts)) != 0 || (rc = get_u32(c, &m->xid)) != 0)
        return rc;
    return get_cstr(c, &m->gid);
}

/* Begin Prepare:
 *   Byte1('b')
 *   (no flags) prepare_lsn, end_lsn, prepare_ts, xid, gid (see read_prepare_tail) */
static int
read_begin_prepare(struct dctx *c, struct obx_pgo_msg *msg)
{
    msg->u.prepare.flags = 0;
    return read_prepare_tail(c, &msg->u.prepare);
}

/* Prepare ('P'), Commit Prepared ('K') and Stream Prepare ('p'):
 *   Byte1(tag)
 *   Int8    flags: currently unused, must be 0
 *   prepare_lsn or commit_lsn, end_lsn, prepare_ts or commit_ts, xid, gid
 *   (see read_prepare_tail) */
static int
read_prepare(struct dctx *c, struct obx_pgo_msg *msg)
{
    int rc = get_zero_flags(c, &msg->u.prepare.flags);

    return rc != 0 ? rc : read_prepare_tail(c, &msg->u.prepare);
}

/* Rollback Prepared:
 *   Byte1('r')
 *   Int8    flags: currently unused, must be 0
 *   Int64   prepare_end_lsn
 *   Int64   rollback_end_lsn
 *   Int64   prepare_ts
 *   Int64   rollback_ts
 *   Int32   xid
 *   String  gid */
static int
read_rollback_prepared(struct dctx *c, struct obx_pgo_msg *msg)
{
    struct obx_pgo_rollback_prepared *m = &msg->u.rollback_prepared;
    int rc;

    if ((rc = get_zero_flags(c, &m->flags)) != 0)
        return rc;
    if ((rc = get_u64(c, &m->prepare_end_lsn)) != 0 || (rc = get_u64(c, &m->rollback_end_lsn)) != 0)
        return rc;
    if ((rc = get_i64(c, &m->prepare_ts)) != 0 || (rc = get_i64(c, &m->rollback_ts)) != 0)
        return rc;
    if ((rc = get_u32(c, &m->xid)) != 0)
        return rc;
    return get_cstr(c, &m->gid);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static const struct msg_kind msg_kinds[] = {
    {OBX_PGO_BEGIN, "Begin", 1, false, read_begin},
    {OBX_PGO_COMMIT, "Commit", 1, false, read_commit},
    {OBX_PGO_ORIGIN, "Origin", 1, true, read_origin},
    {OBX_PGO_RELATION, "Relation", 1, true, read_relation},
    {OBX_PGO_TYPE, "Type", 1, true, read_type},
    {OBX_PGO_INSERT, "Insert", 1, true, read_insert},
    {OBX_PGO_UPDATE, "Update", 1, true, read_update},
    {OBX_PGO_DELETE, "Delete", 1, true, read_delete},
    {OBX_PGO_TRUNCATE, "Truncate", 1, true, read_truncate},
    {OBX_PGO_MESSAGE, "Message", 1, true, read_message},
    {OBX_PGO_STREAM_START, "Stream Start", 2, false, read_stream_start},
    {OBX_PGO_STREAM_STOP, "Stream Stop", 2, true, read_stream_stop},
    {OBX_PGO_STREAM_COMMIT, "Stream Commit", 2, false, read_stream_commit},
    {OBX_PGO_STREAM_ABORT, "Stream Abort", 2, false, read_stream_abort},
    {OBX_PGO_BEGIN_PREPARE, "Begin Prepare", 3, false, read_begin_prepare},
    {OBX_PGO_PREPARE, "Prepare", 3, false, read_prepare},
    {OBX_PGO_COMMIT_PREPARED, "Commit Prepared", 3, false, read_prepare},
    {OBX_PGO_ROLLBACK_PREPARED, "Rollback Prepared", 3, false, read_rollback_prepared},
    {OBX_PGO_STREAM_PREPARE, "Stream Prepare", 3, false, read_prepare},
};

static const struct msg_kind *
find_kind(uint8_t tag)
{
    for (size_t i = 0; i < sizeof(msg_kinds) / sizeof(msg_kinds[0]); i++) {
        if (msg_kinds[i].tag == tag)
            return &msg_kinds[i];
    }
    return NULL;
}

const char *
obx_pgoutput_tag_name(uint8_t tag)
{
    const struct msg_kind *kind = find_kind(tag);

    return kind == NULL ? "unknown" : kind->name;
}

/* Checks that a message of this kind may appear now: protocol version and stream block. */
static int
check_context(struct dctx *c, const struct msg_kind *kind)
{
    struct obx_pgoutput *dec = c->dec;

    if (dec->proto_version < kind->min_version)
        return bad(c, 0, "not valid in protocol version %d (needs %d)", dec->proto_version,
                   kind->min_version);
    if (dec->in_stream && !kind->in_stream_ok)
        return bad(c, 0, "not valid inside a streamed block");
    if (!dec->in_stream && kind->tag == OBX_PGO_STREAM_STOP)
        return bad(c, 0, "not valid outside a streamed block");
    return 0;
}

int
obx_pgoutput_decode(struct obx_pgoutput *dec, const uint8_t *buf, size_t len,
                    struct obx_pgo_msg *msg, struct obx_error *err)
{
    struct dctx c = {.dec = dec, .name = NULL, .err = err};
    const struct msg_kind *kind;
    uint8_t tag;
    int rc;

    obx_reader_init(&c.r, buf, len);
    memset(msg, 0, sizeof(*msg));
    if ((rc = get_u8(&c, &tag)) != 0)
        return rc;
    kind = find_kind(tag);
    if (kind == NULL)
        return bad(&c, 0, "unknown tag 0x%02x", tag);
    c.name = kind->name;
    msg->tag = tag;
    if ((rc = check_context(&c, kind)) != 0 || (rc = kind->read(&c, msg)) != 0)
        return rc;
    if (obx_reader_end(&c.r) != 0)
        return bad(&c, c.r.off, "%zu trailing bytes", obx_reader_remaining(&c.r));
    /* the stream state changes only once the whole message proved valid */
    if (tag == OBX_PGO_STREAM_START)
        dec->in_stream = true;
    else if (tag == OBX_PGO_STREAM_STOP)
        dec->in_stream = false;
    return 0;
}

/* ---- lifecycle and helpers ----------------------------------------------------------------- */

struct obx_pgoutput *
obx_pgoutput_new(int proto_version, struct obx_error *err)
{
    struct obx_pgoutput *dec;

    if (proto_version < 1 || proto_version > 4) {
        obx_error_set(err, OBX_ERR_CONFIG, true, "unsupported pgoutput protocol version %d",
                      proto_version);
        return NULL;
    }
    dec = calloc(1, sizeof(*dec));
    if (dec == NULL) {
        obx_error_set(err, OBX_ERR_NOMEM, false, "out of memory creating the pgoutput decoder");
        return NULL;
    }
    dec->proto_version = proto_version;
    return dec;
}

void
obx_pgoutput_free(struct obx_pgoutput *dec)
{
    if (dec == NULL)
        return;
    for (int i = 0; i < SLOT_COUNT; i++)
        free(dec->cols[i]);
    free(dec->relcols);
    free(dec);
}

void
obx_pgoutput_reset(struct obx_pgoutput *dec)
{
    dec->in_stream = false;
}

uint32_t
obx_pgoutput_truncate_relid(const struct obx_pgo_truncate *t, uint32_t i)
{
    const uint8_t *p = t->relids + (size_t)i * 4;

    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int
obx_pgoutput_col_text(const struct obx_pgo_col *col, const char **out, size_t *len)
{
    if (col->kind != OBX_PGO_COL_TEXT)
        return OBX_ERR_INVALID;
    *out = (const char *)col->data;
    *len = col->len;
    return 0;
}

/* Value of one hex digit, or -1. */
static int
hex_value(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int
obx_pgoutput_col_bytea(const struct obx_pgo_col *col, uint8_t *out, size_t cap, size_t *n)
{
    size_t need;

    if (col->kind != OBX_PGO_COL_TEXT || col->len < 2 || col->data[0] != '\\' ||
        col->data[1] != 'x' || col->len % 2 != 0)
        return OBX_ERR_INVALID;
    need = (col->len - 2) / 2;
    *n = need;
    if (need > cap)
        return OBX_ERR_BUSY;
    for (size_t i = 0; i < need; i++) {
        int hi = hex_value(col->data[2 + 2 * i]);
        int lo = hex_value(col->data[3 + 2 * i]);

        if (hi < 0 || lo < 0)
            return OBX_ERR_INVALID;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
