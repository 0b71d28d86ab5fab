"""Task names as constants: the API sends by name and never imports the worker."""

RENDER_JOB = "zfarm.render_job"
DELIVER_WEBHOOK = "zfarm.deliver_webhook"
