-- Which store this is: a random id, also written into floodgate's nftables table (an empty chain owner_<id>), so
-- a floodgate started on another store in the same network namespace sees the table is not its own.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
