/* reader.c - placeholder until the module lands. */
#include "outboxd/reader.h"
