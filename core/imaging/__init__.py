"""Image operations on Pillow alone, shared by the API (ingestion) and the workers (placement, masks, compositing).

Nothing here imports torch or anything of ours: the API checks uploads with the same code the worker trusts.
"""
