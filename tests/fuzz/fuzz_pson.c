/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the PSON v2 decoder. Any input is decoded into a value tree; whatever decodes must
 * re-encode and decode again to an equal value (decode → encode → decode), and the pull reader's
 * delimiting must agree with the tree decoder on how many bytes the value took.
 */
#include "gw/error.h"
#include "gw/value.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_value v, again;
    int n = gw_value_decode(data, size, &v);
    size_t vlen;
    int lrc = gw_pson_value_len(data, size, &vlen);
    if (n < 0) {
        if (lrc == 0)
            abort(); /* the tree decoder refused what the delimiter accepted */
        return 0;
    }
    if (lrc != 0 || vlen != (size_t)n)
        abort();

    struct gw_pson_writer w;
    gw_pson_writer_init(&w, NULL, 0);
    gw_value_encode(&v, &w);
    uint8_t *buf = malloc(w.len);
    gw_pson_writer_init(&w, buf, w.len);
    gw_value_encode(&v, &w);
    if (!gw_pson_writer_ok(&w))
        abort();
    int m = gw_value_decode(buf, w.len, &again);
    if (m != (int)w.len || !gw_value_equal(&v, &again))
        abort();
    gw_value_fini(&again);
    gw_value_fini(&v);
    free(buf);
    return 0;
}
