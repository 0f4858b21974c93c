"""Tiny, randomly initialised Stable Diffusion and Stable unCLIP pipelines built offline.

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

__all__ = ["build_tiny_pipeline", "build_tiny_unclip_pipeline", "clip_tokenizer_offline"]


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


def build_tiny_unclip_pipeline(out: str | Path, embed_dim: int, seed: int = 0) -> Path:
    """Write a tiny random Stable unCLIP (image-variation) pipeline to ``out`` (``save_pretrained`` layout).

    The classes of ``stabilityai/stable-diffusion-2-1-unclip``: a CLIP vision tower with projection, the
    embedding normaliser, a DDPM scheduler that noises the image embedding, a CLIP text model, a UNet whose
    class embedding is the (noised) image embedding (``class_embed_type="projection"``), a VAE and a DDIM
    scheduler. Its image-embedding size is ``embed_dim`` (the EEG encoder's CLIP: 64 for the tiny random CLIP);
    it makes 64 px noise-like images.
    """
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline,
                           UNet2DConditionModel)
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    out = Path(out)
    hidden = 32
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=hidden, projection_dim=int(embed_dim), num_hidden_layers=1, num_attention_heads=4, image_size=32,
        intermediate_size=37, patch_size=8))
    text = CLIPTextModel(CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=4, max_position_embeddings=77, vocab_size=49408,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64),
                                attention_head_dim=(2, 4), class_embed_type="projection",
                                # the class embedding is the noised image embedding and its noise level's embedding
                                projection_class_embeddings_input_dim=2 * int(embed_dim),
                                cross_attention_dim=hidden, layers_per_block=1, upcast_attention=True,
                                use_linear_projection=True)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32), image_encoder=image_encoder.eval(),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=int(embed_dim)).eval(),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=clip_tokenizer_offline(), text_encoder=text.eval(), unet=unet.eval(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
        vae=vae.eval())
    pipe.save_pretrained(out)
    return out
