/* pipeline.c - placeholder until the module lands. */
#include "outboxd/pipeline.h"
