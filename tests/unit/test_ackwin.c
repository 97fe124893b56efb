/* test_ackwin.c - unit tests of the ack window (DESIGN.md, the LSN rule). */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "outboxd/ackwin.h"

/* A transaction of n events committed at end_lsn; the tags go to seqs (n entries). */
static void
txn(struct obx_ackwin *aw, unsigned n, uint64_t end_lsn, uint64_t *seqs)
{
    struct obx_error err;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(obx_ackwin_add(aw, &seqs[i], &err), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, end_lsn, &err), 0);
}

static void
ack(struct obx_ackwin *aw, uint64_t seq)
{
    struct obx_error err;

    ck_assert_int_eq(obx_ackwin_ack(aw, seq, &err), 0);
}

/* --- obx_ackwin_new / obx_ackwin_free ----------------------------------------------------- */

START_TEST(new__starts_at_start_lsn)
{
    struct obx_ackwin *aw = obx_ackwin_new(0x1234);

    ck_assert_ptr_nonnull(aw);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0x1234);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    ck_assert(!obx_ackwin_in_txn(aw));
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(free__null_is_noop)
{
    obx_ackwin_free(NULL);
}
END_TEST

/* --- obx_ackwin_begin ----------------------------------------------------------------------- */

START_TEST(begin__twice_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert(obx_ackwin_in_txn(aw));
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), OBX_ERR_PROTOCOL);
    ck_assert_int_eq(err.code, OBX_ERR_PROTOCOL);
    ck_assert_ptr_nonnull(strstr(err.msg, "begin while transaction"));
    ck_assert(obx_ackwin_in_txn(aw));
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(begin__null_err_allowed)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);

    ck_assert_int_eq(obx_ackwin_begin(aw, NULL), 0);
    ck_assert_int_eq(obx_ackwin_begin(aw, NULL), OBX_ERR_PROTOCOL);
    obx_ackwin_free(aw);
}
END_TEST

/* --- obx_ackwin_add ------------------------------------------------------------------------- */

START_TEST(add__outside_transaction_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t seq = 77;

    ck_assert_int_eq(obx_ackwin_add(aw, &seq, &err), OBX_ERR_PROTOCOL);
    ck_assert_ptr_nonnull(strstr(err.msg, "outside a transaction"));
    ck_assert_uint_eq(seq, 77);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(add__same_tag_within_transaction_new_tag_next)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[3], b[1];

    txn(aw, 3, 100, a);
    txn(aw, 1, 200, b);
    ck_assert_uint_ne(a[0], 0);
    ck_assert_uint_eq(a[0], a[1]);
    ck_assert_uint_eq(a[1], a[2]);
    ck_assert_uint_ne(a[0], b[0]);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 4);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 2);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(add__million_events_in_one_transaction)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t seq = 0, s;
    const unsigned n = 1000000;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    for (unsigned i = 0; i < n; i++) {
        if (obx_ackwin_add(aw, &s, &err) != 0 || (seq != 0 && s != seq))
            ck_abort_msg("add %u failed or changed tag", i);
        seq = s;
    }
    ck_assert_int_eq(obx_ackwin_commit(aw, 0x9000, &err), 0);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), n);
    for (unsigned i = 0; i < n - 1; i++)
        if (obx_ackwin_ack(aw, seq, &err) != 0)
            ck_abort_msg("ack %u: %s", i, err.msg);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 1);
    ack(aw, seq);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0x9000);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    ck_assert_int_eq(obx_ackwin_ack(aw, seq, &err), OBX_ERR_PROTOCOL);
    obx_ackwin_free(aw);
}
END_TEST

/* --- obx_ackwin_commit ---------------------------------------------------------------------- */

START_TEST(commit__without_begin_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;

    ck_assert_int_eq(obx_ackwin_commit(aw, 100, &err), OBX_ERR_PROTOCOL);
    ck_assert_ptr_nonnull(strstr(err.msg, "commit without begin"));
    ck_assert_ptr_nonnull(strstr(err.msg, "0/64"));
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(commit__end_lsn_backwards_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t s[1];

    txn(aw, 1, 0x200000000ULL, s);
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, 0x100, &err), OBX_ERR_PROTOCOL);
    ck_assert_ptr_nonnull(strstr(err.msg, "goes backwards"));
    ck_assert_ptr_nonnull(strstr(err.msg, "2/0"));
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(commit__below_start_lsn_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0x500);
    struct obx_error err;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, 0x400, &err), OBX_ERR_PROTOCOL);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(commit__empty_transaction_not_queued)
{
    struct obx_ackwin *aw = obx_ackwin_new(10);
    uint64_t none[1];

    txn(aw, 0, 100, none);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    ck_assert(!obx_ackwin_in_txn(aw));
    /* it and every older transaction have nothing outstanding: confirmable at once */
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(commit__empty_transaction_waits_for_older)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[2], none[1], c[1];

    txn(aw, 2, 100, a);
    txn(aw, 0, 200, none);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1);
    txn(aw, 1, 300, c);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 2);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, a[1]);
    /* 100 and the empty transaction behind it, not 300 */
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 200);
    ack(aw, c[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 300);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(commit__acked_before_commit_completes_at_commit)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t s1, s2;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s1, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s2, &err), 0);
    ack(aw, s1);
    ack(aw, s2);
    /* outstanding is 0 but the transaction is open: not confirmable */
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 0);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    obx_ackwin_keepalive(aw, 50);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, 100, &err), 0);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(commit__acked_before_commit_behind_pending)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1], s;

    txn(aw, 1, 100, a);
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s, &err), 0);
    ack(aw, s);
    ck_assert_int_eq(obx_ackwin_commit(aw, 200, &err), 0);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 200);
    obx_ackwin_free(aw);
}
END_TEST

/* --- obx_ackwin_single ---------------------------------------------------------------------- */

START_TEST(single__confirmable_once_acked)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t seq;

    ck_assert_int_eq(obx_ackwin_single(aw, 0x300, &seq, &err), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 1);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, seq);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0x300);
    ck_assert_int_eq(obx_ackwin_ack(aw, seq, &err), OBX_ERR_PROTOCOL);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(single__ordered_with_transactions)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1], m, b[1];

    txn(aw, 1, 100, a);
    ck_assert_int_eq(obx_ackwin_single(aw, 150, &m, &err), 0);
    txn(aw, 1, 200, b);
    ck_assert_uint_ne(m, a[0]);
    ck_assert_uint_ne(m, b[0]);
    ack(aw, m);
    ack(aw, b[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 200);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(single__inside_transaction_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t seq;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_single(aw, 10, &seq, &err), OBX_ERR_PROTOCOL);
    ck_assert_ptr_nonnull(strstr(err.msg, "inside a transaction"));
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(single__backwards_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1], seq;

    txn(aw, 1, 100, a);
    ck_assert_int_eq(obx_ackwin_single(aw, 99, &seq, &err), OBX_ERR_PROTOCOL);
    ck_assert_ptr_nonnull(strstr(err.msg, "goes backwards"));
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1);
    obx_ackwin_free(aw);
}
END_TEST

/* --- obx_ackwin_ack ------------------------------------------------------------------------- */

START_TEST(ack__out_of_order_across_transactions)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[2], b[2], c[1];

    txn(aw, 2, 100, a);
    txn(aw, 2, 200, b);
    txn(aw, 1, 300, c);
    ack(aw, c[0]);
    ack(aw, b[1]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, b[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 3);
    ack(aw, a[1]);
    /* all three complete now: jumps to the newest */
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 300);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 0);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(ack__stops_at_oldest_incomplete)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[1], b[1], c[1];

    txn(aw, 1, 100, a);
    txn(aw, 1, 200, b);
    txn(aw, 1, 300, c);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ack(aw, c[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ack(aw, b[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 300);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(ack__unknown_tag_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1];

    ck_assert_int_eq(obx_ackwin_ack(aw, 1, &err), OBX_ERR_PROTOCOL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tag 1"));
    txn(aw, 1, 100, a);
    ck_assert_int_eq(obx_ackwin_ack(aw, a[0] + 5, &err), OBX_ERR_PROTOCOL);
    ck_assert_int_eq(obx_ackwin_ack(aw, 0, &err), OBX_ERR_PROTOCOL);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 1);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(ack__complete_but_queued_tag_is_protocol_error)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1], b[1];

    txn(aw, 1, 100, a);
    txn(aw, 1, 200, b);
    ack(aw, b[0]);
    /* b is complete but still queued behind a */
    ck_assert_int_eq(obx_ackwin_ack(aw, b[0], &err), OBX_ERR_PROTOCOL);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 1);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 200);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(ack__more_acks_than_events_in_open_transaction)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t s;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s, &err), 0);
    ack(aw, s);
    ck_assert_int_eq(obx_ackwin_ack(aw, s, &err), OBX_ERR_PROTOCOL);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(ack__ring_wraps_and_grows)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t *tags = calloc(1000, sizeof(*tags));
    uint64_t lsn = 0;

    ck_assert_ptr_nonnull(tags);
    /* keep 1..40 transactions in flight while the ring head walks around */
    for (unsigned round = 0; round < 50; round++) {
        unsigned n = 1 + round % 40;

        for (unsigned i = 0; i < n; i++)
            txn(aw, 1, lsn += 10, &tags[i]);
        for (unsigned i = n; i-- > 1;)
            ack(aw, tags[i]);
        ck_assert_uint_eq(obx_ackwin_pending(aw), n);
        ack(aw, tags[0]);
        ck_assert_uint_eq(obx_ackwin_confirmable(aw), lsn);
    }
    /* then far more than the initial capacity at once */
    for (unsigned i = 0; i < 1000; i++)
        txn(aw, 1, lsn += 10, &tags[i]);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1000);
    for (unsigned i = 1000; i-- > 0;)
        ack(aw, tags[i]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), lsn);
    free(tags);
    obx_ackwin_free(aw);
}
END_TEST

/* --- obx_ackwin_keepalive ------------------------------------------------------------------- */

START_TEST(keepalive__idle_advances)
{
    struct obx_ackwin *aw = obx_ackwin_new(100);

    obx_ackwin_keepalive(aw, 500);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 500);
    obx_ackwin_keepalive(aw, 400);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 500);
    obx_ackwin_keepalive(aw, 0);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 500);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(keepalive__below_start_lsn_ignored)
{
    struct obx_ackwin *aw = obx_ackwin_new(1000);

    obx_ackwin_keepalive(aw, 500);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 1000);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(keepalive__before_transactions)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[1];

    obx_ackwin_keepalive(aw, 50);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 50);
    txn(aw, 1, 100, a);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 50);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(keepalive__during_in_flight_applied_when_drained)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[1], b[1];

    txn(aw, 1, 100, a);
    txn(aw, 1, 200, b);
    obx_ackwin_keepalive(aw, 900);
    /* nothing may move while 100 and 200 are in flight */
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ack(aw, b[0]);
    /* drained: the remembered walEnd applies */
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 900);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(keepalive__not_applied_past_later_pending_transaction)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[1], b[1];

    txn(aw, 1, 100, a);
    obx_ackwin_keepalive(aw, 150);
    txn(aw, 1, 200, b);
    /* everything before the keepalive is acknowledged, but 200 (received after it) is not */
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ack(aw, b[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 200);
    obx_ackwin_keepalive(aw, 250);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 250);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(keepalive__not_applied_while_open)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1], s;

    txn(aw, 1, 100, a);
    obx_ackwin_keepalive(aw, 150);
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s, &err), 0);
    ack(aw, a[0]);
    /* 100 is done; 150 must wait because a transaction is open */
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    obx_ackwin_keepalive(aw, 160);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ck_assert_int_eq(obx_ackwin_commit(aw, 300, &err), 0);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ack(aw, s);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 300);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(keepalive__open_empty_transaction_blocks_then_releases)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    obx_ackwin_keepalive(aw, 150);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, 120, &err), 0);
    /* drained and closed: both positions apply, the greater wins */
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 150);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(keepalive__after_drain_only_if_greater)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    uint64_t a[1];

    txn(aw, 1, 500, a);
    obx_ackwin_keepalive(aw, 300);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 500);
    obx_ackwin_free(aw);
}
END_TEST

/* --- obx_ackwin_abort_open ------------------------------------------------------------------ */

START_TEST(abort_open__late_acks_accepted_nothing_early)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1], s1, s2, r[2];

    txn(aw, 1, 100, a);
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s1, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s2, &err), 0);
    obx_ackwin_abort_open(aw);
    ck_assert(!obx_ackwin_in_txn(aw));
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 3);
    /* the server resends from 0: the 100 transaction and the aborted one come again */
    txn(aw, 1, 100, r);
    txn(aw, 2, 200, r);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ack(aw, s1);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    /* the aborted transaction never yields a position of its own */
    ack(aw, s2);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    ck_assert_int_eq(obx_ackwin_ack(aw, s2, &err), OBX_ERR_PROTOCOL);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(abort_open__blocks_newer_until_late_acks_arrive)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t s, r[1];

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s, &err), 0);
    obx_ackwin_abort_open(aw);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1);
    txn(aw, 1, 300, r);
    ack(aw, r[0]);
    obx_ackwin_keepalive(aw, 400);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, s);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 400);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(abort_open__without_events_or_open_is_harmless)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1];

    obx_ackwin_abort_open(aw);
    ck_assert(!obx_ackwin_in_txn(aw));
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    obx_ackwin_abort_open(aw);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, 10, &err), OBX_ERR_PROTOCOL);
    txn(aw, 1, 100, a);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 100);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(abort_open__acked_while_open_then_aborted)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t s;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s, &err), 0);
    ack(aw, s);
    obx_ackwin_abort_open(aw);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    obx_ackwin_keepalive(aw, 70);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 70);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(abort_open__restarts_order_check)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[1], b[1], r[1];

    txn(aw, 1, 100, a);
    txn(aw, 1, 200, b);
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, 150, &err), OBX_ERR_PROTOCOL);
    obx_ackwin_abort_open(aw);
    /* the replay starts below 200 again */
    txn(aw, 1, 100, r);
    ack(aw, r[0]);
    ack(aw, b[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 0);
    ack(aw, a[0]);
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), 200);
    obx_ackwin_free(aw);
}
END_TEST

/* --- obx_ackwin_confirmable: randomized property -------------------------------------------- */

struct model_txn {
    uint64_t seq;
    uint64_t end_lsn;
    unsigned left;
};

/* xorshift64: deterministic, seeded per run of the loop */
static uint64_t
rnd(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Checks the invariants against the model after every step: confirmable is monotone, below the
 * end_lsn of the oldest committed transaction with unacknowledged events (*lo, moved forward
 * here), and at least the end_lsn of the newest transaction before it (liveness). Plain ifs:
 * ck_assert in a hot loop costs a system call each. */
static void
check_invariants(const struct obx_ackwin *aw, const struct model_txn *m, size_t n, size_t *lo,
                 uint64_t *prev)
{
    uint64_t c = obx_ackwin_confirmable(aw);

    while (*lo < n && m[*lo].left == 0)
        (*lo)++;
    if (c < *prev)
        ck_abort_msg("confirmable went back from %llu to %llu", (unsigned long long)*prev,
                     (unsigned long long)c);
    *prev = c;
    if (*lo < n && c >= m[*lo].end_lsn)
        ck_abort_msg("confirmable %llu not below incomplete %llu", (unsigned long long)c,
                     (unsigned long long)m[*lo].end_lsn);
    if (*lo > 0 && c < m[*lo - 1].end_lsn)
        ck_abort_msg("confirmable %llu behind complete %llu", (unsigned long long)c,
                     (unsigned long long)m[*lo - 1].end_lsn);
}

/* Commits 2000 transactions of 0..5 events, interleaved with random acks and keepalives. */
static void
run_property(uint64_t seed)
{
    enum { NTXN = 2000 };
    struct model_txn *m = calloc(NTXN, sizeof(*m));
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t st = seed, lsn = 0, prev = 0, tag = 0;
    size_t n = 0, lo = 0, left_total = 0;

    ck_assert_ptr_nonnull(m);
    while (n < NTXN || left_total > 0) {
        unsigned action = (unsigned)(rnd(&st) % 10);

        if (n < NTXN && action < 3) {
            unsigned k = (unsigned)(rnd(&st) % 6);

            if (obx_ackwin_begin(aw, &err) != 0)
                ck_abort_msg("begin: %s", err.msg);
            for (unsigned i = 0; i < k; i++)
                if (obx_ackwin_add(aw, &tag, &err) != 0)
                    ck_abort_msg("add: %s", err.msg);
            lsn += 1 + rnd(&st) % 100;
            if (obx_ackwin_commit(aw, lsn, &err) != 0)
                ck_abort_msg("commit: %s", err.msg);
            m[n].seq = tag;
            m[n].end_lsn = lsn;
            m[n].left = k;
            left_total += k;
            n++;
        } else if (action == 3) {
            /* a keepalive never lies beyond what has been sent */
            obx_ackwin_keepalive(aw, lsn);
        } else if (left_total > 0) {
            size_t i = (size_t)(rnd(&st) % n);

            while (m[i].left == 0)
                i = (i + 1) % n;
            if (obx_ackwin_ack(aw, m[i].seq, &err) != 0)
                ck_abort_msg("ack: %s", err.msg);
            m[i].left--;
            left_total--;
        }
        check_invariants(aw, m, n, &lo, &prev);
    }
    ck_assert_uint_eq(obx_ackwin_confirmable(aw), lsn);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    obx_ackwin_free(aw);
    free(m);
}

START_TEST(confirmable__random_ack_order_property)
{
    for (uint64_t seed = 1; seed <= 20; seed++)
        run_property(seed * 0x9E3779B97F4A7C15ULL);
}
END_TEST

/* --- obx_ackwin_outstanding / pending / in_txn ---------------------------------------------- */

START_TEST(outstanding__counts_open_and_committed)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t a[2], s;

    txn(aw, 2, 100, a);
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s, &err), 0);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 3);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1);
    ack(aw, a[1]);
    ack(aw, s);
    ck_assert_uint_eq(obx_ackwin_outstanding(aw), 1);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(pending__excludes_open_transaction)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;
    uint64_t s;

    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert_int_eq(obx_ackwin_add(aw, &s, &err), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 0);
    ck_assert_int_eq(obx_ackwin_commit(aw, 5, &err), 0);
    ck_assert_uint_eq(obx_ackwin_pending(aw), 1);
    obx_ackwin_free(aw);
}
END_TEST

START_TEST(in_txn__follows_begin_commit)
{
    struct obx_ackwin *aw = obx_ackwin_new(0);
    struct obx_error err;

    ck_assert(!obx_ackwin_in_txn(aw));
    ck_assert_int_eq(obx_ackwin_begin(aw, &err), 0);
    ck_assert(obx_ackwin_in_txn(aw));
    ck_assert_int_eq(obx_ackwin_commit(aw, 5, &err), 0);
    ck_assert(!obx_ackwin_in_txn(aw));
    obx_ackwin_free(aw);
}
END_TEST

static Suite *
ackwin_suite(void)
{
    Suite *s = suite_create("ackwin");
    TCase *tc;

    tc = tcase_create("new");
    tcase_add_test(tc, new__starts_at_start_lsn);
    tcase_add_test(tc, free__null_is_noop);
    suite_add_tcase(s, tc);

    tc = tcase_create("begin");
    tcase_add_test(tc, begin__twice_is_protocol_error);
    tcase_add_test(tc, begin__null_err_allowed);
    suite_add_tcase(s, tc);

    tc = tcase_create("add");
    tcase_add_test(tc, add__outside_transaction_is_protocol_error);
    tcase_add_test(tc, add__same_tag_within_transaction_new_tag_next);
    tcase_add_test(tc, add__million_events_in_one_transaction);
    suite_add_tcase(s, tc);

    tc = tcase_create("commit");
    tcase_add_test(tc, commit__without_begin_is_protocol_error);
    tcase_add_test(tc, commit__end_lsn_backwards_is_protocol_error);
    tcase_add_test(tc, commit__below_start_lsn_is_protocol_error);
    tcase_add_test(tc, commit__empty_transaction_not_queued);
    tcase_add_test(tc, commit__empty_transaction_waits_for_older);
    tcase_add_test(tc, commit__acked_before_commit_completes_at_commit);
    tcase_add_test(tc, commit__acked_before_commit_behind_pending);
    suite_add_tcase(s, tc);

    tc = tcase_create("single");
    tcase_add_test(tc, single__confirmable_once_acked);
    tcase_add_test(tc, single__ordered_with_transactions);
    tcase_add_test(tc, single__inside_transaction_is_protocol_error);
    tcase_add_test(tc, single__backwards_is_protocol_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("ack");
    tcase_add_test(tc, ack__out_of_order_across_transactions);
    tcase_add_test(tc, ack__stops_at_oldest_incomplete);
    tcase_add_test(tc, ack__unknown_tag_is_protocol_error);
    tcase_add_test(tc, ack__complete_but_queued_tag_is_protocol_error);
    tcase_add_test(tc, ack__more_acks_than_events_in_open_transaction);
    tcase_add_test(tc, ack__ring_wraps_and_grows);
    suite_add_tcase(s, tc);

    tc = tcase_create("keepalive");
    tcase_add_test(tc, keepalive__idle_advances);
    tcase_add_test(tc, keepalive__below_start_lsn_ignored);
    tcase_add_test(tc, keepalive__before_transactions);
    tcase_add_test(tc, keepalive__during_in_flight_applied_when_drained);
    tcase_add_test(tc, keepalive__not_applied_past_later_pending_transaction);
    tcase_add_test(tc, keepalive__not_applied_while_open);
    tcase_add_test(tc, keepalive__open_empty_transaction_blocks_then_releases);
    tcase_add_test(tc, keepalive__after_drain_only_if_greater);
    suite_add_tcase(s, tc);

    tc = tcase_create("abort_open");
    tcase_add_test(tc, abort_open__late_acks_accepted_nothing_early);
    tcase_add_test(tc, abort_open__blocks_newer_until_late_acks_arrive);
    tcase_add_test(tc, abort_open__without_events_or_open_is_harmless);
    tcase_add_test(tc, abort_open__acked_while_open_then_aborted);
    tcase_add_test(tc, abort_open__restarts_order_check);
    suite_add_tcase(s, tc);

    tc = tcase_create("confirmable");
    tcase_add_test(tc, confirmable__random_ack_order_property);
    suite_add_tcase(s, tc);

    tc = tcase_create("outstanding");
    tcase_add_test(tc, outstanding__counts_open_and_committed);
    suite_add_tcase(s, tc);

    tc = tcase_create("pending");
    tcase_add_test(tc, pending__excludes_open_transaction);
    suite_add_tcase(s, tc);

    tc = tcase_create("in_txn");
    tcase_add_test(tc, in_txn__follows_begin_commit);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(ackwin_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
