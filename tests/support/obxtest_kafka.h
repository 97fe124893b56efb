/* obxtest_kafka.h - the Kafka side of integration tests: a kafka-broker child process (librdkafka
 * mock cluster on 127.0.0.1), an in-process consumer that reads every record back from the
 * beginning of every partition, and a small idempotent producer.
 *
 * Functions that cannot go on when something breaks (a broker that does not start, a consumer
 * that cannot be created, a failed delivery) fail the running libcheck test with a message that
 * says what broke; the others return a value for the test to assert on. */
#ifndef OBXTEST_KAFKA_H
#define OBXTEST_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- the broker ---------------------------------------------------------------------------- */

struct obxt_broker;

/* Starts $OBX_KAFKA_BROKER with nbrokers brokers (ids 1..nbrokers) and reads its bootstrap line.
 * Fails the test when it does not start. Stop it with obxt_broker_stop. */
struct obxt_broker *obxt_broker_start(int nbrokers);

/* Same, with extra kafka-broker arguments (NULL or a NULL-terminated list), e.g.
 * {"--topic", "orders:3", NULL} to create a topic with 3 partitions up front. */
struct obxt_broker *obxt_broker_start_args(int nbrokers, const char *const extra_args[]);

/* "127.0.0.1:port,..." for bootstrap.servers; lives as long as b. */
const char *obxt_broker_bootstrap(const struct obxt_broker *b);

/* Process id of the kafka-broker process. */
pid_t obxt_broker_pid(const struct obxt_broker *b);

/* Sends one control command (printf-style), e.g. "down all", "up 2", "rtt all 200",
 * "errors 5", "errors 3 REQUEST_TIMED_OUT", "topic orders 3". Returns 0 when the broker
 * answered "ok", -1 otherwise (the answer, or why there was none, goes to stderr). */
int obxt_broker_cmd(struct obxt_broker *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sends one command line and returns the whole answer line (malloc'd, caller frees), e.g.
 * "ok 1,2,3" for "brokers"; NULL when the broker did not answer within 10 s. */
char *obxt_broker_cmd_reply(struct obxt_broker *b, const char *line);

/* Closes the broker's stdin, waits for it to exit, and fails the test unless it exited with
 * status 0 and the process is gone. Frees b. NULL is a no-op. */
void obxt_broker_stop(struct obxt_broker *b);

/* ---- records read back --------------------------------------------------------------------- */

/* A record header. value is NULL for a null header value, else a NUL-terminated copy (the
 * bytes may contain NULs: value_len is authoritative). */
struct obxt_header {
    char *name;
    char *value;
    size_t value_len;
};

/* A record as a consumer saw it. key and value are NULL when null (value NULL: a tombstone),
 * else NUL-terminated copies of key_len / value_len bytes. timestamp is in ms since the epoch. */
struct obxt_record {
    char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp;
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    struct obxt_header *headers;
    size_t header_count;
};

/* Records sorted by topic, then partition, then offset (so per-partition order is array order). */
struct obxt_records {
    struct obxt_record *recs;
    size_t count;
};

/* Reads every record of topics (NULL-terminated; topics that do not exist yet are waited for)
 * from the beginning of every partition, with manually assigned partitions (no group, nothing
 * committed). Stops 500 ms after the last record once expect_count records were read (so extra
 * or duplicate records still show), or at timeout_ms. expect_count 0 reads until timeout_ms.
 * Never fails the test for a short count: check recs->count. Free with obxt_records_free. */
struct obxt_records *obxt_consume(const char *bootstrap, const char *const topics[],
                                  size_t expect_count, int timeout_ms);

/* Frees recs and everything in it. NULL is a no-op. */
void obxt_records_free(struct obxt_records *recs);

/* Value of the first header called name in rec, NULL when there is none (or it is null); *len
 * (if len is not NULL) gets its length. Points into rec. */
const char *obxt_records_header(const struct obxt_record *rec, const char *name, size_t *len);

/* First record (in the sorted order) whose key equals key (a C string), or NULL. */
const struct obxt_record *obxt_records_find_key(const struct obxt_records *recs, const char *key);

/* Number of records that carry header name with value value (a C string): 1 for an event id
 * that arrived exactly once. */
size_t obxt_records_count_header(const struct obxt_records *recs, const char *name,
                                 const char *value);

/* Prints recs one per line (topic/partition@offset key value headers) to out, for failure
 * messages. */
void obxt_records_print(const struct obxt_records *recs, FILE *out);

/* ---- producing ------------------------------------------------------------------------------ */

struct obxt_producer;

/* An idempotent producer (enable.idempotence=true, acks=all, murmur2_random partitioner, short
 * reconnect backoff) for bootstrap. Fails the test when it cannot be created. Free with
 * obxt_producer_free. */
struct obxt_producer *obxt_producer_new(const char *bootstrap);

/* Enqueues one record: partition -1 lets the partitioner choose; key/value NULL means null,
 * else a C string; headers is NULL or a NULL-terminated list of name, value, name, value...
 * Fails the test when librdkafka refuses it. */
void obxt_producer_send(struct obxt_producer *p, const char *topic, int32_t partition,
                        const char *key, const char *value, const char *const headers[]);

/* Serves delivery reports for up to timeout_ms (0: without waiting). Any failed delivery fails
 * the test. Returns the number of records still waiting for their delivery report. */
int obxt_producer_poll(struct obxt_producer *p, int timeout_ms);

/* Waits up to timeout_ms until every record is reported. Any failed delivery fails the test.
 * Returns the number still waiting (0: all delivered). */
int obxt_producer_flush(struct obxt_producer *p, int timeout_ms);

/* Records delivered successfully so far. */
size_t obxt_producer_delivered(const struct obxt_producer *p);

/* Destroys p without waiting (undelivered records are dropped). NULL is a no-op. */
void obxt_producer_free(struct obxt_producer *p);

/* Produces one record (partitioner-chosen partition, no headers) and waits up to 30 s for its
 * delivery; fails the test when it is not delivered. */
void obxt_produce(const char *bootstrap, const char *topic, const char *key, const char *value);

#endif
