-- pgfleet's own certificate authority, which signs every server's TLS certificate. One per
-- deployment, kept here rather than under PGFLEET_HOME because every process on every
-- machine that shares this control database issues or hands out with the same one. The
-- private key is sealed with PGFLEET_ENCRYPTION_KEY like every other credential.
create table certificate_authority (
  -- At most one row: the first process to insert its freshly made authority wins.
  singleton boolean primary key default true check (singleton),
  certificate text not null,
  key_sealed text not null,
  created_at timestamptz not null default now()
);
