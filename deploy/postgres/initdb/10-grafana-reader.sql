-- Runs once, when the postgres container initialises an empty data directory
-- (/docker-entrypoint-initdb.d), as POSTGRES_USER, the role guard's migrations run as.
-- Grafana reads the audit trail through a role that can read every table those
-- migrations create later, and change nothing: an audit trail that a dashboard user
-- could edit would prove little.
\getenv reader GRAFANA_DB_USER
\getenv password GRAFANA_DB_PASSWORD
\getenv owner POSTGRES_USER

CREATE ROLE :"reader" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
