"""The tiny model goes through the same from_pretrained path as production, and behaves like the real one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worker.loading import ModelLoadError, load_pipeline, resolve_source
from worker.render import RenderError, RenderRequest, guard_output
from worker.runtime import Runtime
from worker.tiny_model import TINY_VERSION, ensure_tiny_model


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    rt = Runtime(
        model="tiny",
        revision=None,
        requested_policy="auto",
        requested_device="cpu",
        models_dir=tmp_path_factory.mktemp("models"),
        vae_tiling_min_pixels=1536 * 1536,
    )
    rt.load()
    return rt


def _pixels(images: list) -> list[np.ndarray]:
    return [np.asarray(im, dtype=np.int16) for im in images]


def test_tiny_model_is_saved_once_and_loaded_through_from_pretrained(tmp_path: Path) -> None:
    path = ensure_tiny_model(tmp_path / "tiny")
    mtime = (path / "model_index.json").stat().st_mtime
    assert ensure_tiny_model(tmp_path / "tiny") == path
    assert (path / "model_index.json").stat().st_mtime == mtime
    source = resolve_source("tiny", None, tmp_path)
    assert source.is_test_model and source.revision == TINY_VERSION
    pipe = load_pipeline(source, torch.float32)
    assert type(pipe).__name__ == "ZImagePipeline"


def test_same_seed_same_image_and_other_seed_other_image(runtime: Runtime) -> None:
    req = RenderRequest("a red mug", 256, 256, steps=4, guidance_scale=0.0, seeds=[11])
    a, b = _pixels(runtime.render(req)), _pixels(runtime.render(req))
    c = _pixels(runtime.render(RenderRequest("a red mug", 256, 256, 4, 0.0, seeds=[12])))
    assert np.array_equal(a[0], b[0])
    assert np.abs(a[0] - c[0]).mean() > 5


def test_image_in_a_multi_image_job_equals_that_seed_rendered_alone(runtime: Runtime) -> None:
    together = _pixels(runtime.render(RenderRequest("a lamp", 256, 256, 4, 0.0, seeds=[5, 6])))
    alone = _pixels(runtime.render(RenderRequest("a lamp", 256, 256, 4, 0.0, seeds=[6])))
    # float32 on a CPU: batched matmuls may round differently by a hair; one 8-bit level at most.
    assert np.abs(together[1] - alone[0]).max() <= 1


def test_prompt_changes_the_image(runtime: Runtime) -> None:
    a = _pixels(runtime.render(RenderRequest("a red mug", 256, 256, 4, 0.0, seeds=[3])))
    b = _pixels(runtime.render(RenderRequest("a blue chair", 256, 256, 4, 0.0, seeds=[3])))
    assert not np.array_equal(a[0], b[0])


@pytest.mark.parametrize(("width", "height"), [(1024, 768), (2048, 256)])
def test_production_sizes_render_with_the_real_geometry(runtime: Runtime, width: int, height: int) -> None:
    [image] = runtime.render(RenderRequest("wide", width, height, steps=1, guidance_scale=0.0, seeds=[1]))
    assert image.size == (width, height)


def test_guidance_and_negative_prompt_run(runtime: Runtime) -> None:
    req = RenderRequest("a mug", 256, 256, steps=2, guidance_scale=2.0, seeds=[1], negative_prompt="blurry")
    [image] = runtime.render(req)
    assert image.size == (256, 256)


def test_step_callback_reports_every_step(runtime: Runtime) -> None:
    seen: list[tuple[int, int]] = []
    runtime.render(RenderRequest("a mug", 256, 256, 3, 0.0, [1]), on_step=lambda s, t: seen.append((s, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_nan_and_black_outputs_are_refused() -> None:
    with pytest.raises(RenderError, match="NaN"):
        guard_output(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(RenderError, match="all black"):
        guard_output(torch.zeros((1, 3, 8, 8)))
    guard_output(torch.full((1, 3, 8, 8), 0.5))


def test_missing_directory_and_uncached_repo_fail_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_source(str(tmp_path / "nope"), None, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        resolve_source(str(tmp_path / "empty"), None, tmp_path)
    # HF_HUB_OFFLINE=1 (conftest): the hub is the one thing mocked away, by having no network at all.
    source = resolve_source("Tongyi-MAI/Z-Image-Turbo", None, tmp_path)
    with pytest.raises(ModelLoadError, match="local Hugging Face cache"):
        load_pipeline(source, torch.bfloat16)


def test_workers_building_the_tiny_model_at_once_all_get_a_complete_copy(tmp_path: Path) -> None:
    import multiprocessing

    target = tmp_path / "tiny"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        paths = pool.map(ensure_tiny_model, [target] * 3)
    assert paths == [target] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no staging directories left behind
    assert (target / "model_index.json").is_file() and (target / "text_encoder").is_dir()
