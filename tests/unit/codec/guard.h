/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guarded buffers for decoder tests: the bytes end exactly where an inaccessible page begins, so a
 * decoder that reads one byte too far crashes the test (Check's fork mode reports it as a failure),
 * with or without a sanitizer.
 */
#ifndef GW_TEST_GUARD_H
#define GW_TEST_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* Copies len bytes so that the last one sits just before a PROT_NONE page. Returns the copy. */
const uint8_t *guard_copy(const void *data, size_t len);
/* Same, from a hex string ("1f 80" or "1f80"). *len receives the byte count. */
const uint8_t *guard_hex(const char *hex, size_t *len);
/* Releases every guarded buffer made so far. */
void guard_free_all(void);

#endif
