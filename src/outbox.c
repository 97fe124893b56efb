/* outbox.c - placeholder until the module lands. */
#include "outboxd/outbox.h"

void
obx_outbox_free(struct obx_outbox *ob)
{
    (void)ob;
}
