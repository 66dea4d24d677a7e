/* SPDX-License-Identifier: MIT */
/*
 * JSON to msgpack with jansson. Integers stay integers (int64), reals stay
 * doubles, objects become maps with string keys. Called where JSON enters a
 * run, never per item.
 */
#include "core/value.h"

#include <ctype.h>
#include <jansson.h>
#include <string.h>

#include "core/error.h"

static int pack_json(msgpack_packer *pk, const json_t *j);

static int pack_array(msgpack_packer *pk, const json_t *j)
{
    size_t n = json_array_size(j);
    int rc = msgpack_pack_array(pk, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = pack_json(pk, json_array_get(j, i));
    return rc;
}

static int pack_map(msgpack_packer *pk, const json_t *j)
{
    int rc = msgpack_pack_map(pk, json_object_size(j));
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)j, key, klen, v)
    {
        if (rc == 0)
            rc = msgpack_pack_str_with_body(pk, key, klen);
        if (rc == 0)
            rc = pack_json(pk, v);
    }
    return rc;
}

static int pack_json(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return pack_map(pk, j);
    case JSON_ARRAY: return pack_array(pk, j);
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(j),
                                          json_string_length(j));
    case JSON_INTEGER: return msgpack_pack_int64(pk, json_integer_value(j));
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(j));
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_NULL: return msgpack_pack_nil(pk);
    }
    return -1;
}

static json_t *load(const char *json, char **err)
{
    json_error_t e;
    json_t *j = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (j == NULL && err != NULL)
        *err = zp__strdupf("invalid JSON at line %d, column %d: %s", e.line,
                           e.column, e.text);
    return j;
}

int zp__json_pack(const char *json, msgpack_packer *pk, char **err)
{
    json_t *j = load(json, err);
    if (j == NULL)
        return ZP_EINVAL;
    int rc = pack_json(pk, j) == 0 ? 0 : ZP_ENOMEM;
    json_decref(j);
    return rc;
}

static bool blank(const char *s)
{
    while (*s != '\0' && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

int zp__json_pack_args(const char *json, msgpack_packer *pk, char **err)
{
    if (json == NULL || blank(json))
        return msgpack_pack_array(pk, 0) == 0 ? 0 : ZP_ENOMEM;
    json_t *j = load(json, err);
    if (j == NULL)
        return ZP_EINVAL;
    int rc = 0;
    if (!json_is_array(j))
        rc = msgpack_pack_array(pk, 1);
    if (rc == 0)
        rc = pack_json(pk, j);
    json_decref(j);
    return rc == 0 ? 0 : ZP_ENOMEM;
}

int zp__json_to_object(const char *json, msgpack_zone *zone,
                       msgpack_object *out, char **err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = zp__json_pack(json, &pk, err);
    if (rc != 0)
        goto out_free_buf;
    /* The unpacked object points into its buffer: keep the bytes in the
     * zone so that the object lives exactly as long as the zone. */
    char *bytes = msgpack_zone_malloc(zone, sb.size);
    size_t off = 0;
    if (bytes == NULL) {
        rc = ZP_ENOMEM;
        goto out_free_buf;
    }
    memcpy(bytes, sb.data, sb.size);
    if (msgpack_unpack(bytes, sb.size, &off, zone, out) !=
        MSGPACK_UNPACK_SUCCESS)
        rc = ZP_ENOMEM;
out_free_buf:
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
