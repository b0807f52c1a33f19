-- The router follows the control database: it refreshes its routes every 250 ms, and at once
-- when a resource's servers or their roles change (a failover's takeover), which it hears
-- on this channel. Half a refresh period was about 40% of a crash's failover after the
-- promotion (bench:failover).
create function pgfleet_routes_notify() returns trigger language plpgsql as $$
begin
  perform pg_notify('pgfleet_routes', '');
  return null;
end $$;
create trigger resource_servers_notify after insert or update or delete on resource_servers
  for each statement execute function pgfleet_routes_notify();
