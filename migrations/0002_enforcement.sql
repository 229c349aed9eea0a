-- What is enforced now. The kernel's sets are derived from these tables and reconciled to them at start, so a
-- reboot or an `nft flush ruleset` loses nothing. Every change is also a row in `decisions` (the history).

-- One row per ban: an address or prefix in canonical text (198.51.100.7, 203.0.113.0/24, 2001:db8::/64).
CREATE TABLE bans (
    cidr TEXT PRIMARY KEY,
    since_us INTEGER NOT NULL,
    until_us INTEGER,                 -- NULL: until unblocked
    reason TEXT NOT NULL,
    origin TEXT NOT NULL,             -- rule id, policy name, or 'manual'
    decision_id INTEGER NOT NULL
);

-- Rate limits switched on per port: mode 'source' (per-source, hashlimit-style) or 'global' (limit-style).
CREATE TABLE limits (
    port INTEGER NOT NULL,
    mode TEXT NOT NULL,
    since_us INTEGER NOT NULL,
    until_us INTEGER NOT NULL,        -- always bounded: a limit lapses unless refreshed
    reason TEXT NOT NULL,
    origin TEXT NOT NULL,
    decision_id INTEGER NOT NULL,
    PRIMARY KEY (port, mode)
);
