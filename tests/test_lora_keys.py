"""The torch-free LoRA key check (core/lora_keys.py) agrees with diffusers: the module table is the real class's,
and every key form it accepts names the module diffusers' own converter maps it to."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_z_image_lora_to_diffusers

from core.lora_keys import TABLE_FILE, AdapterProblem, TensorInfo, describe, module_table, parse_key
from scripts.generate_zimage_modules import build_table


def test_the_shipped_module_table_is_the_one_built_from_diffusers_classes() -> None:
    # A diffusers upgrade that renames or resizes a module fails here: regenerate with
    # `.venv/bin/python scripts/generate_zimage_modules.py`.
    assert json.loads(TABLE_FILE.read_text())["models"] == build_table()["models"]
    full = module_table("z-image")
    assert len(full.linear) == 276 and full.linear["layers.29.feed_forward.w1"] == (3840, 10240)
    assert "layers.30.feed_forward.w1" not in full.linear  # 30 main blocks: 0..29


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("transformer.layers.3.attention.to_q.lora_A.weight", ("layers.3.attention.to_q", "A")),
        ("layers.3.attention.to_out.0.lora_B.weight", ("layers.3.attention.to_out.0", "B")),
        ("diffusion_model.layers.3.feed_forward.w2.lora_down.weight", ("layers.3.feed_forward.w2", "A")),
        (
            "base_model.model.noise_refiner.1.adaLN_modulation.0.lora_B.default.weight",
            ("noise_refiner.1.adaLN_modulation.0", "B"),
        ),
        ("lora_unet_context_refiner_0_attention_to_k.lora_up.weight", ("context_refiner.0.attention.to_k", "B")),
        ("lora_unet_all_x_embedder_2-1.alpha", ("all_x_embedder.2-1", "alpha")),
    ],
)
def test_each_key_form_names_its_module(key: str, expected: tuple[str, str]) -> None:
    assert parse_key(key, module_table("z-image")) == expected


@pytest.mark.parametrize(
    "key",
    [
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",  # SDXL
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",  # Flux
        "layers.30.attention.to_q.lora_A.weight",  # one block past the model
        "layers.0.attention.norm_q.lora_A.weight",  # not a linear layer
        "layers.0.attention.to_q.weight",  # not a LoRA tensor
    ],
)
def test_keys_of_other_models_are_refused_naming_the_key(key: str) -> None:
    with pytest.raises(AdapterProblem) as refused:
        parse_key(key, module_table("z-image"))
    assert refused.value.key == key


def test_kohya_names_map_to_the_modules_diffusers_own_converter_gives() -> None:
    table = module_table("z-image")
    kohya = {}
    for module in list(table.linear)[::7]:
        stem = "lora_unet_" + module.replace(".", "_")
        kohya[f"{stem}.lora_down.weight"] = torch.zeros(2, 1)
        kohya[f"{stem}.lora_up.weight"] = torch.zeros(1, 2)
        kohya[f"{stem}.alpha"] = torch.tensor(2.0)
    converted = _convert_non_diffusers_z_image_lora_to_diffusers(dict(kohya))
    theirs = {k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in converted}
    ours = {parse_key(k, table)[0] for k in kohya}
    assert ours == theirs


def test_alpha_comes_from_the_alpha_tensor_else_the_metadata_else_the_rank() -> None:
    table = module_table("tiny")
    tensors = {
        "layers.0.attention.to_q.lora_A.weight": TensorInfo((4, 32), "F32"),
        "layers.0.attention.to_q.lora_B.weight": TensorInfo((32, 4), "F32"),
        "layers.0.attention.to_k.lora_A.weight": TensorInfo((2, 32), "BF16"),
        "layers.0.attention.to_k.lora_B.weight": TensorInfo((32, 2), "BF16"),
        "layers.0.attention.to_q.alpha": TensorInfo((), "F32"),
    }
    alphas = {"layers.0.attention.to_q.alpha": 8.0}
    info = describe(tensors, alphas, None, table)
    assert info.scalings == {"layers.0.attention.to_q": 2.0, "layers.0.attention.to_k": 1.0}
    assert info.rank == 4 and info.targets == ["layers.*.attention.to_k", "layers.*.attention.to_q"]
    metadata = {
        "lora_adapter_metadata": json.dumps({"transformer.lora_alpha": 6, "transformer.alpha_pattern": {"to_k": 1}})
    }
    info = describe(tensors, alphas, metadata, table)
    assert info.scalings == {"layers.0.attention.to_q": 2.0, "layers.0.attention.to_k": 0.5} and info.alpha == 6.0
    with pytest.raises(AdapterProblem, match="dtype I64"):
        describe({**tensors, "layers.0.attention.to_v.lora_A.weight": TensorInfo((2, 32), "I64")}, alphas, None, table)
