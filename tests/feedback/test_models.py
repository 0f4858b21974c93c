"""eegloop models list / download: what a protocol needs, what the caches hold, and the offline path.

Nothing is downloaded (no internet here, and tests send no traffic off the machine): the cache is a real
Hugging Face cache layout built in a temporary $HF_HOME, and the download is tried offline."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def run(args, home, cwd):
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "eegloop", *args], capture_output=True, text=True, env=env, cwd=cwd)


def fake_hub_repo(home: Path, repo: str, files: dict[str, bytes]) -> None:
    """A model in the Hugging Face cache as huggingface_hub lays it out (blobs, a snapshot, refs/main)."""
    import hashlib

    base = home / "hub" / ("models--" + repo.replace("/", "--"))
    rev = "0" * 40
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    for name, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = base / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.mark.slow
def test_models_list_and_offline_download(tmp_path):
    home = tmp_path / "hf"
    tiny_sd = tmp_path / "my-sd"  # a local diffusers folder (the loading itself is tested in test_feedback.py)
    tiny_sd.mkdir()
    (tiny_sd / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    proto = yaml.safe_load((REPO / "protocols" / "ferrante2023.yaml").read_text())
    proto["teacher"].update(model=f"local-dir:{tmp_path / 'no-clip'}", pretrained=None)
    proto["feedback"]["generator"] = str(tiny_sd)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
    r = run(["models", "list", "--protocol", "p.yaml"], home, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.split()[0] == "clip" and "MISSING: folder not found" in ln for ln in lines)
    assert any(ln.split()[0] == "generator" and "available" in ln for ln in lines)
    assert lines[-1] == "Hugging Face cache: empty"
    # the shipped templates, against a cache that holds the demo's generator
    fake_hub_repo(home, "stabilityai/sd-turbo", {"model_index.json": b'{"_class_name": "StableDiffusionPipeline"}'})
    r = run(["models", "list"], home, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "protocol demo:" in r.stdout and "protocol ferrante2023:" in r.stdout
    demo = r.stdout.split("protocol demo:")[1].split("protocol")[0]
    assert "stabilityai/sd-turbo" in demo and "available" in demo
    assert "clip       ViT-B-32 (openai)" in r.stdout and "MISSING: not downloaded" in r.stdout
    assert "Hugging Face cache: stabilityai/sd-turbo (" in r.stdout
    zs = r.stdout.split("protocol zero-shot:")[1].split("protocol")[0]  # retrieve mode: the CLIP only, built in
    assert "tiny-random-clip" in zs and "available" in zs and "generator" not in zs
    # offline: one line naming what could not be fetched, exit 2
    r = run(["models", "download", "clip", "--protocol", str(REPO / "protocols" / "ferrante2023.yaml")], home, tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eegloop: error: models download: cannot fetch clip 'ViT-B-32 (openai)'")
    # in this process (the hub is offline here too): a local path cannot be downloaded, nothing is tried;
    # what is already here needs no download
    import pytest

    from eegloop.errors import EegloopError
    from eegloop.models_cache import download
    from eegloop.protocol import load_protocol

    with pytest.raises(EegloopError, match="is a local path"):
        download(load_protocol(tmp_path / "p.yaml"))
    proto["teacher"]["enabled"] = False
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(proto))
    said = []
    after = download(load_protocol(tmp_path / "q.yaml"), progress=said.append)
    assert said == ["every model the protocol needs is already here"] and all(n.available for n in after)
