/* mock_cluster.c - see mock_cluster.h. */
#include "mock_cluster.h"

#include <check.h>
#include <time.h>

void
quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk, (void)level, (void)fac, (void)buf;
}

void
cluster_start(struct cluster *c, int nbrokers)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];

    rd_kafka_conf_set_log_cb(conf, quiet_log);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(c->rk != NULL, "%s", errstr);
    c->mc = rd_kafka_mock_cluster_new(c->rk, nbrokers);
    ck_assert_ptr_nonnull(c->mc);
    c->bootstraps = rd_kafka_mock_cluster_bootstraps(c->mc);
    c->nbrokers = nbrokers;
}

void
cluster_stop(struct cluster *c)
{
    rd_kafka_mock_cluster_destroy(c->mc);
    rd_kafka_destroy(c->rk);
}

void
cluster_topic(struct cluster *c, const char *topic, int partitions)
{
    int rf = c->nbrokers < 3 ? c->nbrokers : 3;

    ck_assert_int_eq(rd_kafka_mock_topic_create(c->mc, topic, partitions, rf), 0);
}

int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
