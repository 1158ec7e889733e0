"""The web portal: a single page served by the HTTP projection (routes.py), built on the same operations."""
