/* repl.c - placeholder until the module lands. */
#include "outboxd/repl.h"
