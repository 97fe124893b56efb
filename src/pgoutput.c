/* pgoutput.c - placeholder until the module lands. */
#include "outboxd/pgoutput.h"
