-- Server credentials are stored sealed (src/sealer.ts), never in plain text.
alter table servers rename column superuser_password to superuser_password_sealed;
