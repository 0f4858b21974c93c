"""Decoder fixtures: a tiny randomly initialised open_clip model saved like a real one."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A ``local-dir:`` open_clip folder (config + safetensors), built here; never downloaded."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("tiny-clip")
    model_cfg = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg)
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    return d
