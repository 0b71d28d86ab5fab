"""Celery settings, read when the app first needs its configuration (not at import of celery_app)."""

from __future__ import annotations

from kombu import Queue

from broker_config.task_names import DELIVER_WEBHOOK
from core.queues import bulk_queue_name
from core.settings import get_settings

_s = get_settings()  # the farm's one settings object

broker_url = _s.resolved_redis_url
broker_connection_retry_on_startup = True
# Two lanes, one worker reading both. kombu's Redis transport issues one BRPOP over all of a worker's
# queues; with the default 'round_robin' order it moves the queue that just delivered to the end, so
# after an interactive job the bulk queue would be asked first. 'priority' keeps the declared order on
# every BRPOP, and Redis pops from the first non-empty list it is given: an interactive job waits only
# for the job a worker is running. Fairness between batches is not Redis' job: the bulk queue holds
# only a few ids, fed in by turns from SQL (control/dispatcher.py).
broker_transport_options = {"visibility_timeout": _s.visibility_timeout, "queue_order_strategy": "priority"}

# The SQL row is the job's state: no result backend, JSON messages that carry only the job id.
result_backend = None
task_ignore_result = True
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"

# At-least-once delivery: ack after the task ran, requeue when the child process dies.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_time_limit = _s.job_time_limit_seconds
# The soft limit raises inside the job so it can fail with its reason; the hard limit kills what ignores it.
task_soft_time_limit = _s.job_time_limit_seconds - max(2.0, min(30.0, _s.job_time_limit_seconds * 0.1))

task_default_queue = _s.queue
task_queues = (Queue(_s.queue), Queue(bulk_queue_name(_s.queue)), Queue(_s.webhook_queue))
task_routes = {DELIVER_WEBHOOK: {"queue": _s.webhook_queue}}
# `zfarm worker` names them interactive first: with 'priority', that order is the BRPOP order.

# Flower and the event stream.
worker_send_task_events = True
task_send_sent_event = True

worker_proc_alive_timeout = _s.worker_start_timeout_seconds
worker_hijack_root_logger = False
