/* mock_cluster.h - what the unit tests that produce to Kafka (test_producer, test_pipeline)
 * share: librdkafka's in-process mock cluster, owned by the test so it can take brokers down
 * and inject errors, a log callback that keeps librdkafka quiet, and a monotonic clock. */
#ifndef OUTBOXD_TESTS_MOCK_CLUSTER_H
#define OUTBOXD_TESTS_MOCK_CLUSTER_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

struct cluster {
    rd_kafka_t *rk; /* owns the mock cluster; never connects anywhere */
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
    int nbrokers; /* ids 1..nbrokers */
};

/* Starts a mock cluster of nbrokers brokers on loopback; fails the test if it cannot. */
void cluster_start(struct cluster *c, int nbrokers);
void cluster_stop(struct cluster *c);

/* Creates topic with partitions partitions, replicated on up to 3 brokers. */
void cluster_topic(struct cluster *c, const char *topic, int partitions);

/* A librdkafka log callback that drops everything (the tests provoke errors on purpose). */
void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t mono_ms(void);

#endif
