/* relcache.c - placeholder until the module lands. */
#include "outboxd/relcache.h"
