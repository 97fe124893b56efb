/* placeholder until the support program lands. */
#include <stdio.h>

int
main(void)
{
    fprintf(stderr, "not built yet\n");
    return 1;
}
