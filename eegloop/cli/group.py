"""``eegloop pretrain``: a group model trained on consenting subjects' epochs (one or more), or the list of group
models."""
from __future__ import annotations

from .common import PROTOCOL_FILE, SEED, SUBJECT, Parents, open_db, say
from .types import CommaList, Integer, Text

# a group model's name: it names its folder (models/group-<name>/), so letters, digits, '-' and '_'
GROUP_NAME = Text("a group model name (letters, digits, '-' and '_')", 64, pattern=r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# eegloop.decoder.group.GROUP_METHODS, written out: building the parser must not import the decoder (torch)
GROUP_METHODS = ("riemann", "conv1d", "lstm", "eegnet", "shallow_fbcsp")


def add_parser(commands, parents: Parents) -> None:
    """Add ``pretrain`` to the top-level sub-parsers."""
    c = commands.add_parser("pretrain", parents=[parents.common],
                            help="train one group model on consenting subjects' epochs (one or more), or list them")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--subjects", type=CommaList(SUBJECT, "subject codes"),
                     help="comma-separated subjects, each with group consent (eegloop subject consent S --group yes)")
    who.add_argument("--all", action="store_true", help="every subject with group consent (the others are listed "
                                                        "as skipped)")
    who.add_argument("--list", action="store_true", help="list the group models and whose data each holds")
    c.add_argument("--exclude", type=CommaList(SUBJECT, "subject codes"), default=[],
                   help="with --all: comma-separated subjects to leave out")
    c.add_argument("--name", type=GROUP_NAME, help="the group model's name (required to train one)")
    c.add_argument("--method", choices=list(GROUP_METHODS), default="riemann",
                   help="riemann (default: xDAWN covariances + tangent space + logistic regression, re-centred per "
                        "subject with pyriemann.transfer) or a network (Euclidean alignment per subject)")
    c.add_argument("--no-align", action="store_true", help="pool the subjects' epochs without aligning them "
                                                           "(a control: what alignment gains)")
    c.add_argument("--protocol", type=PROTOCOL_FILE, help="reference protocol: montage, preprocessing, analysis "
                                                          "window (default: the first subject's latest session's)")
    c.add_argument("--seed", type=SEED, default=0, help="networks: the seed (default 0)")
    ddp = c.add_argument_group("data-parallel training of a network (PyTorch DDP, launched as torchrun launches)")
    ddp.add_argument("--nproc", type=Integer(1, 1024), default=None,
                     help="processes (ranks) on this machine (default: one, in this process)")
    ddp.add_argument("--nnodes", type=Integer(1, 1024), default=1,
                     help="machines taking part; each runs the same command (default 1)")
    ddp.add_argument("--rdzv-endpoint", type=Text("HOST:PORT", 300), default=None,
                     help="HOST:PORT every machine meets at (needed with --nnodes above 1; default on one machine: "
                          "127.0.0.1 and a free port)")
    ddp.add_argument("--rdzv-id", type=Text("a run id", 64), default="eegloop-pretrain",
                     help="the run's id at the rendezvous (the same on every machine)")
    ddp.add_argument("--checkpoint", type=Text("a file path", 4096), default=None,
                     help="written after every epoch by rank 0; a rerun with the same file resumes after its last "
                          "finished epoch")
    c.add_argument("--max-epochs", type=Integer(1, 10_000), default=None,
                   help="networks: at most this many training epochs (default: the protocol's training.max_epochs)")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop pretrain``."""
    from ..errors import EegloopError

    if args.list:
        return list_group_models(open_db(args, create=False))
    if args.name is None:
        raise EegloopError("--name: required to train a group model (e.g. --name G1)")
    from ..decoder.group import plan_group, pretrain

    proto = None
    if args.protocol is not None:
        from ..protocol import load_protocol

        proto = load_protocol(args.protocol)
    launch = _launch(args)
    db = open_db(args, create=False)
    plan = plan_group(db, subjects=args.subjects, all_subjects=args.all, exclude=args.exclude, name=args.name,
                      method=args.method)
    for line in plan.lines():
        print(line)
    res = pretrain(db, plan.subjects, args.name, method=args.method, align=not args.no_align, protocol=proto,
                   seed=args.seed, max_epochs=args.max_epochs, progress=say, launch=launch,
                   checkpoint=args.checkpoint)
    if res is None:
        return 0
    for line in res.lines():
        print(line)
    return 0


def group_model_lines(rec) -> list[str]:
    """A stored group model as the CLI lists it: name, method, alignment, protocol, then one line per subject."""
    cfg = rec.config
    grid = cfg.get("grid", {})
    n = sum(m.n_epochs for m in rec.members)
    k = len(rec.members)
    lines = [f"{rec.name} (id {rec.id}, {rec.kind}, {rec.created_at:%Y-%m-%d %H:%M}): {k} subject{'s' * (k != 1)}, "
             f"{n} epochs, {len(grid.get('channel_names', []))} channels at {grid.get('sfreq', 0):g} Hz; alignment "
             f"{cfg.get('alignment')}; protocol {cfg.get('protocol_name')} sha256 "
             f"{str(cfg.get('protocol_sha256'))[:12]}; {rec.checkpoint_path}"]
    for m in rec.members:
        when = f"{m.consent_at:%Y-%m-%d %H:%M}" if m.consent_at else "unknown"
        lines.append(f"  {m.code}: sessions {', '.join(map(str, m.session_ids))}; {m.n_epochs} epochs; group "
                     f"consent yes at training (given {when})")
    return lines


def list_group_models(db) -> int:
    """``pretrain --list``."""
    recs = db.list_group_models()
    if not recs:
        print("no group models yet (train one with: eegloop pretrain --all --name G)")
    for rec in recs:
        for line in group_model_lines(rec):
            print(line)
    return 0


def _launch(args):
    """The data-parallel launch the options ask for (None: one process), checked before any work."""
    from ..errors import EegloopError

    if args.nproc is None and args.nnodes == 1 and args.rdzv_endpoint is None and args.checkpoint is None:
        return None
    if args.method == "riemann":
        raise EegloopError("--nproc/--nnodes/--rdzv-endpoint/--checkpoint: data-parallel training is for the "
                           "networks (--method conv1d or lstm), not the Riemannian pipeline")
    from ..decoder.distributed import Launch

    launch = Launch(nproc=args.nproc or 1, nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint,
                    rdzv_id=args.rdzv_id)
    try:
        launch.check()
    except ValueError as exc:
        raise EegloopError(str(exc)) from None
    if args.checkpoint is not None:
        from pathlib import Path

        folder = Path(args.checkpoint).expanduser().parent
        if not folder.is_dir():
            raise EegloopError(f"--checkpoint: the folder {folder} does not exist")
    return launch
