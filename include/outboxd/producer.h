/* producer.h - the librdkafka producer: idempotent, acks=all, murmur2_random, bounded queue, no
 * silent drops. Delivery reports are served from the caller's loop (obx_producer_poll), so the
 * ack window needs no lock.
 *
 * Defaults set here (each overridable by a kafka.* key): enable.idempotence=true, acks=all,
 * partitioner=murmur2_random, linger.ms=5, queue.buffering.max.kbytes=32768,
 * queue.buffering.max.messages=50000, message.timeout.ms=0 (infinite: a message is never expired
 * while the broker is down), client.id=outboxd, socket.keepalive.enable=true, and
 * enable.gapless.guarantee=true when outbox.invalid.behavior = fail (reasons in producer.c).
 * kafka.transactional.id is refused. */
#ifndef OUTBOXD_PRODUCER_H
#define OUTBOXD_PRODUCER_H

#include <stdbool.h>
#include <stdint.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/event.h"

/* One delivery report. ev is rebuilt from the delivered message (topic, key, value, headers,
 * partition, timestamp: the broker's LogAppendTime when it returns one) and lives only for the
 * duration of the callback, as does reason.
 *
 * error is 0 on success, else OBX_ERR_KAFKA with reason set (never NULL). permanent = true when
 * resending the same record cannot succeed as it is (record too large, topic authorization,
 * unknown topic). fatal = true when the producer itself is unusable (librdkafka fatal error,
 * idempotence state lost): rebuild it. Under the gap-less guarantee (on when
 * outbox.invalid.behavior = fail) a permanent failure also makes the producer fatal, so both may
 * be set. Both false on a failure: librdkafka gave up (a user-set message.timeout.ms expired, a
 * lowered `retries` ran out), but a resend from the slot may succeed. The full table is above
 * classify_error() in producer.c. offset is valid on success (-1 otherwise). */
struct obx_delivery {
    uint64_t tag; /* what obx_producer_send was given */
    int error;
    bool permanent;
    const char *reason;
    const struct obx_event *ev;
    int64_t offset;
    bool fatal;
    int kafka_code; /* librdkafka's rd_kafka_resp_err_t, 0 on success (for logs and metrics) */
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

/* Enqueues a copy of ev tagged with tag (the caller keeps ev). Returns 0, OBX_ERR_BUSY when the
 * local queue is full (serve delivery reports and retry: backpressure; nothing was enqueued), or
 * OBX_ERR_KAFKA (err says why; fatal set for a librdkafka fatal error). OBX_ERR_KAFKA without
 * fatal means this record was refused at enqueue time (too large for message.max.bytes, topic
 * known not to exist, explicit partition out of range): treat it like a permanent delivery
 * failure. OBX_ERR_INVALID when ev has more than OBX_EVENT_MAX_HEADERS headers. */
int obx_producer_send(struct obx_producer *p, const struct obx_event *ev, uint64_t tag,
                      struct obx_error *err);

/* Drains obx_producer_fd() and serves delivery reports (and librdkafka's error events), waiting
 * at most timeout_ms (0: do not wait). Returns the number of delivery reports served. */
int obx_producer_poll(struct obx_producer *p, int timeout_ms);

/* Waits until every enqueued message is delivered or failed, at most timeout_ms (negative: no
 * limit), ignoring linger.ms; serves their delivery reports. Returns 0, or OBX_ERR_KAFKA on
 * timeout (err says how many remain; fatal set when librdkafka is in a fatal state). */
int obx_producer_flush(struct obx_producer *p, int timeout_ms, struct obx_error *err);

/* A file descriptor that becomes readable when delivery reports are waiting (for poll()); it is
 * drained by obx_producer_poll(). */
int obx_producer_fd(const struct obx_producer *p);

/* Messages enqueued and not yet reported. */
int obx_producer_in_flight(const struct obx_producer *p);

/* true (and err filled) once librdkafka raised a fatal error: the producer must be rebuilt. */
bool obx_producer_fatal(struct obx_producer *p, struct obx_error *err);

#endif
