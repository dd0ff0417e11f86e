-- How far a mapping reaches beyond its first port, by index: the longest span of a host bounds
-- from below the first ports that can overlap a port asked for, so the overlap query reads the
-- mappings near it and not every one below it (at 5,000 sandboxes, 5,000 rows per placement).
CREATE INDEX gateway_ports_span ON gateway_ports (host, (last_port - first_port));
