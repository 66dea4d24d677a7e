/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of batch framing (transport/batch.c): headers for small and
 * large sequence numbers and counts, reading back items packed with
 * msgpack-c, the end-of-stream message, and a reader that answers any
 * malformed message with ZP_EPROTO, never a crash: truncated headers and
 * items, missing or extra bytes, headers that are not unsigned integers,
 * nesting deeper than the parser's stack, and thousands of random or
 * mutated buffers. Every buffer is malloc'ed to its exact size so that the
 * sanitizer build catches a read past its end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/batch.h"
#include "zpipe.h"

/* ---- Helpers ------------------------------------------------------------- */

/* A message under construction: header, then items packed with pk. */
typedef struct msg {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} msg;

static void msg_init(msg *m, uint64_t seq, uint32_t count)
{
    char hdr[ZP__BATCH_HEADER_MAX];
    size_t n = zp__batch_header(hdr, seq, count);
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_sbuffer_write(&m->sb, hdr, n), 0);
}

static void msg_raw(msg *m, const char *bytes, size_t n)
{
    assert_int_equal(msgpack_sbuffer_write(&m->sb, bytes, n), 0);
}

/* An exact-size heap copy of the first n bytes of m (n may be 0). */
static char *exact(const msg *m, size_t n)
{
    char *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n > 0)
        memcpy(c, m->sb.data, n);
    return c;
}

/* A reader for one test; fini'd by the caller. */
static void reader_init(zp__batch_reader *r)
{
    assert_int_equal(zp__batch_reader_init(r), 0);
}

/*
 * Opens `data` and reads every item. Returns the last result (0 or an
 * error) and counts items read into *items. Checks the invariants any
 * input must keep: indexes are consecutive from the header's seq, at most
 * `count` items come out, and an error leaves no items to read.
 */
static int read_all(zp__batch_reader *r, const char *data, size_t len,
                    int *items)
{
    *items = 0;
    int rc = zp__batch_open(r, data, len);
    if (rc != 0) {
        assert_int_equal(rc, ZP_EPROTO);
        assert_int_equal(r->left, 0);
        return rc;
    }
    uint64_t first = r->seq;
    uint32_t count = r->left;
    const msgpack_object *item;
    uint64_t seq;
    while ((rc = zp__batch_next(r, &item, &seq)) == 1) {
        assert_non_null(item);
        assert_true(seq == first + (uint64_t)*items);
        (*items)++;
        assert_true((uint32_t)*items <= count);
    }
    assert_true(rc == 0 || rc == ZP_EPROTO);
    assert_int_equal(r->left, 0);
    return rc;
}

/* read_all on the first n bytes of m, copied to an exact-size buffer. */
static int read_prefix(zp__batch_reader *r, const msg *m, size_t n, int *items)
{
    char *data = exact(m, n);
    int rc = read_all(r, data, n, items);
    free(data);
    return rc;
}

/* Unpacks the two header values of `hdr` with msgpack-c itself. */
static void decode_header(const char *hdr, size_t n, uint64_t *seq,
                          uint64_t *count)
{
    msgpack_zone zone;
    msgpack_object o;
    size_t off = 0;
    assert_true(msgpack_zone_init(&zone, 256));
    assert_int_equal(msgpack_unpack(hdr, n, &off, &zone, &o),
                     MSGPACK_UNPACK_EXTRA_BYTES);
    assert_int_equal(o.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    *seq = o.via.u64;
    assert_int_equal(msgpack_unpack(hdr, n, &off, &zone, &o),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(o.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    *count = o.via.u64;
    assert_int_equal(off, n);
    msgpack_zone_destroy(&zone);
}

/* xorshift64*: a fixed-seed generator, the same sequence everywhere. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* ---- Headers ------------------------------------------------------------- */

static void test_small_header_is_two_fixints(void **state)
{
    (void)state;
    char hdr[ZP__BATCH_HEADER_MAX];
    assert_int_equal(zp__batch_header(hdr, 0, 1), 2);
    assert_int_equal((unsigned char)hdr[0], 0x00);
    assert_int_equal((unsigned char)hdr[1], 0x01);
    assert_int_equal(zp__batch_header(hdr, 127, 64), 2);
    assert_int_equal((unsigned char)hdr[0], 0x7f);
    assert_int_equal((unsigned char)hdr[1], 0x40);
}

static void test_headers_of_any_size_decode_to_their_values(void **state)
{
    (void)state;
    static const struct {
        uint64_t seq;
        uint32_t count;
        size_t len;
    } cases[] = {
        {0, 0, 2},
        {127, 127, 2},
        {128, 1, 10},
        {1, 128, 10},
        {255, 256, 18},
        {65536, 65535, 18},
        {UINT32_MAX, UINT32_MAX, 18},
        {(uint64_t)UINT32_MAX + 1, 3, 10},
        {UINT64_MAX, UINT32_MAX, 18},
        {0xc0, 0xc0, 18},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char hdr[ZP__BATCH_HEADER_MAX];
        uint64_t seq, count;
        size_t n = zp__batch_header(hdr, cases[i].seq, cases[i].count);
        assert_int_equal(n, cases[i].len);
        decode_header(hdr, n, &seq, &count);
        assert_true(seq == cases[i].seq);
        assert_true(count == cases[i].count);
        assert_false(zp__batch_is_eos(hdr, n));
    }
}

/* ---- Reading items ------------------------------------------------------- */

static void test_items_come_back_with_their_indexes(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    const msgpack_object *item;
    uint64_t seq = 0;
    msg_init(&m, 40, 4);
    msgpack_pack_int(&m.pk, -3);
    msgpack_pack_str_with_body(&m.pk, "hello", 5);
    msgpack_pack_map(&m.pk, 1);
    msgpack_pack_str_with_body(&m.pk, "k", 1);
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_nil(&m.pk);
    msgpack_pack_double(&m.pk, 0.5);
    msgpack_pack_uint64(&m.pk, UINT64_MAX);
    reader_init(&r);
    assert_int_equal(zp__batch_open(&r, m.sb.data, m.sb.size), 0);

    assert_int_equal(zp__batch_next(&r, &item, &seq), 1);
    assert_int_equal(seq, 40);
    assert_int_equal(item->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(item->via.i64, -3);

    assert_int_equal(zp__batch_next(&r, &item, &seq), 1);
    assert_int_equal(seq, 41);
    assert_int_equal(item->type, MSGPACK_OBJECT_STR);
    assert_int_equal(item->via.str.size, 5);
    assert_memory_equal(item->via.str.ptr, "hello", 5);

    assert_int_equal(zp__batch_next(&r, &item, &seq), 1);
    assert_int_equal(seq, 42);
    assert_int_equal(item->type, MSGPACK_OBJECT_MAP);
    const msgpack_object *v = &item->via.map.ptr[0].val;
    assert_int_equal(v->via.array.size, 2);
    assert_int_equal(v->via.array.ptr[0].type, MSGPACK_OBJECT_NIL);
    assert_true(v->via.array.ptr[1].via.f64 == 0.5);

    assert_int_equal(zp__batch_next(&r, &item, &seq), 1);
    assert_int_equal(seq, 43);
    assert_true(item->via.u64 == UINT64_MAX);

    assert_int_equal(zp__batch_next(&r, &item, &seq), 0);
    assert_int_equal(zp__batch_next(&r, &item, &seq), 0);
    zp__batch_reader_fini(&r);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_a_batch_with_a_large_header_reads_back(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items = 0;
    /* 200 items: the count needs a 9-byte uint, so does the seq. */
    msg_init(&m, UINT64_MAX - 199, 200);
    for (int i = 0; i < 200; i++)
        msgpack_pack_int(&m.pk, i * 1000);
    reader_init(&r);
    assert_int_equal(zp__batch_open(&r, m.sb.data, m.sb.size), 0);
    const msgpack_object *item;
    uint64_t seq;
    while (zp__batch_next(&r, &item, &seq) == 1) {
        assert_true(seq == UINT64_MAX - 199 + (uint64_t)items);
        assert_int_equal(item->via.i64, items * 1000);
        items++;
    }
    assert_int_equal(items, 200);
    assert_true(seq == UINT64_MAX);
    zp__batch_reader_fini(&r);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_an_empty_batch_has_no_items(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items = -1;
    msg_init(&m, 9, 0);
    reader_init(&r);
    assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), 0);
    assert_int_equal(items, 0);
    zp__batch_reader_fini(&r);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_one_reader_reads_many_messages(void **state)
{
    (void)state;
    zp__batch_reader r;
    reader_init(&r);
    for (uint32_t k = 1; k <= 50; k++) {
        msg m;
        int items = 0;
        msg_init(&m, k * 100, k);
        for (uint32_t i = 0; i < k; i++)
            msgpack_pack_str_with_body(&m.pk, "0123456789abcdef", 16);
        assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), 0);
        assert_int_equal(items, (int)k);
        msgpack_sbuffer_destroy(&m.sb);
    }
    zp__batch_reader_fini(&r);
}

/* ---- End of stream ------------------------------------------------------- */

static void test_a_single_nil_is_the_end_of_the_stream(void **state)
{
    (void)state;
    const char nil[] = {(char)0xc0};
    const char two[] = {(char)0xc0, (char)0xc0};
    const char zero[] = {0x00};
    char hdr[ZP__BATCH_HEADER_MAX];
    assert_true(zp__batch_is_eos(nil, 1));
    assert_false(zp__batch_is_eos(two, 2));
    assert_false(zp__batch_is_eos(nil, 0));
    assert_false(zp__batch_is_eos(zero, 1));
    size_t n = zp__batch_header(hdr, 0, 0);
    assert_false(zp__batch_is_eos(hdr, n));
}

static void test_the_end_of_stream_message_is_not_a_batch(void **state)
{
    (void)state;
    zp__batch_reader r;
    const char nil[] = {(char)0xc0};
    reader_init(&r);
    assert_int_equal(zp__batch_open(&r, nil, 1), ZP_EPROTO);
    assert_int_equal(r.left, 0);
    zp__batch_reader_fini(&r);
}

/* ---- Malformed input ----------------------------------------------------- */

static void test_truncated_headers_are_eproto(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items;
    reader_init(&r);
    msg_init(&m, 1000, 200); /* 9 + 9 header bytes */
    for (int i = 0; i < 200; i++)
        msgpack_pack_nil(&m.pk);
    /* Every prefix that cuts the header: nothing, part of seq, no count,
     * part of count. */
    for (size_t n = 0; n < 18; n++) {
        assert_int_equal(read_prefix(&r, &m, n, &items), ZP_EPROTO);
        assert_int_equal(items, 0);
    }
    msgpack_sbuffer_destroy(&m.sb);
    zp__batch_reader_fini(&r);
}

static void test_a_count_larger_than_the_items_present_is_eproto(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items;
    reader_init(&r);
    /* Header says 5, two items follow: enough bytes for the header check
     * to pass, so the reader must notice at the items. */
    msg_init(&m, 0, 5);
    msgpack_pack_str_with_body(&m.pk, "abcdefgh", 8);
    msgpack_pack_str_with_body(&m.pk, "ijklmnop", 8);
    assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), ZP_EPROTO);
    assert_true(items <= 2);
    msgpack_sbuffer_destroy(&m.sb);
    /* Header says 3, fewer bytes than items: refused at open. */
    msg_init(&m, 0, 3);
    msgpack_pack_nil(&m.pk);
    assert_int_equal(zp__batch_open(&r, m.sb.data, m.sb.size), ZP_EPROTO);
    assert_int_equal(r.left, 0);
    assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), ZP_EPROTO);
    assert_int_equal(items, 0);
    msgpack_sbuffer_destroy(&m.sb);
    zp__batch_reader_fini(&r);
}

static void test_a_count_beyond_uint32_is_eproto(void **state)
{
    (void)state;
    zp__batch_reader r;
    /* seq 0, count 2^32 as a uint64, then plenty of nils. */
    char data[4096];
    memset(data, 0xc0, sizeof data);
    const unsigned char hdr[] = {0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0};
    memcpy(data, hdr, sizeof hdr);
    reader_init(&r);
    assert_int_equal(zp__batch_open(&r, data, sizeof data), ZP_EPROTO);
    assert_int_equal(r.left, 0);
    zp__batch_reader_fini(&r);
}

static void test_trailing_bytes_after_the_last_item_are_eproto(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items;
    reader_init(&r);
    msg_init(&m, 0, 2);
    msgpack_pack_int(&m.pk, 1);
    msgpack_pack_int(&m.pk, 2);
    msg_raw(&m, "\x07", 1); /* a whole extra item */
    assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), ZP_EPROTO);
    msgpack_sbuffer_destroy(&m.sb);
    msg_init(&m, 0, 0);
    msg_raw(&m, "\xc1\xc1", 2); /* an empty batch with garbage */
    assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), ZP_EPROTO);
    assert_int_equal(items, 0);
    msgpack_sbuffer_destroy(&m.sb);
    zp__batch_reader_fini(&r);
}

/* A batch of five items of several kinds; *starts gets where each begins
 * (and, last, where the message ends). */
static void mixed_batch(msg *m, size_t starts[6])
{
    msg_init(m, 10, 5);
    starts[0] = m->sb.size;
    msgpack_pack_int(&m->pk, 1);
    starts[1] = m->sb.size;
    msgpack_pack_str_with_body(&m->pk, "a string", 8);
    starts[2] = m->sb.size;
    msgpack_pack_array(&m->pk, 2);
    msgpack_pack_uint64(&m->pk, UINT64_MAX);
    msgpack_pack_double(&m->pk, 2.0);
    starts[3] = m->sb.size;
    msgpack_pack_nil(&m->pk);
    starts[4] = m->sb.size;
    msgpack_pack_map(&m->pk, 1);
    msgpack_pack_str_with_body(&m->pk, "k", 1);
    msgpack_pack_true(&m->pk);
    starts[5] = m->sb.size;
}

/* The mixed batch, opened for passing over its items (no zone needed). */
typedef struct skipping {
    msg m;
    size_t at[6];
    zp__batch_reader r;
    const char *items;
    size_t len;
} skipping;

static void skipping_open(skipping *k)
{
    memset(k, 0, sizeof *k);
    mixed_batch(&k->m, k->at);
    assert_int_equal(zp__batch_open(&k->r, k->m.sb.data, k->m.sb.size), 0);
}

static int pass_over(skipping *k, uint32_t max, size_t max_bytes)
{
    return zp__batch_skip(&k->r, max, max_bytes, &k->items, &k->len);
}

static void test_skipping_passes_over_items_by_count(void **state)
{
    (void)state;
    skipping k;
    skipping_open(&k);
    assert_int_equal(pass_over(&k, 2, SIZE_MAX), 2);
    assert_ptr_equal(k.items, k.m.sb.data + k.at[0]);
    assert_int_equal(k.len, k.at[2] - k.at[0]);
    assert_int_equal(k.r.seq, 12);
    assert_int_equal(pass_over(&k, 10, SIZE_MAX), 3);
    assert_ptr_equal(k.items, k.m.sb.data + k.at[2]);
    assert_int_equal(k.len, k.at[5] - k.at[2]);
    assert_int_equal(pass_over(&k, 10, SIZE_MAX), 0);
    msgpack_sbuffer_destroy(&k.m.sb);
}

static void test_skipping_stops_at_a_byte_limit_after_one_item(void **state)
{
    (void)state;
    skipping k;
    skipping_open(&k);
    /* 0 bytes: still the first item, alone */
    assert_int_equal(pass_over(&k, 10, 0), 1);
    assert_int_equal(k.len, k.at[1] - k.at[0]);
    /* exactly two items' worth, then one byte short of three */
    assert_int_equal(pass_over(&k, 10, k.at[3] - k.at[1]), 2);
    assert_int_equal(pass_over(&k, 10, k.at[5] - k.at[3] - 1), 1);
    assert_ptr_equal(k.items, k.m.sb.data + k.at[3]);
    assert_int_equal(pass_over(&k, 10, SIZE_MAX), 1);
    assert_int_equal(pass_over(&k, 10, SIZE_MAX), 0);
    msgpack_sbuffer_destroy(&k.m.sb);
}

static void test_skipping_refuses_what_reading_refuses(void **state)
{
    (void)state;
    skipping k;
    skipping_open(&k);
    /* every cut of the message, in an exact-size copy */
    for (size_t n = k.at[0]; n < k.at[5]; n++) {
        char *data = exact(&k.m, n);
        if (zp__batch_open(&k.r, data, n) == 0) /* else too short a count */
            assert_int_equal(pass_over(&k, 10, SIZE_MAX), ZP_EPROTO);
        assert_int_equal(k.r.left, 0);
        free(data);
    }
    /* a whole extra item after the last */
    msg_raw(&k.m, "\x07", 1);
    assert_int_equal(zp__batch_open(&k.r, k.m.sb.data, k.m.sb.size), 0);
    assert_int_equal(pass_over(&k, 10, SIZE_MAX), ZP_EPROTO);
    msgpack_sbuffer_destroy(&k.m.sb);
}

static void test_the_size_of_a_value_is_its_encoding(void **state)
{
    (void)state;
    msg m;
    size_t at[6];
    mixed_batch(&m, at);
    for (int i = 0; i < 5; i++) {
        const char *p = m.sb.data + at[i];
        size_t whole = at[i + 1] - at[i];
        assert_int_equal(zp__msgpack_size(p, m.sb.size - at[i]), whole);
        assert_int_equal(zp__msgpack_size(p, whole - 1), 0);
    }
    assert_int_equal(zp__msgpack_size("\xc1", 1), 0);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_truncated_items_are_eproto(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items;
    reader_init(&r);
    msg_init(&m, 0, 3);
    msgpack_pack_int(&m.pk, 1);
    msgpack_pack_str_with_body(&m.pk, "a string of some length", 23);
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_uint64(&m.pk, UINT64_MAX);
    msgpack_pack_double(&m.pk, 1.0);
    size_t whole = m.sb.size;
    /* Every cut of the message: never all three items. */
    for (size_t n = 0; n < whole; n++) {
        int rc = read_prefix(&r, &m, n, &items);
        assert_int_equal(rc, ZP_EPROTO);
        assert_true(items < 3);
    }
    assert_int_equal(read_prefix(&r, &m, whole, &items), 0);
    assert_int_equal(items, 3);
    msgpack_sbuffer_destroy(&m.sb);
    zp__batch_reader_fini(&r);
}

static void test_headers_that_are_not_unsigned_integers_are_eproto(void **state)
{
    (void)state;
    /* Each is followed by plenty of nils, so only the header is wrong. */
    static const struct {
        const char *bytes;
        size_t len;
    } cases[] = {
        {"\xa1x\x01", 3},                                 /* seq is a string */
        {"\xff\x01", 2},                                  /* seq is -1 */
        {"\xd3\xff\xff\xff\xff\xff\xff\xff\xfe\x01", 10}, /* int64 -2 */
        {"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\x01", 10}, /* 1.0 */
        {"\xc3\x01", 2},                                  /* seq is true */
        {"\x00\xc0", 2},                                  /* count is nil */
        {"\x00\x90", 2},                                  /* count is [] */
        {"\x00\xe0", 2},                                  /* count is -32 */
        {"\xc1\x01", 2},                                  /* an unused type */
        {"\x92\x00\x01", 3},                              /* packed as [0, 1] */
    };
    zp__batch_reader r;
    reader_init(&r);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = cases[i].len + 16;
        char *data = malloc(n);
        assert_non_null(data);
        memset(data, 0xc0, n);
        memcpy(data, cases[i].bytes, cases[i].len);
        if (zp__batch_open(&r, data, n) != ZP_EPROTO)
            fail_msg("header case %zu was accepted", i);
        assert_int_equal(r.left, 0);
        free(data);
    }
    zp__batch_reader_fini(&r);
}

static void test_nesting_deeper_than_the_parser_stack_is_eproto(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items;
    reader_init(&r);
    msg_init(&m, 0, 1);
    for (int i = 0; i < 10000; i++)
        msg_raw(&m, "\x91", 1); /* [[[[ ... */
    msg_raw(&m, "\xc0", 1);
    assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), ZP_EPROTO);
    assert_int_equal(items, 0);
    msgpack_sbuffer_destroy(&m.sb);
    zp__batch_reader_fini(&r);
}

static void test_huge_declared_lengths_are_eproto(void **state)
{
    (void)state;
    static const char *items[] = {
        "\xdb\xff\xff\xff\xff", /* str32 of 4 GiB */
        "\xc6\xff\xff\xff\xf0", /* bin32 */
        "\xc9\xff\xff\xff\xff", /* ext32 */
        "\xda\xff\xff",         /* str16 */
    };
    zp__batch_reader r;
    reader_init(&r);
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        msg m;
        int n = 0;
        msg_init(&m, 0, 1);
        msg_raw(&m, items[i], strlen(items[i]));
        msg_raw(&m, "\x01\x02\x03", 3);
        assert_int_equal(read_prefix(&r, &m, m.sb.size, &n), ZP_EPROTO);
        assert_int_equal(n, 0);
        msgpack_sbuffer_destroy(&m.sb);
    }
    zp__batch_reader_fini(&r);
}

/*
 * Bytes used in the zone's newest chunk (its chunk header included). The
 * zone struct is public in <msgpack/zone.h>; a chunk is allocated for any
 * request larger than the free space, so a big request shows here.
 */
static size_t zone_in_use(const msgpack_zone *z)
{
    return (size_t)(z->chunk_list.ptr - (const char *)z->chunk_list.head);
}

static void
test_huge_declared_container_sizes_are_refused_without_allocating(void **state)
{
    (void)state;
    /* A few bytes that declare millions of elements: the reader must
     * refuse them without allocating memory for elements that cannot be
     * there (an item needs at least one byte per element). msgpack-c
     * allocates the whole array before it reads one element, so a 10-byte
     * message would cost 256 MiB here, and 64 GiB (an out-of-memory abort
     * under the sanitizer) with counts near 2^32. */
    static const struct {
        const char *bytes;
        size_t len;
    } items[] = {
        {"\xdd\x01\x00\x00\x00", 5},     /* array32 of 2^24 */
        {"\xdf\x00\x80\x00\x00", 5},     /* map32 of 2^23 */
        {"\x91\xdd\x01\x00\x00\x00", 6}, /* nested */
    };
    zp__batch_reader r;
    reader_init(&r);
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        msg m;
        int n = 0;
        msg_init(&m, 0, 1);
        msg_raw(&m, items[i].bytes, items[i].len);
        msg_raw(&m, "\x01\x02\x03", 3);
        assert_int_equal(read_prefix(&r, &m, m.sb.size, &n), ZP_EPROTO);
        assert_int_equal(n, 0);
        size_t used = zone_in_use(r.zone), len = m.sb.size;
        msgpack_sbuffer_destroy(&m.sb);
        if (used > (1u << 20)) {
            zp__batch_reader_fini(&r);
            fail_msg("case %zu: a %zu-byte message made the reader allocate "
                     "%zu bytes",
                     i, len, used);
        }
    }
    zp__batch_reader_fini(&r);
}

static void test_random_bytes_never_crash_the_reader(void **state)
{
    (void)state;
    uint64_t s = 0x5eed5eed12345678ULL;
    zp__batch_reader r;
    int accepted = 0;
    reader_init(&r);
    for (int k = 0; k < 5000; k++) {
        size_t n = (size_t)(next_random(&s) % 48);
        char *data = malloc(n ? n : 1);
        assert_non_null(data);
        for (size_t i = 0; i < n; i++)
            data[i] = (char)next_random(&s);
        /* Half the buffers get a plausible small header, so that the
         * reader goes on to the items instead of stopping at the start. */
        if (n >= 2 && (k & 1)) {
            data[0] = (char)(next_random(&s) & 0x7f);
            data[1] = (char)(next_random(&s) % 6);
        }
        int items;
        if (read_all(&r, data, n, &items) == 0)
            accepted++;
        free(data);
    }
    /* Some random buffers are valid batches; most are not. */
    assert_true(accepted > 0);
    assert_true(accepted < 5000);
    zp__batch_reader_fini(&r);
}

static void test_mutated_batches_never_crash_the_reader(void **state)
{
    (void)state;
    uint64_t s = 42;
    msg m;
    zp__batch_reader r;
    reader_init(&r);
    msg_init(&m, 300, 5);
    msgpack_pack_int(&m.pk, -100000);
    msgpack_pack_str_with_body(&m.pk, "some text", 9);
    msgpack_pack_map(&m.pk, 1);
    msgpack_pack_str_with_body(&m.pk, "k", 1);
    msgpack_pack_array(&m.pk, 3);
    msgpack_pack_true(&m.pk);
    msgpack_pack_nil(&m.pk);
    msgpack_pack_float(&m.pk, 1.5f);
    msgpack_pack_bin_with_body(&m.pk, "\x00\x01\x02", 3);
    msgpack_pack_uint32(&m.pk, 70000);
    for (int k = 0; k < 3000; k++) {
        size_t n = m.sb.size - (size_t)(next_random(&s) % 3);
        char *data = exact(&m, n);
        for (int flips = 1 + (int)(next_random(&s) % 3); flips > 0; flips--)
            data[next_random(&s) % n] ^= (char)(1u << (next_random(&s) % 8));
        int items;
        (void)read_all(&r, data, n, &items);
        free(data);
    }
    msgpack_sbuffer_destroy(&m.sb);
    zp__batch_reader_fini(&r);
}

static void test_a_reader_recovers_after_a_malformed_message(void **state)
{
    (void)state;
    msg m;
    zp__batch_reader r;
    int items;
    const char bad[] = {0x00, 0x02, 0x01}; /* two items promised, one there */
    reader_init(&r);
    assert_int_equal(read_all(&r, bad, sizeof bad, &items), ZP_EPROTO);
    msg_init(&m, 7, 2);
    msgpack_pack_int(&m.pk, 1);
    msgpack_pack_int(&m.pk, 2);
    assert_int_equal(read_prefix(&r, &m, m.sb.size, &items), 0);
    assert_int_equal(items, 2);
    msgpack_sbuffer_destroy(&m.sb);
    zp__batch_reader_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_header_is_two_fixints),
        cmocka_unit_test(test_headers_of_any_size_decode_to_their_values),
        cmocka_unit_test(test_items_come_back_with_their_indexes),
        cmocka_unit_test(test_a_batch_with_a_large_header_reads_back),
        cmocka_unit_test(test_an_empty_batch_has_no_items),
        cmocka_unit_test(test_one_reader_reads_many_messages),
        cmocka_unit_test(test_a_single_nil_is_the_end_of_the_stream),
        cmocka_unit_test(test_the_end_of_stream_message_is_not_a_batch),
        cmocka_unit_test(test_truncated_headers_are_eproto),
        cmocka_unit_test(test_a_count_larger_than_the_items_present_is_eproto),
        cmocka_unit_test(test_a_count_beyond_uint32_is_eproto),
        cmocka_unit_test(test_trailing_bytes_after_the_last_item_are_eproto),
        cmocka_unit_test(test_truncated_items_are_eproto),
        cmocka_unit_test(test_skipping_passes_over_items_by_count),
        cmocka_unit_test(test_skipping_stops_at_a_byte_limit_after_one_item),
        cmocka_unit_test(test_skipping_refuses_what_reading_refuses),
        cmocka_unit_test(test_the_size_of_a_value_is_its_encoding),
        cmocka_unit_test(
            test_headers_that_are_not_unsigned_integers_are_eproto),
        cmocka_unit_test(test_nesting_deeper_than_the_parser_stack_is_eproto),
        cmocka_unit_test(test_huge_declared_lengths_are_eproto),
        cmocka_unit_test(test_a_reader_recovers_after_a_malformed_message),
        /* Last, because msgpack-c allocates a declared array or map in full
         * before reading it: a few bytes can ask for tens of GiB, which
         * aborts the sanitizer build and ends the program. */
        cmocka_unit_test(
            test_huge_declared_container_sizes_are_refused_without_allocating),
        cmocka_unit_test(test_mutated_batches_never_crash_the_reader),
        cmocka_unit_test(test_random_bytes_never_crash_the_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
