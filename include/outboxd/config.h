/* config.h - outboxd's settings: one table of keys (name, type, default, description) from which
 * validation, --help and the redacted dump are derived.
 *
 * Layers, in increasing precedence: built-in defaults < file (-c FILE: `key = value` lines, `#`
 * comments) < environment (OUTBOXD_ + key upper-cased, '.' -> '_') < -X key=value. Every
 * `kafka.*` key is kept verbatim (without the prefix) for librdkafka. A value `@/path` reads the
 * value from that file (secrets stay out of argv and ps). */
#ifndef OUTBOXD_CONFIG_H
#define OUTBOXD_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "outboxd/error.h"

struct obx_config;

/* Returns a config holding every built-in default, or NULL when out of memory.
 * Free with obx_config_free(). */
struct obx_config *obx_config_new(void);

/* Frees cfg; NULL is a no-op. */
void obx_config_free(struct obx_config *cfg);

/* Sets key to value (a copy is kept). origin says where the setting came from ("-X",
 * "file.conf:12", "environment OUTBOXD_X") and is quoted in error messages. Returns 0, or
 * OBX_ERR_CONFIG (fatal) for an unknown key, a bad value or an @file that cannot be read (err's
 * message names the key and what is expected, or the path), or OBX_ERR_NOMEM. */
int obx_config_set(struct obx_config *cfg, const char *key, const char *value, const char *origin,
                   struct obx_error *err);

/* Parses "key=value" (as given to -X) and sets it. */
int obx_config_set_pair(struct obx_config *cfg, const char *pair, const char *origin,
                        struct obx_error *err);

/* Applies every `key = value` line of the file at path. */
int obx_config_load_file(struct obx_config *cfg, const char *path, struct obx_error *err);

/* Applies every OUTBOXD_* variable of envp (a NULL-terminated environ-style array). */
int obx_config_load_env(struct obx_config *cfg, char *const *envp, struct obx_error *err);

/* Cross-key validation once every layer is applied (impossible combinations).
 * Returns 0 or OBX_ERR_CONFIG. */
int obx_config_validate(const struct obx_config *cfg, struct obx_error *err);

/* Typed getters for table keys. The key must exist in the table with that type: anything else is
 * a programming error and aborts. Strings live as long as cfg (until the key is set again). */
const char *obx_config_str(const struct obx_config *cfg, const char *key);
long long obx_config_int(const struct obx_config *cfg, const char *key);
bool obx_config_bool(const struct obx_config *cfg, const char *key);

/* Calls fn for every kafka.* setting, with the prefix stripped, in the order they were set.
 * Stops and returns fn's value when fn returns non-zero; returns 0 otherwise. */
int obx_config_foreach_kafka(const struct obx_config *cfg,
                             int (*fn)(void *ctx, const char *key, const char *value), void *ctx);

/* The kafka.* value for key (prefix stripped), or NULL when not set. */
const char *obx_config_kafka(const struct obx_config *cfg, const char *key);

/* One entry of postgres.tables: lower-case unquoted identifiers of at most 63 bytes. */
#define OBX_NAME_MAX 64
struct obx_table_name {
    char nspname[OBX_NAME_MAX];
    char relname[OBX_NAME_MAX];
};

/* Parses postgres.tables (comma-separated schema.table) into a malloc'd array stored in *out
 * (caller frees it with free()) and its length in *n. The one parser of that list: repl and the
 * router both use it. Returns 0, OBX_ERR_CONFIG naming the bad entry, or OBX_ERR_NOMEM. */
int obx_config_tables(const struct obx_config *cfg, struct obx_table_name **out, size_t *n,
                      struct obx_error *err);

/* Writes the table of keys (name, type, default, description) for --help. */
void obx_config_print_help(FILE *out);

/* Writes the same table as Markdown (docs/configuration.md). */
void obx_config_print_markdown(FILE *out);

/* true if the librdkafka property key (with or without the "kafka." prefix) holds a secret
 * (any name with "password" or "secret", sasl.oauthbearer.config, ssl.key.pem, ...): never
 * log its value. */
bool obx_config_kafka_is_secret(const char *key);

/* Writes every effective setting as `key = value`, secrets redacted (passwords in conninfo,
 * librdkafka's sensitive keys). */
void obx_config_dump(const struct obx_config *cfg, FILE *out);

/* Copies conninfo into out (capacity cap, always NUL-terminated) with any password replaced by
 * "********", for logging. Handles key=value strings and postgres:// URIs. */
void obx_config_redact_conninfo(const char *conninfo, char *out, size_t cap);

#endif
