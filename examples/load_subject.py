"""A recorded subject from a notebook's point of view: the database, an honest score, the ERP on the head.

    python examples/load_subject.py DATA_DIR SUBJECT [OUT_DIR]

Opens the eegloop database in DATA_DIR (as ``eegloop record``/``session``/``import`` left it), loads every
epoch of SUBJECT, scores the protocol's decoder with whole blocks left out beside chance and a shuffled-label
control, and draws the average response with its scalp map at the peak (electrode positions from the
protocol's ``amplifier.montage``). Writes OUT_DIR/erp_topomap.png (default ./eegloop-example).
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import eegloop  # noqa: E402


def main(data: Path, subject: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    db = eegloop.Database(f"sqlite:///{data / 'eegloop.db'}", data_dir=data)
    sessions = db.list_sessions(subject)
    for s in sessions:
        print(f"session {s.id}: {s.kind}, protocol {s.protocol_name}, {db.count_epochs(s.id)} epochs, {s.status}")
    epochs = db.load_epochs(subject)
    proto = _stored_protocol(sessions[0])
    print(f"{len(epochs)} epochs of {len(epochs.classes)} classes, {epochs.data.shape[1]} channels")

    report = eegloop.evaluate(epochs, proto, methods=["lda_windowed"], split="block")
    control = eegloop.evaluate(epochs, proto, methods=["lda_windowed"], split="block", shuffle_labels=True)
    print(report.table())
    print(f"shuffled-label control: top-1 {control.summary()['lda_windowed']['top1']:.3f} "
          f"(chance {control.chance['chance_top1']:.3f})")

    evoked = epochs.to_mne().average()
    peak = float(evoked.times[abs(evoked.data).mean(0).argmax()])
    fig = evoked.plot_joint(times=[peak], show=False, title=f"subject {subject}: mean response")
    fig.savefig(out / "erp_topomap.png", dpi=90)
    print(f"ERP and scalp map at {peak * 1000:.0f} ms: {out / 'erp_topomap.png'}")


def _stored_protocol(session):
    """The protocol the session was recorded with (stored in the database with it)."""
    import yaml

    return eegloop.protocol_from_dict(yaml.safe_load(session.protocol_yaml))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]) if len(sys.argv) > 3 else Path("eegloop-example"))
