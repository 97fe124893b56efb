/* ackwin.c - placeholder until the module lands. */
#include "outboxd/ackwin.h"
