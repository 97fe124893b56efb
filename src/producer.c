/* producer.c - placeholder until the module lands. */
#include "outboxd/producer.h"
