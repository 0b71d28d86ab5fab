"""The Celery app and its settings; imports nothing else of zfarm's."""
