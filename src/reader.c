/* reader.c - bounds-checked big-endian cursor over a byte buffer.
 *
 * Every getter checks the remaining length first and leaves the cursor where it was on failure,
 * so a caller can report the offset of the field that did not fit. */
#include "outboxd/reader.h"

#include <string.h>

#include "outboxd/error.h"

void
obx_reader_init(struct obx_reader *r, const void *p, size_t len)
{
    r->p = p;
    r->len = p == NULL ? 0 : len;
    r->off = 0;
}

size_t
obx_reader_remaining(const struct obx_reader *r)
{
    return r->len - r->off;
}

int
obx_reader_end(const struct obx_reader *r)
{
    return r->off == r->len ? 0 : OBX_ERR_PROTOCOL;
}

/* Returns the big-endian value of the n (<= 8) bytes at the cursor and advances past them, or
 * fails without moving when fewer than n bytes are left. */
static int
read_be(struct obx_reader *r, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (obx_reader_remaining(r) < n)
        return OBX_ERR_PROTOCOL;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | r->p[r->off + i];
    r->off += n;
    *out = v;
    return 0;
}

int
obx_reader_u8(struct obx_reader *r, uint8_t *out)
{
    uint64_t v;
    int rc = read_be(r, 1, &v);

    if (rc == 0)
        *out = (uint8_t)v;
    return rc;
}

int
obx_reader_u16(struct obx_reader *r, uint16_t *out)
{
    uint64_t v;
    int rc = read_be(r, 2, &v);

    if (rc == 0)
        *out = (uint16_t)v;
    return rc;
}

int
obx_reader_u32(struct obx_reader *r, uint32_t *out)
{
    uint64_t v;
    int rc = read_be(r, 4, &v);

    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

int
obx_reader_i32(struct obx_reader *r, int32_t *out)
{
    uint32_t v;
    int rc = obx_reader_u32(r, &v);

    /* two's complement reinterpretation without implementation-defined conversion */
    if (rc == 0)
        *out = v <= INT32_MAX ? (int32_t)v : -(int32_t)(UINT32_MAX - v) - 1;
    return rc;
}

int
obx_reader_u64(struct obx_reader *r, uint64_t *out)
{
    return read_be(r, 8, out);
}

int
obx_reader_i64(struct obx_reader *r, int64_t *out)
{
    uint64_t v;
    int rc = read_be(r, 8, &v);

    if (rc == 0)
        *out = v <= INT64_MAX ? (int64_t)v : -(int64_t)(UINT64_MAX - v) - 1;
    return rc;
}

int
obx_reader_bytes(struct obx_reader *r, size_t n, const uint8_t **out)
{
    if (obx_reader_remaining(r) < n)
        return OBX_ERR_PROTOCOL;
    /* an empty reader may have a NULL buffer, and NULL + 0 is undefined */
    *out = r->p == NULL ? NULL : r->p + r->off;
    r->off += n;
    return 0;
}

int
obx_reader_cstr(struct obx_reader *r, const char **out, size_t *len)
{
    size_t left = obx_reader_remaining(r);
    const uint8_t *start = r->p + r->off;
    const uint8_t *nul;

    if (left == 0)
        return OBX_ERR_PROTOCOL;
    nul = memchr(start, '\0', left);
    if (nul == NULL)
        return OBX_ERR_PROTOCOL;
    *out = (const char *)start;
    if (len != NULL)
        *len = (size_t)(nul - start);
    r->off += (size_t)(nul - start) + 1;
    return 0;
}
