-- Some notices concern one tenant alone and come from no incident: its database passed its
-- plan's size, and writes are refused until it is back under. Their phase says which.
alter table notifications alter column incident_id drop not null;
