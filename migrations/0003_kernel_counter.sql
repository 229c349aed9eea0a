-- Kernel SNMP counter increases (/proc/net/netstat), polled by the daemon.
INSERT INTO kinds (code, name) VALUES (18, 'kernel_counter');
