"""The render runtime of one worker process: one pipeline, loaded once, on one device."""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers

from worker import acceleration, faults, fusion, memory, precision
from worker.adapters import choose_mode
from worker.image_render import ImagePipelines, render_from_image
from worker.loading import ModelSource, load_pipeline, resolve_source
from worker.merged_weights import pristine_bytes
from worker.render import PromptEncoder, RenderRequest, StepCallback, render_many
from worker.text_encoding import can_encode_unpadded, encode_prompts

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
    # Throughput levers (worker/acceleration.py, worker/text_encoding.py); off unless the settings turn them on.
    compile_mode: str = "off"
    compile_backend: str = "inductor"
    encode_unpadded: bool = False
    batch_max_images: int = 1
    warm_sizes: tuple[tuple[int, int], ...] = acceleration.PRESET_SIZES
    # Issue 15: bf16 (exact tier) or fp8 (worker/precision.py); fused projections and real RoPE (worker/fusion.py);
    # where compiled kernels are kept between starts (None: not kept). With compile on, the VAE decoder is compiled
    # too (`compile_parts`; the lever benchmark turns it off). The text encoder is not compiled: transformers'
    # hidden-state capture breaks its layers' graphs, and it was never measured on a GPU compiled.
    precision: str = "bf16"
    fuse_mode: str = "off"  # auto: on whenever the blocks are compiled (its gain is kernel fusion by Inductor)
    fused: bool = False
    compile_cache_dir: Path | None = None
    compile_parts: tuple[str, ...] = ("blocks", "vae")
    fp8_layers: int = 0
    compiled: bool = False
    compile_error: str | None = None
    source: ModelSource | None = None
    device: str = "cpu"
    policy: str = "full"
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    fault_injection: bool = False
    pipe: Any = field(default=None, repr=False)  # a ZImagePipeline once loaded
    image_pipes: ImagePipelines = field(default=None, repr=False)  # type: ignore[assignment]  # set by load()
    base_policy: str = "full"
    relief: list[str] = field(default_factory=list)
    # LoRA adapters (worker/adapters.py): merged into the weights or in a slot, their caches; None when off.
    adapters: Any = field(default=None, repr=False)

    def load(self) -> None:
        started = time.perf_counter()
        self.device = pick_device(self.requested_device)
        self.source = resolve_source(self.model, self.revision, self.models_dir)
        # bf16 on GPUs (the checkpoint's dtype); float32 on CPUs, where bf16 matmuls are slow.
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.policy = memory.choose_policy(self.requested_policy, self.device)
        self._check_precision(self.device, self.policy)
        pipe = load_pipeline(self.source, dtype)
        compile_on = acceleration.should_compile(self.compile_mode, self.device, self.policy)
        fuse = self.fuse_mode == "on" or (self.fuse_mode == "auto" and compile_on)
        if self.adapters is not None:
            fuse = self._adapter_mode(pipe, dtype, fuse)
        if fuse:
            fusion.fuse_transformer(pipe.transformer)  # before the weights move: no second copy on the card
            self.fused = True
        # The image pipelines share these modules, so FP8, compile and the policy below apply to them too.
        self.image_pipes = ImagePipelines.sharing(pipe)  # before the policy: see ImagePipelines.sharing
        memory.apply_policy(pipe, self.policy, self.device)
        if self.adapters is not None and self.adapters.mode == "merge":
            # After fusing and placing: the pristine copy is of the weights the graphs will read, on the device.
            self.adapters.install(pipe, self.device, dtype)
        self.base_policy = self.policy
        self.pipe = pipe
        if self.precision == "fp8":
            self.fp8_layers = precision.quantize_fp8(pipe.transformer)
        if compile_on:
            self._compile(pipe)
        self.load_seconds = time.perf_counter() - started

    def _adapter_mode(self, pipe: Any, dtype: torch.dtype, fuse: bool) -> bool:
        """Merged adapters or the slot (worker/adapters.py); the slot is installed here, before fusing and compiling.
        Says whether to fuse still.

        Merged adapters find their rows in the fused matrices, so fusion stays as ZFARM_FUSE says. The slot wraps
        to_q/to_k/to_v and w1/w3, which fusion replaces by stacked matrices: with the slot the blocks stay unfused
        (ZFARM_FUSE=auto), and ZFARM_FUSE=on is refused. The fp8 tier's quantized layers take no adapters.
        """
        if self.precision != "bf16":
            log.warning("LoRA adapters render on the bf16 tier only: no adapters on this %s worker", self.precision)
            self.adapters = None
            return fuse
        free = torch.cuda.mem_get_info()[0] if self.device == "cuda" else None
        # Room for the pristine copy on top of what the policy `full` itself needs (worker/memory.py).
        needed = pristine_bytes(self.adapters.table, dtype.itemsize) + memory.FULL_MIN_FREE_GIB * 1024**3
        self.adapters.mode = choose_mode(self.adapters.mode, self.policy, free, needed)
        if self.adapters.mode == "merge":
            return fuse
        if self.fuse_mode == "on":
            raise RuntimeError(
                "ZFARM_FUSE=on stacks the q/k/v and w1/w3 projections that the LoRA adapter slot wraps: set "
                "ZFARM_LORA_MODE=merge (memory policy full), ZFARM_FUSE=auto (no fusion with the slot) or "
                "ZFARM_LORA_SLOT_RANK=0 (no adapters)"
            )
        self.adapters.install(pipe, self.device, dtype)  # before compiling: adapter switches then compile nothing
        return False

    def check_precision(self) -> None:
        """Raises PrecisionUnavailable when this machine cannot run the precision asked for (before any loading)."""
        if self.precision != "bf16":
            device = pick_device(self.requested_device)
            self._check_precision(device, memory.choose_policy(self.requested_policy, device))

    def _check_precision(self, device: str, policy: str) -> None:
        if self.precision not in precision.PRECISIONS:
            raise precision.PrecisionUnavailable(f"precision must be one of bf16, fp8 (got {self.precision!r})")
        if self.precision == "bf16":
            return
        capability = torch.cuda.get_device_capability() if device == "cuda" else None
        problem = precision.fp8_problem(device, capability)
        if problem is None and policy != "full":
            problem = f"ZFARM_PRECISION=fp8 runs under the memory policy full only (this card got {policy})"
        if problem is not None:
            raise precision.PrecisionUnavailable(problem)

    def _compile(self, pipe: object) -> None:
        if self.compile_cache_dir is not None:
            acceleration.use_compile_cache(self.compile_cache_dir)
        try:
            if "blocks" in self.compile_parts:
                acceleration.compile_blocks(pipe, self.compile_backend)
            if "vae" in self.compile_parts:
                acceleration.compile_vae_decoder(pipe, self.compile_backend)
            self.compiled = True
        except Exception as exc:  # e.g. an unknown backend: run eagerly rather than not at all
            log.exception("compiling failed; running eagerly")
            acceleration.uncompile_blocks(pipe)
            self.compile_error = f"{type(exc).__name__}: {exc}"[:500]

    def warmup(self, size: int) -> None:
        """A small image first, then the default size, so the first real job pays no first-call costs."""
        started = time.perf_counter()
        try:
            self._warm(size)
            if self.adapters is not None and self.adapters.mode == "slot" and self.compiled:
                with self.adapters.warming():  # the same graphs with the adapter slot on
                    self._warm(size)
        except Exception as exc:
            if not self.compiled:
                raise
            # A compiler failure must not take the card out of service: run the blocks eagerly instead.
            log.exception("compiled warmup failed; running the DiT blocks eagerly")
            acceleration.uncompile_blocks(self.pipe)
            self.compiled, self.compile_error = False, f"{type(exc).__name__}: {exc}"[:500]
            self._warm(size)
        self.warmup_seconds = time.perf_counter() - started

    def _warm(self, size: int) -> None:
        for side in sorted({256, size}):
            self.render(RenderRequest("warmup", side, side, steps=2, guidance_scale=0.0, seeds=[0]))
        if not self.compiled:
            return
        # Every kind of call the farm makes compiles here, not in a customer's job: the presets, and batches
        # with and without a padding mask (prompts of different and of equal token counts).
        # Prompts of about 5 and 45 tokens: captions padded to 32 and to 64, the lengths real prompts take.
        short, medium = "warmup", "warmup " + "product photo on a white background, " * 6
        for w, h in self.warm_sizes:
            self.render(RenderRequest(short, w, h, 2, 0.0, [0]))
            if self.batch_max_images > 1:
                self.render_many([RenderRequest(short, w, h, 2, 0.0, [0]), RenderRequest(medium, w, h, 2, 0.0, [1])])
                self.render(RenderRequest(medium, w, h, 2, 0.0, [0, 1]))

    def render(self, req: RenderRequest, on_step: StepCallback | None = None, try_index: int = 0) -> list:
        return self.render_many([req], on_step, try_index)[0]

    def render_many(
        self, reqs: list[RenderRequest], on_step: StepCallback | None = None, try_index: int = 0
    ) -> list[list]:
        """Compatible requests in one pipeline call; each request's images, in order."""
        if self.pipe is None:
            raise RuntimeError("Runtime.render called before load()")
        fault = self._fault(reqs)
        faults.before_render(fault, try_index)
        if "vae-tiling" not in self.relief:
            memory.set_vae_tiling(self.pipe, reqs[0].width * reqs[0].height >= self.vae_tiling_min_pixels)
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()  # stats() then reports this call's peak
        styles = self.adapters.use(reqs[0].extra.get("loras")) if self.adapters else contextlib.nullcontext()
        with styles, torch.inference_mode():  # jobs rendered together share their adapters (worker/batching.py)
            if reqs[0].inputs is not None:  # image modes: one job a call, never batched (worker/batching.py)
                hook = partial(faults.corrupt_output, fault, try_index)
                return [render_from_image(self.image_pipes, reqs[0], on_step, output_hook=hook)]
            return render_many(
                self.pipe,
                reqs,
                on_step,
                self._prompt_encoder(),
                output_hook=lambda a: faults.corrupt_output(fault, try_index, a),
            )

    def _fault(self, reqs: list[RenderRequest]) -> str | None:
        # An injected fault hits the whole call, as a real one would hit every job rendered in it.
        if not self.fault_injection:
            return None
        return next((f for f in (faults.fault_in(r.prompt) for r in reqs) if f is not None), None)

    def _prompt_encoder(self) -> PromptEncoder | None:
        # Under the offload policies the text encoder moves per stage and its time is lost in the copies anyway.
        if not self.encode_unpadded or self.policy != "full" or not can_encode_unpadded(self.pipe):
            return None
        pipe = self.pipe
        return lambda prompts: encode_prompts(pipe, prompts)

    def stats(self) -> dict[str, object]:
        """Counters for logs and benchmarks: compiled graphs (flat in steady state) and VRAM."""
        return {
            "compiled": self.compiled,
            "precision": self.precision,
            "fused": self.fused,
            "fp8_layers": self.fp8_layers,
            "graphs": acceleration.graphs_compiled(),
            **acceleration.memory_stats(self.device),
            **(self.adapters.stats() if self.adapters else {}),
        }

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
            # FP8 weights are torchao tensors placed for the card: they are not moved in and out by offload hooks.
            stricter = memory.stricter(self.policy) if self.precision == "bf16" else None
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
        extra = {}
        if self.precision == "fp8":
            import torchao

            extra["torchao"] = torchao.__version__
        return {
            **extra,
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda or "none",
            "python": platform.python_version(),
        }
