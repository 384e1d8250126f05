/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Error codes shared by every module. Functions return 0 (or a positive count) on success and a
 * negative GW_E... code on failure. Codes that have an errno meaning are the negated errno value;
 * gateway-specific codes sit below -1000, in one block per module so each module can grow its own.
 * The list is an X-macro so that the enum and gw_strerror() can never disagree.
 */
#ifndef GW_ERROR_H
#define GW_ERROR_H

#include <errno.h>

/* X(name, value, message) */
#define GW_ERRORS(X)                                                                              \
    X(GW_OK, 0, "success")                                                                      \
    X(GW_ENOMEM, -ENOMEM, "out of memory")                                                      \
    X(GW_EINVAL, -EINVAL, "invalid argument")                                                   \
    X(GW_ENOENT, -ENOENT, "no such file, resource or entry")                                    \
    X(GW_EEXIST, -EEXIST, "already exists")                                                     \
    X(GW_EIO, -EIO, "input/output error")                                                       \
    X(GW_EAGAIN, -EAGAIN, "try again")                                                          \
    X(GW_ETIMEDOUT, -ETIMEDOUT, "timed out")                                                    \
    X(GW_ECONNRESET, -ECONNRESET, "connection reset")                                           \
    X(GW_ENOTCONN, -ENOTCONN, "not connected")                                                  \
    X(GW_ECANCELED, -ECANCELED, "cancelled")                                                    \
    X(GW_EACCES, -EACCES, "permission denied")                                                  \
    X(GW_ERANGE, -ERANGE, "value out of range")                                                 \
    X(GW_ENOSPC, -ENOSPC, "no space left")                                                      \
    X(GW_EBUSY, -EBUSY, "busy")                                                                 \
    X(GW_ENOTSUP, -ENOTSUP, "not supported")                                                    \
    /* codec: -1000 ... -1099 */                                                                \
    X(GW_ETRUNC, -1000, "input truncated")                                                      \
    X(GW_EVARINT, -1001, "varint longer than 10 bytes or above 64 bits")                        \
    X(GW_EPSON_TAG, -1002, "invalid PSON tag")                                                  \
    X(GW_EPSON_LEN, -1003, "PSON length or count runs past the end of the input")               \
    X(GW_EPSON_DEPTH, -1004, "PSON nesting deeper than the limit")                              \
    X(GW_EPSON_KEY, -1005, "PSON map key is not a string")                                      \
    X(GW_EPSON_RANGE, -1006, "PSON integer out of range")                                       \
    X(GW_EPSON_TYPE, -1007, "PSON value has another type than expected")                        \
    X(GW_EPSON_END, -1008, "no more PSON values at this level")                                 \
    X(GW_EFRAME_SIZE, -1010, "IOTMP frame body larger than the limit")                          \
    X(GW_EWIRE, -1011, "unknown IOTMP wire type")                                               \
    X(GW_EFIELD, -1012, "invalid IOTMP field")                                                  \
    X(GW_EFRAME, -1013, "malformed IOTMP frame")                                                \
    X(GW_ENOBUFS, -1014, "output buffer too small")                                             \
    /* config and schema: -1100 ... -1199 */                                                    \
    X(GW_ECONFIG, -1100, "invalid configuration")                                               \
    X(GW_ESCHEMA, -1101, "invalid JSON Schema")                                                 \
    X(GW_EJSON, -1102, "invalid JSON")                                                          \
    X(GW_ECONFIG_READ, -1103, "configuration file unreadable")                                  \
    /* store: -1200 ... -1299 */                                                                \
    X(GW_ESTORE, -1200, "store error")                                                          \
    X(GW_ESTORE_FULL, -1201, "store full")                                                      \
    X(GW_ESTORE_CORRUPT, -1202, "store file corrupt")                                           \
    X(GW_ESTORE_SCHEMA, -1203, "store file has an unknown schema")                              \
    /* session and transports: -1300 ... -1399 */                                              \
    X(GW_EAUTH, -1300, "authentication refused")                                                \
    X(GW_EREDIRECT, -1301, "broker redirected the session")                                     \
    X(GW_EPEER, -1302, "peer answered ERROR")                                                   \
    X(GW_ETLS, -1303, "TLS failure")                                                            \
    X(GW_ELINK, -1304, "link lost")                                                             \
    X(GW_ETLS_VERIFY, -1305, "TLS peer certificate or host name not verified")                  \
    X(GW_EDEADLINK, -1306, "link silent for twice the keep-alive interval")                     \
    X(GW_EPROTO, -1307, "protocol violation by the peer")                                       \
    /* registry and adapters: -1400 ... -1499 */                                                \
    X(GW_ERESOURCE, -1400, "unknown resource")                                                  \
    X(GW_EDEVICE, -1401, "device error")                                                        \
    X(GW_ESTALE, -1402, "value is stale")                                                       \
    X(GW_EREADONLY, -1403, "resource is read-only")

enum gw_error {
#define GW_ERROR_ENUM(name, value, msg) name = (value),
    GW_ERRORS(GW_ERROR_ENUM)
#undef GW_ERROR_ENUM
};

/* A static string describing code (one of the above, or any negated errno). Never NULL. */
const char *gw_strerror(int code);

/* The enumerator's name ("GW_ETRUNC") for code, or "GW_E?" if unknown. For logs and tests. */
const char *gw_strerror_name(int code);

#endif
