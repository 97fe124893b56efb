/* pgoutput.h - pure decoder of PostgreSQL's pgoutput logical replication messages.
 *
 * Decodes one message (the payload of one XLogData) into a plain struct. Protocol versions 1 to 4.
 * Strings and column values point into the caller's buffer, and column arrays point into the
 * decoder's scratch storage: both stay valid until the next obx_pgoutput_decode() call on the same
 * decoder or until the buffer is released, whichever comes first. Copy what you keep.
 * No libpq, no Kafka: testable with byte arrays.
 *
 * Errors: a malformed message is OBX_ERR_PROTOCOL (fatal) with the message
 *     malformed <Type> message: <what> at offset <n> of <len>
 * <Type> is obx_pgoutput_tag_name() of the tag ("malformed message: ..." when the tag itself is
 * missing or unknown), <len> the message length, and <what> one of: "truncated" (n is then the
 * offset the missing field would end at, so n > len), "N trailing bytes" (n = first unread byte),
 * "unknown tag 0x.." , "bad flags 0x..", "bad options 0x..", "bad column flags 0x..",
 * "bad first_segment 0x..", "unknown column kind 0x..", "unknown replica identity 0x..",
 * "expected tuple type 'N' but got 0x..", "not valid in protocol version V (needs W)",
 * "not valid inside a streamed block", "not valid outside a streamed block" (n = offset of the
 * offending byte). The decoder does not know the WAL position: the caller (repl) adds it with
 * obx_error_prefix(err, "at %X/%X", ...). */
#ifndef OUTBOXD_PGOUTPUT_H
#define OUTBOXD_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outboxd/error.h"

/* Message tags, as the first byte of each message. */
enum obx_pgo_tag {
    OBX_PGO_BEGIN = 'B',
    OBX_PGO_COMMIT = 'C',
    OBX_PGO_ORIGIN = 'O',
    OBX_PGO_RELATION = 'R',
    OBX_PGO_TYPE = 'Y',
    OBX_PGO_INSERT = 'I',
    OBX_PGO_UPDATE = 'U',
    OBX_PGO_DELETE = 'D',
    OBX_PGO_TRUNCATE = 'T',
    OBX_PGO_MESSAGE = 'M',
    OBX_PGO_STREAM_START = 'S',
    OBX_PGO_STREAM_STOP = 'E',
    OBX_PGO_STREAM_COMMIT = 'c',
    OBX_PGO_STREAM_ABORT = 'A',
    OBX_PGO_BEGIN_PREPARE = 'b',
    OBX_PGO_PREPARE = 'P',
    OBX_PGO_COMMIT_PREPARED = 'K',
    OBX_PGO_ROLLBACK_PREPARED = 'r',
    OBX_PGO_STREAM_PREPARE = 'p',
};

/* Kind byte of one column in TupleData. */
enum obx_pgo_col_kind {
    OBX_PGO_COL_NULL = 'n',
    OBX_PGO_COL_UNCHANGED = 'u', /* unchanged TOASTed value, not sent */
    OBX_PGO_COL_TEXT = 't',
    OBX_PGO_COL_BINARY = 'b',
};

/* One column value of a tuple. data/len are set for TEXT and BINARY only (data is not
 * NUL-terminated). */
struct obx_pgo_col {
    uint8_t kind; /* enum obx_pgo_col_kind */
    const uint8_t *data;
    uint32_t len;
};

struct obx_pgo_tuple {
    uint16_t ncols;
    const struct obx_pgo_col *cols;
};

/* One column of a Relation message. */
struct obx_pgo_relcol {
    uint8_t flags; /* 1 = part of the key */
    const char *name;
    uint32_t type_oid;
    int32_t typmod;
};

/* Timestamps are PostgreSQL's: microseconds since 2000-01-01 00:00:00 UTC. */
struct obx_pgo_begin {
    uint64_t final_lsn;
    int64_t commit_ts;
    uint32_t xid;
};

struct obx_pgo_commit {
    uint8_t flags;
    uint64_t commit_lsn;
    uint64_t end_lsn;
    int64_t commit_ts;
};

struct obx_pgo_origin {
    uint64_t commit_lsn;
    const char *name;
};

/* xid fields of Relation, Type, Insert, Update, Delete, Truncate and Message: present on the wire
 * only between Stream Start and Stream Stop (protocol >= 2), else 0. It is the xid of the
 * (sub)transaction that made the change, so it may be a subxid of the Stream Start's xid. */
struct obx_pgo_relation {
    uint32_t xid;
    uint32_t relid;
    const char *nspname; /* "pg_catalog" when the wire has "" (as PostgreSQL's reader does) */
    const char *relname;
    uint8_t replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t ncols;
    const struct obx_pgo_relcol *cols;
};

struct obx_pgo_type {
    uint32_t xid;
    uint32_t type_oid;
    const char *nspname;
    const char *typname;
};

struct obx_pgo_insert {
    uint32_t xid;
    uint32_t relid;
    struct obx_pgo_tuple newtup;
};

struct obx_pgo_update {
    uint32_t xid;
    uint32_t relid;
    uint8_t old_kind; /* 0 (no old tuple), 'K' (key) or 'O' (old row) */
    struct obx_pgo_tuple oldtup;
    struct obx_pgo_tuple newtup;
};

struct obx_pgo_delete {
    uint32_t xid;
    uint32_t relid;
    uint8_t old_kind; /* 'K' or 'O' */
    struct obx_pgo_tuple oldtup;
};

struct obx_pgo_truncate {
    uint32_t xid;
    uint8_t options; /* 1 = CASCADE, 2 = RESTART IDENTITY */
    uint32_t nrelids;
    /* nrelids big-endian uint32 OIDs, in the buffer; read with obx_pgoutput_truncate_relid */
    const uint8_t *relids;
};

struct obx_pgo_message {
    uint32_t xid;
    bool transactional;
    uint64_t lsn;
    const char *prefix;
    const uint8_t *content;
    uint32_t content_len;
};

struct obx_pgo_stream_start {
    uint32_t xid;
    bool first_segment;
};

struct obx_pgo_stream_commit {
    uint32_t xid;
    uint8_t flags;
    uint64_t commit_lsn;
    uint64_t end_lsn;
    int64_t commit_ts;
};

/* abort_lsn and abort_ts are sent only with protocol 4 and streaming = parallel. The decoder is
 * not told the streaming mode: with protocol 4 it reads them when the message is 25 bytes long
 * and leaves them 0 when it is 9 bytes long. */
struct obx_pgo_stream_abort {
    uint32_t xid;
    uint32_t subxid; /* == xid when the whole transaction aborted */
    uint64_t abort_lsn;
    int64_t abort_ts;
};

/* Begin Prepare, Prepare, Commit Prepared, Stream Prepare share this layout:
 * lsn = prepare_lsn or commit_lsn, ts = prepare_ts or commit_ts. Begin Prepare has no flags
 * byte on the wire (flags is then 0). */
struct obx_pgo_prepare {
    uint8_t flags;
    uint64_t lsn;
    uint64_t end_lsn;
    int64_t ts;
    uint32_t xid;
    const char *gid;
};

struct obx_pgo_rollback_prepared {
    uint8_t flags;
    uint64_t prepare_end_lsn;
    uint64_t rollback_end_lsn;
    int64_t prepare_ts;
    int64_t rollback_ts;
    uint32_t xid;
    const char *gid;
};

/* One decoded message: tag says which member of the union is set. */
struct obx_pgo_msg {
    uint8_t tag; /* enum obx_pgo_tag */
    union {
        struct obx_pgo_begin begin;
        struct obx_pgo_commit commit;
        struct obx_pgo_origin origin;
        struct obx_pgo_relation relation;
        struct obx_pgo_type type;
        struct obx_pgo_insert insert;
        struct obx_pgo_update update;
        struct obx_pgo_delete del;
        struct obx_pgo_truncate truncate;
        struct obx_pgo_message message;
        struct obx_pgo_stream_start stream_start;
        struct obx_pgo_stream_commit stream_commit;
        struct obx_pgo_stream_abort stream_abort;
        struct obx_pgo_prepare prepare; /* 'b', 'P', 'K', 'p' */
        struct obx_pgo_rollback_prepared rollback_prepared;
    } u;
};

/* Decoder state: protocol version, whether we are inside a Stream Start/Stop block (which adds
 * an xid to data messages), and scratch column arrays reused across messages. */
struct obx_pgoutput;

/* Returns a new decoder for protocol version proto_version (1..4), or NULL on bad version
 * (OBX_ERR_CONFIG) or out of memory (OBX_ERR_NOMEM). Must be freed with obx_pgoutput_free().
 * Messages that need a later version than proto_version (Stream *: 2, two-phase: 3) are
 * protocol errors. */
struct obx_pgoutput *obx_pgoutput_new(int proto_version, struct obx_error *err);

/* Frees dec; NULL is a no-op. */
void obx_pgoutput_free(struct obx_pgoutput *dec);

/* Forgets stream state (after a reconnect). */
void obx_pgoutput_reset(struct obx_pgoutput *dec);

/* Decodes exactly one message of len bytes at buf into *msg. Returns 0, or OBX_ERR_PROTOCOL
 * (err names the tag and byte offset, see above) for a truncated message, trailing bytes, an
 * unknown tag or bad flags, or OBX_ERR_NOMEM (growing the scratch column arrays; no allocation
 * happens once the widest table has been seen). On failure *msg is unspecified and the stream
 * state is unchanged: Stream Start/Stop take effect only when they decode. */
int obx_pgoutput_decode(struct obx_pgoutput *dec, const uint8_t *buf, size_t len,
                        struct obx_pgo_msg *msg, struct obx_error *err);

/* Human-readable name of a tag ("Insert"), or "unknown". */
const char *obx_pgoutput_tag_name(uint8_t tag);

/* The i-th relation OID of a Truncate message (i < nrelids). */
uint32_t obx_pgoutput_truncate_relid(const struct obx_pgo_truncate *t, uint32_t i);

/* Column helpers.
 * obx_pgoutput_col_text: for a TEXT column, points *out and *len at its bytes (not NUL-terminated)
 * and returns 0; OBX_ERR_INVALID for NULL, unchanged or binary columns.
 * obx_pgoutput_col_bytea: decodes a TEXT column holding bytea in hex form ("\x0aff...") into
 * out (capacity cap); stores the byte count in *n. Returns 0, OBX_ERR_INVALID for malformed hex
 * or a non-text column, OBX_ERR_BUSY if cap is too small (*n then holds the size needed). */
int obx_pgoutput_col_text(const struct obx_pgo_col *col, const char **out, size_t *len);
int obx_pgoutput_col_bytea(const struct obx_pgo_col *col, uint8_t *out, size_t cap, size_t *n);

#endif
