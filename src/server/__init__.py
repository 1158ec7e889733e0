"""The Geopera kernel server: gRPC API, domain services and PostgreSQL store."""
