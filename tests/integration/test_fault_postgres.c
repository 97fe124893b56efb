/* test_fault_postgres.c - placeholder, being written by the faults helper. */
#include <stdlib.h>

int
main(void)
{
    return EXIT_SUCCESS;
}
