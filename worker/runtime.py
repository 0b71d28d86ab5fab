"""The render runtime of one worker process: one pipeline, loaded once, on one device."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import torch
import transformers

from worker import faults, memory
from worker.loading import ModelSource, load_pipeline, resolve_source
from worker.render import RenderRequest, StepCallback, render

log = logging.getLogger(__name__)


def pick_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("ZFARM_DEVICE=cuda but torch sees no CUDA device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


@dataclass
class Runtime:
    model: str
    revision: str | None
    requested_policy: str
    requested_device: str
    models_dir: Path
    vae_tiling_min_pixels: int
    source: ModelSource | None = None
    device: str = "cpu"
    policy: str = "full"
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    fault_injection: bool = False
    pipe: object = field(default=None, repr=False)
    base_policy: str = "full"
    relief: list[str] = field(default_factory=list)

    def load(self) -> None:
        started = time.perf_counter()
        self.device = pick_device(self.requested_device)
        self.source = resolve_source(self.model, self.revision, self.models_dir)
        # bf16 on GPUs (the checkpoint's dtype); float32 on CPUs, where bf16 matmuls are slow.
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.policy = memory.choose_policy(self.requested_policy, self.device)
        pipe = load_pipeline(self.source, dtype)
        memory.apply_policy(pipe, self.policy, self.device)
        self.base_policy = self.policy
        self.pipe = pipe
        self.load_seconds = time.perf_counter() - started

    def warmup(self, size: int) -> None:
        """A small image first, then the default size, so the first real job pays no first-call costs."""
        started = time.perf_counter()
        for side in sorted({256, size}):
            self.render(RenderRequest("warmup", side, side, steps=2, guidance_scale=0.0, seeds=[0]))
        self.warmup_seconds = time.perf_counter() - started

    def render(self, req: RenderRequest, on_step: StepCallback | None = None, try_index: int = 0) -> list:
        if self.pipe is None:
            raise RuntimeError("Runtime.render called before load()")
        fault = faults.fault_in(req.prompt) if self.fault_injection else None
        faults.before_render(fault, try_index)
        if "vae-tiling" not in self.relief:
            memory.set_vae_tiling(self.pipe, req.width * req.height >= self.vae_tiling_min_pixels)
        with torch.inference_mode():
            return render(self.pipe, req, on_step, output_hook=lambda a: faults.corrupt_output(fault, try_index, a))

    def prompt_tokens(self, text: str) -> int:
        """Tokens the text encoder would see, chat template included, exactly as the pipeline builds them."""
        tok = self.pipe.tokenizer
        wrapped = tok.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        return len(tok(wrapped, add_special_tokens=False)["input_ids"])

    # Recovery steps for one job; restore() undoes them once the job is over.
    def relieve_memory(self) -> str:
        """After an out-of-memory error: VAE tiling, and on a GPU the next stricter policy."""
        self.relief.append("vae-tiling")
        memory.set_vae_tiling(self.pipe, True)
        if self.device == "cuda":
            torch.cuda.empty_cache()
            stricter = memory.stricter(self.policy)
            if stricter is not None:
                self._switch_policy(stricter)
                return f"out of memory under {self.base_policy}: retried with VAE tiling under {stricter}"
        return f"out of memory under {self.policy}: retried with VAE tiling"

    def upcast_vae(self) -> str:
        """After NaN or black output: decode in float32, the usual cure for bf16 VAE overflow."""
        self.relief.append("vae-fp32")
        self.pipe.vae.to(torch.float32)
        return "NaN or black output: retried with a float32 VAE decode"

    def restore(self) -> None:
        if not self.relief:
            return
        if "vae-fp32" in self.relief:
            self.pipe.vae.to(torch.bfloat16 if self.device == "cuda" else torch.float32)
        if self.policy != self.base_policy:
            self._switch_policy(self.base_policy)
        self.relief.clear()

    def _switch_policy(self, policy: str) -> None:
        self.pipe.remove_all_hooks()
        memory.apply_policy(self.pipe, policy, self.device)
        self.policy = policy

    @property
    def device_name(self) -> str:
        return device_name(self.device)

    @property
    def is_test_model(self) -> bool:
        return bool(self.source and self.source.is_test_model)

    def versions(self) -> dict[str, str]:
        return {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda or "none",
            "python": platform.python_version(),
        }
