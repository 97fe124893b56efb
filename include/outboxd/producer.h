/* producer.h - the librdkafka producer: idempotent, acks=all, murmur2_random, bounded queue, no
 * silent drops. Delivery reports are served from the caller's loop (obx_producer_poll), so the
 * ack window needs no lock.
 *
 * Defaults set here (each overridable by a kafka.* key): enable.idempotence=true, acks=all,
 * partitioner=murmur2_random, linger.ms=5, queue.buffering.max.kbytes=65536,
 * message.timeout.ms=0 (infinite: a message is never expired while the broker is down). */
#ifndef OUTBOXD_PRODUCER_H
#define OUTBOXD_PRODUCER_H

#include <stdbool.h>
#include <stdint.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/event.h"

/* One delivery report. ev is rebuilt from the delivered message (topic, key, value, headers,
 * partition) and lives only for the duration of the callback. error is 0 on success, else
 * OBX_ERR_KAFKA with reason set; permanent = true when retrying the same record cannot succeed
 * (e.g. record too large, topic authorization). offset is valid on success. */
struct obx_delivery {
    uint64_t tag; /* what obx_producer_send was given */
    int error;
    bool permanent;
    const char *reason;
    const struct obx_event *ev;
    int64_t offset;
};

typedef void obx_delivery_fn(void *ctx, const struct obx_delivery *dr);

struct obx_producer;

/* Creates the producer from the kafka.* settings. on_delivery is called from obx_producer_poll()
 * and obx_producer_flush() only. Returns NULL with OBX_ERR_CONFIG for a key librdkafka refuses
 * (message names the key), or OBX_ERR_KAFKA. Free with obx_producer_free(). */
struct obx_producer *obx_producer_new(const struct obx_config *cfg, obx_delivery_fn *on_delivery,
                                      void *ctx, struct obx_error *err);

/* Destroys the producer without waiting for outstanding messages (call obx_producer_flush first
 * for an orderly stop); NULL is a no-op. */
void obx_producer_free(struct obx_producer *p);

/* Enqueues a copy of ev tagged with tag. Returns 0, OBX_ERR_BUSY when the local queue is full
 * (serve delivery reports and retry: backpressure), or OBX_ERR_KAFKA (err says why; fatal set for
 * a librdkafka fatal error). */
int obx_producer_send(struct obx_producer *p, const struct obx_event *ev, uint64_t tag,
                      struct obx_error *err);

/* Serves delivery reports, waiting at most timeout_ms (0: do not wait). Returns the number of
 * events served. */
int obx_producer_poll(struct obx_producer *p, int timeout_ms);

/* Waits until every enqueued message is delivered or failed, at most timeout_ms; serves their
 * delivery reports. Returns 0, or OBX_ERR_KAFKA on timeout (err says how many remain). */
int obx_producer_flush(struct obx_producer *p, int timeout_ms, struct obx_error *err);

/* A file descriptor that becomes readable when delivery reports are waiting (for poll()); it is
 * drained by obx_producer_poll(). */
int obx_producer_fd(const struct obx_producer *p);

/* Messages enqueued and not yet reported. */
int obx_producer_in_flight(const struct obx_producer *p);

/* true (and err filled) once librdkafka raised a fatal error: the producer must be rebuilt. */
bool obx_producer_fatal(struct obx_producer *p, struct obx_error *err);

#endif
