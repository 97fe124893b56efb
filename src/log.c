/* log.c - placeholder until the module lands. */
#include "outboxd/log.h"
