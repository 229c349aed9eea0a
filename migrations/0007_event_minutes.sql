-- The ids of each minute's events: every event row's id lies between its minute's first_id and last_id.
-- A reader of a period (the attack report) takes the id range of the period's minutes and reads the table in
-- id order, instead of walking the time index over millions of entries to find that range (2.5 s at 10M
-- events) or fetching each row by id through it. Written in the same transaction as the events; ids mostly
-- follow time, so a minute's range is tight unless an input lags.
CREATE TABLE event_minutes (
    minute INTEGER PRIMARY KEY,   -- ts_us of the minute's start (floor, also before 1970)
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL
);
INSERT INTO event_minutes (minute, first_id, last_id)
    SELECT ts_us - ((ts_us % 60000000) + 60000000) % 60000000, min(id), max(id) FROM events GROUP BY 1;
