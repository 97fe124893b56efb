/* obxtest.h - placeholder */
#ifndef OBXTEST_H
#define OBXTEST_H
#endif
