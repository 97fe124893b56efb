/* pipeline.h - the relay between repl and Kafka: implements the repl callback table with the
 * outbox router, the producer and the ack window (DESIGN.md data flow).
 *
 * Insert -> route -> produce (tagged with its transaction) -> delivery report -> ack window ->
 * confirmable LSN. Backpressure when the producer queue is full; rule 6 on permanent errors. */
#ifndef OUTBOXD_PIPELINE_H
#define OUTBOXD_PIPELINE_H

#include <stdint.h>

#include "outboxd/config.h"
#include "outboxd/error.h"
#include "outboxd/repl.h"

struct obx_pipeline_stats {
    uint64_t events_sent;
    uint64_t events_acked;
    uint64_t events_dlq;
    uint64_t events_skipped;
    uint64_t changes_ignored; /* updates, deletes, truncates of outbox tables */
    uint64_t transactions;
    uint64_t confirmable_lsn;
};

struct obx_pipeline;

/* Builds router, producer and ack window from cfg. Returns NULL with err set (OBX_ERR_CONFIG for
 * a bad setting). Free with obx_pipeline_free(). */
struct obx_pipeline *obx_pipeline_new(const struct obx_config *cfg, struct obx_error *err);

/* Frees p (without flushing); NULL is a no-op. */
void obx_pipeline_free(struct obx_pipeline *p);

/* Fills h with the callbacks (ctx = p). h lives as long as the caller keeps it. */
void obx_pipeline_handler(struct obx_pipeline *p, struct obx_repl_handler *h);

void obx_pipeline_get_stats(const struct obx_pipeline *p, struct obx_pipeline_stats *out);

#endif
