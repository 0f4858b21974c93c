"""The shared P300 oddball recordings import with ``protocols/p300.yaml`` through the CLI, whichever name their
marker column has (``Marker`` in the 2017 files, ``Marker0`` in the 2018 ones): every marker of the CSV becomes
an epoch of its class or a rejected epoch with its reason."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from eegloop.cli.app import main
from eegloop.database import Database

REPO = Path(__file__).resolve().parents[2]
P300 = REPO.parent / "shared" / "data" / "p300"
pytestmark = pytest.mark.skipif(not P300.is_dir(), reason="shared/data/p300 not beside the checkout")
CLASSES = {"1": "nontarget", "2": "target"}
# one file of each subject: subject1's and subject2's first sessions name the column Marker, subject3's Marker0
FILES = {"p300s1": "subject1/session1", "p300s2": "subject2/session1", "p300s3": "subject3/session1"}


def csv_markers(path: Path) -> tuple[str, Counter]:
    """The file's own count of each class (its marker column read directly) and that column's name."""
    with open(path, newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows)
        col = next(i for i, h in enumerate(header) if h.startswith("Marker"))
        counts = Counter(CLASSES[str(int(float(r[col])))] for r in rows if float(r[col]) != 0)
    return header[col], counts


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    data = tmp_path_factory.mktemp("p300")
    out = {}
    for subject, folder in FILES.items():
        f = sorted((P300 / folder).glob("*.csv"))[0]
        rc = main(["import", str(f), "--subject", subject, "--format", "csv", "--events", "1=nontarget,2=target",
                   "--channels", "TP9,AF7,AF8,TP10", "--protocol", str(REPO / "protocols" / "p300.yaml"),
                   "--data", str(data)])
        assert rc == 0
        out[subject] = f
    return Database(f"sqlite:///{data / 'eegloop.db'}", data_dir=data), out


def test_one_file_of_each_subject_imports_with_its_classes(imported):
    db, files = imported
    columns = set()
    for subject, f in files.items():
        column, expected = csv_markers(f)
        columns.add(column)
        (session,) = db.list_sessions(subject)
        es = db.load_epochs(subject)
        rejected = Counter(r.label for r in db.get_rejected(session.id))
        assert Counter(es.labels.tolist()) + rejected == expected, subject  # every marker, by class
        assert set(es.labels) == {"nontarget", "target"}
        assert 0.1 < (es.labels == "target").mean() < 0.25  # rare targets, as recorded
        assert sum(rejected.values()) <= 2  # at most the file's edges; amplitude rejection is the decoder's
        assert es.channel_names == ["TP9", "AF7", "AF8", "TP10"] and es.sfreq == pytest.approx(256, abs=0.5)
        assert es.data.shape[1:] == (4, int(round(0.9 * 256)) + 2 * 128)  # -0.1..0.8 s and 0.5 s margins
    assert columns == {"Marker", "Marker0"}  # both spellings of the marker column went through
