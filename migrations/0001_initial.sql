-- floodgate event store, schema version 1.
-- Times are microseconds since the epoch (UTC). Addresses are BLOBs of 4 (IPv4) or 16 (IPv6) bytes in network
-- order, so a CIDR is a range query. Repeated strings (input, rule, service) are interned in `labels`.

CREATE TABLE kinds (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO kinds (code, name) VALUES
    (1, 'auth_failure'), (2, 'relay_denied'), (3, 'unknown_recipient'), (4, 'rejected'), (5, 'pipelining'),
    (6, 'protocol_error'), (7, 'dnsbl_listed'), (8, 'too_many_errors'), (9, 'rate_limit_exceeded'),
    (10, 'lost_connection'), (11, 'connect'), (12, 'disconnect'), (13, 'login_ok'), (14, 'syn_flood'),
    (15, 'conntrack_table_full'), (16, 'conn_new'), (17, 'conn_destroy');

CREATE TABLE labels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts_us INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    failure INTEGER NOT NULL,
    input INTEGER,            -- labels.id: the file or source it came from
    line INTEGER,             -- 1-based line within the input, when it has lines
    rule INTEGER NOT NULL,    -- labels.id
    addr BLOB,
    local_addr BLOB,
    port INTEGER,
    service INTEGER,          -- labels.id
    user TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    detail INTEGER            -- syn_flood: 1 cookies, 2 dropping; conn_destroy: 1 assured, 0 not
);
CREATE INDEX events_by_time ON events (ts_us);
CREATE INDEX events_by_addr ON events (addr) WHERE addr IS NOT NULL;

-- conntrack NEW/DESTROY arrive by the thousand per second in a flood: stored as counts per source, port and
-- minute, so the store grows with the number of sources, not packets.
CREATE TABLE conn_minutes (
    addr BLOB NOT NULL,
    port INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    minute INTEGER NOT NULL,  -- ts_us of the minute's start
    count INTEGER NOT NULL,
    assured INTEGER NOT NULL, -- conn_destroy: how many of them had completed their handshake
    local_addr BLOB,
    PRIMARY KEY (addr, port, kind, minute)
) WITHOUT ROWID;
CREATE INDEX conn_minutes_by_time ON conn_minutes (minute);

-- Every ban, unban and limit, with the figures that led to it (written by the policy and enforcement code).
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    ts_us INTEGER NOT NULL,
    action TEXT NOT NULL,     -- ban, unban, limit_source, limit_global, lift
    target TEXT NOT NULL,     -- address, prefix or port
    until_us INTEGER,
    reason TEXT NOT NULL,
    origin TEXT NOT NULL,     -- rule id, policy name, or 'manual'
    figures TEXT              -- JSON
);
CREATE INDEX decisions_by_target ON decisions (target, ts_us);

CREATE TABLE allowlist (
    cidr TEXT PRIMARY KEY,
    added_us INTEGER NOT NULL,
    comment TEXT
);

-- Where each tailed input was left, so a restart neither rereads nor skips.
CREATE TABLE positions (
    input TEXT PRIMARY KEY,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
);
