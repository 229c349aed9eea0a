-- A completed TCP handshake seen live (a conntrack update with the ASSURED status): proves its source real
-- within milliseconds of the handshake, where conn_destroy proves it only when the entry dies.
INSERT INTO kinds (code, name) VALUES (19, 'conn_assured');
