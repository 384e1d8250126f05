/* SPDX-License-Identifier: Apache-2.0 */
/* gw_strerror(): the message for every code listed in gw/error.h, and strerror() for the rest. */
#include "gw/error.h"

#include <string.h>

const char *gw_strerror(int code)
{
    switch (code) {
#define GW_ERROR_CASE(name, value, msg)                                                           \
    case value:                                                                                   \
        return msg;
        GW_ERRORS(GW_ERROR_CASE)
#undef GW_ERROR_CASE
    }
    if (code < 0 && code > -1000)
        return strerror(-code);
    return "unknown error";
}

const char *gw_strerror_name(int code)
{
    switch (code) {
#define GW_ERROR_NAME(name, value, msg)                                                           \
    case value:                                                                                   \
        return #name;
        GW_ERRORS(GW_ERROR_NAME)
#undef GW_ERROR_NAME
    }
    return "GW_E?";
}
