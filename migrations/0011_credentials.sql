-- Credentials: the owner's password can be rotated, and a database can have more login
-- roles than its owner (Heroku's `pg:credentials:create`).

-- A rotation stores the new password here first, sets it on the server, and only then makes
-- it the current one: after a crash at any point the current password is one the server
-- still takes, and a retried rotation sets the same new password rather than another.
alter table resources add column password_pending_sealed text;

-- Named credentials of a resource: another login role on the same server, its password
-- sealed. The control database says what should exist; the resource's `sync_credentials`
-- step makes the server agree (creates roles, sets pending passwords, drops the ones being
-- destroyed) and then settles the rows.
create table credentials (
  resource_id uuid not null references resources (id),
  name text not null,
  role_name text not null unique,
  privileges text not null check (privileges in ('read', 'write')),
  password_sealed text not null,
  password_pending_sealed text,
  state text not null default 'creating' check (state in ('creating', 'active', 'destroying')),
  created_at timestamptz not null default now(),
  primary key (resource_id, name)
);
