/* obxtest.h - everything an integration test needs: process helpers (obxtest_proc.h), the
 * throwaway PostgreSQL (obxtest_pg.h), the Kafka broker and consumer (obxtest_kafka.h), and
 * access to the environment meson sets for the integration suite. */
#ifndef OBXTEST_H
#define OBXTEST_H

#include "obxtest_proc.h"
#include "obxtest_pg.h"
#include "obxtest_kafka.h"

/* Value of environment variable name (OBX_PGTMP, OBX_KAFKA_BROKER, OBX_CONSUME, OBX_OUTBOXD,
 * OBX_SOURCE_ROOT, OBX_FIXTURES). Fails the running libcheck test if it is unset or empty.
 * The string belongs to the environment. */
const char *obxt_env(const char *name);

#endif
