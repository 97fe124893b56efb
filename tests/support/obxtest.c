/* obxtest.c - placeholder */
#include "obxtest.h"
int obxtest_placeholder;
int obxtest_placeholder = 0;
