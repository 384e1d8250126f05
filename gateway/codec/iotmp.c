/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IOTMP frames (gw/iotmp.h): the body parser, the frame writer and the incremental stream reader.
 * Used by the uplink session, the test broker and the test device. No allocation, no I/O: the
 * reader asks its caller for a buffer when a body must be kept across chunks. The decisions this
 * follows (field order, unknown wire types, limits) are PROTOCOL.md section 14.
 */
#include "gw/iotmp.h"
#include "gw/error.h"

#include <string.h>

const char *gw_iotmp_type_name(uint64_t type)
{
    static const char *const names[] = {"RESERVED",   "OK",   "ERROR",    "CONNECT",
                                        "DISCONNECT", "KEEP_ALIVE", "RUN", "DESCRIBE",
                                        "START_STREAM", "STOP_STREAM", "STREAM_DATA"};
    return type < sizeof names / sizeof names[0] ? names[type] : "UNKNOWN";
}

/* --- Body parser --- */

int gw_iotmp_parse(struct gw_iotmp_frame *f, uint64_t type, const void *body, size_t len)
{
    const uint8_t *p = body, *end = p + len;
    f->type = type;
    f->body = body;
    f->body_len = len;
    f->present = 0;
    while (p < end) {
        uint64_t key;
        int n = gw_varint_decode(p, (size_t)(end - p), &key);
        if (n < 0)
            return n;
        p += n;
        uint64_t id = key >> 3;
        unsigned wire = key & 7;
        struct gw_iotmp_field fld = {.wire = (uint8_t)wire};
        if (wire == GW_IOTMP_WIRE_VARINT) {
            n = gw_varint_decode(p, (size_t)(end - p), &fld.u);
            if (n < 0)
                return n;
            p += n;
        } else if (wire == GW_IOTMP_WIRE_PSON) {
            size_t vlen;
            int rc = gw_pson_value_len(p, (size_t)(end - p), &vlen);
            if (rc < 0)
                return rc;
            fld.p = p;
            fld.len = vlen;
            p += vlen;
        } else {
            /* PSON v1 and the reserved types cannot be delimited here: stop with what we have.
             * The header gave the body size, so the next frame is still found. */
            return GW_EWIRE;
        }
        if (id == 0)
            return GW_EFIELD;
        if (id <= GW_IOTMP_FIELD_MAX) { /* unknown ids are skipped (never aliased) */
            f->field[id] = fld;
            f->present |= 1u << id;
        }
    }
    return 0;
}

int gw_iotmp_get_uint(const struct gw_iotmp_frame *f, unsigned id, uint64_t *u)
{
    if (!gw_iotmp_has(f, id))
        return GW_ENOENT;
    const struct gw_iotmp_field *fld = &f->field[id];
    if (fld->wire == GW_IOTMP_WIRE_VARINT) {
        *u = fld->u;
        return 0;
    }
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, fld->p, fld->len);
    int rc = gw_pson_next(&r, &it);
    if (rc < 0)
        return rc;
    rc = gw_pson_item_to_uint64(&it, u);
    return rc == GW_ERANGE ? GW_EPSON_TYPE : rc;
}

int gw_iotmp_get_stream_id(const struct gw_iotmp_frame *f, uint16_t *sid)
{
    uint64_t u;
    int rc = gw_iotmp_get_uint(f, GW_IOTMP_STREAM_ID, &u);
    if (rc == GW_ENOENT) {
        *sid = 0;
        return 0;
    }
    if (rc < 0)
        return rc;
    if (u > 0xffff)
        return GW_ERANGE;
    *sid = (uint16_t)u;
    return 0;
}

int gw_iotmp_field_reader(const struct gw_iotmp_frame *f, unsigned id, struct gw_pson_reader *r,
                          uint8_t scratch[GW_VARINT_MAX + 1])
{
    if (!gw_iotmp_has(f, id))
        return GW_ENOENT;
    const struct gw_iotmp_field *fld = &f->field[id];
    if (fld->wire == GW_IOTMP_WIRE_PSON) {
        gw_pson_reader_init(r, fld->p, fld->len);
        return 0;
    }
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, scratch, GW_VARINT_MAX + 1);
    gw_pson_put_uint(&w, fld->u);
    gw_pson_reader_init(r, scratch, w.len);
    return 0;
}

/* --- Writer --- */

void gw_iotmp_writer_init(struct gw_iotmp_writer *w, void *buf, size_t cap, uint64_t type)
{
    w->buf = buf;
    w->cap = cap;
    w->type = type;
    w->last_field = 0;
    w->err = 0;
    if (!buf || cap < GW_IOTMP_HEADROOM) {
        w->err = GW_ENOBUFS;
        gw_pson_writer_init(&w->body, NULL, 0);
    } else {
        gw_pson_writer_init(&w->body, w->buf + GW_IOTMP_HEADROOM, cap - GW_IOTMP_HEADROOM);
    }
}

static void put_key(struct gw_iotmp_writer *w, unsigned id, unsigned wire)
{
    if (id <= w->last_field || id == 0)
        w->err = w->err ? w->err : GW_EFIELD;
    w->last_field = id;
    uint8_t tmp[GW_VARINT_MAX];
    /* A varint key, so that ids above 15 are encoded correctly (the references cannot). */
    size_t n = gw_varint_encode((uint64_t)id << 3 | wire, tmp);
    gw_pson_put_raw(&w->body, tmp, n);
}

void gw_iotmp_put_varint(struct gw_iotmp_writer *w, unsigned id, uint64_t v)
{
    put_key(w, id, GW_IOTMP_WIRE_VARINT);
    uint8_t tmp[GW_VARINT_MAX];
    gw_pson_put_raw(&w->body, tmp, gw_varint_encode(v, tmp));
}

struct gw_pson_writer *gw_iotmp_put_pson(struct gw_iotmp_writer *w, unsigned id)
{
    put_key(w, id, GW_IOTMP_WIRE_PSON);
    return &w->body;
}

int gw_iotmp_finish(struct gw_iotmp_writer *w, const uint8_t **frame, size_t *len)
{
    size_t body = w->body.len;
    size_t hlen = gw_varint_size(w->type) + gw_varint_size(body);
    *len = hlen + body;
    if (w->err == GW_EFIELD)
        return GW_EFIELD;
    if (w->err || !gw_pson_writer_ok(&w->body)) {
        *len += GW_IOTMP_HEADROOM - hlen; /* the size of buffer that would have fitted */
        return GW_ENOBUFS;
    }
    /* hlen <= 2 * GW_VARINT_MAX would not fit the headroom only for a type >= 2^42. */
    if (hlen > GW_IOTMP_HEADROOM)
        return GW_EINVAL;
    uint8_t *start = w->buf + GW_IOTMP_HEADROOM - hlen;
    size_t n = gw_varint_encode(w->type, start);
    gw_varint_encode(body, start + n);
    *frame = start;
    return 0;
}

/* --- Incremental reader --- */

void gw_iotmp_reader_init(struct gw_iotmp_reader *r, void *buf, size_t cap, size_t max_body)
{
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->cap = buf ? cap : 0;
    r->max_body = max_body;
}

void gw_iotmp_reader_set_buffer(struct gw_iotmp_reader *r, void *buf, size_t cap)
{
    /* Only called between frames or right after GW_ENOBUFS, when nothing is buffered. */
    r->buf = buf;
    r->cap = buf ? cap : 0;
}

/*
 * Tries to complete the header from r->hdr. Returns 1 when both varints are there (setting
 * type and body_len), 0 when more bytes are needed, or an error.
 */
static int parse_header(struct gw_iotmp_reader *r)
{
    uint64_t type, size;
    int n = gw_varint_decode(r->hdr, r->hdr_len, &type);
    if (n == GW_ETRUNC)
        return 0;
    if (n < 0)
        return n;
    int m = gw_varint_decode(r->hdr + n, r->hdr_len - (size_t)n, &size);
    if (m == GW_ETRUNC)
        return 0;
    if (m < 0)
        return m;
    if (size > r->max_body)
        return GW_EFRAME_SIZE;
    r->type = type;
    r->body_len = (size_t)size;
    return 1;
}

int gw_iotmp_feed(struct gw_iotmp_reader *r, const void *data, size_t len, size_t *used,
                  uint64_t *type, const uint8_t **body, size_t *body_len)
{
    const uint8_t *p = data;
    size_t off = 0;
    *used = 0;

    while (!r->in_body) {
        if (off == len) {
            *used = off;
            return 0;
        }
        /* Byte by byte: the header is at most 20 bytes and this only runs once per frame. */
        r->hdr[r->hdr_len++] = p[off++];
        int rc = parse_header(r);
        if (rc < 0) {
            *used = off;
            return rc;
        }
        if (rc == 0) {
            if (r->hdr_len == sizeof r->hdr) {
                *used = off;
                return GW_EVARINT;
            }
            continue;
        }
        r->in_body = true;
        r->have = 0;
    }

    size_t avail = len - off;
    if (r->have == 0 && avail >= r->body_len) {
        /* Zero copy: the whole body is in this chunk. */
        *type = r->type;
        *body = p + off;
        *body_len = r->body_len;
        *used = off + r->body_len;
        r->in_body = false;
        r->hdr_len = 0;
        return 1;
    }
    if (r->body_len > r->cap) {
        *used = off;
        return GW_ENOBUFS;
    }
    size_t take = r->body_len - r->have;
    if (take > avail)
        take = avail;
    if (take)
        memcpy(r->buf + r->have, p + off, take);
    r->have += take;
    off += take;
    *used = off;
    if (r->have < r->body_len)
        return 0;
    *type = r->type;
    *body = r->buf;
    *body_len = r->body_len;
    r->in_body = false;
    r->hdr_len = 0;
    return 1;
}
