/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: MQTT payloads and topics as the adapter maps them. The first byte picks the format
 * and the coercion, a NUL-terminated JSON Pointer follows, then a NUL-terminated topic filter and
 * topic, and the rest is the payload. Decoding, pointer resolution, topic matching and template
 * expansion must never crash; a decoded value must convert to JSON.
 */
#include "mqtt_map.h"

#include "gw/json.h"
#include "gw/value.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Takes a NUL-terminated piece of the input (copied), or NULL when there is none. */
static char *take(const uint8_t **p, size_t *left)
{
    const uint8_t *nul = memchr(*p, 0, *left);
    if (!nul)
        return NULL;
    size_t n = (size_t)(nul - *p);
    char *s = malloc(n + 1);
    memcpy(s, *p, n + 1);
    *p += n + 1;
    *left -= n + 1;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum gw_mqtt_format format = (enum gw_mqtt_format)(data[0] % 3);
    enum gw_mqtt_as as = (enum gw_mqtt_as)((data[0] >> 2) % 5);
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    char *pointer = take(&p, &left);
    char *filter = take(&p, &left);
    char *topic = take(&p, &left);
    if (filter && topic) {
        (void)gw_mqtt_topic_match(filter, topic);
        char *out = NULL;
        if (gw_mqtt_template_expand(filter, topic, &out) == 0)
            free(out);
    }
    /* The payload: exact size, so that a read past it is caught. */
    uint8_t *payload = malloc(left ? left : 1);
    memcpy(payload, p, left);
    struct gw_value v;
    char err[256];
    if (gw_mqtt_decode(payload, left, format, pointer, as, &v, err, sizeof err) == 0) {
        json_t *j = gw_value_to_json(&v);
        if (!j)
            abort();
        json_decref(j);
        gw_value_fini(&v);
    }
    free(payload);
    free(pointer);
    free(filter);
    free(topic);
    return 0;
}
