/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IOTMP framing (../shared/iotmp/PROTOCOL.md sections 3, 4 and 14): a frame encoder that writes
 * fields in ascending id (our output equals the "hex" conformance vectors byte for byte), a body
 * parser that accepts fields in any order, and an incremental reader that finds frames in a byte
 * stream delivered in arbitrary chunks. No allocation, no I/O.
 */
#ifndef GW_IOTMP_H
#define GW_IOTMP_H

#include "gw/pson.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_iotmp_type {
    GW_IOTMP_OK = 0x01,
    GW_IOTMP_ERROR = 0x02,
    GW_IOTMP_CONNECT = 0x03,
    GW_IOTMP_DISCONNECT = 0x04,
    GW_IOTMP_KEEP_ALIVE = 0x05,
    GW_IOTMP_RUN = 0x06,
    GW_IOTMP_DESCRIBE = 0x07,
    GW_IOTMP_START_STREAM = 0x08,
    GW_IOTMP_STOP_STREAM = 0x09,
    GW_IOTMP_STREAM_DATA = 0x0A,
};

enum gw_iotmp_field_id {
    GW_IOTMP_STREAM_ID = 1,
    GW_IOTMP_PARAMETERS = 2,
    GW_IOTMP_PAYLOAD = 3,
    GW_IOTMP_RESOURCE = 4,
    GW_IOTMP_FIELD_MAX = 4,
};

enum gw_iotmp_wire {
    GW_IOTMP_WIRE_VARINT = 0,
    GW_IOTMP_WIRE_PSON1 = 1, /* legacy PSON v1: never emitted, treated as unknown (decision 14.7) */
    GW_IOTMP_WIRE_PSON = 2,  /* PSON v2 */
};

/* Server actions a device calls with RUN (section 8). */
enum gw_iotmp_action {
    GW_IOTMP_READ_DEVICE_PROPERTY = 1,
    GW_IOTMP_SET_DEVICE_PROPERTY = 2,
    GW_IOTMP_CALL_DEVICE = 3,
    GW_IOTMP_CALL_ENDPOINT = 4,
    GW_IOTMP_WRITE_BUCKET = 5,
    GW_IOTMP_LOCK_SYNC = 6,
    GW_IOTMP_UNLOCK_SYNC = 7,
    GW_IOTMP_SUBSCRIBE_EVENT = 8,
};

#define GW_IOTMP_MAX_FRAME_DEFAULT (256u * 1024u) /* bytes of body (decision 14.9) */
#define GW_IOTMP_HEADROOM 16                      /* bytes the writer keeps before the body */

/* Name of a message type ("RUN"), or "UNKNOWN". */
const char *gw_iotmp_type_name(uint64_t type);

/* --- Parsed frame --- */

struct gw_iotmp_field {
    uint8_t wire;           /* enum gw_iotmp_wire */
    uint64_t u;             /* WIRE_VARINT: the value */
    const uint8_t *p;       /* WIRE_PSON: the whole encoded value (validated), into the body */
    size_t len;
};

struct gw_iotmp_frame {
    uint64_t type;
    const uint8_t *body;    /* borrowed: into the reader's input or buffer */
    size_t body_len;
    uint32_t present;       /* bit (1 << id) set for each known field found */
    struct gw_iotmp_field field[GW_IOTMP_FIELD_MAX + 1]; /* indexed by field id; [0] unused */
};

/*
 * Parses body into fields. Any field order is accepted, a repeated field keeps its last value,
 * unknown field ids with a known wire type are skipped, and every PSON value is validated whole
 * (so reading it later cannot fail). Returns 0; or GW_EWIRE on a wire type other than 0 and 2, in
 * which case the fields before it are kept and the rest of the body is ignored (decision 14.8);
 * or GW_ETRUNC / GW_EVARINT / GW_EFIELD / a PSON error for a malformed body.
 */
int gw_iotmp_parse(struct gw_iotmp_frame *f, uint64_t type, const void *body, size_t len);

static inline bool gw_iotmp_has(const struct gw_iotmp_frame *f, unsigned id)
{
    return id <= GW_IOTMP_FIELD_MAX && (f->present & (1u << id));
}

/*
 * A field as an unsigned integer: a varint, or a PSON unsigned (or integral double). Returns 0,
 * GW_ENOENT if absent, GW_EPSON_TYPE if not an unsigned number.
 */
int gw_iotmp_get_uint(const struct gw_iotmp_frame *f, unsigned id, uint64_t *u);

/* The stream id (absent = 0). GW_ERANGE if above 65535, GW_EPSON_TYPE if not a number. */
int gw_iotmp_get_stream_id(const struct gw_iotmp_frame *f, uint16_t *sid);

/*
 * Starts a PSON reader on field id. A varint field is presented as a PSON unsigned (the reader
 * then reads from a small internal copy in *scratch, which must outlive the reader).
 * GW_ENOENT if absent.
 */
int gw_iotmp_field_reader(const struct gw_iotmp_frame *f, unsigned id, struct gw_pson_reader *r,
                          uint8_t scratch[GW_VARINT_MAX + 1]);

/* --- Encoder --- */

struct gw_iotmp_writer {
    uint8_t *buf;           /* borrowed; the frame is built at buf + GW_IOTMP_HEADROOM */
    size_t cap;
    uint64_t type;
    unsigned last_field;
    int err;
    struct gw_pson_writer body;
};

/* Starts a frame of the given type in buf (cap bytes, at least GW_IOTMP_HEADROOM). */
void gw_iotmp_writer_init(struct gw_iotmp_writer *w, void *buf, size_t cap, uint64_t type);

/* Adds field id as a varint. Fields must be added in ascending id. */
void gw_iotmp_put_varint(struct gw_iotmp_writer *w, unsigned id, uint64_t v);

/* Adds field id as PSON v2; the caller writes exactly one value to the returned writer. */
struct gw_pson_writer *gw_iotmp_put_pson(struct gw_iotmp_writer *w, unsigned id);

/*
 * Finishes the frame: writes its header just before the body and points *frame at the first
 * byte (somewhere inside buf), *len at the frame's total length. Returns 0; GW_ENOBUFS when the
 * buffer was too small (*len then tells the size needed); GW_EFIELD when fields were not added
 * in ascending id.
 */
int gw_iotmp_finish(struct gw_iotmp_writer *w, const uint8_t **frame, size_t *len);

/* --- Incremental reader --- */

struct gw_iotmp_reader {
    uint8_t *buf;           /* borrowed; holds a body that arrives in pieces */
    size_t cap;
    size_t max_body;        /* larger bodies are refused before anything is buffered */
    uint8_t hdr[2 * GW_VARINT_MAX];
    size_t hdr_len;
    bool in_body;
    uint64_t type;
    size_t body_len;
    size_t have;            /* body bytes buffered so far */
};

/* Prepares r; buf may be NULL with cap 0 (then gw_iotmp_feed asks for a buffer when needed). */
void gw_iotmp_reader_init(struct gw_iotmp_reader *r, void *buf, size_t cap, size_t max_body);

/* Gives r a (larger) buffer after gw_iotmp_feed() returned GW_ENOBUFS. Nothing is lost: the
 * request comes before any body byte is buffered. */
void gw_iotmp_reader_set_buffer(struct gw_iotmp_reader *r, void *buf, size_t cap);

/* Body size of the frame being read (valid after GW_ENOBUFS: the buffer size it needs). */
static inline size_t gw_iotmp_reader_need(const struct gw_iotmp_reader *r)
{
    return r->body_len;
}

/*
 * Consumes input. Returns 1 when a frame is complete: *type, *body and *body_len describe it
 * (body points into data when the whole body was in this chunk, else into the reader's buffer;
 * valid until the next call), and *used says how many bytes of data were consumed: call again
 * with the rest. Returns 0 when all of data was consumed without completing a frame. Errors:
 * GW_EFRAME_SIZE (body over max_body), GW_EVARINT (bad header varint), GW_ENOBUFS (the body must
 * be buffered and is larger than cap: give a buffer of gw_iotmp_reader_need() bytes and call again
 * with the remaining data; *used says what was consumed). After GW_EFRAME_SIZE or GW_EVARINT the
 * stream has no frame boundary any more: close the connection.
 */
int gw_iotmp_feed(struct gw_iotmp_reader *r, const void *data, size_t len, size_t *used,
                  uint64_t *type, const uint8_t **body, size_t *body_len);

#endif
