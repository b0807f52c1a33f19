-- A follower resource is a physical copy of its leader's database: it has the very same
-- database, role and password, on another server. Names stay unique among resources that
-- are not followers (the ones that create tenants).
alter table resources drop constraint resources_database_name_key;
alter table resources drop constraint resources_role_name_key;
alter table resources add column follows uuid references resources (id);
create unique index resources_database_name on resources (database_name) where follows is null;
create unique index resources_role_name on resources (role_name) where follows is null;
