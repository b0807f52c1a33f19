-- Who is signed in, on the server: the operator console, or a customer's page for one
-- database (SSO). The cookie carries a random token; only its SHA-256 is kept here, so a
-- copy of this table opens nothing. A session of one purpose never opens the other.
create table sessions (
  token_sha256 bytea primary key,
  purpose text not null check (purpose in ('console', 'sso')),
  resource_id uuid references resources (id) on delete cascade,
  -- Posted back with every form of the session's pages.
  csrf text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  ended_at timestamptz,
  check ((purpose = 'sso') = (resource_id is not null))
);
create index sessions_expires_at on sessions (expires_at);

-- SSO tokens already taken: each signs in once, and is kept until its timestamp is stale anyway.
create table sso_tokens_used (
  token_sha256 bytea primary key,
  expires_at timestamptz not null
);
create index sso_tokens_used_expires_at on sso_tokens_used (expires_at);
