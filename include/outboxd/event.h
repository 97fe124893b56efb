/* event.h - one Kafka record to be, as the router builds it and the producer sends it.
 *
 * Every pointer is borrowed: it points into the receive buffer or the router's scratch space and
 * stays valid until the next routing call. The producer copies what it sends. */
#ifndef OUTBOXD_EVENT_H
#define OUTBOXD_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define OBX_EVENT_MAX_HEADERS 64
#define OBX_PARTITION_ANY (-1) /* let the partitioner pick (RD_KAFKA_PARTITION_UA) */

struct obx_header {
    const char *name;  /* NUL-terminated */
    const void *value; /* NULL: a null header value (value_len 0), as Kafka allows */
    size_t value_len;
};

struct obx_event {
    const char *topic; /* NUL-terminated */
    const void *key;   /* NULL: no key */
    size_t key_len;
    const void *value; /* NULL: tombstone */
    size_t value_len;
    int32_t partition;    /* OBX_PARTITION_ANY or an explicit partition */
    int64_t timestamp_ms; /* Unix epoch milliseconds; 0 lets the producer stamp it */
    size_t nheaders;
    struct obx_header headers[OBX_EVENT_MAX_HEADERS];
};

#endif
