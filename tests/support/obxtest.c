/* obxtest.c - environment access for integration tests (see obxtest.h). */
#include "obxtest.h"

#include <check.h>
#include <stdlib.h>

const char *
obxt_env(const char *name)
{
    const char *value = getenv(name);

    ck_assert_msg(value && *value, "%s is not set: run the integration tests through meson test",
                  name);
    return value;
}
