-- Bans other hosts of the fleet made, as this host applies them after its own checks: one row per target (the
-- merged verdict: the latest end wins), kept so that a restart re-applies them at once, before the fleet is
-- reachable again. Their elements live in sets of their own (fleet4, fleet6, ...): a remote ban never
-- overwrites a local one.
CREATE TABLE remote_bans (
    cidr TEXT PRIMARY KEY,
    host TEXT NOT NULL,               -- the host whose verdict this is
    since_us INTEGER NOT NULL,
    until_us INTEGER,                 -- NULL: until lifted
    reason TEXT NOT NULL,
    decision_id INTEGER NOT NULL
);
