/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the incremental IOTMP frame reader and the body parser. The first input byte picks
 * a chunk size (1..64) and a buffer policy, the rest is the byte stream. Every frame found is
 * parsed, its fields read as the session would, and frames that parse are re-encoded and parsed
 * again to the same fields. The reader must never report a frame larger than its limit.
 */
#include "gw/error.h"
#include "gw/iotmp.h"
#include "gw/value.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BODY 4096

static void use_field(const struct gw_iotmp_frame *f, unsigned id)
{
    struct gw_pson_reader r;
    uint8_t scratch[GW_VARINT_MAX + 1];
    if (gw_iotmp_field_reader(f, id, &r, scratch) < 0)
        return;
    struct gw_pson_item it;
    /* A field that parsed was validated whole: reading it must not fail. */
    int rc;
    while ((rc = gw_pson_next(&r, &it)) == 0)
        ;
    if (rc != GW_EPSON_END)
        abort();
}

static void check_frame(uint64_t type, const uint8_t *body, size_t len)
{
    if (len > MAX_BODY)
        abort();
    struct gw_iotmp_frame f;
    if (gw_iotmp_parse(&f, type, body, len) != 0)
        return;
    uint16_t sid;
    (void)gw_iotmp_get_stream_id(&f, &sid);
    for (unsigned id = 1; id <= GW_IOTMP_FIELD_MAX; id++)
        use_field(&f, id);

    /* Re-encode the known fields in ascending order and parse again. */
    static uint8_t out[MAX_BODY + 64];
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, out, sizeof out, type);
    for (unsigned id = 1; id <= GW_IOTMP_FIELD_MAX; id++) {
        if (!gw_iotmp_has(&f, id))
            continue;
        if (f.field[id].wire == GW_IOTMP_WIRE_VARINT)
            gw_iotmp_put_varint(&w, id, f.field[id].u);
        else
            gw_pson_put_raw(gw_iotmp_put_pson(&w, id), f.field[id].p, f.field[id].len);
    }
    const uint8_t *frame;
    size_t flen;
    if (type > UINT32_MAX)
        return;
    if (gw_iotmp_finish(&w, &frame, &flen) != 0)
        return; /* larger than the output buffer (varint keys re-encoded shorter never grow) */
    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, NULL, 0, sizeof out);
    uint64_t t2;
    const uint8_t *b2;
    size_t l2, used;
    if (gw_iotmp_feed(&r, frame, flen, &used, &t2, &b2, &l2) != 1 || used != flen || t2 != type)
        abort();
    struct gw_iotmp_frame g;
    if (gw_iotmp_parse(&g, t2, b2, l2) != 0 || g.present != f.present)
        abort();
    for (unsigned id = 1; id <= GW_IOTMP_FIELD_MAX; id++) {
        if (!gw_iotmp_has(&f, id))
            continue;
        if (g.field[id].wire != f.field[id].wire || g.field[id].u != f.field[id].u ||
            g.field[id].len != f.field[id].len ||
            (f.field[id].len && memcmp(g.field[id].p, f.field[id].p, f.field[id].len) != 0))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (data[0] & 63) + 1;
    bool lazy_buffer = data[0] & 64; /* start without a buffer and give one on GW_ENOBUFS */
    data++;
    size--;

    static uint8_t buf[MAX_BODY];
    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, lazy_buffer ? NULL : buf, lazy_buffer ? 0 : sizeof buf, MAX_BODY);
    size_t pos = 0;
    while (pos < size) {
        size_t end = pos + chunk < size ? pos + chunk : size;
        while (pos < end) {
            uint64_t type;
            const uint8_t *body;
            size_t body_len, used;
            int rc = gw_iotmp_feed(&r, data + pos, end - pos, &used, &type, &body, &body_len);
            if (used > end - pos)
                abort();
            pos += used;
            if (rc == GW_ENOBUFS) {
                if (gw_iotmp_reader_need(&r) > sizeof buf)
                    abort();
                gw_iotmp_reader_set_buffer(&r, buf, sizeof buf);
                continue;
            }
            if (rc < 0)
                return 0; /* stream unusable: the session closes the connection */
            if (rc == 1)
                check_frame(type, body, body_len);
            else if (used == 0 && pos < end)
                abort(); /* no progress */
        }
    }
    return 0;
}
