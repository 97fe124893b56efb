/* producer.c - the librdkafka producer: idempotent, acks=all, murmur2_random partitioning, a
 * bounded local queue that pushes back (OBX_ERR_BUSY) instead of dropping, and delivery reports
 * served from the caller's loop through a pipe that poll() can watch.
 *
 * Threads: librdkafka runs its own threads, but every callback that touches struct obx_producer
 * (delivery reports, errors) is served by rd_kafka_poll()/rd_kafka_flush() on the caller's
 * thread, so nothing here needs a lock. The log callback runs on librdkafka's threads and only
 * calls obx_log_rdkafka(). */
#include "outboxd/producer.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "outboxd/log.h"

/* The tag travels as the message's opaque pointer. */
_Static_assert(sizeof(void *) >= sizeof(uint64_t), "a uint64_t tag must fit in a pointer");

#define MOD "producer"
#define WARN_INTERVAL_MS 10000 /* at most one transient-error warning per code per interval */
#define FLUSH_SLICE_MS 100

/* Defaults applied before the user's kafka.* keys, which override them.
 *
 * - enable.idempotence=true, acks=all: no duplicates from internal retries, per-partition order
 *   kept across retries (max.in.flight capped at 5, retries=INT32_MAX by librdkafka).
 * - partitioner=murmur2_random: a key lands on the partition the Java client (and Debezium) picks;
 *   keyless records are spread randomly.
 * - linger.ms=5: small batches without noticeable latency.
 * - queue.buffering.max.kbytes=32768, queue.buffering.max.messages=50000: bound memory
 *   (librdkafka's defaults are 1 GiB and 100,000 messages); a full queue is backpressure
 *   (OBX_ERR_BUSY) and we stop reading WAL. The kbytes bound counts payloads only, not
 *   librdkafka's ~200 bytes per message, so for typical outbox events (a few hundred bytes) the
 *   message count binds first: with 100,000 a 1,000,000-row transaction took outboxd to
 *   62-66 MiB, with 50,000 about half that goes to the queue. 50,000 events are still a second
 *   of a drain at 50,000 events/s, far more than the acknowledgement round trip.
 * - message.timeout.ms=0: never expire a message. An undeliverable record is an error for the
 *   pipeline (it stops confirming and restarts from the slot), never a silent drop; while Kafka
 *   is down the queue simply fills and pushes back. A user who sets a timeout gets
 *   _MSG_TIMED_OUT delivery reports, reported as failures that are not permanent (Kafka was
 *   unreachable: a resend from the slot may succeed, the record is not to be dead-lettered).
 * - client.id=outboxd: recognisable in broker logs and quotas.
 * - socket.keepalive.enable=true: a sidecar keeps idle connections for hours; keepalive notices
 *   connections silently dropped by NAT or firewalls.
 * - enable.gapless.guarantee=true, only when outbox.invalid.behavior = fail (and idempotence is
 *   on and the user did not set it). When one batch fails permanently, librdkafka by default
 *   bumps the epoch and goes on producing the records queued after it (checked against the mock
 *   cluster: records 5-9 written after 0-4 failed). With `fail` the pipeline then replays the
 *   failed record from the slot, after its successors: per-aggregate order would break. The
 *   guarantee turns such a failure into the fatal _GAPLESS_GUARANTEE instead (nothing after it
 *   is written) and the pipeline restarts from the slot, as it does for `fail` anyway. With
 *   `dlq` or `skip` the failed record leaves the stream for good (dead-lettered or skipped), so
 *   its successors being written is the intended outcome, and the producer must stay usable to
 *   send the dead letter: the guarantee stays off. librdkafka marks the property experimental;
 *   it does not cover timeouts, one more reason for message.timeout.ms=0. */
static const struct {
    const char *key;
    const char *value;
} producer_defaults[] = {
    {"client.id", "outboxd"},
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"partitioner", "murmur2_random"},
    {"linger.ms", "5"},
    {"queue.buffering.max.kbytes", "32768"},
    {"queue.buffering.max.messages", "50000"},
    {"message.timeout.ms", "0"},
    {"socket.keepalive.enable", "true"},
};

/* kafka.* keys outboxd refuses: they would change the delivery contract. */
static const char *const refused_keys[] = {
    "transactional.id", /* the transactional API is not used; producev would fail */
};

struct obx_producer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int pipefd[2]; /* [0] watched by the caller, [1] written by librdkafka */
    obx_delivery_fn *on_delivery;
    void *ctx;
    int in_flight;   /* sent and not yet reported */
    int served;      /* delivery reports served, for obx_producer_poll's return value */
    bool closing;    /* set by obx_producer_free: reports are dropped from then on */
    int64_t warn_at; /* monotonic ms of the last transient-error warning */
    int warn_code;
    int suppressed;
    char fatal_reason[256];
    char reason[512]; /* obx_delivery.reason of a fatal report, valid during the callback */
};

/* Delivery outcome classes (see classify_error). */
enum dr_class {
    DR_OK,
    DR_TRANSIENT, /* librdkafka gave up, but a resend may succeed */
    DR_PERMANENT, /* the record itself cannot be delivered as it is */
    DR_FATAL,     /* the producer instance is unusable: rebuild it */
};

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How a delivery-report error code is reported (permanent / fatal flags of obx_delivery). With
 * message.timeout.ms=0 and retries=INT32_MAX librdkafka retries everything it considers
 * retriable, so an error in a report means librdkafka will not retry that record itself.
 *
 * | librdkafka error                                   | class     | why                      |
 * |----------------------------------------------------|-----------|--------------------------|
 * | NO_ERROR                                           | ok        |                          |
 * | _FATAL, _GAPLESS_GUARANTEE, _INCONSISTENT,         | fatal     | idempotence state lost:  |
 * | OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, |           | the instance must be     |
 * | INVALID_PRODUCER_EPOCH, PRODUCER_FENCED, _FENCED,  |           | rebuilt (also whenever   |
 * | INVALID_PRODUCER_ID_MAPPING,                       |           | rd_kafka_fatal_error()   |
 * | CLUSTER_AUTHORIZATION_FAILED (idempotent write)    |           | is set)                  |
 * | MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE,         | permanent | the record (or its topic)|
 * | INVALID_RECORD, CORRUPT_MESSAGE, INVALID_MSG_SIZE, |           | is refused as it is:     |
 * | _BAD_MSG, _INVALID_ARG, INVALID_TIMESTAMP,         |           | resending it fails again |
 * | TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PART, |           | until an operator acts   |
 * | _UNKNOWN_TOPIC, _UNKNOWN_PARTITION,                |           |                          |
 * | TOPIC_EXCEPTION (invalid topic), POLICY_VIOLATION, |           |                          |
 * | INVALID_REQUIRED_ACKS, UNSUPPORTED_FOR_MESSAGE_... |           |                          |
 * | _MSG_TIMED_OUT (only with a user-set timeout),     | transient | only when the user set a |
 * | _PURGE_QUEUE, _PURGE_INFLIGHT, retriable broker    |           | timeout or lowered       |
 * | errors (NOT_ENOUGH_REPLICAS*, NOT_LEADER_*,        |           | `retries`, or on purge:  |
 * | LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT,           |           | a resend from the slot   |
 * | NETWORK_EXCEPTION, KAFKA_STORAGE_ERROR,            |           | may succeed              |
 * | _TRANSPORT, _TIMED_OUT, _ALL_BROKERS_DOWN)         |           |                          |
 * | anything else                                      | permanent | librdkafka does not      |
 * |                                                    |           | retry it                 |
 *
 * Whatever the class, the pipeline must not confirm past a failed record. */
static enum dr_class
classify_error(rd_kafka_resp_err_t code)
{
    switch (code) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return DR_OK;
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__GAPLESS_GUARANTEE:
    case RD_KAFKA_RESP_ERR__INCONSISTENT:
    case RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER:
    case RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
    case RD_KAFKA_RESP_ERR__FENCED:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_ID_MAPPING:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        return DR_FATAL;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
        return DR_TRANSIENT;
    default:
        /* MSG_SIZE_TOO_LARGE, TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PART, ... */
        return DR_PERMANENT;
    }
}

/* Reads the pipe until it is empty; librdkafka writes one byte per wake-up. */
static void
drain_pipe(struct obx_producer *p)
{
    char buf[256];

    while (read(p->pipefd[0], buf, sizeof(buf)) > 0)
        ;
}

/* Fills ev with a view of the delivered message; every pointer borrows from m. */
static void
message_view(const rd_kafka_message_t *m, struct obx_event *ev)
{
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_timestamp_type_t tstype;
    const void *value;
    size_t size;

    memset(ev, 0, offsetof(struct obx_event, headers));
    ev->topic = rd_kafka_topic_name(m->rkt);
    ev->key = m->key;
    ev->key_len = m->key_len;
    ev->value = m->payload;
    ev->value_len = m->len;
    ev->partition = m->partition;
    ev->timestamp_ms = rd_kafka_message_timestamp(m, &tstype);
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    while (ev->nheaders < OBX_EVENT_MAX_HEADERS &&
           rd_kafka_header_get_all(hdrs, ev->nheaders, &ev->headers[ev->nheaders].name, &value,
                                   &size) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ev->headers[ev->nheaders].value = value;
        ev->headers[ev->nheaders].value_len = size;
        ev->nheaders++;
    }
}

/* dr_msg_cb: served by rd_kafka_poll()/rd_kafka_flush() on the caller's thread. */
static void
on_dr_msg(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct obx_producer *p = opaque;
    struct obx_delivery dr;
    struct obx_event ev;
    enum dr_class cls = classify_error(m->err);

    assert(p->in_flight > 0);
    p->in_flight--;
    p->served++;
    if (p->closing || p->on_delivery == NULL)
        return;
    memset(&dr, 0, sizeof(dr));
    dr.reason = rd_kafka_err2str(m->err);
    dr.fatal = cls == DR_FATAL;
    if (cls != DR_OK) {
        /* A record failure may come with (or cause, under the gap-less guarantee) a fatal
         * producer state: report both what happened to the record and the producer. */
        char fatal_reason[256];
        rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk, fatal_reason, sizeof(fatal_reason));

        if (fatal != RD_KAFKA_RESP_ERR_NO_ERROR) {
            dr.fatal = true;
            snprintf(p->reason, sizeof(p->reason), "%s (producer fatal error %s: %s)", dr.reason,
                     rd_kafka_err2name(fatal), fatal_reason);
            dr.reason = p->reason;
        }
    }
    message_view(m, &ev);
    dr.tag = (uint64_t)(uintptr_t)m->_private;
    dr.error = cls == DR_OK ? 0 : OBX_ERR_KAFKA;
    dr.permanent = cls == DR_PERMANENT;
    dr.kafka_code = (int)m->err;
    dr.ev = &ev;
    dr.offset = cls == DR_OK ? m->offset : -1;
    p->on_delivery(p->ctx, &dr);
}

/* Logs a transient error at warn, at most once per code per WARN_INTERVAL_MS. */
static void
warn_transient(struct obx_producer *p, int code, const char *reason)
{
    int64_t now = now_ms();

    if (code == p->warn_code && now - p->warn_at < WARN_INTERVAL_MS) {
        p->suppressed++;
        return;
    }
    if (p->suppressed > 0)
        obx_log_warn(MOD, "kafka: %s: %s (%d similar warnings suppressed)", rd_kafka_err2name(code),
                     reason, p->suppressed);
    else
        obx_log_warn(MOD, "kafka: %s: %s", rd_kafka_err2name(code), reason);
    p->warn_code = code;
    p->warn_at = now;
    p->suppressed = 0;
}

/* error_cb: served by rd_kafka_poll() on the caller's thread. */
static void
on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    struct obx_producer *p = opaque;
    rd_kafka_resp_err_t fatal;

    if (code != RD_KAFKA_RESP_ERR__FATAL) {
        warn_transient(p, code, reason);
        return;
    }
    fatal = rd_kafka_fatal_error(rk, p->fatal_reason, sizeof(p->fatal_reason));
    obx_log_error(MOD, "kafka fatal error %s: %s", rd_kafka_err2name(fatal), p->fatal_reason);
}

/* log_cb: forwards to obx_log_rdkafka, minus the CONFWARN librdkafka prints at every start
 * because we set the experimental enable.gapless.guarantee on purpose (see the defaults). */
static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "enable.gapless.guarantee") != NULL)
        return;
    obx_log_rdkafka(rk, level, fac, buf);
}

/* obx_config_foreach_kafka callback: applies one user kafka.* key. */
struct apply_ctx {
    rd_kafka_conf_t *conf;
    struct obx_error *err;
};

static int
apply_user_key(void *vctx, const char *key, const char *value)
{
    struct apply_ctx *actx = vctx;
    char errstr[512];

    for (size_t i = 0; i < sizeof(refused_keys) / sizeof(refused_keys[0]); i++) {
        if (strcmp(key, refused_keys[i]) == 0)
            return obx_error_set(actx->err, OBX_ERR_CONFIG, true,
                                 "kafka.%s: not supported by outboxd (it uses the idempotent, "
                                 "non-transactional producer)",
                                 key);
    }
    if (rd_kafka_conf_set(actx->conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return obx_error_set(actx->err, OBX_ERR_CONFIG, true, "kafka.%s: %s", key, errstr);
    return 0;
}

/* Sets enable.gapless.guarantee=true when outbox.invalid.behavior is fail, unless the user set
 * it or turned idempotence off (see the defaults above). */
static int
apply_gapless_default(const struct obx_config *cfg, rd_kafka_conf_t *conf, struct obx_error *err)
{
    char val[16], errstr[512];
    size_t len = sizeof(val);

    if (obx_config_kafka(cfg, "enable.gapless.guarantee") != NULL ||
        strcmp(obx_config_str(cfg, "outbox.invalid.behavior"), "fail") != 0)
        return 0;
    if (rd_kafka_conf_get(conf, "enable.idempotence", val, &len) != RD_KAFKA_CONF_OK ||
        strcmp(val, "true") != 0)
        return 0;
    if (rd_kafka_conf_set(conf, "enable.gapless.guarantee", "true", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK)
        return obx_error_set(err, OBX_ERR_KAFKA, true, "enable.gapless.guarantee: %s", errstr);
    return 0;
}

/* Builds the librdkafka configuration: defaults, then the user's keys, then our callbacks.
 * Returns NULL with err set on failure. */
static rd_kafka_conf_t *
build_conf(struct obx_producer *p, const struct obx_config *cfg, struct obx_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    struct apply_ctx actx = {conf, err};
    char errstr[512];

    if (conf == NULL) {
        obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(producer_defaults) / sizeof(producer_defaults[0]); i++) {
        if (rd_kafka_conf_set(conf, producer_defaults[i].key, producer_defaults[i].value, errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            obx_error_set(err, OBX_ERR_KAFKA, true, "default %s: %s", producer_defaults[i].key,
                          errstr);
            goto fail;
        }
    }
    if (obx_config_foreach_kafka(cfg, apply_user_key, &actx) != 0)
        goto fail;
    if (apply_gapless_default(cfg, conf, err) != 0)
        goto fail;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr_msg);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    return conf;

fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

struct obx_producer *
obx_producer_new(const struct obx_config *cfg, obx_delivery_fn *on_delivery, void *ctx,
                 struct obx_error *err)
{
    struct obx_producer *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = NULL;
    char errstr[512];

    if (p == NULL) {
        obx_error_set(err, OBX_ERR_NOMEM, true, "out of memory");
        return NULL;
    }
    p->pipefd[0] = p->pipefd[1] = -1;
    p->on_delivery = on_delivery;
    p->ctx = ctx;
    p->warn_code = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (pipe2(p->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
        obx_error_set(err, OBX_ERR_IO, true, "pipe: %s", strerror(errno));
        goto fail;
    }
    conf = build_conf(p, cfg, err);
    if (conf == NULL)
        goto fail;
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        /* rd_kafka_new only fails on cross-property conflicts (acks=1 with idempotence, ...) or
         * resource exhaustion; its message names the properties. */
        rd_kafka_conf_destroy(conf);
        obx_error_set(err, OBX_ERR_CONFIG, true, "kafka settings: %s", errstr);
        goto fail;
    }
    p->mainq = rd_kafka_queue_get_main(p->rk);
    rd_kafka_queue_io_event_enable(p->mainq, p->pipefd[1], "1", 1);
    return p;

fail:
    obx_producer_free(p);
    return NULL;
}

void
obx_producer_free(struct obx_producer *p)
{
    if (p == NULL)
        return;
    p->closing = true;
    if (p->mainq != NULL) {
        rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(p->mainq);
    }
    if (p->rk != NULL)
        rd_kafka_destroy(p->rk);
    if (p->pipefd[0] >= 0)
        close(p->pipefd[0]);
    if (p->pipefd[1] >= 0)
        close(p->pipefd[1]);
    free(p);
}

/* Copies ev's headers into a new librdkafka header list (NULL when there are none). */
static int
build_headers(const struct obx_event *ev, rd_kafka_headers_t **out, struct obx_error *err)
{
    rd_kafka_headers_t *hdrs;

    *out = NULL;
    if (ev->nheaders == 0)
        return 0;
    if (ev->nheaders > OBX_EVENT_MAX_HEADERS)
        return obx_error_set(err, OBX_ERR_INVALID, false, "%zu headers (at most %d)", ev->nheaders,
                             OBX_EVENT_MAX_HEADERS);
    hdrs = rd_kafka_headers_new(ev->nheaders);
    for (size_t i = 0; i < ev->nheaders; i++) {
        const struct obx_header *h = &ev->headers[i];

        /* a NULL value is a null header value (size ignored) */
        rd_kafka_header_add(hdrs, h->name, -1, h->value, h->value == NULL ? 0 : h->value_len);
    }
    *out = hdrs;
    return 0;
}

/* Turns a refused rd_kafka_producev() into OBX_ERR_BUSY or OBX_ERR_KAFKA. */
static int
send_error(struct obx_producer *p, const struct obx_event *ev, rd_kafka_resp_err_t code,
           struct obx_error *err)
{
    char reason[256];
    rd_kafka_resp_err_t fatal;

    if (code == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return obx_error_set(err, OBX_ERR_BUSY, false, "producer queue full (%d in flight)",
                             p->in_flight);
    fatal = rd_kafka_fatal_error(p->rk, reason, sizeof(reason));
    if (fatal != RD_KAFKA_RESP_ERR_NO_ERROR)
        return obx_error_set(err, OBX_ERR_KAFKA, true, "kafka fatal error %s: %s",
                             rd_kafka_err2name(fatal), reason);
    /* _MSG_SIZE_TOO_LARGE, _UNKNOWN_TOPIC (the cluster says it does not exist),
     * _UNKNOWN_PARTITION (explicit partition out of range), _INVALID_ARG: permanent for this
     * record; the pipeline treats it like a permanent delivery failure. */
    return obx_error_set(err, OBX_ERR_KAFKA, false, "cannot enqueue record for topic \"%s\": %s",
                         ev->topic, rd_kafka_err2str(code));
}

int
obx_producer_send(struct obx_producer *p, const struct obx_event *ev, uint64_t tag,
                  struct obx_error *err)
{
    rd_kafka_headers_t *hdrs;
    rd_kafka_resp_err_t code;
    int32_t partition = ev->partition == OBX_PARTITION_ANY ? RD_KAFKA_PARTITION_UA : ev->partition;
    int rc;

    assert(ev->topic != NULL);
    assert(ev->key != NULL || ev->key_len == 0);
    assert(ev->value != NULL || ev->value_len == 0);
    rc = build_headers(ev, &hdrs, err);
    if (rc != 0)
        return rc;
    /* A timestamp of 0 lets librdkafka stamp the record with the current time. On success
     * librdkafka owns hdrs; on failure we still do. */
    code = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(ev->topic), RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_KEY(ev->key, ev->key_len),
                             RD_KAFKA_V_VALUE((void *)ev->value, ev->value_len),
                             RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_TIMESTAMP(ev->timestamp_ms),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_OPAQUE((void *)(uintptr_t)tag), RD_KAFKA_V_END);
    if (code != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (hdrs != NULL)
            rd_kafka_headers_destroy(hdrs);
        return send_error(p, ev, code, err);
    }
    p->in_flight++;
    return 0;
}

int
obx_producer_poll(struct obx_producer *p, int timeout_ms)
{
    int before = p->served;

    /* Drain first: a wake-up written after this point stays in the pipe for the next poll(). */
    drain_pipe(p);
    rd_kafka_poll(p->rk, timeout_ms);
    return p->served - before;
}

int
obx_producer_flush(struct obx_producer *p, int timeout_ms, struct obx_error *err)
{
    int64_t deadline = now_ms() + timeout_ms;

    for (;;) {
        int64_t left;

        drain_pipe(p);
        rd_kafka_poll(p->rk, 0);
        if (p->in_flight == 0)
            return 0;
        left = deadline - now_ms();
        if (timeout_ms >= 0 && left <= 0)
            break;
        /* rd_kafka_flush ignores linger.ms and serves delivery reports as they arrive */
        rd_kafka_flush(p->rk, timeout_ms < 0 || left > FLUSH_SLICE_MS ? FLUSH_SLICE_MS : (int)left);
    }
    return obx_error_set(err, OBX_ERR_KAFKA, obx_producer_fatal(p, NULL),
                         "flush timed out after %d ms: %d messages not yet delivered", timeout_ms,
                         p->in_flight);
}

int
obx_producer_fd(const struct obx_producer *p)
{
    return p->pipefd[0];
}

int
obx_producer_in_flight(const struct obx_producer *p)
{
    return p->in_flight;
}

bool
obx_producer_fatal(struct obx_producer *p, struct obx_error *err)
{
    char reason[256];
    rd_kafka_resp_err_t code = rd_kafka_fatal_error(p->rk, reason, sizeof(reason));

    if (code == RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    obx_error_set(err, OBX_ERR_KAFKA, true, "kafka fatal error %s: %s", rd_kafka_err2name(code),
                  reason);
    return true;
}
