"""A simulated subject from a notebook's point of view: epochs, an honest evaluation, an ERP plot.

    python examples/simulated_subject.py [OUT_DIR]

Uses only ``import eegloop`` (no window, no LSL): the demo protocol's schedule rendered offline by the
virtual amplifier, two decoders compared with whole blocks left out (chance beside), and the average
response per class drawn with MNE. Writes OUT_DIR/erp.png (default ./eegloop-example).
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import eegloop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    proto = eegloop.load_protocol(REPO / "protocols" / "demo.yaml")
    stimuli = eegloop.synthesize_stimuli(out / "images", dict(proto.stimuli.classes),
                                         per_class=proto.paradigm.images_per_class, size=64)
    epochs = eegloop.simulate_epochs(proto, eegloop.make_schedule(proto, stimuli))
    print(f"{len(epochs)} epochs, {epochs.data.shape[1]} channels, {epochs.sfreq:g} Hz, classes "
          f"{', '.join(epochs.classes)}")

    report = eegloop.evaluate(epochs, proto, methods=["lda_windowed", "riemann"], split="block")
    print(report.table())

    mne_epochs = epochs.to_mne()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for cls in epochs.classes:
        evoked = mne_epochs[cls].average()
        ax.plot(evoked.times, evoked.data.mean(0) * 1e6, label=cls)
    ax.set_xlabel("time after image onset (s)")
    ax.set_ylabel("mean over channels (µV)")
    ax.set_title("ERP per class (simulated subject)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "erp.png", dpi=100)
    print(f"ERP plot: {out / 'erp.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("eegloop-example"))
