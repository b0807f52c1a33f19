-- Resources: what a customer sees, a database with a role and a URL, served by servers.

-- A server either holds tenants of shared plans or serves one resource; operator-created
-- servers serve nothing until something places a resource on them.
alter table servers
  add column tenancy text not null default 'dedicated' check (tenancy in ('shared', 'dedicated')),
  add column region text not null default 'us-east-1';
create index servers_shared on servers (region) where tenancy = 'shared';

create table resources (
  -- The platform's uuid: a repeated provision request finds the row it made.
  id uuid primary key,
  plan text not null,
  -- The region as the platform named it (`us`, `amazon-web-services::eu-west-1`).
  region text not null,
  aws_region text not null,
  name text,
  heroku_id text,
  callback_url text,
  options jsonb not null default '{}',
  -- The tenant on its primary server: a database and an owner role of its own.
  database_name text not null unique,
  role_name text not null unique,
  password_sealed text not null,
  -- The OAuth grant, then the tokens it is exchanged for, sealed like every credential.
  oauth_grant_sealed text,
  oauth_tokens_sealed text,
  attrs hstore not null default '',
  last_observation hstore not null default '',
  last_observed_at timestamptz,
  created_at timestamptz not null default now()
);

-- Which servers serve a resource, and as what: `primary`, `standby`, or `target` while the
-- resource moves to another server.
create table resource_servers (
  resource_id uuid not null references resources (id),
  server_id uuid not null references servers (id),
  role text not null,
  created_at timestamptz not null default now(),
  primary key (resource_id, server_id)
);
create unique index resource_servers_one_primary on resource_servers (resource_id) where role = 'primary';
create index resource_servers_server on resource_servers (server_id);
