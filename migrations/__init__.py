"""Alembic history; `migrations.runner.upgrade(url)` applies it programmatically."""
