-- SPDX-License-Identifier: Apache-2.0
-- Schema version 1 (gateway 0.1 development builds): one table, the stream name in every row.
CREATE TABLE queue (
    id      INTEGER PRIMARY KEY,   -- acceptance order, the ticket
    stream  TEXT    NOT NULL,      -- "bucket:temps"
    seq     INTEGER NOT NULL,      -- per stream
    action  INTEGER NOT NULL,      -- IOTMP server action code
    target  TEXT    NOT NULL,
    ts      INTEGER NOT NULL,      -- ms since the epoch when accepted
    payload BLOB    NOT NULL       -- PSON
);
CREATE INDEX queue_stream ON queue (stream, id);
