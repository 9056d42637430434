/*
 * The codec against the wire contract (shared NESTJS-KAFKA-WIRE.md section 0 table,
 * sections 2, 3, 4 and 7), byte for byte. Expected bytes for the tricky cases were
 * produced by Node 20 (tests/data/gen/); argv[1] is tests/data for numbers.txt.
 */
#include "base/alloc.h"
#include "base/topic.h"
#include "codec/codec.h"
#include "codec/wire.h"

#include "suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *data_dir = "tests/data";

/* Assert that encoding @p v gives exactly @p want (NULL: a null Kafka value). */
static void
assert_encodes(json_t *v, const char *want, size_t want_len)
{
    char *out = (char *)"sentinel";
    size_t len = 99;
    ck_assert_int_eq(ksfi_encode_value(v, &out, &len, NULL), KSF_OK);
    if (!want) {
        ck_assert_ptr_null(out);
        ck_assert_uint_eq(len, 0);
    } else {
        ck_assert_ptr_nonnull(out);
        ck_assert_msg(len == want_len && !memcmp(out, want, len),
                      "encoded \"%.*s\" (%zu bytes), expected \"%.*s\"", (int)len, out,
                      len, (int)want_len, want);
        ck_assert_int_eq(out[len], '\0');
    }
    ksfi_free(out);
    /* The server's form, into a kept buffer (one for the whole suite, so that it is
     * reused at every size): the same bytes; a string's borrowed from the value. */
    static char *kept;
    static size_t kept_cap;
    const void *in = (const void *)"sentinel";
    len = 99;
    ck_assert_int_eq(ksfi_encode_value_in(v, &kept, &kept_cap, &in, &len, NULL), KSF_OK);
    if (!want) {
        ck_assert_ptr_null(in);
        ck_assert_uint_eq(len, 0);
    } else {
        ck_assert_msg(len == want_len && !memcmp(in, want, len),
                      "encoded in place \"%.*s\" (%zu bytes), expected \"%.*s\"",
                      (int)len, (const char *)in, len, (int)want_len, want);
        ck_assert_ptr_eq(in, json_is_string(v) ? (const void *)json_string_value(v)
                                               : (const void *)kept);
        ck_assert_uint_ge(kept_cap, json_is_string(v) ? 0 : len + 1);
    }
    /* The client's form, into a stack buffer: what fits stays there, the rest moves to
     * the heap (8 bytes here, so that across the suite both happen). */
    char stack[8];
    char *heap = (char *)"sentinel";
    in = (const void *)"sentinel";
    len = 99;
    ck_assert_int_eq(
        ksfi_encode_value_stack(v, stack, sizeof stack, &heap, &in, &len, NULL), KSF_OK);
    if (!want) {
        ck_assert_ptr_null(in);
        ck_assert_uint_eq(len, 0);
        ck_assert_ptr_null(heap);
    } else {
        ck_assert_msg(len == want_len && !memcmp(in, want, len),
                      "encoded on the stack \"%.*s\" (%zu bytes), expected \"%.*s\"",
                      (int)len, (const char *)in, len, (int)want_len, want);
        if (json_is_string(v)) {
            ck_assert_ptr_eq(in, json_string_value(v));
            ck_assert_ptr_null(heap);
        } else if (len < sizeof stack) {
            ck_assert_ptr_eq(in, stack);
            ck_assert_ptr_null(heap);
            ck_assert_int_eq(stack[len], '\0');
        } else {
            ck_assert_ptr_nonnull(heap);
            ck_assert_ptr_eq(in, heap);
            ck_assert_int_eq(heap[len], '\0');
        }
    }
    ksfi_free(heap);
    json_decref(v);
}
#define ENCODES(v, lit) assert_encodes((v), (lit), sizeof(lit) - 1)

static json_t *
parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    ck_assert_msg(v != NULL, "test JSON %s: %s", text, e.text);
    return v;
}

/* ---- request value (section 0 "Request value", section 2.5) ----------------------- */

KSFT_TEST(test_codec_encode_objects_and_arrays, 30)
{
    ENCODES(parse("{\"a\":1}"), "{\"a\":1}");
    ENCODES(parse("[1,2]"), "[1,2]");
    ENCODES(parse("{}"), "{}");
    ENCODES(parse("[]"), "[]");
    ENCODES(parse("{\"z\":1,\"a\":[true,false,null,{\"n\":-3}]}"),
            "{\"z\":1,\"a\":[true,false,null,{\"n\":-3}]}");
    /* JS objects list array-index keys first, ascending; then insertion order. */
    json_t *o = json_object();
    json_object_set_new(o, "b", json_integer(1));
    json_object_set_new(o, "10", json_integer(2));
    json_object_set_new(o, "2", json_integer(3));
    json_object_set_new(o, "02", json_integer(4));
    json_object_set_new(o, "4294967295", json_integer(5));
    ENCODES(o, "{\"2\":3,\"10\":2,\"b\":1,\"02\":4,\"4294967295\":5}");
    /* The same order for objects of more than 16 members (written in two passes
     * instead of from one read into an array) and of exactly 16. */
    for (int members = 16; members <= 20; members += 4) {
        char want[512] = "{\"3\":3,\"7\":7,";
        o = json_object();
        for (int i = 0; i < members - 2; i++) {
            char k[8];
            snprintf(k, sizeof k, "k%d", i);
            json_object_set_new(o, k, json_integer(i));
            if (i == 5) {
                json_object_set_new(o, "7", json_integer(7));
            } else if (i == 9) {
                json_object_set_new(o, "3", json_integer(3));
            }
            snprintf(want + strlen(want), sizeof want - strlen(want), "\"%s\":%d,", k, i);
        }
        want[strlen(want) - 1] = '}';
        ck_assert_uint_eq(json_object_size(o), (size_t)members);
        assert_encodes(o, want, strlen(want));
    }
    /* keys holding NUL are kept whole */
    o = json_object();
    json_object_setn_new(o, "a\0b", 3, json_true());
    ENCODES(o, "{\"a\\u0000b\":true}");
}
END_TEST

KSFT_TEST(test_codec_encode_string_escaping, 30)
{
    /* JSON.stringify escapes '"', '\\', \b \f \n \r \t and other controls as \u00xx
     * (lowercase); '/', DEL, U+2028 and non-ASCII stay as they are. */
    json_t *a = json_array();
    json_array_append_new(a, json_stringn("q\"b\\s/\b\f\n\r\t\x01\x1f\x7f", 14));
    json_array_append_new(a, json_string("\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80"));
    json_array_append_new(a, json_stringn("nul\0end", 7));
    ENCODES(a, "[\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\","
               "\"\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80\",\"nul\\u0000end\"]");
}
END_TEST

KSFT_TEST(test_codec_encode_scalars, 30)
{
    ENCODES(json_string("str"), "str");             /* strings raw, no quotes */
    ENCODES(json_string("{\"a\":1}"), "{\"a\":1}"); /* a JSON-looking string too */
    ENCODES(json_string(""), "");
    ENCODES(json_stringn("a\0b", 3), "a\0b");
    ENCODES(json_integer(42), "42");
    ENCODES(json_integer(-7), "-7");
    ENCODES(json_integer(9007199254740993), "9007199254740993");
    ENCODES(json_integer(0), "0");
    ENCODES(json_integer(INT64_MAX), "9223372036854775807");
    ENCODES(json_integer(INT64_MIN), "-9223372036854775808");
    ENCODES(json_true(), "true");
    ENCODES(json_false(), "false");
    assert_encodes(json_null(), NULL, 0); /* null and undefined: a null value */
    assert_encodes(NULL, NULL, 0);
}
END_TEST

KSFT_TEST(test_codec_encode_js_numbers, 30)
{
    ENCODES(json_real(0.1), "0.1");
    ENCODES(json_real(1e21), "1e+21");
    ENCODES(json_real(1e20), "100000000000000000000");
    ENCODES(json_real(1.5e-7), "1.5e-7");
    ENCODES(json_real(1e-6), "0.000001");
    ENCODES(json_real(-0.0), "0");
    ENCODES(json_real(1.0), "1");
    ENCODES(json_real(123456789012345678901.0), "123456789012345680000");
    ENCODES(json_real(0.1 + 0.2), "0.30000000000000004");
    ENCODES(json_real(5e-324), "5e-324");
    ENCODES(json_real(1.7976931348623157e308), "1.7976931348623157e+308");
    ENCODES(json_real(-1234.5678), "-1234.5678");
    json_t *a = json_array();
    json_array_append_new(a, json_real(-0.0));
    json_array_append_new(a, json_real(2.5e-7));
    ENCODES(a, "[0,2.5e-7]");
}
END_TEST

/* ksfi_format_number against 4121 doubles printed by Node (tests/data/numbers.txt). */
KSFT_TEST(test_codec_format_number_matches_node, 30)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/numbers.txt", data_dir);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char hex[17], want[64], got[32];
    int n = 0;
    while (fscanf(f, "%16s %63s", hex, want) == 2) {
        unsigned long long bits = strtoull(hex, NULL, 16);
        double d;
        memcpy(&d, &bits, sizeof d);
        ksfi_format_number(d, got);
        ck_assert_msg(!strcmp(got, want), "bits %s: got %s, Node prints %s", hex, got,
                      want);
        n++;
    }
    fclose(f);
    ck_assert_int_ge(n, 4000);
}
END_TEST

/* ---- incoming parse (section 0 "Incoming parse", section 7) ------------------------ */

static json_t *
decode(const char *bytes, size_t len)
{
    json_t *v = (json_t *)0x1;
    ck_assert_int_eq(ksfi_decode_value(bytes, len, &v), KSF_OK);
    return v;
}
#define DECODE(lit) decode((lit), sizeof(lit) - 1)

static void
assert_string(json_t *v, const char *want, size_t len)
{
    ck_assert_msg(json_is_string(v), "expected a JSON string");
    ck_assert_uint_eq(json_string_length(v), len);
    ck_assert_msg(!memcmp(json_string_value(v), want, len), "got \"%s\"",
                  json_string_value(v));
    json_decref(v);
}
#define IS_STRING(v, lit) assert_string((v), (lit), sizeof(lit) - 1)

static void
assert_json(json_t *v, const char *stringified)
{
    ck_assert_msg(json_is_object(v) || json_is_array(v), "expected parsed JSON");
    char *s = ksfi_json_stringify(v, NULL);
    ck_assert_str_eq(s, stringified);
    ksfi_free(s);
    json_decref(v);
}

KSFT_TEST(test_codec_decode_sniff, 30)
{
    assert_json(DECODE("{\"a\":1}"), "{\"a\":1}");
    assert_json(DECODE("[1,\"x\",{\"b\":null}]"), "[1,\"x\",{\"b\":null}]");
    assert_json(DECODE("[ 1 ,\n2 ]\t"), "[1,2]");
    IS_STRING(DECODE("42"), "42"); /* numbers are not revived */
    IS_STRING(DECODE("true"), "true");
    IS_STRING(DECODE("null"), "null");
    IS_STRING(DECODE("\"s\""), "\"s\"");
    IS_STRING(DECODE("{oops"), "{oops"); /* invalid JSON stays a string */
    IS_STRING(DECODE("[1]]"), "[1]]");
    IS_STRING(DECODE(" {\"a\":1}"), " {\"a\":1}"); /* a leading space blocks parsing */
    IS_STRING(DECODE("\xef\xbb\xbf[1]"), "\xef\xbb\xbf[1]"); /* so does a BOM */
    IS_STRING(DECODE(""), "");                               /* empty value: "" */
    IS_STRING(DECODE("a\0b"), "a\0b");
}
END_TEST

KSFT_TEST(test_codec_decode_null_and_binary, 30)
{
    json_t *v = decode(NULL, 0);
    ck_assert(json_is_null(v));
    json_decref(v);
    ck_assert_ptr_null(DECODE("\0"));
    ck_assert_ptr_null(DECODE("\0{\"a\":1}"));
    ck_assert_ptr_null(decode("\0\xff\xfe", 3));
}
END_TEST

KSFT_TEST(test_codec_decode_js_parse_quirks, 30)
{
    /* What JSON.parse accepts and jansson alone would refuse. */
    assert_json(DECODE("[123456789012345678901]"), "[123456789012345680000]");
    assert_json(DECODE("[-9223372036854775809]"), "[-9223372036854776000]");
    json_t *v = DECODE("[9223372036854775807,-9223372036854775808]");
    ck_assert(json_is_integer(json_array_get(v, 0)));
    json_decref(v);
    assert_json(DECODE("[1e999,-1e400,1e-999]"), "[null,null,0]");
    assert_json(DECODE("[1.7976931348623157e308,1.7976931348623158e308]"),
                "[1.7976931348623157e+308,1.7976931348623157e+308]");
    assert_json(DECODE("[1.7976931348623159e308]"), "[null]");
    assert_json(DECODE("[\"\\ud800x\",\"\\udc00\",\"\\ud83d\\ude00\"]"),
                "[\"\xef\xbf\xbdx\",\"\xef\xbf\xbd\",\"\xf0\x9f\x98\x80\"]");
    assert_json(DECODE("{\"a\":1,\"b\":2,\"a\":3}"), "{\"a\":3,\"b\":2}");
    /* rewriting never makes invalid JSON valid */
    IS_STRING(DECODE("[01e999]"), "[01e999]");
    IS_STRING(DECODE("[1e999x]"), "[1e999x]");
    IS_STRING(DECODE("[\"\\ud800]"), "[\"\\ud800]");
}
END_TEST

/* The decoder reads plain values itself and leaves the rest to jansson: whichever path
 * a text takes, the result must be what json_loadb makes of it (same types, same
 * key order, the same refusal), and what it refuses stays a string. */
KSFT_TEST(test_codec_decode_fast_path_matches_jansson, 60)
{
    static const char *const texts[] = {
        "{\"hero\":\"bench\",\"n\":42}",
        "{}",
        "[]",
        "[ ] ",
        "{ \"a\" : [ 1 , -2 , 0 , -0 ] ,\n\"b\":{\"c\":{}},\r\"d\":\t[[]] }",
        "[true,false,null,\"\",\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"\":0,\"\xc3\xa9\":1}",
        "[123456789012345678,-123456789012345678]",
        "[1234567890123456789,-1234567890123456789]",
        "[9223372036854775807,-9223372036854775808]",
        "[1.5,-0.0,1e5,1E+5,2e-3,0.1]",
        "[\"a\\\"b\",\"\\n\",\"\\u00e9\",\"\\/\"]",
        "{\"k\\u0041\":1}",
        "[\"a\\u0000b\"]",
        "[\"tab\there\"]",
        "[\"nul\0here\"]",
        "{}x",
        "[1,]",
        "[,1]",
        "{\"a\"1}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{,}",
        "{1:2}",
        "[tru]",
        "[truex]",
        "[nul]",
        "[-]",
        "[01]",
        "[1.]",
        "[1-2]",
        "[\"unterminated]",
        "[1 2]",
        "{\"a\":1 \"b\":2}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t len = strlen(texts[i]);
        if (i == 16) {
            len = sizeof "[\"nul\0here\"]" - 1; /* the raw NUL is part of the text */
        }
        json_error_t jerr;
        json_t *want = json_loadb(texts[i], len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        json_t *got = decode(texts[i], len);
        if (!want) { /* jansson refuses: the text stays a string, byte for byte */
            ck_assert_msg(json_is_string(got), "text %zu: expected a string", i);
            ck_assert_uint_eq(json_string_length(got), len);
            ck_assert(!memcmp(json_string_value(got), texts[i], len));
            json_decref(got);
            continue;
        }
        ck_assert_msg(json_equal(got, want), "text %zu (%s): not what jansson reads", i,
                      texts[i]);
        char *a = ksfi_json_stringify(got, NULL), *b = ksfi_json_stringify(want, NULL);
        ck_assert_str_eq(a, b); /* the same key order too */
        ksfi_free(a);
        ksfi_free(b);
        json_decref(got);
        json_decref(want);
    }
    /* Types, not only values: an integer stays an integer, a real a real. */
    json_t *v = DECODE("[1,1.0,-0]");
    ck_assert(json_is_integer(json_array_get(v, 0)));
    ck_assert(json_is_real(json_array_get(v, 1)));
    ck_assert(json_is_integer(json_array_get(v, 2)));
    ck_assert_int_eq(json_integer_value(json_array_get(v, 2)), 0);
    json_decref(v);
}
END_TEST

/* Buffer#toString: one U+FFFD per maximal invalid subpart (WHATWG), as Node prints. */
KSFT_TEST(test_codec_decode_invalid_utf8, 30)
{
#define FFFD "\xef\xbf\xbd"
    IS_STRING(DECODE("a\xc3"), "a" FFFD);    /* truncated 2 */
    IS_STRING(DECODE("\xe2\x82"), FFFD);     /* truncated 3 */
    IS_STRING(DECODE("\xf0\x9d\x84"), FFFD); /* truncated 4 */
    IS_STRING(DECODE("\xf0\x9d\x84"
                     "A"),
              FFFD "A");                                        /* cut by ASCII */
    IS_STRING(DECODE("\xc0\xaf"), FFFD FFFD);                   /* overlong */
    IS_STRING(DECODE("\xe0\x80\xaf"), FFFD FFFD FFFD);          /* overlong 3 */
    IS_STRING(DECODE("\xf0\x80\x80\x80"), FFFD FFFD FFFD FFFD); /* overlong 4 */
    IS_STRING(DECODE("\xed\xa0\x80"), FFFD FFFD FFFD);          /* surrogate */
    IS_STRING(DECODE("\xf4\x90\x80\x80"), FFFD FFFD FFFD FFFD); /* > U+10FFFF */
    IS_STRING(DECODE("\xf5\xf8\xfc\xfe\xff"), FFFD FFFD FFFD FFFD FFFD);
    IS_STRING(DECODE("\x80\xbf"), FFFD FFFD); /* continuations */
    IS_STRING(DECODE("\xe0\xa0\x80\xf4\x8f\xbf\xbf"), "\xe0\xa0\x80\xf4\x8f\xbf\xbf");
    assert_json(DECODE("{\"a\":\"\xff\"}"), "{\"a\":\"" FFFD "\"}");
}
END_TEST

KSFT_TEST(test_codec_utf8_sanitize, 30)
{
    size_t n = 0;
    char *s = ksfi_utf8_sanitize("ok\0\xc3\xa9", 5, &n);
    ck_assert_uint_eq(n, 5);
    ck_assert(!memcmp(s, "ok\0\xc3\xa9", 6)); /* NUL kept, terminated */
    ksfi_free(s);
    s = ksfi_utf8_sanitize("\xe2\x82\x41\xed\xbf\xbf", 6, &n);
    ck_assert_str_eq(s, FFFD "A" FFFD FFFD FFFD);
    char *again = ksfi_utf8_sanitize(s, n, &n);
    ck_assert_str_eq(again, s); /* idempotent */
    ksfi_free(again);
    ksfi_free(s);
    s = ksfi_utf8_sanitize("", 0, &n);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(n, 0);
    ksfi_free(s);
}
END_TEST

/* ---- request headers (section 0 "Request headers", section 2.6) -------------------- */

KSFT_TEST(test_codec_request_headers_exact, 30)
{
    ksfi_header h[KSFI_PROTO_HEADERS_MAX];
    char pbuf[12];
    ck_assert_uint_eq(ksfi_request_headers("abc-1", "math.sum.reply", 0, pbuf, h), 3);
    ck_assert_str_eq(h[0].name, "kafka_correlationId");
    ck_assert_uint_eq(h[0].len, 5);
    ck_assert(!memcmp(h[0].value, "abc-1", 5));
    ck_assert_str_eq(h[1].name, "kafka_replyTopic");
    ck_assert_uint_eq(h[1].len, 14);
    ck_assert(!memcmp(h[1].value, "math.sum.reply", 14));
    ck_assert_str_eq(h[2].name, "kafka_replyPartition");
    ck_assert_uint_eq(h[2].len, 1); /* a decimal string, not a 4-byte int */
    ck_assert(!memcmp(h[2].value, "0", 1));
    ksfi_request_headers("x", "t.reply", 2147483647, pbuf, h);
    ck_assert_uint_eq(h[2].len, 10);
    ck_assert(!memcmp(h[2].value, "2147483647", 10));
    ksfi_request_headers("x", "t.reply", 17, pbuf, h);
    ck_assert(h[2].len == 2 && !memcmp(h[2].value, "17", 2));
}
END_TEST

KSFT_TEST(test_codec_request_headers_round_trip, 30)
{
    ksfi_header h[KSFI_PROTO_HEADERS_MAX];
    char pbuf[12], id[37];
    ksfi_new_correlation_id(id);
    ksfi_request_headers(id, "math.sum.reply", 3, pbuf, h);
    ksfi_request_meta m;
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_OK);
    ck_assert(m.is_request);
    ck_assert_uint_eq(m.correlation_id_len, 36);
    ck_assert(!memcmp(m.correlation_id, id, 36));
    ck_assert(m.reply_topic_len == 14 && !memcmp(m.reply_topic, "math.sum.reply", 14));
    ck_assert_int_eq(m.reply_partition, 3);
}
END_TEST

KSFT_TEST(test_codec_reply_partition_forms, 30)
{
    int32_t p = -5;
    ck_assert(ksfi_parse_reply_partition("0", 1, &p) && p == 0);
    ck_assert(ksfi_parse_reply_partition("42", 2, &p) && p == 42);
    ck_assert(ksfi_parse_reply_partition("2147483647", 10, &p) && p == INT32_MAX);
    ck_assert(ksfi_parse_reply_partition("\0\0\0\x07", 4, &p) && p == 7); /* Spring */
    ck_assert(ksfi_parse_reply_partition("\x7f\xff\xff\xff", 4, &p) && p == INT32_MAX);
    ck_assert(ksfi_parse_reply_partition("\0\0\x01\0", 4, &p) && p == 256);
    /* The rule for 4 bytes: all ASCII digits is NestJS's decimal text; anything else is
     * Spring's int. "1234" is partition 1234, not 0x31323334: a Spring int reads as
     * digits only from 0x30303030 (808464432) up, which no Kafka topic reaches, while
     * one below 2^24 starts with 0x00 and so is never taken for text. */
    ck_assert(ksfi_parse_reply_partition("1234", 4, &p) && p == 1234);
    ck_assert(ksfi_parse_reply_partition("\0\0\x04\xd2", 4, &p) && p == 1234);
    ck_assert(ksfi_parse_reply_partition("\0\0\0\x31", 4, &p) && p == 49); /* not "1" */
    ck_assert(ksfi_parse_reply_partition("\0\x31\x32\x33", 4, &p) && p == 0x313233);
    ck_assert(ksfi_parse_reply_partition("\x30\x30\x30\x30", 4, &p) && p == 0);
    p = -5;
    ck_assert(!ksfi_parse_reply_partition("\x80\0\0\0", 4, &p));
    ck_assert(!ksfi_parse_reply_partition("2147483648", 10, &p));
    ck_assert(!ksfi_parse_reply_partition("-1", 2, &p));
    ck_assert(!ksfi_parse_reply_partition("", 0, &p));
    ck_assert(!ksfi_parse_reply_partition(NULL, 0, &p));
    ck_assert(!ksfi_parse_reply_partition("1 ", 2, &p));
    ck_assert(!ksfi_parse_reply_partition("\0\0\0", 3, &p));
    ck_assert_int_eq(p, -5); /* untouched on failure */
}
END_TEST

/* client.wire.dialect "spring": what ReplyingKafkaTemplate writes, byte for byte. */
KSFT_TEST(test_codec_request_headers_spring, 30)
{
    static const unsigned char id_bytes[16] = {0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd,
                                               0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21,
                                               0x1c, 0x80, 0x31, 0x9c};
    ksfi_header h[KSFI_PROTO_HEADERS_MAX];
    unsigned char buf[KSFI_SPRING_HEADERS_BUF];
    ck_assert_uint_eq(ksfi_request_headers_spring("0af76519-16cd-43dd-8448-eb211c80319c",
                                                  "math.sum.reply", 2, buf, h),
                      3);
    ck_assert_str_eq(h[0].name, "kafka_correlationId");
    ck_assert_uint_eq(h[0].len, 16);
    ck_assert(!memcmp(h[0].value, id_bytes, 16));
    ck_assert_str_eq(h[1].name, "kafka_replyTopic");
    ck_assert(h[1].len == 14 && !memcmp(h[1].value, "math.sum.reply", 14));
    ck_assert_str_eq(h[2].name, "kafka_replyPartition");
    ck_assert(h[2].len == 4 && !memcmp(h[2].value, "\0\0\0\x02", 4));
    ksfi_request_headers_spring("0af76519-16cd-43dd-8448-eb211c80319c", "t.reply",
                                0x01020304, buf, h);
    ck_assert(h[2].len == 4 && !memcmp(h[2].value, "\x01\x02\x03\x04", 4));
    ksfi_request_headers_spring("0af76519-16cd-43dd-8448-eb211c80319c", "t.reply",
                                INT32_MAX, buf, h);
    ck_assert(!memcmp(h[2].value, "\x7f\xff\xff\xff", 4));

    /* The server side reads them back: 16 raw id bytes, partition 2. */
    ksfi_request_headers_spring("0af76519-16cd-43dd-8448-eb211c80319c", "math.sum.reply",
                                2, buf, h);
    ksfi_request_meta m;
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_OK);
    ck_assert(m.is_request);
    ck_assert(m.correlation_id_len == 16 && !memcmp(m.correlation_id, id_bytes, 16));
    ck_assert_int_eq(m.reply_partition, 2);

    /* The reply's 16 bytes map back to the text the in-flight table holds. */
    char text[37] = "untouched";
    ck_assert(ksfi_correlation_id_text(id_bytes, 16, text));
    ck_assert_str_eq(text, "0af76519-16cd-43dd-8448-eb211c80319c");
    char id[37];
    ksfi_idgen g;
    ksfi_idgen_init(&g);
    for (int i = 0; i < 3; i++) {
        ksfi_idgen_next(&g, id);
        ck_assert_uint_eq(ksfi_request_headers_spring(id, "t.reply", 0, buf, h), 3);
        ck_assert(ksfi_correlation_id_text(h[0].value, h[0].len, text));
        ck_assert_str_eq(text, id);
    }

    /* Not 16 bytes: not a Spring id; not a UUID: no headers. */
    strcpy(text, "untouched");
    ck_assert(!ksfi_correlation_id_text(id_bytes, 15, text));
    ck_assert(
        !ksfi_correlation_id_text("0af76519-16cd-43dd-8448-eb211c80319c", 36, text));
    ck_assert(!ksfi_correlation_id_text(NULL, 16, text));
    ck_assert_str_eq(text, "untouched");
    ck_assert_uint_eq(ksfi_request_headers_spring("abc-1", "t.reply", 0, buf, h), 0);
    ck_assert_uint_eq(ksfi_request_headers_spring("0af76519-16cd-43dd-8448-eb211c80319cx",
                                                  "t", 0, buf, h),
                      0);
    ck_assert_uint_eq(ksfi_request_headers_spring("0af76519x16cd-43dd-8448-eb211c80319c",
                                                  "t", 0, buf, h),
                      0);
}
END_TEST

KSFT_TEST(test_codec_request_headers_garbage, 30)
{
    ksfi_header h[] = {{KSFI_HDR_CORRELATION_ID, "id", 2},
                       {KSFI_HDR_REPLY_TOPIC, "r.reply", 7},
                       {KSFI_HDR_REPLY_PARTITION, "one", 3}};
    ksfi_request_meta m;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, &ei), KSF_EPROTO);
    ck_assert_int_eq(ei.code, KSF_EPROTO);
    ck_assert_str_eq(ei.text,
                     "header kafka_replyPartition \"one\" (3 bytes) is neither a "
                     "decimal partition number nor a 4-byte big-endian int; the "
                     "reply cannot be sent");
    h[2] = (ksfi_header){KSFI_HDR_REPLY_PARTITION, "1", 1};
    h[1] = (ksfi_header){KSFI_HDR_REPLY_TOPIC, "bad topic\x01", 10};
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, &ei), KSF_EPROTO);
    ck_assert_str_eq(ei.text, "header kafka_replyTopic \"bad topic\\x01\" is not a legal "
                              "Kafka topic name; the reply cannot be sent");
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_EPROTO);
}
END_TEST

/* The reply topic's check (a byte table in the codec) agrees with ksfi_check_topic,
 * the rule topics are created by, on every byte, on "." and "..", and on the length. */
KSFT_TEST(test_codec_request_reply_topic_rule, 30)
{
    char t[KSFI_TOPIC_MAX + 2];
    ksfi_header h[] = {{KSFI_HDR_CORRELATION_ID, "id", 2}, {KSFI_HDR_REPLY_TOPIC, t, 3}};
    ksfi_request_meta m;
    int legal = 0;
    for (int b = 0; b < 256; b++) {
        t[0] = 'a';
        t[1] = (char)b;
        t[2] = 'z';
        t[3] = '\0';
        ksf_err want =
            b && ksfi_check_topic(t, false, NULL) == KSF_OK ? KSF_OK : KSF_EPROTO;
        ck_assert_msg(ksfi_parse_request_headers(h, 2, &m, NULL) == want,
                      "byte 0x%02x: expected %s", b, ksf_strerror(want));
        legal += want == KSF_OK;
    }
    ck_assert_int_eq(legal, 26 + 26 + 10 + 3);
    const char *const dots[] = {".", "..", "...", ".a", "a."};
    const ksf_err want_dots[] = {KSF_EPROTO, KSF_EPROTO, KSF_OK, KSF_OK, KSF_OK};
    for (size_t i = 0; i < 5; i++) {
        h[1] = (ksfi_header){KSFI_HDR_REPLY_TOPIC, dots[i], strlen(dots[i])};
        ck_assert_int_eq(ksfi_parse_request_headers(h, 2, &m, NULL), want_dots[i]);
    }
    memset(t, 'x', sizeof t);
    h[1] = (ksfi_header){KSFI_HDR_REPLY_TOPIC, t, KSFI_TOPIC_MAX};
    ck_assert_int_eq(ksfi_parse_request_headers(h, 2, &m, NULL), KSF_OK);
    h[1].len = KSFI_TOPIC_MAX + 1;
    ck_assert_int_eq(ksfi_parse_request_headers(h, 2, &m, NULL), KSF_EPROTO);
    /* Names that only start like the protocol's are not read as them. */
    ksfi_header near[] = {{"kafka", "x", 1},
                          {"kafka_correlationI", "x", 1},
                          {"kafkacorrelationId", "x", 1},
                          {"k", "x", 1}};
    ck_assert_int_eq(ksfi_parse_request_headers(near, 4, &m, NULL), KSF_OK);
    ck_assert_ptr_null(m.correlation_id);
    ck_assert(!m.is_request);
}
END_TEST

KSFT_TEST(test_codec_request_last_occurrence_wins, 30)
{
    ksfi_header h[] = {{KSFI_HDR_REPLY_PARTITION, "1", 1},
                       {KSFI_HDR_CORRELATION_ID, "a", 1},
                       {KSFI_HDR_CORRELATION_ID, "b", 1},
                       {KSFI_HDR_REPLY_TOPIC, "t.reply", 7},
                       {KSFI_HDR_REPLY_PARTITION, "\0\0\0\x09", 4}};
    ksfi_request_meta m;
    ck_assert_int_eq(ksfi_parse_request_headers(h, 5, &m, NULL), KSF_OK);
    ck_assert(m.correlation_id_len == 1 && !memcmp(m.correlation_id, "b", 1));
    ck_assert_int_eq(m.reply_partition, 9);
    h[4].value = NULL; /* a null value cancels the earlier one */
    ck_assert_int_eq(ksfi_parse_request_headers(h, 5, &m, NULL), KSF_OK);
    ck_assert_int_eq(m.reply_partition, -1);
}
END_TEST

/* ---- events (section 0 "Events", section 4) ------------------------------------------
 */

KSFT_TEST(test_codec_event_rules, 30)
{
    ksfi_request_meta m;
    ksfi_header h[3] = {{KSFI_HDR_CORRELATION_ID, "id", 2},
                        {KSFI_HDR_REPLY_TOPIC, "t.reply", 7},
                        {KSFI_HDR_REPLY_PARTITION, "0", 1}};
    ck_assert_int_eq(ksfi_parse_request_headers(NULL, 0, &m, NULL), KSF_OK);
    ck_assert(!m.is_request);
    ck_assert_ptr_null(m.correlation_id);
    ck_assert_ptr_null(m.reply_topic);
    ck_assert_int_eq(m.reply_partition, -1);
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_OK);
    ck_assert(m.is_request);
    h[0].len = 0; /* empty id */
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_OK);
    ck_assert(!m.is_request);
    h[0] = (ksfi_header){KSFI_HDR_CORRELATION_ID, NULL, 0}; /* null id */
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_OK);
    ck_assert(!m.is_request);
    h[0] = (ksfi_header){KSFI_HDR_CORRELATION_ID, "id", 2};
    h[1].len = 0; /* empty reply topic */
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_OK);
    ck_assert(!m.is_request);
    ck_assert_int_eq(ksfi_parse_request_headers(h, 1, &m, NULL), KSF_OK); /* id only */
    ck_assert(!m.is_request);
    h[2].value = "junk"; /* an event's bad partition is never used */
    h[2].len = 4;
    ck_assert_int_eq(ksfi_parse_request_headers(h, 3, &m, NULL), KSF_OK);
}
END_TEST

/* ---- replies (section 0 "Reply", "Typical single reply", "Error reply") -------------
 */

KSFT_TEST(test_codec_reply_headers_order, 30)
{
    ksfi_header h[KSFI_PROTO_HEADERS_MAX];
    const char *err = "{\"status\":\"error\",\"message\":\"bad\"}";
    ck_assert_uint_eq(ksfi_reply_headers("id-1", 4, err, strlen(err), true, h), 3);
    ck_assert_str_eq(h[0].name, "kafka_correlationId");
    ck_assert(h[0].len == 4 && !memcmp(h[0].value, "id-1", 4));
    ck_assert_str_eq(h[1].name, "kafka_nest-err");
    ck_assert(h[1].len == strlen(err) && !memcmp(h[1].value, err, h[1].len));
    ck_assert_str_eq(h[2].name, "kafka_nest-is-disposed");
    ck_assert_uint_eq(h[2].len, 1);
    ck_assert_int_eq(((const unsigned char *)h[2].value)[0], 0x00);
    /* the typical single reply: id + disposed */
    ck_assert_uint_eq(ksfi_reply_headers("\xff\0z", 3, NULL, 0, true, h), 2);
    ck_assert(h[0].len == 3 && !memcmp(h[0].value, "\xff\0z", 3)); /* echoed as bytes */
    ck_assert_str_eq(h[1].name, "kafka_nest-is-disposed");
    /* a streamed value: id only; the no-handler error: id + err, no disposed */
    ck_assert_uint_eq(ksfi_reply_headers("i", 1, NULL, 0, false, h), 1);
    ck_assert_uint_eq(ksfi_reply_headers("i", 1, KSFI_NO_MESSAGE_HANDLER,
                                         strlen(KSFI_NO_MESSAGE_HANDLER), false, h),
                      2);
    ck_assert_str_eq(h[1].name, "kafka_nest-err");
}
END_TEST

KSFT_TEST(test_codec_reply_parse, 30)
{
    ksfi_reply_meta m;
    ksfi_header h[3] = {{KSFI_HDR_CORRELATION_ID, "id", 2},
                        {KSFI_HDR_NEST_IS_DISPOSED, "\0", 1},
                        {KSFI_HDR_NEST_ERR, "boom", 4}};
    ksfi_parse_reply_headers(h, 2, &m);
    ck_assert(m.correlation_id_len == 2 && !memcmp(m.correlation_id, "id", 2));
    ck_assert(m.is_disposed && !m.has_err && !m.drop_value);
    ksfi_parse_reply_headers(h, 1, &m); /* a stream value */
    ck_assert(!m.is_disposed && !m.has_err);
    ksfi_parse_reply_headers(h, 3, &m);
    ck_assert(m.has_err && m.is_disposed && m.drop_value);
    ck_assert(m.err_len == 4 && !memcmp(m.err, "boom", 4));
    h[1] = h[2]; /* err without disposed still ends the call */
    ksfi_parse_reply_headers(h, 2, &m);
    ck_assert(m.has_err && m.is_disposed);
    h[1].len = 0; /* "" is falsy in JS: completion without value */
    ksfi_parse_reply_headers(h, 2, &m);
    ck_assert(!m.has_err && m.is_disposed && m.drop_value);
    ksfi_parse_reply_headers(h + 1, 1, &m); /* no id: not a reply */
    ck_assert_ptr_null(m.correlation_id);
}
END_TEST

static void
assert_error_text(json_t *err, const char *want)
{
    ck_assert_ptr_nonnull(err);
    size_t n = 0;
    char *s = ksfi_encode_error(err, &n);
    ck_assert_str_eq(s, want);
    ck_assert_uint_eq(n, strlen(want));
    ksfi_free(s);
    json_decref(err);
}

KSFT_TEST(test_codec_error_shapes, 30)
{
    /* RpcException('bad') */
    assert_error_text(ksfi_error_shape("bad"),
                      "{\"status\":\"error\",\"message\":\"bad\"}");
    assert_error_text(ksfi_error_shape(KSFI_INTERNAL_SERVER_ERROR),
                      "{\"status\":\"error\",\"message\":\"Internal server error\"}");
    assert_error_text(ksfi_error_shape("Forbidden resource"),
                      "{\"status\":\"error\",\"message\":\"Forbidden resource\"}");
    assert_error_text(ksfi_error_shape("q\"\n"),
                      "{\"status\":\"error\",\"message\":\"q\\\"\\n\"}");
    /* RpcException({code: 42, message: 'x'}) sends the object as it is */
    json_t *obj = parse("{\"code\":42,\"message\":\"x\"}");
    assert_error_text(ksfi_error_from_json(obj), "{\"code\":42,\"message\":\"x\"}");
    json_decref(obj);
    json_t *arr = parse("[1]");
    assert_error_text(ksfi_error_from_json(arr), "[1]");
    json_decref(arr);
    /* anything else is wrapped */
    json_t *str = json_string("nope");
    assert_error_text(ksfi_error_from_json(str),
                      "{\"status\":\"error\",\"message\":\"nope\"}");
    json_decref(str);
    json_t *num = json_integer(42);
    assert_error_text(ksfi_error_from_json(num), "{\"status\":\"error\",\"message\":42}");
    json_decref(num);
    assert_error_text(ksfi_error_from_json(NULL),
                      "{\"status\":\"error\",\"message\":null}");
    /* kafka_nest-err: a string error is sent raw */
    assert_error_text(
        json_string(KSFI_NO_MESSAGE_HANDLER),
        "There is no matching message handler defined in the remote service.");
}
END_TEST

KSFT_TEST(test_codec_wire_names, 30)
{
    ck_assert_str_eq(
        KSFI_NO_MESSAGE_HANDLER,
        "There is no matching message handler defined in the remote service.");
    ck_assert_str_eq(KSFI_NO_EVENT_HANDLER,
                     "There is no matching event handler defined in the remote service.");
    ck_assert_str_eq(KSFI_HDR_NEST_ERR, "kafka_nest-err");
    ck_assert_str_eq(KSFI_HDR_NEST_IS_DISPOSED, "kafka_nest-is-disposed");
    ck_assert_str_eq(KSFI_HDR_CORRELATION_ID, "kafka_correlationId");
    ck_assert_str_eq(KSFI_HDR_REPLY_TOPIC, "kafka_replyTopic");
    ck_assert_str_eq(KSFI_HDR_REPLY_PARTITION, "kafka_replyPartition");
}
END_TEST

/* ---- correlation ids and topics ------------------------------------------------------
 */

static int
cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 37);
}

KSFT_TEST(test_codec_correlation_ids, 30)
{
    /* What the clients use: several generators (one per client) interleaved, plus
     * libuuid's own ids; every one well-formed and all of them distinct. */
    enum { N = 100000, GENS = 4 };
    ksfi_idgen gens[GENS];
    for (int g = 0; g < GENS; g++) {
        ksfi_idgen_init(&gens[g]);
    }
    char(*ids)[37] = malloc(sizeof(*ids) * N);
    ck_assert_ptr_nonnull(ids);
    for (int i = 0; i < N; i++) {
        if (i % (GENS + 1) == GENS) {
            ksfi_new_correlation_id(ids[i]);
        } else {
            ksfi_idgen_next(&gens[i % (GENS + 1)], ids[i]);
        }
        ck_assert_uint_eq(strlen(ids[i]), 36);
        ck_assert_uint_eq(strspn(ids[i], "0123456789abcdef-"), 36);
        ck_assert(ids[i][8] == '-' && ids[i][13] == '-' && ids[i][18] == '-' &&
                  ids[i][23] == '-');
        ck_assert_int_eq(ids[i][14], '4'); /* version 4: random */
    }
    qsort(ids, N, sizeof ids[0], cmp_id);
    for (int i = 1; i < N; i++) {
        ck_assert_msg(memcmp(ids[i - 1], ids[i], 37), "duplicate id %s", ids[i]);
    }
    free(ids);
    /* The counter wraps within its 48 bits and never touches the fixed part. */
    char a[37], b[37];
    gens[0].next = 0xffffffffffffULL;
    ksfi_idgen_next(&gens[0], a);
    ksfi_idgen_next(&gens[0], b);
    ck_assert_str_eq(a + 24, "ffffffffffff");
    ck_assert_str_eq(b + 24, "000000000000");
    ck_assert(!memcmp(a, b, 24) && !memcmp(a, gens[0].prefix, 24));
    /* an id never starts with '{' or '[' so NestJS echoes it unparsed */
    json_t *v = decode("0f0e", 4);
    ck_assert(json_is_string(v));
    json_decref(v);
}
END_TEST

KSFT_TEST(test_codec_topics, 30)
{
    ksf_errinfo ei = {0};
    char *r = ksfi_reply_topic_of("math.sum");
    ck_assert_str_eq(r, "math.sum.reply");
    ksfi_free(r);
    ck_assert_int_eq(ksfi_check_topic("math.sum", true, NULL), KSF_OK);
    ck_assert_int_eq(ksfi_check_topic("A-z_0.9", false, NULL), KSF_OK);
    ck_assert_int_eq(ksfi_check_topic("", false, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "pattern is empty; a Kafka pattern is a topic name such as "
                              "\"hero.kill.dragon\"");
    ck_assert_int_eq(ksfi_check_topic(NULL, false, NULL), KSF_EINVAL);
    ck_assert_int_eq(ksfi_check_topic(".", false, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "pattern \".\" is not a legal Kafka topic name");
    ck_assert_int_eq(ksfi_check_topic("..", false, NULL), KSF_EINVAL);
    /* an object pattern's route string is not a topic (section 1) */
    ck_assert_int_eq(ksfi_check_topic("{\"cmd\":\"sum\"}", false, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text,
                     "pattern \"{\"cmd\":\"sum\"}\" has character '{' (byte 0x7b) "
                     "at 0; Kafka topic names allow only A-Z a-z 0-9 . _ -");
    ck_assert_int_eq(ksfi_check_topic("a\tb", false, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "'?' (byte 0x09) at 1"));
    char name[251];
    memset(name, 'x', sizeof name - 1);
    name[249] = '\0';
    ck_assert_int_eq(ksfi_check_topic(name, false, NULL), KSF_OK);
    ck_assert_int_eq(ksfi_check_topic(name, true, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text,
                                 "is 249 characters; at most 243 fit a Kafka topic "
                                 "with its \".reply\" suffix"));
    name[243] = '\0';
    ck_assert_int_eq(ksfi_check_topic(name, true, NULL), KSF_OK);
    name[243] = 'x';
    name[249] = 'x';
    name[250] = '\0';
    ck_assert_int_eq(ksfi_check_topic(name, false, NULL), KSF_EINVAL);
    /* One scan finds the length and the first bad byte: the length still counts the
     * bytes past a bad one, a name too long says so before naming its bad byte, and
     * a bad last byte or a high byte is placed exactly. */
    name[10] = ' ';
    ck_assert_int_eq(ksfi_check_topic(name, false, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "is 250 characters; at most 249 fit"));
    name[100] = '\0';
    ck_assert_int_eq(ksfi_check_topic(name, false, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "has character ' ' (byte 0x20) at 10;"));
    ck_assert_int_eq(ksfi_check_topic("abc\xff", false, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "'?' (byte 0xff) at 3;"));
    ck_assert_int_eq(ksfi_check_topic("ab.", false, &ei), KSF_OK);
    ck_assert_int_eq(ksfi_check_topic("..a", false, &ei), KSF_OK);
}
END_TEST

/* ---- allocation failures
 * ---------------------------------------------------------------- */

KSFT_TEST(test_codec_alloc_failures, 30)
{
    json_t *v = parse("{\"b\":[1,2.5,\"x\"],\"1\":{\"2\":null},\"c\":\"\\u0001\"}");
    for (unsigned long nth = 1; nth < 64; nth++) {
        char *out = NULL;
        size_t len = 0;
        ksfi_alloc_fail_after(nth, 0);
        ksf_err e = ksfi_encode_value(v, &out, &len, NULL);
        unsigned long used = ksfi_alloc_count();
        ksfi_alloc_fail_after(0, 0);
        ck_assert(e == KSF_OK || e == KSF_ENOMEM);
        ck_assert(e == KSF_OK ? out != NULL : out == NULL);
        ksfi_free(out);
        if (nth > used) {
            break;
        }
    }
    /* Into a kept buffer: after ENOMEM the buffer is still the caller's (freed once,
     * here: valgrind and ASan see a double free or a leak otherwise). */
    size_t want_len = 0;
    char *want = NULL;
    ck_assert_int_eq(ksfi_encode_value(v, &want, &want_len, NULL), KSF_OK);
    for (unsigned long nth = 1; nth < 64; nth++) {
        char *buf = NULL;
        size_t cap = 0, len = 0;
        const void *out = NULL;
        ksfi_alloc_fail_after(nth, 0);
        ksf_err e = ksfi_encode_value_in(v, &buf, &cap, &out, &len, NULL);
        unsigned long used = ksfi_alloc_count();
        ksfi_alloc_fail_after(0, 0);
        ck_assert(e == KSF_OK || e == KSF_ENOMEM);
        ck_assert(e == KSF_OK ? out == buf && len == want_len && !memcmp(out, want, len)
                              : out == NULL);
        ksfi_free(buf);
        if (nth > used) {
            break;
        }
    }
    /* Into a stack buffer too small for it: after ENOMEM *heap is NULL or the caller's
     * to free. */
    for (unsigned long nth = 1; nth < 64; nth++) {
        char stack[4];
        char *heap = NULL;
        size_t len = 0;
        const void *out = NULL;
        ksfi_alloc_fail_after(nth, 0);
        ksf_err e =
            ksfi_encode_value_stack(v, stack, sizeof stack, &heap, &out, &len, NULL);
        unsigned long used = ksfi_alloc_count();
        ksfi_alloc_fail_after(0, 0);
        ck_assert(e == KSF_OK || e == KSF_ENOMEM);
        ck_assert(e == KSF_OK ? out == heap && len == want_len && !memcmp(out, want, len)
                              : out == NULL);
        ksfi_free(heap);
        if (nth > used) {
            break;
        }
    }
    ksfi_free(want);
    json_decref(v);
    static const char *inputs[] = {"[1e999,\"\\ud800\",123456789012345678901]", "\xff{",
                                   "{\"a\":1}"};
    for (size_t i = 0; i < 3; i++) {
        for (unsigned long nth = 1; nth < 64; nth++) {
            ksfi_alloc_fail_after(nth, 0);
            json_t *d = (json_t *)0x1;
            ksf_err e = ksfi_decode_value(inputs[i], strlen(inputs[i]), &d);
            unsigned long used = ksfi_alloc_count();
            ksfi_alloc_fail_after(0, 0);
            ck_assert(e == KSF_OK ? d != NULL : (e == KSF_ENOMEM && d == NULL));
            json_decref(d);
            if (nth > used) {
                ck_assert_int_eq(e, KSF_OK);
                break;
            }
        }
    }
}
END_TEST

int
main(int argc, char **argv)
{
    if (argc > 1) {
        data_dir = argv[1];
    }
    return ksft_main("codec");
}
