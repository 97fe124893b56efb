/* main.c - placeholder until the pipeline lands. */
#include <stdio.h>

int
main(void)
{
    fprintf(stderr, "outboxd: not built yet\n");
    return 1;
}
