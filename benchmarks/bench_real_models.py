"""The real teacher and generator architectures with random weights: CLIP features and one-step 512 px images.

    python benchmarks/bench_real_models.py [--images 2000] [--runs 5] [--size 512] [--decode-ms 4.0]
        [--devices auto|cpu|cuda|cpu,cuda] [--threads N] [--stim-px 500] [--channels-last] [--compile [MODE]]
        [--tiny]

Timings only. No weights can be downloaded here, and how long a network takes does not depend on its weight
values, so the script builds the REAL architectures and leaves their weights random:

* the CLIP teacher: open_clip ``ViT-B-32`` with ``pretrained=None`` (what ``teacher.model: ViT-B-32`` loads
  with its weights), timed over ``--images`` synthetic stimuli (in-memory JPEGs of ``--stim-px``) through the
  path of :func:`eegloop.embeddings.image_embeddings`: open + RGB, the model's own transform, ``encode_image``
  in batches of 32 (fp32 on every device, as the teacher runs), normalised and copied back to the CPU;
* the feedback generator: ``stabilityai/sd-turbo`` (the Stable Diffusion 2.1 architecture, one step, 512 px)
  rebuilt from its published ``unet``, ``vae``, ``text_encoder`` and ``scheduler`` configs written below as
  dicts, assembled into the ``StableDiffusionPipeline`` that :class:`eegloop.feedback.generator.
  DiffusionGenerator` gets for it, with the offline CLIP tokenizer. Timed per stage (text encoding, UNet step,
  VAE decode, post-processing to a PIL image) and as the whole pipeline call the generator makes, the median
  of ``--runs`` after a warm-up; again with ``AutoencoderTiny()`` (the TAESD architecture, diffusers' default
  config, random weights) as the decoder. fp32 on the CPU, fp16 on CUDA (DiffusionGenerator's ``auto``).
  ``--channels-last`` and ``--compile`` apply to the UNet and both decoders on every measured device.

Then the live loop's budget, epoch complete -> image on screen: the decode (``--decode-ms``, default the EEG
encoder's ~4 ms from bench_decode_latency) + the generation + one refresh at ``--refresh-hz``.

These random-weight models are a benchmark device only, never a fallback for users: their images and features
are meaningless, and eegloop itself loads real weights or refuses with ModelNotAvailableError. ``--tiny``
runs the same code with every config scaled down (a few channels and layers, 64 px) so that a smoke run takes
seconds. Progress lines while it runs; last line: JSON with the CPU, device, threads, every timing, parameter
counts and ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import time
import warnings

# --- published configs (stabilityai/sd-turbo, i.e. Stable Diffusion 2.1; keys as in each config.json) ------------
SD_TURBO_UNET = {  # unet/config.json: 865,910,724 parameters
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False, "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "only_cross_attention": False, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),  # diffusers' legacy name: heads per block (64-wide heads)
    "dual_cross_attention": False, "use_linear_projection": True, "upcast_attention": False,
    "resnet_time_scale_shift": "default",
}
SD_TURBO_VAE = {  # vae/config.json: 83,653,863 parameters
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
}
SD_TURBO_TEXT = {  # text_encoder/config.json (OpenCLIP ViT-H/14 text tower, last layer dropped): 340,387,840
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
    "projection_dim": 512,  # as published; CLIPTextModel has no projection layer, so it changes nothing here
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
SD_TURBO_SCHEDULER = {  # scheduler/scheduler_config.json (EulerDiscreteScheduler)
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "interpolation_type": "linear", "use_karras_sigmas": False,
    "timestep_spacing": "trailing", "steps_offset": 1,
}
CLIP_MODEL = "ViT-B-32"

# --- the same, scaled down (--tiny): same classes, block types and code path, a few channels and layers ----------
TINY_UNET = dict(SD_TURBO_UNET, sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                 cross_attention_dim=32, attention_head_dim=(1, 1, 2, 2))
TINY_VAE = dict(SD_TURBO_VAE, block_out_channels=(32, 32, 64, 64), layers_per_block=1, sample_size=64)
TINY_TEXT = dict(SD_TURBO_TEXT, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 projection_dim=32)
TINY_TAESD = {"encoder_block_out_channels": (16, 16, 16, 16), "decoder_block_out_channels": (16, 16, 16, 16),
              "num_encoder_blocks": (1, 1, 1, 1), "num_decoder_blocks": (1, 1, 1, 1)}
TINY_CLIP = {"embed_dim": 64,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}

PROMPT = "a photo of a red circle"  # the shape of feedback.prompt's template filled with a class name
CLIP_BATCH = 32  # eegloop.embeddings.image_embeddings' batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="CLIP images per device (default 2000; --tiny 64)")
    ap.add_argument("--runs", type=int, default=5, help="timed generations per stage after the warm-up (median)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 1; 2 with --compile)")
    ap.add_argument("--size", type=int, default=None, help="generated image edge, px (default 512; --tiny 64)")
    ap.add_argument("--stim-px", type=int, default=None, help="edge of the synthetic stimulus JPEGs fed to CLIP "
                    "(default 500; --tiny 96)")
    ap.add_argument("--decode-ms", type=float, default=4.0, help="epoch -> class decode, ms (for the budget)")
    ap.add_argument("--refresh-hz", type=float, default=60.0)
    ap.add_argument("--devices", default="auto", help="cpu, cuda or cpu,cuda (auto: cpu, and cuda when present)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--channels-last", action="store_true", help="UNet and decoders in channels-last memory format")
    ap.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                    help="torch.compile the UNet and the decoders (mode: default, reduce-overhead, max-autotune)")
    ap.add_argument("--skip-clip", action="store_true", help="generation only")
    ap.add_argument("--skip-generation", action="store_true", help="CLIP only")
    ap.add_argument("--tiny", action="store_true", help="every config scaled down: a smoke run in seconds")
    args = ap.parse_args()
    args.images = args.images if args.images is not None else (64 if args.tiny else 2000)
    args.size = args.size if args.size is not None else (64 if args.tiny else 512)
    args.stim_px = args.stim_px if args.stim_px is not None else (96 if args.tiny else 500)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.compile else 1)
    if args.size % 8 or args.runs < 1 or args.images < 1:
        ap.error("--size must be a multiple of 8; --runs and --images at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

    if args.threads:
        torch.set_num_threads(args.threads)
    import numpy as np
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # casting random modules with .to(dtype) warns each time
    np.finfo(np.float32), np.finfo(np.float64)  # numpy's limits read before denormals are flushed (else it warns)
    # random weights must not cost what real ones would not: denormal activations are slow on x86, so flush them
    torch.set_flush_denormal(True)
    cuda = torch.cuda.is_available()
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if cuda else [])
    else:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if "cuda" in devices and not cuda:
            ap.error("--devices cuda: no CUDA device here")
        if not devices or set(devices) - {"cpu", "cuda"}:
            ap.error("--devices: cpu, cuda or cpu,cuda")
    out = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "device": " + ".join(torch.cuda.get_device_name(0) if d == "cuda" else "cpu" for d in devices),
           "torch": torch.__version__, "tiny": args.tiny, "random_weights": True,
           "settings": {"images": args.images, "clip_batch": CLIP_BATCH, "stim_px": args.stim_px,
                        "size_px": args.size, "steps": 1, "guidance": 0.0, "runs": args.runs, "warmup": args.warmup,
                        "channels_last": args.channels_last, "compile": args.compile, "flush_denormal": True}}
    print(f"CPU: {out['cpu']}, {out['cores']} cores, torch {torch.__version__} with {out['threads']} threads; "
          f"devices {devices}; {'TINY configs' if args.tiny else 'full-size configs'}", flush=True)

    if not args.skip_clip:
        out["clip"] = {}
        for dev in devices:
            out["clip"][dev] = bench_clip(args, dev)
    if not args.skip_generation:
        out["generation"], out["params_millions"] = bench_generation(args, devices)
        refresh = 1000.0 / args.refresh_hz
        out["budget"] = {}
        for dev, g in out["generation"].items():
            out["budget"][dev] = {}
            for dec, key in (("vae", "total_ms"), ("taesd", "total_taesd_ms")):
                b = {"decode_ms": args.decode_ms, "generation_ms": g[key], "refresh_ms": round(refresh, 2),
                     "epoch_to_screen_ms": round(args.decode_ms + g[key] + refresh, 2)}
                out["budget"][dev][dec] = b
                print(f"budget {dev}, {dec} decoder: epoch -> on screen = decode {args.decode_ms} + generation "
                      f"{g[key]} + one {args.refresh_hz:g} Hz refresh {refresh:.1f} = {b['epoch_to_screen_ms']} ms",
                      flush=True)
    out["ratios"] = ratios(out)
    print(json.dumps(out))


# --- CLIP teacher ------------------------------------------------------------------------------------------------
def build_clip(tiny: bool):
    """open_clip's ViT-B-32 with random weights (``pretrained=None``) and its image transform (the val one)."""
    import open_clip

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip's "no pretrained weights loaded" warning: that is the point here
    try:
        # QuickGELU like the default teacher (ViT-B-32 with pretrained "openai", whose loader builds it so)
        model, _, transform = open_clip.create_model_and_transforms(CLIP_MODEL, pretrained=None, force_quick_gelu=True,
                                                                    **(TINY_CLIP if tiny else {}))
    finally:
        root.setLevel(level)
    return model.eval(), transform


def stimulus_jpegs(n: int, px: int, seed: int = 0) -> list[bytes]:
    """``n`` photo-like (smooth, not white-noise) RGB JPEGs of ``px`` square, in memory."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        img = np.asarray(small.resize((px, px), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def bench_clip(args, dev: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    model, transform = build_clip(args.tiny)
    model.to(dev)
    pool = stimulus_jpegs(CLIP_BATCH, args.stim_px)
    print(f"CLIP {CLIP_MODEL}{' (tiny)' if args.tiny else ''} on {dev}: built in {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in model.visual.parameters()) / 1e6:.1f} M vision parameters", flush=True)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    spent = {"load": 0.0, "transform": 0.0, "encode": 0.0}

    def batch(k: int, n: int, timed: bool) -> None:
        ta = time.perf_counter()
        imgs = [Image.open(io.BytesIO(pool[(k + j) % len(pool)])).convert("RGB") for j in range(n)]
        tb = time.perf_counter()
        x = torch.stack([transform(im) for im in imgs]).to(dev)
        tc = time.perf_counter()
        z = model.encode_image(x).float()
        z = (z / z.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)
        sync()
        td = time.perf_counter()
        if timed:
            spent["load"] += tb - ta
            spent["transform"] += tc - tb
            spent["encode"] += td - tc

    with torch.no_grad():
        batch(0, CLIP_BATCH, False)  # warm-up
        sync()
        start = time.perf_counter()
        last = start
        for i in range(0, args.images, CLIP_BATCH):
            batch(i, min(CLIP_BATCH, args.images - i), True)
            if time.perf_counter() - last > 10:
                last = time.perf_counter()
                done = min(i + CLIP_BATCH, args.images)
                print(f"  CLIP {dev}: {done}/{args.images} images, {done / (last - start):.1f} images/s", flush=True)
        wall = time.perf_counter() - start
    res = {"images": args.images, "batch": CLIP_BATCH, "precision": "fp32",
           "images_per_s": round(args.images / wall, 2), "ms_per_image": round(1000 * wall / args.images, 3),
           "load_ms_per_image": round(1000 * spent["load"] / args.images, 3),
           "transform_ms_per_image": round(1000 * spent["transform"] / args.images, 3),
           "encode_ms_per_image": round(1000 * spent["encode"] / args.images, 3), "seconds": round(wall, 2)}
    print(f"CLIP {dev}: {res['images_per_s']} images/s, {res['ms_per_image']} ms/image (open "
          f"{res['load_ms_per_image']}, transform {res['transform_ms_per_image']}, encode "
          f"{res['encode_ms_per_image']})", flush=True)
    return res


# --- sd-turbo ----------------------------------------------------------------------------------------------------
def build_sd_turbo(tiny: bool):
    """The sd-turbo StableDiffusionPipeline with random weights, and a TAESD (AutoencoderTiny) beside it."""
    import torch
    from diffusers import (AutoencoderKL, AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from eegloop.feedback.tiny import clip_tokenizer_offline

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD_TURBO_UNET)).eval()
    vae = AutoencoderKL(**(TINY_VAE if tiny else SD_TURBO_VAE)).eval()
    text = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD_TURBO_TEXT))).eval()
    taesd = AutoencoderTiny(**(TINY_TAESD if tiny else {})).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer_offline(), unet=unet,
                                   scheduler=EulerDiscreteScheduler(**SD_TURBO_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, taesd


def _median_ms(fn, runs: int, warmup: int, sync) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(ts), 2), round(min(ts), 2)


def bench_generation(args, devices: list[str]) -> tuple[dict, dict]:
    import torch
    from diffusers import StableDiffusionPipeline

    t0 = time.perf_counter()
    pipe, taesd = build_sd_turbo(args.tiny)
    params = {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 3)
              for name, m in (("unet", pipe.unet), ("vae", pipe.vae), ("text_encoder", pipe.text_encoder),
                              ("taesd", taesd))}
    print(f"sd-turbo{' (tiny)' if args.tiny else ''} built in {time.perf_counter() - t0:.1f} s; parameters (M): "
          f"{params}", flush=True)
    unet = pipe.unet
    if args.compile:  # the UNet and the decoders' networks; dynamo compiles again for each device and dtype
        unet = torch.compile(pipe.unet, mode=args.compile)
        pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=args.compile)
        taesd.decoder = torch.compile(taesd.decoder, mode=args.compile)
    # what the generator calls: the pipeline (with the compiled UNet when --compile), and the same with TAESD
    run_pipe, taesd_pipe = (StableDiffusionPipeline(vae=vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                                    unet=unet, scheduler=pipe.scheduler, safety_checker=None,
                                                    feature_extractor=None, requires_safety_checker=False)
                            for vae in (pipe.vae, taesd))
    for p in (run_pipe, taesd_pipe):
        p.set_progress_bar_config(disable=True)
    res = {}
    for dev in devices:  # .to() moves the same modules in place, device after device
        dtype = torch.float16 if dev == "cuda" else torch.float32
        pipe.to(dev, dtype)
        taesd.to(dev, dtype)
        if args.channels_last:
            for m in (pipe.unet, pipe.vae, taesd):
                m.to(memory_format=torch.channels_last)
        vae_decode, taesd_decode = pipe.vae.decode, taesd.decode
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        lat_edge = args.size // 8
        g = torch.Generator(device="cpu").manual_seed(0)
        with torch.inference_mode():
            emb = run_pipe.encode_prompt(PROMPT, dev, 1, False)[0]
            lat = torch.randn((1, 4, lat_edge, lat_edge), generator=g, dtype=dtype).to(dev)
            run_pipe.scheduler.set_timesteps(1, device=dev)
            t = run_pipe.scheduler.timesteps[0]
            lat_in = run_pipe.scheduler.scale_model_input(lat * run_pipe.scheduler.init_noise_sigma, t)
            sf_vae, sf_taesd = pipe.vae.config.scaling_factor, taesd.config.scaling_factor
            decoded = vae_decode(lat / sf_vae, return_dict=False)[0]

            def gen(p):
                return p(PROMPT, num_inference_steps=1, guidance_scale=0.0, height=args.size, width=args.size,
                         generator=torch.Generator(device="cpu").manual_seed(0)).images[0]

            stages = {
                "text_ms": lambda: run_pipe.encode_prompt(PROMPT, dev, 1, False),
                "unet_ms": lambda: unet(lat_in, t, encoder_hidden_states=emb, return_dict=False),
                "vae_decode_ms": lambda: vae_decode(lat / sf_vae, return_dict=False),
                "taesd_decode_ms": lambda: taesd_decode(lat / sf_taesd, return_dict=False),
                "postprocess_ms": lambda: run_pipe.image_processor.postprocess(decoded, output_type="pil"),
                "total_ms": lambda: gen(run_pipe),
                "total_taesd_ms": lambda: gen(taesd_pipe),
            }
            r = {"dtype": str(dtype).replace("torch.", ""), "size_px": args.size}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # random weights: NaNs cast to uint8 in fp16
                for name, fn in stages.items():
                    med, best = _median_ms(fn, args.runs, args.warmup, sync)
                    r[name], r[name.replace("_ms", "_min_ms")] = med, best
                    print(f"  {dev} {r['dtype']} {args.size} px: {name[:-3]} {med} ms median (min {best})",
                          flush=True)
            r["unet_output_finite"] = bool(torch.isfinite(unet(lat_in, t, encoder_hidden_states=emb,
                                                               return_dict=False)[0]).all())
        res[dev] = r
        print(f"generation {dev}: text {r['text_ms']} + UNet {r['unet_ms']} + VAE decode {r['vae_decode_ms']} "
              f"(TAESD {r['taesd_decode_ms']}) + post {r['postprocess_ms']}; pipeline call {r['total_ms']} ms "
              f"(with TAESD {r['total_taesd_ms']} ms)", flush=True)
    return res, params


def ratios(out: dict) -> dict:
    r = {}
    for dev, c in out.get("clip", {}).items():
        r[f"{dev} CLIP ms per image"] = c["ms_per_image"]
        r[f"{dev} CLIP encode share"] = round(c["encode_ms_per_image"] / c["ms_per_image"], 3)
    for dev, g in out.get("generation", {}).items():
        r[f"{dev} TAESD decode / VAE decode"] = round(g["taesd_decode_ms"] / g["vae_decode_ms"], 4)
        r[f"{dev} UNet share of total"] = round(g["unet_ms"] / g["total_ms"], 3)
        r[f"{dev} VAE decode share of total"] = round(g["vae_decode_ms"] / g["total_ms"], 3)
        r[f"{dev} text share of total"] = round(g["text_ms"] / g["total_ms"], 3)
        r[f"{dev} stages sum / total"] = round((g["text_ms"] + g["unet_ms"] + g["vae_decode_ms"]
                                               + g["postprocess_ms"]) / g["total_ms"], 3)
        r[f"{dev} total with TAESD / total"] = round(g["total_taesd_ms"] / g["total_ms"], 3)
    gen, clip = out.get("generation", {}), out.get("clip", {})
    if "cpu" in gen and "cuda" in gen:
        r["cuda / cpu, total"] = round(gen["cuda"]["total_ms"] / gen["cpu"]["total_ms"], 4)
    if "cpu" in clip and "cuda" in clip:
        r["cuda / cpu, CLIP ms per image"] = round(clip["cuda"]["ms_per_image"] / clip["cpu"]["ms_per_image"], 4)
    return r


if __name__ == "__main__":
    main()
