"""A tiny, randomly initialised Stable Diffusion pipeline built offline.

For tests and CPU benchmarks: the same diffusers classes as a real model
(UNet2DConditionModel, AutoencoderKL, a transformers CLIPTextModel, a real CLIP
BPE tokenizer rebuilt from open_clip's bundled vocabulary), saved with
``save_pretrained`` so it loads through the very ``from_pretrained`` path users
use. Its images are noise-like: it proves the plumbing and the latency of
everything around the network, not image quality.
"""
from __future__ import annotations

import gzip
from pathlib import Path

__all__ = ["build_tiny_pipeline", "clip_tokenizer_offline"]


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer_offline(model_max_length: int = 77):
    """The CLIP BPE tokenizer (49408 tokens) from open_clip's bundled vocabulary, with no download."""
    import open_clip
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges],
                         model_max_length=model_max_length)


def build_tiny_pipeline(out: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Stable Diffusion pipeline to ``out`` (``save_pretrained`` layout)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=77, vocab_size=49408,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    sched = EulerDiscreteScheduler(timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer_offline(), unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out
