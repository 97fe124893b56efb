/* outbox.c - placeholder until the module lands. */
#include "outboxd/outbox.h"
