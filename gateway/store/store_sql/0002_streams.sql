-- SPDX-License-Identifier: Apache-2.0
-- Schema version 2: stream names move to their own table (a row carries a small integer instead
-- of the name, and the next sequence number survives a stream that drained empty); a meta table
-- keeps the highest id ever given out, so that ids are never reused once the queue is empty.
CREATE TABLE streams (
    sid      INTEGER PRIMARY KEY,
    name     TEXT    NOT NULL UNIQUE,
    next_seq INTEGER NOT NULL
);
INSERT INTO streams (name, next_seq)
    SELECT stream, max(seq) + 1 FROM queue GROUP BY stream ORDER BY min(id);
CREATE TABLE queue_v2 (
    id      INTEGER PRIMARY KEY,
    sid     INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    action  INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    target  TEXT    NOT NULL,
    payload BLOB    NOT NULL
);
INSERT INTO queue_v2 (id, sid, seq, action, ts, target, payload)
    SELECT q.id, s.sid, q.seq, q.action, q.ts, q.target, q.payload
    FROM queue q JOIN streams s ON s.name = q.stream ORDER BY q.id;
DROP TABLE queue;
ALTER TABLE queue_v2 RENAME TO queue;
CREATE INDEX queue_by_stream ON queue (sid, id);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('last_id', (SELECT coalesce(max(id), 0) FROM queue));
