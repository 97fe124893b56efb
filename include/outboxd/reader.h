/* reader.h - bounds-checked big-endian cursor over a byte buffer.
 *
 * Every getter refuses to read past the end and returns OBX_ERR_PROTOCOL without moving the
 * cursor; on success it returns 0. The reader never owns its buffer. This module includes only its
 * own header and error.h, so it can be lifted out. */
#ifndef OUTBOXD_READER_H
#define OUTBOXD_READER_H

#include <stddef.h>
#include <stdint.h>

struct obx_reader {
    const uint8_t *p;
    size_t len;
    size_t off;
};

/* Starts a reader over len bytes at p (p may be NULL when len is 0). */
void obx_reader_init(struct obx_reader *r, const void *p, size_t len);

int obx_reader_u8(struct obx_reader *r, uint8_t *out);
int obx_reader_u16(struct obx_reader *r, uint16_t *out);
int obx_reader_u32(struct obx_reader *r, uint32_t *out);
int obx_reader_i32(struct obx_reader *r, int32_t *out);
int obx_reader_u64(struct obx_reader *r, uint64_t *out);
int obx_reader_i64(struct obx_reader *r, int64_t *out);

/* Points *out at the next n bytes (inside the buffer; lives as long as the buffer). */
int obx_reader_bytes(struct obx_reader *r, size_t n, const uint8_t **out);

/* Points *out at a NUL-terminated string inside the buffer and stores its length (without the
 * NUL) in *len if len is not NULL. Fails if no NUL occurs before the end. */
int obx_reader_cstr(struct obx_reader *r, const char **out, size_t *len);

/* Bytes left to read. */
size_t obx_reader_remaining(const struct obx_reader *r);

/* 0 when every byte was consumed, OBX_ERR_PROTOCOL otherwise. */
int obx_reader_end(const struct obx_reader *r);

#endif
